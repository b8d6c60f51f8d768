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
    /// NMS IoU threshold (default: the model's producer's own, YOLOv7 0.45, ultralytics 0.7).
    #[arg(long)]
    pub iou: Option<f32>,
    /// Class names, one per line or YAML `names:` (default: the model's metadata, else COCO's).
    #[arg(long)]
    pub names_file: Option<PathBuf>,
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
    /// In bf16, split the input convolutions' weights in two bf16-exact halves
    /// (`model.split_input_conv`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub split_input_conv: bool,
    /// Same as `--execution-provider openvino`.
    #[arg(long)]
    pub openvino: bool,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    let class_names = names_from_file(args.names_file.as_deref())?;
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
            class_names,
            split_input_conv: args.split_input_conv,
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
    if !(conf > 0.0 && conf <= 1.0 && iou.is_none_or(|iou| iou > 0.0 && iou <= 1.0)) {
        bail!("--conf and --iou must be in (0, 1]");
    }
    let mut yolo = Yolo::load(&opts)?;
    eprintln!("kadr detect: {}", yolo.info().summary());
    let b = yolo.backend();
    eprintln!(
        "kadr detect: {} {}, dct_scaling {}, input convolutions split {} ({})",
        b.provider,
        b.precision,
        b.dct_scaling,
        yolo.input_conv_split(),
        b.reason
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

/// `--names-file`, read and parsed, with its source for the log.
pub fn names_from_file(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<(Vec<String>, kadr::model::names::NamesSource)>> {
    let Some(path) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let names = kadr::model::names::parse_names_file(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some((
        names,
        kadr::model::names::NamesSource::File(path.display().to_string()),
    )))
}
