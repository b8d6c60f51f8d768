//! `cluster.toml`: the node's configuration. Every field is documented in
//! `docs/configuration.md`; unknown fields are refused so a typo never passes silently.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::model::postprocess::PostprocessConfig;
use crate::model::ModelOptions;
use crate::protocol::FrameLimits;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: `{field}` {problem}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Shown in logs.
    pub name: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "kadr".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: String,
    /// Every channel is named `{channel_prefix}:...`.
    pub channel_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            channel_prefix: "kadr".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// ONNX file; a relative path is relative to the config file's folder.
    pub path: PathBuf,
    #[serde(default = "default_conf")]
    pub conf_threshold: f32,
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
    /// Path to `libonnxruntime.so`; found in `.deps/onnxruntime/` when unset.
    #[serde(default)]
    pub onnxruntime_library: Option<PathBuf>,
}

fn default_conf() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.45
}
fn default_max_detections() -> usize {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Detector actors on this node; 0 means one per available core.
    pub pool_size: usize,
    /// ONNX Runtime threads inside one inference.
    pub intra_threads: usize,
    /// Frames handed to one detector at a time (1 = the next frame waits in the node's queue).
    pub max_in_flight: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            pool_size: 0,
            intra_threads: 1,
            max_in_flight: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame message accepted, header included.
    pub max_payload_bytes: usize,
    pub max_stream_id_bytes: usize,
    /// Frames waiting for a detector; past this the oldest is dropped (live streams).
    pub queue_capacity: usize,
    /// How long a finished result may wait behind a missing earlier frame before that frame
    /// is reported as a gap. The sequencer never holds a stream longer than this.
    pub gap_wait_ms: u64,
    /// A frame with no result after this long is reported lost even if nothing waits behind it.
    pub frame_timeout_ms: u64,
    /// Never drop frames for lateness, on any stream (a publisher can ask per frame too).
    pub keep_all_frames: bool,
    /// Streams tracked at once; frames of further streams are refused with an error.
    pub max_streams: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 8 * 1024 * 1024,
            max_stream_id_bytes: 128,
            queue_capacity: 32,
            gap_wait_ms: 1000,
            frame_timeout_ms: 30_000,
            keep_all_frames: false,
            max_streams: 1024,
        }
    }
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parse and validate config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if cfg.model.path.is_relative() {
            cfg.model.path = base.join(&cfg.model.path);
        }
        if let Some(lib) = cfg.model.onnxruntime_library.as_mut() {
            if lib.is_relative() {
                *lib = base.join(&*lib);
            }
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            problem,
        };
        let unit = |v: f32| v > 0.0 && v <= 1.0;
        if !unit(self.model.conf_threshold) {
            return Err(invalid(
                "model.conf_threshold",
                format!("is {}, must be in (0, 1]", self.model.conf_threshold),
            ));
        }
        if !unit(self.model.iou_threshold) {
            return Err(invalid(
                "model.iou_threshold",
                format!("is {}, must be in (0, 1]", self.model.iou_threshold),
            ));
        }
        if !self.model.path.is_file() {
            return Err(invalid(
                "model.path",
                format!(
                    "{} is not a file; run `scripts/setup.sh` to generate the demo model",
                    self.model.path.display()
                ),
            ));
        }
        if !self.redis.url.starts_with("redis://")
            && !self.redis.url.starts_with("rediss://")
            && !self.redis.url.starts_with("unix://")
        {
            return Err(invalid(
                "redis.url",
                format!("{:?} is not a redis:// URL", self.redis.url),
            ));
        }
        let prefix_ok = !self.redis.channel_prefix.is_empty()
            && !self
                .redis
                .channel_prefix
                .contains(['*', '?', '[', ']', ' ']);
        if !prefix_ok {
            return Err(invalid(
                "redis.channel_prefix",
                "must be non-empty, without spaces or glob characters".into(),
            ));
        }
        // (field, value, least, most): the upper bounds catch typos that would exhaust memory.
        let ranges: [(&'static str, u64, u64, u64); 9] = [
            (
                "model.max_detections",
                self.model.max_detections as u64,
                1,
                30_000,
            ),
            ("detector.pool_size", self.detector.pool_size as u64, 0, 256),
            (
                "detector.intra_threads",
                self.detector.intra_threads as u64,
                1,
                256,
            ),
            (
                "detector.max_in_flight",
                self.detector.max_in_flight as u64,
                1,
                64,
            ),
            (
                "limits.queue_capacity",
                self.limits.queue_capacity as u64,
                1,
                100_000,
            ),
            ("limits.gap_wait_ms", self.limits.gap_wait_ms, 1, 3_600_000),
            (
                "limits.frame_timeout_ms",
                self.limits.frame_timeout_ms,
                1,
                86_400_000,
            ),
            (
                "limits.max_streams",
                self.limits.max_streams as u64,
                1,
                1_000_000,
            ),
            (
                "limits.max_payload_bytes",
                self.limits.max_payload_bytes as u64,
                64,
                512 << 20,
            ),
        ];
        for (field, v, least, most) in ranges {
            if v < least || v > most {
                return Err(invalid(field, format!("is {v}, must be {least}..={most}")));
            }
        }
        if !(1..=u16::MAX as usize).contains(&self.limits.max_stream_id_bytes) {
            return Err(invalid(
                "limits.max_stream_id_bytes",
                "must be 1..=65535".into(),
            ));
        }
        Ok(())
    }

    /// Detector actors to run: `pool_size`, or one per available core.
    pub fn pool_size(&self) -> usize {
        match self.detector.pool_size {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            path: self.model.path.clone(),
            onnxruntime_library: self.model.onnxruntime_library.clone(),
            intra_threads: self.detector.intra_threads,
            postprocess: PostprocessConfig {
                conf_threshold: self.model.conf_threshold,
                iou_threshold: self.model.iou_threshold,
                max_detections: self.model.max_detections,
                ..PostprocessConfig::default()
            },
        }
    }

    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_message_bytes: self.limits.max_payload_bytes,
            max_stream_id_bytes: self.limits.max_stream_id_bytes,
        }
    }

    pub fn gap_wait(&self) -> Duration {
        Duration::from_millis(self.limits.gap_wait_ms)
    }

    pub fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.frame_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        // Cargo.toml stands in for a model file: validation only checks that it exists.
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        Config::parse(text, Path::new("test.toml"), base)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[model]\npath = \"Cargo.toml\"\n").unwrap();
        assert_eq!(c.model.conf_threshold, 0.25);
        assert_eq!(c.model.iou_threshold, 0.45);
        assert_eq!(c.limits.max_payload_bytes, 8 * 1024 * 1024);
        assert_eq!(c.redis.channel_prefix, "kadr");
        assert!(c.pool_size() >= 1);
        assert!(c.model.path.is_absolute());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[model]\npath = \"Cargo.toml\"\ncolour = 1\n", "colour"),
            ("[model]\npath = \"nope.onnx\"\n", "model.path"),
            (
                "[model]\npath = \"Cargo.toml\"\nconf_threshold = 1.5\n",
                "model.conf_threshold",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[limits]\nqueue_capacity = 0\n",
                "limits.queue_capacity",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[detector]\npool_size = 10000\n",
                "detector.pool_size",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[limits]\nmax_payload_bytes = 10\n",
                "limits.max_payload_bytes",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[redis]\nurl = \"http://x\"\n",
                "redis.url",
            ),
            (
                "[model]\npath = \"Cargo.toml\"\n[redis]\nchannel_prefix = \"a*\"\n",
                "redis.channel_prefix",
            ),
            ("[redis]\nurl = \"redis://x\"\n", "model"),
        ];
        for (text, field) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text:?}: {err}");
        }
    }
}
