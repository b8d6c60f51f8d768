//! The YOLO export formats kadr reads, recognised from the graph's inputs, outputs, operators
//! and metadata before a frame is run; and what each producer's own post-processing does with
//! its output, one module per layout. A file that matches none is refused with what to export
//! instead: never misread.
//!
//! | format | output | NMS | boxes mapped back as |
//! | --- | --- | --- | --- |
//! | [`ExportFormat::ObjectnessRows`]: YOLOv7 `--grid`, YOLOv5, Darknet converted | [1,N,5+C] | kadr's, IoU 0.45 | YOLOv7's `scale_coords` (half the spare size, rounded) |
//! | [`ExportFormat::UltralyticsRaw`]: YOLOv5u/v8/v9/11/12/26 default | [1,4+C,N] | kadr's, IoU 0.7 | ultralytics' `scale_boxes` (the integer padding, not rounded) |
//! | [`ExportFormat::Yolov7End2End`]: YOLOv7 `--end2end --max-wh` | [K,7] | in the graph | the reference notebook (half the spare size, rounded) |
//! | [`ExportFormat::UltralyticsEnd2End`]: `nms=True`, YOLO26/YOLOv10 heads | [1,K,6] | in the graph (or none needed) | ultralytics' `scale_boxes` |

pub mod end2end;
pub mod ultralytics;
pub mod yolo_rows;

use super::onnx_graph::{GraphSummary, NmsThresholds, ValueInfo, FLOAT, FLOAT16};

/// The layouts of a model's one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// [1,N,5+C]: cx, cy, w, h, objectness, C class probabilities, decoded in the graph.
    ObjectnessRows,
    /// [1,4+C,N]: per anchor cx, cy, w, h then C class scores; no objectness.
    UltralyticsRaw,
    /// [K,7]: batch index, x0, y0, x1, y1, class, score, after NMS in the graph.
    #[serde(rename = "yolov7_end2end")]
    Yolov7End2End,
    /// [1,K,6]: x1, y1, x2, y2, score, class, after NMS (or from an NMS-free head).
    #[serde(rename = "ultralytics_end2end")]
    UltralyticsEnd2End,
}

impl ExportFormat {
    /// What the format is, for the log and `kadr inspect`.
    pub fn describe(self) -> &'static str {
        match self {
            ExportFormat::ObjectnessRows => {
                "rows [1,N,5+C] with objectness (YOLOv7 --grid, YOLOv5, Darknet converted); NMS by kadr"
            }
            ExportFormat::UltralyticsRaw => {
                "ultralytics [1,4+C,N] without objectness (YOLOv5u, v8, v9, 11, 12, 26); NMS by kadr"
            }
            ExportFormat::Yolov7End2End => "YOLOv7 --end2end [K,7]: NMS inside the graph (ONNX Runtime)",
            ExportFormat::UltralyticsEnd2End => {
                "ultralytics end-to-end [1,K,6] (nms=True, or an NMS-free head); no NMS by kadr"
            }
        }
    }

    /// Whether kadr runs NMS on this output (otherwise the graph did, or needs none).
    pub fn needs_nms(self) -> bool {
        matches!(
            self,
            ExportFormat::ObjectnessRows | ExportFormat::UltralyticsRaw
        )
    }

    /// The producer's own IoU threshold (YOLOv7's `detect.py` 0.45, ultralytics 0.7).
    pub fn default_iou(self) -> f32 {
        match self {
            ExportFormat::ObjectnessRows | ExportFormat::Yolov7End2End => 0.45,
            ExportFormat::UltralyticsRaw | ExportFormat::UltralyticsEnd2End => 0.7,
        }
    }

    /// The producer's offset that keeps classes apart in one NMS pass.
    pub fn class_offset(self) -> f32 {
        match self {
            ExportFormat::UltralyticsRaw | ExportFormat::UltralyticsEnd2End => 7680.0,
            _ => 4096.0,
        }
    }

    /// How the producer maps boxes back to the source image.
    pub fn map_back(self) -> MapBack {
        match self {
            ExportFormat::ObjectnessRows | ExportFormat::Yolov7End2End => MapBack {
                integer_padding: false,
                round: true,
            },
            ExportFormat::UltralyticsRaw | ExportFormat::UltralyticsEnd2End => MapBack {
                integer_padding: true,
                round: false,
            },
        }
    }
}

/// The producer's `scale_coords`: which padding it subtracts, and whether it rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapBack {
    /// Subtract the padding actually applied (ultralytics), not half the spare size (YOLOv7).
    pub integer_padding: bool,
    /// Round the corners to whole pixels (YOLOv7's `detect.py`).
    pub round: bool,
}

/// What a model file is, as far as kadr needs to know before running it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLayout {
    pub format: ExportFormat,
    pub input_name: String,
    pub input_width: u32,
    pub input_height: u32,
    /// Classes the output has; `None` where it does not say (YOLOv7 `--end2end` rows).
    pub classes: Option<usize>,
    /// Class names written in the file (ultralytics' `names`, or our Darknet converter's).
    pub metadata_names: Option<Vec<String>>,
    /// Thresholds of an ONNX `NonMaxSuppression` inside the graph.
    pub nms_inside: Option<NmsThresholds>,
    /// Who made the file, where it says (`ultralytics 8.4.190, YOLOv8n`).
    pub producer: Option<String>,
}

/// Recognise a model's format from its graph, or say why kadr cannot read it.
pub fn recognize(g: &GraphSummary) -> Result<ModelLayout, String> {
    let meta = |k: &str| g.metadata.get(k).map(String::as_str);
    let ultralytics = meta("author").is_some_and(|a| a.contains("Ultralytics"))
        || meta("version").is_some() && meta("stride").is_some() && meta("imgsz").is_some();
    if let Some(op) = g.op_types.iter().find(|op| op.ends_with("_TRT")) {
        return Err(format!(
            "the graph uses TensorRT's {op} plugin, which ONNX Runtime cannot run: this is YOLOv7's \
             `--end2end` export for TensorRT. Export for ONNX Runtime instead: `export.py --grid \
             --end2end --max-wh 640` (NMS inside the graph) or `export.py --grid` (kadr's NMS)"
        ));
    }
    if let Some(task) = meta("task").filter(|t| *t != "detect") {
        return Err(format!(
            "the model's task is {task:?}: kadr reads detection models (task \"detect\")"
        ));
    }
    let [input] = &g.inputs[..] else {
        let names: Vec<&str> = g.inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(format!(
            "expected one input (images [1,3,H,W]), found {}: {names:?}",
            g.inputs.len()
        ));
    };
    let (input_height, input_width) = input_size(input, meta("imgsz"))?;
    let output = match &g.outputs[..] {
        [one] => one,
        [] => return Err("the graph has no output".into()),
        many if many.iter().all(|o| o.shape.len() == 5) => {
            return Err(format!(
                "{} outputs of rank 5 ({}): a YOLOv7 export without --grid, whose boxes are not \
                 decoded; export with `export.py --grid`",
                many.len(),
                shapes(many)
            ))
        }
        many => {
            return Err(format!(
                "{} outputs ({}): kadr reads detection models with one output; export the \
                 detector alone (YOLOv7: `export.py --grid`; ultralytics: `format=\"onnx\"`)",
                many.len(),
                shapes(many)
            ))
        }
    };
    for (what, v) in [("input", input), ("output", output)] {
        match v.elem_type {
            FLOAT => {}
            FLOAT16 => {
                return Err(format!(
                    "{what} {:?} is float16 (a half-precision export): kadr feeds float32; export \
                     again without half precision (ultralytics: half=False; YOLOv7: without --fp16) \
                     and let model.precision choose bf16 where the CPU has it",
                    v.name
                ))
            }
            t => {
                return Err(format!(
                    "{what} {:?} has element type {t} (ONNX TensorProto.DataType); kadr reads float32",
                    v.name
                ))
            }
        }
    }
    let metadata_names = match meta("names") {
        Some(text) => Some(
            super::names::parse_python_dict(text)
                .map_err(|e| format!("the metadata's names cannot be read ({e}): {text:.80}"))?,
        ),
        None => None,
    };
    let has = |op: &str| g.op_types.contains(op);
    let end2end_meta =
        meta("end2end") == Some("True") || meta("args").is_some_and(|a| a.contains("'nms': True"));
    let dims = &output.shape;
    let unreadable = |why: &str| {
        format!(
            "output {:?} has shape {}{why}; kadr reads [1,N,5+C] (YOLOv7 `export.py --grid`, \
             YOLOv5, Darknet), [1,4+C,N] (ultralytics), [K,7] (YOLOv7 `--grid --end2end --max-wh`) \
             and [1,K,6] (ultralytics `nms=True`, YOLO26/YOLOv10)",
            output.name,
            output.shape_text()
        )
    };
    let cells = |strides: &[u32]| -> i64 {
        strides
            .iter()
            .map(|s| i64::from(input_height / s) * i64::from(input_width / s))
            .sum()
    };
    let (format, classes) = match dims[..] {
        [_, Some(7)] => (ExportFormat::Yolov7End2End, None),
        [Some(1) | None, _, Some(6)] if end2end_meta || has("NonMaxSuppression") || has("TopK") => {
            (ExportFormat::UltralyticsEnd2End, None)
        }
        [Some(1) | None, Some(channels), Some(anchors)] if channels < anchors => {
            let anchor_free = anchors == cells(&[8, 16, 32]) || anchors == cells(&[8, 16, 32, 64]);
            if !(ultralytics || anchor_free) || channels < 5 {
                return Err(unreadable(&format!(
                    ": {anchors} is not the anchor count of an ultralytics model at {input_height}x{input_width}"
                )));
            }
            (ExportFormat::UltralyticsRaw, Some(channels as usize - 4))
        }
        [Some(1) | None, Some(channels), None] if ultralytics && channels >= 5 => {
            (ExportFormat::UltralyticsRaw, Some(channels as usize - 4))
        }
        [Some(1) | None, rows, Some(row_len)]
            if row_len >= 6 && rows.is_none_or(|n| n > row_len) =>
        {
            if ultralytics {
                return Err(unreadable(
                    ": rows with objectness, from an ultralytics file",
                ));
            }
            (ExportFormat::ObjectnessRows, Some(row_len as usize - 5))
        }
        _ => return Err(unreadable("")),
    };
    if let (Some(n), Some(names)) = (classes, &metadata_names) {
        if names.len() != n {
            return Err(format!(
                "the metadata names {} classes, the output has {n}",
                names.len()
            ));
        }
    }
    let producer = if ultralytics {
        Some(format!(
            "ultralytics {}{}",
            meta("version").unwrap_or("?"),
            meta("description")
                .map(|d| format!(", {}", d.trim()))
                .unwrap_or_default()
        ))
    } else {
        meta("source").or(meta("producer")).map(str::to_string)
    };
    Ok(ModelLayout {
        format,
        input_name: input.name.clone(),
        input_width,
        input_height,
        classes,
        metadata_names,
        nms_inside: g.nms,
        producer,
    })
}

fn shapes(v: &[ValueInfo]) -> String {
    v.iter()
        .map(|o| format!("{} {}", o.name, o.shape_text()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The input's fixed H and W: from its shape, or from the `imgsz` metadata where the export
/// left them dynamic. Both must be multiples of 32 (the largest YOLO stride).
fn input_size(input: &ValueInfo, imgsz: Option<&str>) -> Result<(u32, u32), String> {
    let from_meta = || -> Option<(u32, u32)> {
        let v: Vec<u32> = imgsz?
            .trim_matches(['[', ']', '(', ')'])
            .split(',')
            .map(|s| s.trim().parse().ok())
            .collect::<Option<_>>()?;
        match v[..] {
            [h, w] => Some((h, w)),
            [s] => Some((s, s)),
            _ => None,
        }
    };
    let (h, w) = match input.shape[..] {
        [Some(1) | None, Some(3), Some(h), Some(w)] => (h as u32, w as u32),
        [Some(1) | None, Some(3), _, _] => from_meta().ok_or_else(|| {
            format!(
                "input {:?} has a dynamic size {} and no imgsz metadata: export with a fixed size \
                 (YOLOv7: --img-size H W without --dynamic; ultralytics: imgsz=(H, W), dynamic=False)",
                input.name,
                input.shape_text()
            )
        })?,
        _ => {
            return Err(format!(
                "input {:?} has shape {}, expected [1,3,H,W]",
                input.name,
                input.shape_text()
            ))
        }
    };
    if h == 0 || w == 0 || h % 32 != 0 || w % 32 != 0 || h > 8192 || w > 8192 {
        return Err(format!(
            "input {:?} is {h}x{w}: H and W must be multiples of 32, at most 8192",
            input.name
        ));
    }
    Ok((h, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx_graph::INT64;

    fn vi(name: &str, elem: i32, shape: &[i64]) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            elem_type: elem,
            shape: shape.iter().map(|&d| (d > 0).then_some(d)).collect(),
        }
    }

    fn graph(outputs: Vec<ValueInfo>, ops: &[&str], meta: &[(&str, &str)]) -> GraphSummary {
        GraphSummary {
            inputs: vec![vi("images", FLOAT, &[1, 3, 384, 640])],
            outputs,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            op_types: ops.iter().map(|s| s.to_string()).collect(),
            nms: None,
        }
    }

    const ULTRALYTICS: [(&str, &str); 4] = [
        ("author", "Ultralytics"),
        ("version", "8.4.190"),
        ("imgsz", "[384, 640]"),
        ("stride", "32"),
    ];

    #[test]
    fn each_format_is_recognised_from_its_output() {
        let rows = recognize(&graph(
            vec![vi("output", FLOAT, &[1, 15120, 85])],
            &["Conv"],
            &[],
        ))
        .unwrap();
        assert_eq!(
            (rows.format, rows.classes),
            (ExportFormat::ObjectnessRows, Some(80))
        );
        assert_eq!((rows.input_height, rows.input_width), (384, 640));
        let darknet = recognize(&graph(vec![vi("output", FLOAT, &[1, -1, 85])], &[], &[])).unwrap();
        assert_eq!(darknet.format, ExportFormat::ObjectnessRows);
        let v8 = recognize(&graph(
            vec![vi("output0", FLOAT, &[1, 84, 5040])],
            &[],
            &ULTRALYTICS,
        ))
        .unwrap();
        assert_eq!(
            (v8.format, v8.classes),
            (ExportFormat::UltralyticsRaw, Some(80))
        );
        // Without metadata, the anchor count at this input size still tells.
        let bare = recognize(&graph(vec![vi("output0", FLOAT, &[1, 8, 5040])], &[], &[])).unwrap();
        assert_eq!(
            (bare.format, bare.classes),
            (ExportFormat::UltralyticsRaw, Some(4))
        );
        let e2e = recognize(&graph(
            vec![vi("output", FLOAT, &[-1, 7])],
            &["NonMaxSuppression"],
            &[],
        ))
        .unwrap();
        assert_eq!(
            (e2e.format, e2e.classes),
            (ExportFormat::Yolov7End2End, None)
        );
        let mut meta = ULTRALYTICS.to_vec();
        meta.push(("end2end", "True"));
        let y26 = recognize(&graph(
            vec![vi("output0", FLOAT, &[1, 300, 6])],
            &["TopK"],
            &meta,
        ))
        .unwrap();
        assert_eq!(y26.format, ExportFormat::UltralyticsEnd2End);
        assert!(y26.producer.unwrap().starts_with("ultralytics 8.4.190"));
        // A one-class YOLOv7 is [1,N,6] too: rows, since nothing in the graph did NMS.
        let one = recognize(&graph(vec![vi("output", FLOAT, &[1, 15120, 6])], &[], &[])).unwrap();
        assert_eq!(
            (one.format, one.classes),
            (ExportFormat::ObjectnessRows, Some(1))
        );
    }

    #[test]
    fn what_kadr_cannot_read_is_refused_with_the_export_to_use() {
        let refused = |g: GraphSummary| recognize(&g).unwrap_err();
        // The misread: [1,84,5040] must not pass as rows of 5,035 classes...
        let e = refused(graph(vec![vi("output0", FLOAT, &[1, 84, 5000])], &[], &[]));
        assert!(
            e.contains("[1,84,5000]") && e.contains("anchor count"),
            "{e}"
        );
        let e = refused(graph(
            vec![
                vi("num_dets", INT64, &[1, 1]),
                vi("det_boxes", FLOAT, &[1, 100, 4]),
            ],
            &["EfficientNMS_TRT"],
            &[],
        ));
        assert!(
            e.contains("EfficientNMS_TRT") && e.contains("--max-wh"),
            "{e}"
        );
        let e = refused(graph(
            vec![
                vi("a", FLOAT, &[1, 3, 48, 80, 85]),
                vi("b", FLOAT, &[1, 3, 24, 40, 85]),
                vi("c", FLOAT, &[1, 3, 12, 20, 85]),
            ],
            &[],
            &[],
        ));
        assert!(e.contains("--grid"), "{e}");
        let e = refused(graph(vec![vi("output", FLOAT, &[1, 10])], &[], &[]));
        assert!(e.contains("[1,10]"), "{e}");
        let e = refused(graph(
            vec![vi("output0", FLOAT16, &[1, 84, 5040])],
            &[],
            &ULTRALYTICS,
        ));
        assert!(e.contains("float16") && e.contains("half=False"), "{e}");
        let mut g = graph(
            vec![vi("output0", FLOAT, &[1, 84, 5040])],
            &[],
            &ULTRALYTICS,
        );
        g.inputs[0].elem_type = FLOAT16;
        assert!(refused(g).contains("float16"));
        let mut g = graph(vec![vi("output", FLOAT, &[1, 15120, 85])], &[], &[]);
        g.inputs.push(vi("extra", FLOAT, &[1]));
        assert!(refused(g).contains("one input"));
        let mut g = graph(vec![vi("output", FLOAT, &[1, 15120, 85])], &[], &[]);
        g.inputs[0].shape = vec![Some(1), Some(3), None, None];
        assert!(refused(g).contains("dynamic size"));
        let mut meta = ULTRALYTICS.to_vec();
        meta.push(("task", "segment"));
        assert!(refused(graph(
            vec![vi("output0", FLOAT, &[1, 116, 5040])],
            &[],
            &meta
        ))
        .contains("segment"));
        let mut meta = ULTRALYTICS.to_vec();
        meta.push(("names", "{0: 'car'}"));
        let e = refused(graph(vec![vi("output0", FLOAT, &[1, 8, 5040])], &[], &meta));
        assert!(e.contains("names 1 classes") && e.contains("has 4"), "{e}");
    }

    #[test]
    fn a_dynamic_input_takes_its_size_from_imgsz() {
        let mut g = graph(vec![vi("output0", FLOAT, &[1, 84, -1])], &[], &ULTRALYTICS);
        g.inputs[0].shape = vec![Some(1), Some(3), None, None];
        let l = recognize(&g).unwrap();
        assert_eq!(
            (l.input_height, l.input_width, l.format),
            (384, 640, ExportFormat::UltralyticsRaw)
        );
    }
}
