//! `kadr detect`: detect on still images, one JSON line each.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use kadr::model::backend::{ExecutionProvider, Precision};
use kadr::model::postprocess::PostprocessConfig;
use kadr::model::{decode_image, ModelOptions, Yolo};
use kadr::protocol::Detection;

#[derive(Args)]
pub struct DetectArgs {
    #[arg(long, short)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,
    #[arg(long, default_value_t = 0.45)]
    pub iou: f32,
    /// Path to libonnxruntime.so (found in .deps/onnxruntime/ by default).
    #[arg(long, env = "KADR_ONNXRUNTIME")]
    pub onnxruntime: Option<PathBuf>,
    /// Decode JPEGs at the smallest DCT scale covering the model input (`model.dct_scaling`;
    /// default: on unless `--precision fp32`).
    #[arg(long)]
    pub dct_scaling: Option<bool>,
    /// `fp32` is the reference-exact path; `auto` uses bf16 where the CPU has it.
    #[arg(long, value_enum, default_value = "auto")]
    pub precision: Precision,
    #[arg(long, value_enum, default_value = "auto")]
    pub execution_provider: ExecutionProvider,
    /// Same as `--execution-provider openvino`.
    #[arg(long)]
    pub openvino: bool,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    let execution_provider = if args.openvino {
        ExecutionProvider::Openvino
    } else {
        args.execution_provider
    };
    detect(
        ModelOptions {
            path: args.model,
            onnxruntime_library: args.onnxruntime,
            intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            dct_scaling: args.dct_scaling,
            execution_provider,
            precision: args.precision,
            // Local files, not video: any size up to the hard ceiling.
            max_pixels: kadr::model::MAX_IMAGE_PIXELS,
            postprocess: PostprocessConfig {
                conf_threshold: args.conf,
                iou_threshold: args.iou,
                ..PostprocessConfig::default()
            },
        },
        args.images,
    )
}

#[derive(Serialize)]
struct DetectLine<'a> {
    image: &'a str,
    width: u32,
    height: u32,
    detections: &'a [Detection],
}

fn detect(opts: ModelOptions, images: Vec<PathBuf>) -> anyhow::Result<()> {
    let (conf, iou) = (
        opts.postprocess.conf_threshold,
        opts.postprocess.iou_threshold,
    );
    if !(conf > 0.0 && conf <= 1.0 && iou > 0.0 && iou <= 1.0) {
        bail!("--conf and --iou must be in (0, 1]");
    }
    let mut yolo = Yolo::load(&opts)?;
    let b = yolo.backend();
    eprintln!(
        "kadr detect: {} {}, dct_scaling {} ({})",
        b.provider, b.precision, b.dct_scaling, b.reason
    );
    let mut failures = 0;
    for path in &images {
        let result = std::fs::read(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .and_then(|bytes| {
                if kadr::jpeg::is_jpeg(&bytes) {
                    return Ok(yolo.detect_jpeg(&bytes)?);
                }
                let (rgb, w, h) = decode_image(&bytes)?;
                Ok(yolo.detect_rgb(&rgb, w, h)?)
            });
        match result {
            Ok(found) => {
                let line = DetectLine {
                    image: &path.to_string_lossy(),
                    width: found.width,
                    height: found.height,
                    detections: &found.detections,
                };
                println!("{}", serde_json::to_string(&line)?);
            }
            Err(e) => {
                failures += 1;
                eprintln!("kadr: {}: {e:#}", path.display());
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} images failed", images.len());
    }
    Ok(())
}
