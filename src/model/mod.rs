//! YOLO on ONNX Runtime: load and validate a model, and run it on images.
//!
//! The model takes one input, float32 [1,3,H,W] (RGB, 0..1, letterboxed), and has one output in
//! one of the export formats of [`formats`] (YOLOv7 `--grid` and `--end2end`, YOLOv5, Darknet
//! converted, ultralytics with or without NMS), recognised from the file itself
//! ([`onnx_graph`]) before ONNX Runtime loads it. Pre- and post-processing live in [`letterbox`]
//! and [`postprocess`] as pure functions; [`Yolo`] owns a session and the buffers that are
//! reused from frame to frame.

pub mod backend;
pub mod bf16;
pub mod coco;
pub mod formats;
pub mod letterbox;
pub mod names;
pub mod onnx_graph;
pub mod postprocess;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use thiserror::Error;

use crate::protocol::Detection;
use crate::runtime::{self, RuntimeError};
use backend::{Arithmetic, CpuInfo, ExecutionProvider, Precision, Provider};
use formats::{ExportFormat, ModelLayout};
use letterbox::{Letterboxer, Placement};
use names::{ClassNames, NamesSource};
use onnx_graph::{GraphSummary, NmsThresholds};
use postprocess::{PostprocessConfig, Postprocessor, RawDetection};

/// Largest image side accepted; a larger one is refused before any pixel is decoded.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest image area ever accepted (a 8K frame is 33 M pixels): the ceiling for
/// `limits.max_pixels`, and the limit for local files given to `kadr detect`.
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;
/// Default largest video frame (4K UHD). Each detector's decode buffer can grow to 3 bytes a
/// pixel of this, so it bounds what one hostile frame header can make a node allocate.
pub const DEFAULT_MAX_PIXELS: u64 = 3840 * 2160;
/// A decode buffer more than twice the current frame's need, and over this, is released rather
/// than kept, so one oversized frame does not pin its memory for good (1080p RGB).
const RETAINED_RGB_BYTES: usize = 1920 * 1080 * 3;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(
        "model file {0} not found; run `scripts/setup.sh` to generate the demo model, or see \
         models/README.md to export the real YOLOv7"
    )]
    NotFound(PathBuf),
    #[error("model {path} could not be loaded by ONNX Runtime: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("model {path} cannot be read by kadr: {reason}")]
    Contract { path: PathBuf, reason: String },
    #[error("model {path}: {reason}")]
    ClassNames { path: PathBuf, reason: String },
    #[error("model.execution_provider and model.precision: {0}")]
    Backend(String),
}

#[derive(Debug, Error)]
pub enum DetectError {
    #[error("image could not be decoded: {0}")]
    Decode(String),
    #[error("image has zero size ({width}x{height})")]
    ZeroSize { width: u32, height: u32 },
    #[error("image of {width}x{height} is over the limit ({MAX_IMAGE_SIDE} a side, {max_pixels} pixels)")]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("inference failed: {0}")]
    Inference(String),
}

impl DetectError {
    /// Stable code for the error channel.
    pub fn code(&self) -> crate::protocol::ErrorCode {
        use crate::protocol::ErrorCode;
        match self {
            DetectError::Decode(_) => ErrorCode::BadImage,
            DetectError::ZeroSize { .. } => ErrorCode::ZeroSize,
            DetectError::TooLarge { .. } => ErrorCode::ImageTooLarge,
            DetectError::Inference(_) => ErrorCode::InferenceFailed,
        }
    }
}

/// How to build a session.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub path: PathBuf,
    pub onnxruntime_library: Option<PathBuf>,
    /// Threads ONNX Runtime uses inside one inference.
    pub intra_threads: usize,
    pub postprocess: PostprocessConfig,
    /// Decode JPEGs straight to the smallest size (1/2, 1/4, 1/8 by libjpeg-turbo's DCT
    /// scaling) that still covers the model input, instead of full size then resizing.
    /// `None`: on unless the reference-exact path (`precision = fp32`) is asked for.
    pub dct_scaling: Option<bool>,
    pub execution_provider: ExecutionProvider,
    pub precision: Precision,
    /// Largest frame (width x height) decoded; a larger one is refused before decoding.
    pub max_pixels: u64,
    /// Class names the operator gave (`model.class_names`, `model.names_file`), with where from.
    pub class_names: Option<(Vec<String>, NamesSource)>,
    /// In bf16, run the convolutions that read the image on weights split in two bf16-exact
    /// halves ([`bf16`]): about 3% more work for scores 3x closer to fp32's.
    pub split_input_conv: bool,
}

impl ModelOptions {
    /// The reference-exact path: fp32 on ONNX Runtime's CPU kernels, full-size decoding.
    pub fn exact(path: PathBuf) -> Self {
        Self {
            path,
            onnxruntime_library: None,
            intra_threads: 1,
            postprocess: PostprocessConfig::default(),
            dct_scaling: Some(false),
            execution_provider: ExecutionProvider::Cpu,
            precision: Precision::Fp32,
            max_pixels: DEFAULT_MAX_PIXELS,
            class_names: None,
            split_input_conv: true,
        }
    }

    fn dct_scaling(&self) -> bool {
        self.dct_scaling
            .unwrap_or(self.precision != Precision::Fp32)
    }
}

/// What runs the model in this process, once the library and provider have loaded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    pub provider: Provider,
    pub precision: Arithmetic,
    /// The ONNX Runtime library loaded.
    pub library: PathBuf,
    pub dct_scaling: bool,
    /// Why this one (the log and `/health` show it).
    pub reason: String,
    /// The CPU it was chosen for.
    pub cpu: String,
}

impl Backend {
    /// Choose the provider and precision (see [`backend`]), load the ONNX Runtime library and
    /// check that the provider registers; `auto` falls back to fp32 on the CPU kernels when
    /// OpenVINO does not load. Deterministic for a process: every detector gets the same answer.
    pub fn resolve(opts: &ModelOptions) -> Result<Backend, ModelError> {
        let cpu = CpuInfo::detect();
        let explicit = opts.onnxruntime_library.clone().or_else(|| {
            std::env::var_os(runtime::ENV_VAR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let plan = backend::plan(
            opts.execution_provider,
            opts.precision,
            &cpu,
            explicit.as_deref(),
            runtime::find_openvino_library().as_deref(),
        )
        .map_err(ModelError::Backend)?;
        let mut chosen = Backend {
            provider: plan.provider,
            precision: plan.precision,
            library: PathBuf::new(),
            dct_scaling: opts.dct_scaling(),
            reason: plan.reason.clone(),
            cpu: cpu.model.clone(),
        };
        let fall_back = |chosen: &mut Backend, why: String| {
            chosen.provider = Provider::Cpu;
            chosen.precision = Arithmetic::Fp32;
            chosen.reason = format!(
                "{}, but {why}: fp32 on ONNX Runtime's CPU kernels",
                plan.reason
            );
        };
        let loaded = match &plan.library {
            Some(lib) => runtime::load(lib),
            None => runtime::environment(None),
        };
        let env = match loaded {
            Ok(env) => env,
            Err(e) if plan.fallback_to_cpu => {
                fall_back(
                    &mut chosen,
                    format!("OpenVINO's ONNX Runtime did not load ({e})"),
                );
                runtime::environment(explicit.as_deref())?
            }
            Err(e) => return Err(e.into()),
        };
        if chosen.provider == Provider::Openvino {
            let registered = Session::builder(env)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    b.with_execution_providers([openvino_provider(
                        chosen.precision,
                        opts.intra_threads,
                    )
                    .build()
                    .error_on_failure()])
                        .map_err(|e| e.to_string())
                });
            match registered {
                Ok(_) => {}
                Err(e) if plan.fallback_to_cpu => {
                    fall_back(&mut chosen, format!("the OpenVINO execution provider is not available ({e})"))
                }
                Err(e) => {
                    return Err(ModelError::Backend(format!(
                        "the OpenVINO execution provider is not available ({e}); it needs ONNX Runtime from the onnxruntime-openvino wheel, which scripts/setup.sh unpacks into .deps/onnxruntime-openvino/"
                    )))
                }
            }
        }
        chosen.library = runtime::loaded_library()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(chosen)
    }
}

fn openvino_provider(precision: Arithmetic, threads: usize) -> ort::ep::OpenVINO {
    use ort::ep::ArbitrarilyConfigurableExecutionProvider;
    ort::ep::OpenVINO::default()
        .with_device_type("CPU")
        .with_num_threads(threads.max(1))
        .with_num_streams(1)
        .with_arbitrary_config(
            "load_config",
            backend::openvino_load_config(precision, threads),
        )
}

/// What the model is: shared by every detector that runs it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// File stem, reported in every detection message.
    pub name: String,
    pub format: ExportFormat,
    pub input_width: u32,
    pub input_height: u32,
    /// Classes the output has (`None`: it does not say, as YOLOv7 `--end2end` rows).
    pub classes: Option<usize>,
    pub class_names: Arc<[String]>,
    pub names_source: NamesSource,
    /// Thresholds of the NMS inside the graph, if it has one.
    pub nms_inside: Option<NmsThresholds>,
    /// Who made the file, where its metadata says.
    pub producer: Option<String>,
}

impl ModelInfo {
    /// Read what a model file is without running it: its format, input size and classes, or
    /// why kadr cannot read it. `configured` names (from the configuration) win over the file's.
    pub fn read(
        path: &Path,
        configured: Option<(Vec<String>, NamesSource)>,
    ) -> Result<ModelInfo, ModelError> {
        if !path.is_file() {
            return Err(ModelError::NotFound(path.to_path_buf()));
        }
        let contract = |reason: String| ModelError::Contract {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| contract(e.to_string()))?;
        let graph = GraphSummary::parse(&bytes).map_err(|e| contract(e.to_string()))?;
        drop(bytes);
        let layout: ModelLayout = formats::recognize(&graph).map_err(contract)?;
        let names = ClassNames::choose(layout.classes, configured, layout.metadata_names.clone())
            .map_err(|reason| ModelError::ClassNames {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(ModelInfo {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
            format: layout.format,
            input_width: layout.input_width,
            input_height: layout.input_height,
            classes: layout.classes,
            class_names: names.names,
            names_source: names.source,
            nms_inside: layout.nms_inside,
            producer: layout.producer,
        })
    }

    /// The name of class `id` (`class{id}` past the names: an end-to-end graph's class ids are
    /// not checked against them before a frame runs).
    pub fn class_name(&self, id: u32) -> String {
        self.class_names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("class{id}"))
    }

    /// One line for the log: format, size, classes and where their names came from.
    pub fn summary(&self) -> String {
        let classes = match self.classes {
            Some(n) => format!("{n} classes"),
            None => format!("{} class names", self.class_names.len()),
        };
        let nms = self
            .nms_inside
            .map(|n| {
                format!(
                    "; NMS inside the graph (IoU {}, score {}, at most {} per class)",
                    n.iou.map_or("?".into(), |v| v.to_string()),
                    n.score.map_or("?".into(), |v| v.to_string()),
                    n.max_per_class.map_or("?".into(), |v| v.to_string())
                )
            })
            .unwrap_or_default();
        format!(
            "{}: {}; input {}x{} (HxW); {classes}, names from {}{nms}",
            self.name,
            self.format.describe(),
            self.input_height,
            self.input_width,
            self.names_source
        )
    }
}

/// Detections for one image, in its own pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetections {
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Detection>,
}

/// One inference session with its reusable buffers. Not shared: each detector owns one.
pub struct Yolo {
    session: Session,
    info: ModelInfo,
    backend: Backend,
    postprocess: PostprocessConfig,
    jpeg: JpegDecoder,
    rgb: Vec<u8>,
    input: Vec<f32>,
    letterbox: Letterboxer,
    post: Postprocessor,
    raw: Vec<RawDetection>,
    times: StepTimes,
    input_conv_split: bool,
}

/// Time spent in each step since the session was loaded (a few `Instant::now()` calls a frame).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    pub frames: u64,
    pub decode: Duration,
    pub letterbox: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

impl StepTimes {
    /// Mean milliseconds per frame of each step: decode, letterbox, inference, postprocess.
    pub fn mean_ms(&self) -> [f64; 4] {
        let n = self.frames.max(1) as f64;
        [
            self.decode,
            self.letterbox,
            self.inference,
            self.postprocess,
        ]
        .map(|d| d.as_secs_f64() * 1000.0 / n)
    }

    pub fn add(&mut self, other: &StepTimes) {
        self.frames += other.frames;
        self.decode += other.decode;
        self.letterbox += other.letterbox;
        self.inference += other.inference;
        self.postprocess += other.postprocess;
    }
}

impl Yolo {
    /// Load the model, check it against the contract, and prepare the buffers.
    pub fn load(opts: &ModelOptions) -> Result<Self, ModelError> {
        let path = &opts.path;
        // Read and recognise the file first: one kadr cannot read is refused before ONNX
        // Runtime runs anything of it.
        let info = ModelInfo::read(path, opts.class_names.clone())?;
        let backend = Backend::resolve(opts)?;
        let env = runtime::environment(None)?; // loaded by `resolve`
        let load = |reason: String| ModelError::Load {
            path: path.clone(),
            reason,
        };
        let session = Session::builder(env)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(opts.intra_threads.max(1))
            .map_err(|e| load(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| load(e.to_string()))?;
        let session = match backend.provider {
            Provider::Cpu => session,
            Provider::Openvino => session
                .with_execution_providers([openvino_provider(
                    backend.precision,
                    opts.intra_threads,
                )
                .build()
                .error_on_failure()])
                .map_err(|e| load(format!("the OpenVINO execution provider failed: {e}")))?,
        };
        let mut builder = session;
        // In bf16, the input convolutions run on split weights (see [`bf16`]); the exact path
        // loads the file as it is.
        let split = if backend.precision == Arithmetic::Bf16 && opts.split_input_conv {
            let bytes = std::fs::read(path).map_err(|e| load(e.to_string()))?;
            bf16::split_input_convolutions(&bytes).map_err(|e| load(e.to_string()))?
        } else {
            None
        };
        let input_conv_split = split.is_some();
        let session = match split {
            Some(bytes) => builder.commit_from_memory(&bytes),
            None => builder.commit_from_file(path),
        }
        .map_err(|e| load(e.to_string()))?;
        check_session(&session, &info, path)?;
        let input = vec![0.0; (3 * info.input_width * info.input_height) as usize];
        Ok(Self {
            session,
            info,
            backend,
            postprocess: opts.postprocess,
            jpeg: JpegDecoder::with_max_pixels(opts.max_pixels).map_err(|e| load(e.to_string()))?,
            rgb: Vec::new(),
            input,
            letterbox: Letterboxer::new(),
            post: Postprocessor::new(),
            raw: Vec::new(),
            times: StepTimes::default(),
            input_conv_split,
        })
    }

    /// Whether this session runs its input convolutions on split weights (bf16 only).
    pub fn input_conv_split(&self) -> bool {
        self.input_conv_split
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Time spent in each step so far.
    pub fn step_times(&self) -> StepTimes {
        self.times
    }

    pub fn reset_step_times(&mut self) {
        self.times = StepTimes::default();
    }

    /// What runs this session.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Decode a JPEG into the reused RGB buffer and detect on it. Boxes are in the JPEG's own
    /// pixels, whatever size it was decoded at.
    pub fn detect_jpeg(&mut self, jpeg: &[u8]) -> Result<ImageDetections, DetectError> {
        let mut rgb = std::mem::take(&mut self.rgb);
        let fit = self
            .backend
            .dct_scaling
            .then_some((self.info.input_width, self.info.input_height));
        let started = Instant::now();
        let decoded = self.jpeg.decode_fitting(jpeg, &mut rgb, fit);
        self.times.decode += started.elapsed();
        let result = decoded.and_then(|d| {
            let mut found = self.detect_rgb(&rgb, d.width, d.height)?;
            if (d.width, d.height) != (d.full_width, d.full_height) {
                let sx = d.full_width as f32 / d.width as f32;
                let sy = d.full_height as f32 / d.height as f32;
                for det in &mut found.detections {
                    let [x1, y1, x2, y2] = det.bbox;
                    det.bbox = [x1 * sx, y1 * sy, x2 * sx, y2 * sy];
                }
                found.width = d.full_width;
                found.height = d.full_height;
            }
            Ok(found)
        });
        self.rgb = rgb;
        result
    }

    /// Detect on packed RGB8 pixels.
    pub fn detect_rgb(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
    ) -> Result<ImageDetections, DetectError> {
        check_size(width, height, self.jpeg.max_pixels)?;
        let started = Instant::now();
        let placement = self.letterbox.run(
            rgb,
            width,
            height,
            self.info.input_width,
            self.info.input_height,
            &mut self.input,
        );
        self.times.letterbox += started.elapsed();
        self.infer_and_postprocess(&placement)?;
        self.times.frames += 1;
        let info = &self.info;
        let detections = self
            .raw
            .iter()
            .map(|d| Detection {
                class_id: d.class_id,
                class: info.class_name(d.class_id),
                score: d.score,
                bbox: d.bbox,
                track_id: None,
            })
            .collect();
        Ok(ImageDetections {
            width,
            height,
            detections,
        })
    }

    /// Run the model on a tensor that is already letterboxed (conformance tests feed the
    /// reference's own input this way) and post-process for `placement`.
    pub fn detect_tensor(
        &mut self,
        tensor: &[f32],
        placement: &Placement,
    ) -> Result<Vec<RawDetection>, DetectError> {
        if tensor.len() != self.input.len() {
            return Err(DetectError::Inference(format!(
                "tensor has {} values, model takes {}",
                tensor.len(),
                self.input.len()
            )));
        }
        self.input.copy_from_slice(tensor);
        self.infer_and_postprocess(placement)?;
        Ok(self.raw.clone())
    }

    fn infer_and_postprocess(&mut self, placement: &Placement) -> Result<(), DetectError> {
        let (w, h) = (
            self.info.input_width as usize,
            self.info.input_height as usize,
        );
        let started = Instant::now();
        let input = TensorRef::from_array_view(([1usize, 3, h, w], &self.input[..]))
            .map_err(|e| DetectError::Inference(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![input])
            .map_err(|e| DetectError::Inference(e.to_string()))?;
        let (shape, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| DetectError::Inference(e.to_string()))?;
        let inferred = Instant::now();
        self.times.inference += inferred - started;
        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        if dims.iter().product::<usize>() != values.len() {
            return Err(DetectError::Inference(format!(
                "the output has shape {dims:?} but {} values",
                values.len()
            )));
        }
        self.raw.clear();
        self.post.run_format(
            self.info.format,
            values,
            &dims,
            &self.postprocess,
            placement,
            &mut self.raw,
        );
        self.times.postprocess += inferred.elapsed();
        Ok(())
    }
}

/// Refuse an empty image, or one over `max_pixels` (or [`MAX_IMAGE_SIDE`] a side).
pub fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), DetectError> {
    if width == 0 || height == 0 {
        return Err(DetectError::ZeroSize { width, height });
    }
    if width > MAX_IMAGE_SIDE
        || height > MAX_IMAGE_SIDE
        || width as u64 * height as u64 > max_pixels
    {
        return Err(DetectError::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    Ok(())
}

/// Check that ONNX Runtime sees the graph as the file described it: one input of the size read.
fn check_session(session: &Session, info: &ModelInfo, path: &Path) -> Result<(), ModelError> {
    let bad = |reason: String| ModelError::Contract {
        path: path.to_path_buf(),
        reason,
    };
    let [input] = session.inputs() else {
        return Err(bad(format!(
            "ONNX Runtime sees {} inputs, expected 1",
            session.inputs().len()
        )));
    };
    if session.outputs().is_empty() {
        return Err(bad("ONNX Runtime sees no output".into()));
    }
    if let Some(shape) = input.dtype().tensor_shape() {
        let (h, w) = (i64::from(info.input_height), i64::from(info.input_width));
        match shape[..] {
            [_, 3, sh, sw] if (sh == h || sh < 0) && (sw == w || sw < 0) => {}
            _ => {
                return Err(bad(format!(
                    "ONNX Runtime sees input shape {:?}, expected [1,3,{h},{w}]",
                    &shape[..]
                )))
            }
        }
    }
    Ok(())
}

/// A reusable JPEG decoder: libjpeg-turbo with its default settings (accurate integer IDCT,
/// smooth chroma upsampling), which is what the reference detector decodes with (through
/// OpenCV), so our input tensors match its own.
pub struct JpegDecoder {
    tj: turbojpeg::Decompressor,
    max_pixels: u64,
}

impl JpegDecoder {
    /// A decoder refusing frames over [`DEFAULT_MAX_PIXELS`].
    pub fn new() -> Result<Self, DetectError> {
        Self::with_max_pixels(DEFAULT_MAX_PIXELS)
    }

    /// A decoder refusing frames over `max_pixels` before decoding any pixel.
    pub fn with_max_pixels(max_pixels: u64) -> Result<Self, DetectError> {
        let tj = turbojpeg::Decompressor::new().map_err(|e| DetectError::Decode(e.to_string()))?;
        Ok(Self { tj, max_pixels })
    }

    /// The largest frame, in pixels, this decoder accepts.
    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
    }

    /// Decode into `rgb` (packed RGB8, resized to fit and reused between frames). Checks the
    /// declared size before decoding any pixel; gray JPEGs come out as RGB.
    pub fn decode_into(
        &mut self,
        jpeg: &[u8],
        rgb: &mut Vec<u8>,
    ) -> Result<(u32, u32), DetectError> {
        self.decode_fitting(jpeg, rgb, None)
            .map(|d| (d.width, d.height))
    }

    /// As [`JpegDecoder::decode_into`]; with `fit = Some((model_w, model_h))`, decode at the
    /// smallest DCT scale (1/8, 1/4, 1/2) whose image still covers what the letterbox would
    /// resize the full image to, so the letterbox scales down little or not at all.
    pub fn decode_fitting(
        &mut self,
        jpeg: &[u8],
        rgb: &mut Vec<u8>,
        fit: Option<(u32, u32)>,
    ) -> Result<Decoded, DetectError> {
        let result = self.try_decode_into(jpeg, rgb, fit);
        if result.is_err() {
            // A TurboJPEG handle keeps state from a failed image and can fail the next good
            // one; start the next image with a fresh handle.
            *self = Self::with_max_pixels(self.max_pixels)?;
        }
        result
    }

    fn try_decode_into(
        &mut self,
        jpeg: &[u8],
        rgb: &mut Vec<u8>,
        fit: Option<(u32, u32)>,
    ) -> Result<Decoded, DetectError> {
        let decode_err = |e: turbojpeg::Error| DetectError::Decode(e.to_string());
        let header = self.tj.read_header(jpeg).map_err(decode_err)?;
        let (w, h) = (header.width as u32, header.height as u32);
        check_size(w, h, self.max_pixels)?;
        let factor = match fit {
            Some((model_w, model_h)) => dct_factor(w, h, model_w, model_h),
            None => turbojpeg::ScalingFactor::ONE,
        };
        self.tj.set_scaling_factor(factor).map_err(decode_err)?;
        let scaled = header.scaled(factor);
        let needed = scaled.width * scaled.height * 3;
        if rgb.capacity() > RETAINED_RGB_BYTES.max(2 * needed) {
            // Left by an oversized frame: give it back rather than hold it for good.
            *rgb = Vec::new();
        }
        rgb.resize(needed, 0);
        let image = turbojpeg::Image {
            pixels: &mut rgb[..],
            width: scaled.width,
            pitch: scaled.width * 3,
            height: scaled.height,
            format: turbojpeg::PixelFormat::RGB,
        };
        self.tj.decompress(jpeg, image).map_err(decode_err)?;
        Ok(Decoded {
            full_width: w,
            full_height: h,
            width: scaled.width as u32,
            height: scaled.height as u32,
        })
    }

    /// Check that the headers decode, without decoding pixels.
    pub fn check_header(&mut self, jpeg: &[u8]) -> Result<(), DetectError> {
        let result = self
            .tj
            .read_header(jpeg)
            .map(|_| ())
            .map_err(|e| DetectError::Decode(e.to_string()));
        if result.is_err() {
            *self = Self::with_max_pixels(self.max_pixels)?;
        }
        result
    }
}

/// A decoded JPEG's size, and the size it declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub full_width: u32,
    pub full_height: u32,
    pub width: u32,
    pub height: u32,
}

/// The smallest DCT scaling factor whose output still covers the letterboxed size.
pub fn dct_factor(w: u32, h: u32, model_w: u32, model_h: u32) -> turbojpeg::ScalingFactor {
    use turbojpeg::ScalingFactor;
    let target = letterbox::placement(w, h, model_w, model_h);
    [
        ScalingFactor::ONE_EIGHTH,
        ScalingFactor::ONE_QUARTER,
        ScalingFactor::ONE_HALF,
    ]
    .into_iter()
    .find(|f| {
        f.scale(w as usize) >= target.new_w as usize && f.scale(h as usize) >= target.new_h as usize
    })
    .unwrap_or(ScalingFactor::ONE)
}

/// Decode one JPEG (a convenience over [`JpegDecoder`] for one-off use).
pub fn decode_jpeg_into(jpeg: &[u8], rgb: &mut Vec<u8>) -> Result<(u32, u32), DetectError> {
    JpegDecoder::with_max_pixels(MAX_IMAGE_PIXELS)?.decode_into(jpeg, rgb)
}

/// Decode any supported still image (JPEG, PNG) to RGB8, for `kadr detect`. JPEGs go through
/// libjpeg-turbo, as frames do on a node.
pub fn decode_image(bytes: &[u8]) -> Result<(Vec<u8>, u32, u32), DetectError> {
    if crate::jpeg::is_jpeg(bytes) {
        let mut rgb = Vec::new();
        let (w, h) = decode_jpeg_into(bytes, &mut rgb)?;
        return Ok((rgb, w, h));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DetectError::Decode(e.to_string()))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| DetectError::Decode(e.to_string()))?;
    check_size(w, h, MAX_IMAGE_PIXELS)?;
    let img = image::load_from_memory(bytes).map_err(|e| DetectError::Decode(e.to_string()))?;
    Ok((img.to_rgb8().into_raw(), w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dct_factor_is_the_smallest_that_covers_the_letterbox() {
        use turbojpeg::ScalingFactor;
        assert_eq!(dct_factor(1280, 720, 640, 384), ScalingFactor::ONE_HALF);
        assert_eq!(dct_factor(1920, 1080, 640, 384), ScalingFactor::ONE_HALF);
        assert_eq!(dct_factor(2560, 1440, 640, 384), ScalingFactor::ONE_QUARTER);
        assert_eq!(dct_factor(640, 480, 640, 640), ScalingFactor::ONE);
    }

    #[test]
    fn gray_jpeg_decodes_to_rgb() {
        let img = image::GrayImage::from_pixel(8, 4, image::Luma([77]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&img)
            .unwrap();
        let mut rgb = Vec::new();
        assert_eq!(decode_jpeg_into(&jpeg, &mut rgb).unwrap(), (8, 4));
        assert_eq!(rgb.len(), 8 * 4 * 3);
        assert!(rgb.iter().all(|&v| v.abs_diff(77) <= 1));
    }

    fn gray_jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(w, h, image::Luma([77]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&img)
            .unwrap();
        jpeg
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_any_buffer_grows() {
        let mut decoder = JpegDecoder::with_max_pixels(640 * 480).unwrap();
        let mut rgb = Vec::new();
        let err = decoder.decode_into(&gray_jpeg(1280, 720), &mut rgb);
        assert!(matches!(err, Err(DetectError::TooLarge { .. })), "{err:?}");
        assert_eq!(rgb.capacity(), 0);
        // The decoder keeps its limit after the failure resets its handle.
        assert_eq!(decoder.max_pixels(), 640 * 480);
        assert!(decoder.decode_into(&gray_jpeg(640, 480), &mut rgb).is_ok());
    }

    #[test]
    fn the_buffer_an_oversized_frame_left_is_given_back() {
        let mut decoder = JpegDecoder::with_max_pixels(MAX_IMAGE_PIXELS).unwrap();
        let mut rgb = Vec::new();
        decoder
            .decode_into(&gray_jpeg(3000, 2000), &mut rgb)
            .unwrap();
        assert!(rgb.capacity() >= 3000 * 2000 * 3);
        decoder
            .decode_into(&gray_jpeg(1280, 720), &mut rgb)
            .unwrap();
        assert_eq!(rgb.len(), 1280 * 720 * 3);
        assert!(rgb.capacity() < 3000 * 2000 * 3, "{}", rgb.capacity());
        // An ordinary frame's buffer is kept and reused: no allocation per frame.
        let kept = rgb.as_ptr();
        decoder
            .decode_into(&gray_jpeg(1280, 720), &mut rgb)
            .unwrap();
        assert_eq!(rgb.as_ptr(), kept);
    }

    #[test]
    fn bad_jpegs_are_errors_not_panics() {
        let mut rgb = Vec::new();
        for bytes in [
            &b""[..],
            b"\xff\xd8",
            b"\xff\xd8\xff\xe0garbage",
            b"not a jpeg at all",
        ] {
            assert!(decode_jpeg_into(bytes, &mut rgb).is_err());
        }
    }

    #[test]
    fn size_limits() {
        assert!(matches!(
            check_size(0, 10, DEFAULT_MAX_PIXELS),
            Err(DetectError::ZeroSize { .. })
        ));
        assert!(matches!(
            check_size(20_000, 10, MAX_IMAGE_PIXELS),
            Err(DetectError::TooLarge { .. })
        ));
        // The hostile header of issue 12: 40 M pixels, under the ceiling, over a video's limit.
        assert!(check_size(16_000, 2_500, MAX_IMAGE_PIXELS).is_ok());
        assert!(matches!(
            check_size(16_000, 2_500, DEFAULT_MAX_PIXELS),
            Err(DetectError::TooLarge { .. })
        ));
        assert!(check_size(3840, 2160, DEFAULT_MAX_PIXELS).is_ok());
    }
}
