//! `[model]` and `[detector]`: what runs YOLOv7, and how many of it.

use std::path::PathBuf;

use serde::Deserialize;

use crate::model::backend::{ExecutionProvider, Precision};

use super::Problems;

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
    /// Decode JPEGs at the smallest DCT scale that covers the model input (faster; not
    /// bit-exact with the reference's full-size decode and resize). Unset: on unless
    /// `precision = "fp32"` asks for the reference-exact path.
    #[serde(default)]
    pub dct_scaling: Option<bool>,
    /// `auto` (OpenVINO where the CPU computes bf16, ONNX Runtime's CPU kernels otherwise),
    /// `cpu` or `openvino`. See `model::backend`.
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
    /// `auto` (bf16 where the CPU has it and OpenVINO loads, fp32 otherwise), `fp32` (the
    /// reference-exact path) or `bf16`.
    #[serde(default)]
    pub precision: Precision,
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

impl ModelConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        let unit = |v: f32| v > 0.0 && v <= 1.0;
        if !unit(self.conf_threshold) {
            p.add(
                "model.conf_threshold",
                format!("is {}, must be in (0, 1]", self.conf_threshold),
            );
        }
        if !unit(self.iou_threshold) {
            p.add(
                "model.iou_threshold",
                format!("is {}, must be in (0, 1]", self.iou_threshold),
            );
        }
        if let Some(why) =
            crate::model::backend::impossible(self.execution_provider, self.precision)
        {
            p.add("model.precision", why);
        }
        if !self.path.is_file() {
            p.add(
                "model.path",
                format!(
                    "{} is not a file; run `scripts/setup.sh` to generate the demo model",
                    self.path.display()
                ),
            );
        }
        p.range(
            "model.max_detections",
            self.max_detections as u64,
            1,
            30_000,
        );
    }
}

impl DetectorConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        p.range("detector.pool_size", self.pool_size as u64, 0, 256);
        p.range("detector.intra_threads", self.intra_threads as u64, 1, 256);
        p.range("detector.max_in_flight", self.max_in_flight as u64, 1, 64);
    }
}
