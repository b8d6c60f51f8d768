//! `[model]` and `[detector]`: what model runs, its class names, and how many detectors.

use std::path::PathBuf;

use serde::Deserialize;

use crate::model::backend::{ExecutionProvider, Precision};
use crate::model::names::{parse_names_file, NamesSource};
use crate::model::{ModelError, ModelInfo};

use super::Problems;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// ONNX file; a relative path is relative to the config file's folder.
    pub path: PathBuf,
    #[serde(default = "default_conf")]
    pub conf_threshold: f32,
    /// NMS IoU threshold; unset: the model's producer's own (YOLOv7 0.45, ultralytics 0.7).
    #[serde(default)]
    pub iou_threshold: Option<f32>,
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
    /// Class names, in class order; they win over the names in the model's metadata.
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// In bf16, run the convolutions that read the image on weights split in two bf16-exact
    /// halves (model::bf16): scores about 3x closer to fp32's for about 3% more work.
    #[serde(default = "yes")]
    pub split_input_conv: bool,
    /// A file of class names: one per line (Darknet's `coco.names`) or YAML with `names:`
    /// (YOLOv5/YOLOv7/ultralytics data files). Relative to the config file's folder.
    #[serde(default)]
    pub names_file: Option<PathBuf>,
}

fn default_conf() -> f32 {
    0.25
}
fn yes() -> bool {
    true
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
        if let Some(iou) = self.iou_threshold.filter(|v| !unit(*v)) {
            p.add(
                "model.iou_threshold",
                format!("is {iou}, must be in (0, 1]"),
            );
        }
        self.check_names(p);
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

impl ModelConfig {
    /// The class names the configuration gives, with their source; `Ok(None)` if it gives none.
    pub fn configured_names(&self) -> Result<Option<(Vec<String>, NamesSource)>, String> {
        if let Some(names) = &self.class_names {
            return Ok(Some((names.clone(), NamesSource::Config)));
        }
        let Some(file) = &self.names_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let names = parse_names_file(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(Some((names, NamesSource::File(file.display().to_string()))))
    }

    /// Names that cannot be read, are empty or blank, or are not as many as the model's classes.
    fn check_names(&self, p: &mut Problems) {
        let key = if self.class_names.is_some() {
            "model.class_names"
        } else {
            "model.names_file"
        };
        if self.class_names.is_some() && self.names_file.is_some() {
            p.add(
                "model.names_file",
                "set model.class_names or model.names_file, not both",
            );
            return;
        }
        let (names, source) = match self.configured_names() {
            Ok(Some(configured)) => configured,
            Ok(None) => return,
            Err(e) => return p.add(key, e),
        };
        if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
            return p.add(key, "has an empty name");
        }
        // The count against the model, where the model file is one kadr reads (a model it
        // cannot read is reported when it loads, with the reason).
        if let Err(ModelError::ClassNames { reason, .. }) =
            ModelInfo::read(&self.path, Some((names, source)))
        {
            p.add(key, reason);
        }
    }
}

impl DetectorConfig {
    pub(super) fn check(&self, p: &mut Problems) {
        p.range("detector.pool_size", self.pool_size as u64, 0, 256);
        p.range("detector.intra_threads", self.intra_threads as u64, 1, 256);
        p.range("detector.max_in_flight", self.max_in_flight as u64, 1, 64);
    }
}
