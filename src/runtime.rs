//! Finding and loading the ONNX Runtime shared library.
//!
//! kadr loads ONNX Runtime at run time (`ort`'s `load-dynamic`), from the library that the
//! `onnxruntime` wheel on PyPI ships; `scripts/setup.sh` puts it in `.deps/onnxruntime/`, and the
//! build with OpenVINO (from the `onnxruntime-openvino` wheel) in `.deps/onnxruntime-openvino/`.
//! The node finds them there by itself; an explicit path (config or `KADR_ONNXRUNTIME`)
//! overrides both. Which of the two a process loads is chosen by [`crate::model::backend`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use thiserror::Error;

/// Where `scripts/setup.sh` installs the library, relative to the repository root.
pub(crate) const BUNDLED_DIR: &str = ".deps/onnxruntime";
/// Where it installs ONNX Runtime built with the OpenVINO execution provider.
pub(crate) const OPENVINO_DIR: &str = ".deps/onnxruntime-openvino";
pub(crate) const ENV_VAR: &str = "KADR_ONNXRUNTIME";

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (looked for {looked}); run `scripts/setup.sh` to install \
         it, or set {ENV_VAR}=/path/to/libonnxruntime.so"
    )]
    NotFound { looked: String },
    #[error(
        "could not load ONNX Runtime from {path}: {reason}; run `scripts/setup.sh` to install a \
         supported version (1.24 or newer), or point {ENV_VAR} at one"
    )]
    Load { path: PathBuf, reason: String },
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
/// The first caller's `explicit` path wins; ONNX Runtime can be loaded only once per process.
pub(crate) fn environment(explicit: Option<&Path>) -> Result<&'static Environment, RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    load(&find_library(explicit)?)
}

/// The library this process loaded, if it loaded one.
pub(crate) fn loaded_library() -> Option<&'static Path> {
    LOADED.get().map(PathBuf::as_path)
}

static LOADED: OnceLock<PathBuf> = OnceLock::new();

/// Load the library at `path` (a file or a folder holding one) unless one is loaded already.
/// A library that fails to load leaves the process free to load another.
pub(crate) fn load(path: &Path) -> Result<&'static Environment, RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = existing(path)?;
    let load_err = |reason: String| RuntimeError::Load {
        path: path.clone(),
        reason,
    };
    // A library that is not ONNX Runtime can make the loader panic rather than fail.
    let built = std::panic::catch_unwind(|| {
        ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("kadr")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    })
    .map_err(|_| load_err("the loader panicked".into()))?
    .map_err(load_err)?;
    tracing::info!(library = %path.display(), "ONNX Runtime loaded");
    let _ = LOADED.set(path);
    Ok(ENVIRONMENT.get_or_init(|| built))
}

/// Explicit path, then `KADR_ONNXRUNTIME`, then `.deps/onnxruntime/` under the working directory
/// or any folder above the executable (so `target/release/kadr` finds the repository's copy).
pub(crate) fn find_library(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    if let Some(p) = explicit {
        return existing(p);
    }
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        return existing(Path::new(&p));
    }
    find_bundled(BUNDLED_DIR)
}

/// The OpenVINO build of ONNX Runtime that `scripts/setup.sh` installs, if it is there.
pub(crate) fn find_openvino_library() -> Option<PathBuf> {
    find_bundled(OPENVINO_DIR).ok()
}

/// `dir` (relative) under the working directory or any folder above the executable.
fn find_bundled(dir: &str) -> Result<PathBuf, RuntimeError> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    let mut looked = Vec::new();
    for root in roots {
        let dir = root.join(dir);
        if let Some(lib) = library_in(&dir) {
            return Ok(lib);
        }
        looked.push(dir.display().to_string());
    }
    Err(RuntimeError::NotFound {
        looked: looked.join(", "),
    })
}

fn existing(p: &Path) -> Result<PathBuf, RuntimeError> {
    if p.is_file() {
        Ok(p.to_path_buf())
    } else if let Some(lib) = p.is_dir().then(|| library_in(p)).flatten() {
        Ok(lib)
    } else {
        Err(RuntimeError::NotFound {
            looked: p.display().to_string(),
        })
    }
}

/// `libonnxruntime.so` or a versioned `libonnxruntime.so.1.x.y` in `dir`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join("libonnxruntime.so");
    if plain.is_file() {
        return Some(plain);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .collect();
    versioned.sort();
    versioned.pop()
}
