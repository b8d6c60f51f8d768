//! `kadr inspect MODEL`: what kadr makes of a model file, before any frame: its export format,
//! input size, classes and where their names come from, the thresholds inside the graph; and
//! that ONNX Runtime loads it. A file kadr cannot read gets the same error as in `kadr node`.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use kadr::model::backend::{ExecutionProvider, Precision};
use kadr::model::{ModelOptions, Yolo};

#[derive(Args)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// Class names, one per line or YAML `names:`, as `model.names_file` gives them.
    #[arg(long)]
    pub names_file: Option<PathBuf>,
    /// Path to libonnxruntime.so (found in .deps/onnxruntime/ by default).
    #[arg(long, env = "KADR_ONNXRUNTIME")]
    pub onnxruntime: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Inspection<'a> {
    model: String,
    format: kadr::model::formats::ExportFormat,
    format_description: &'a str,
    input: [u32; 2],
    classes: Option<usize>,
    class_names: &'a [String],
    names_source: String,
    nms_inside: Option<NmsInside>,
    kadr_nms_iou: Option<f32>,
    producer: Option<&'a str>,
}

#[derive(Serialize)]
struct NmsInside {
    iou: Option<f32>,
    score: Option<f32>,
    max_per_class: Option<i64>,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let mut opts = ModelOptions::exact(args.model.clone());
    opts.onnxruntime_library = args.onnxruntime;
    opts.execution_provider = ExecutionProvider::Cpu;
    opts.precision = Precision::Fp32;
    opts.class_names = super::detect::names_from_file(args.names_file.as_deref())?;
    // Loading the session too: a file is "read" only if ONNX Runtime runs it as well.
    let yolo = Yolo::load(&opts)?;
    let info = yolo.info();
    let report = Inspection {
        model: args.model.display().to_string(),
        format: info.format,
        format_description: info.format.describe(),
        input: [info.input_height, info.input_width],
        classes: info.classes,
        class_names: &info.class_names,
        names_source: info.names_source.to_string(),
        nms_inside: info.nms_inside.map(|n| NmsInside {
            iou: n.iou,
            score: n.score,
            max_per_class: n.max_per_class,
        }),
        kadr_nms_iou: info.format.needs_nms().then(|| info.format.default_iou()),
        producer: info.producer.as_deref(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("model:    {}", report.model);
    println!("format:   {}", report.format_description);
    if let Some(p) = report.producer {
        println!("producer: {p}");
    }
    println!(
        "input:    [1,3,{},{}] float32 (HxW)",
        report.input[0], report.input[1]
    );
    match report.classes {
        Some(n) => println!("classes:  {n}, names from {}", report.names_source),
        None => println!(
            "classes:  not in the output; {} names from {}",
            report.class_names.len(),
            report.names_source
        ),
    }
    let shown: Vec<&str> = report
        .class_names
        .iter()
        .take(12)
        .map(String::as_str)
        .collect();
    let more = report.class_names.len().saturating_sub(shown.len());
    println!(
        "names:    {}{}",
        shown.join(", "),
        if more > 0 {
            format!(", ... ({more} more)")
        } else {
            String::new()
        }
    );
    match (&report.nms_inside, report.kadr_nms_iou) {
        (Some(n), _) => println!(
            "NMS:      inside the graph: IoU {}, score {}, at most {} per class; kadr keeps scores over model.conf_threshold",
            n.iou.map_or("?".into(), |v| v.to_string()),
            n.score.map_or("?".into(), |v| v.to_string()),
            n.max_per_class.map_or("?".into(), |v| v.to_string())
        ),
        (None, Some(iou)) => println!("NMS:      kadr's, IoU {iou} unless model.iou_threshold is set"),
        (None, None) => println!("NMS:      none needed (an NMS-free head); kadr keeps scores over model.conf_threshold"),
    }
    Ok(())
}
