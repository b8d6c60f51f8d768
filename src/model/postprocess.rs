//! From a model's output to detections in source-frame pixels, as each producer's own
//! post-processing computes them (YOLOv7's `non_max_suppression()` and `scale_coords()`,
//! ultralytics' `non_max_suppression()` and `scale_boxes()`): the candidates of each export
//! format come from its module in [`super::formats`], NMS and the mapping back are shared.

use super::formats::{end2end, ultralytics, yolo_rows, ExportFormat};
use super::letterbox::Placement;

/// Thresholds and limits of the post-processing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostprocessConfig {
    pub conf_threshold: f32,
    /// `None`: the producer's own (YOLOv7 0.45, ultralytics 0.7; see [`ExportFormat::default_iou`]).
    pub iou_threshold: Option<f32>,
    /// At most this many detections per frame.
    pub max_detections: usize,
    /// At most this many candidates go into NMS (the highest scoring).
    pub max_nms_candidates: usize,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        Self {
            conf_threshold: 0.25,
            iou_threshold: None,
            max_detections: 300,
            max_nms_candidates: 30_000,
        }
    }
}

/// A detection before class names are attached: corners in source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDetection {
    pub bbox: [f32; 4],
    pub score: f32,
    pub class_id: u32,
}

/// Reusable scratch space, so a frame costs no allocation beyond its result.
#[derive(Debug, Default)]
pub struct Postprocessor {
    candidates: Vec<RawDetection>,
    order: Vec<u32>,
    suppressed: Vec<bool>,
}

impl Postprocessor {
    pub fn new() -> Self {
        Self::default()
    }

    /// `rows` is a YOLOv7 `--grid` output, `row_len` values per row: `[cx, cy, w, h, obj, class
    /// probs...]` in model-input pixels. Appends the kept detections to `out`, best first.
    pub fn run(
        &mut self,
        rows: &[f32],
        row_len: usize,
        cfg: &PostprocessConfig,
        placement: &Placement,
        out: &mut Vec<RawDetection>,
    ) {
        let dims = [1, rows.len() / row_len.max(1), row_len];
        self.run_format(
            ExportFormat::ObjectnessRows,
            rows,
            &dims,
            cfg,
            placement,
            out,
        );
    }

    /// Post-process an output of `format` with shape `dims` as its producer does: candidates,
    /// NMS where the graph did none, boxes mapped back to the source image. Appends the kept
    /// detections to `out`, best first.
    pub fn run_format(
        &mut self,
        format: ExportFormat,
        output: &[f32],
        dims: &[usize],
        cfg: &PostprocessConfig,
        placement: &Placement,
        out: &mut Vec<RawDetection>,
    ) {
        let conf = cfg.conf_threshold;
        self.candidates.clear();
        match (format, dims) {
            (ExportFormat::ObjectnessRows, &[_, _, row_len]) => {
                yolo_rows::candidates(output, row_len, conf, &mut self.candidates)
            }
            (ExportFormat::UltralyticsRaw, &[_, channels, anchors]) => {
                ultralytics::candidates(output, channels, anchors, conf, &mut self.candidates)
            }
            (ExportFormat::Yolov7End2End, _) => {
                end2end::yolov7_candidates(output, conf, &mut self.candidates)
            }
            (ExportFormat::UltralyticsEnd2End, _) => {
                end2end::ultralytics_candidates(output, conf, &mut self.candidates)
            }
            // A shape the format cannot have: the loader checked it; nothing to keep.
            _ => {}
        }
        if format.needs_nms() {
            let iou = cfg.iou_threshold.unwrap_or(format.default_iou());
            self.nms(cfg, iou, format.class_offset());
        } else {
            self.by_score(cfg);
        }
        let p = placement;
        let (w, h) = (p.src_w as f32, p.src_h as f32);
        let map_back = format.map_back();
        let (pad_x, pad_y) = if map_back.integer_padding {
            (p.left as f32, p.top as f32)
        } else {
            (p.pad_x, p.pad_y)
        };
        let finish = |v: f32| {
            if map_back.round {
                v.round_ties_even()
            } else {
                v
            }
        };
        for &i in self.order.iter().take(cfg.max_detections) {
            let c = &self.candidates[i as usize];
            let [x1, y1, x2, y2] = c.bbox;
            let map = |v: f32, pad: f32, max: f32| finish(((v - pad) / p.ratio).clamp(0.0, max));
            out.push(RawDetection {
                bbox: [
                    map(x1, pad_x, w),
                    map(y1, pad_y, h),
                    map(x2, pad_x, w),
                    map(y2, pad_y, h),
                ],
                score: c.score,
                class_id: c.class_id,
            });
        }
    }

    /// `order`: the candidates' indices, best score first, at most `limit`.
    fn best_first(&mut self, limit: usize) {
        let cands = &self.candidates;
        self.order.clear();
        self.order.extend(0..cands.len() as u32);
        self.order
            .sort_by(|&a, &b| cands[b as usize].score.total_cmp(&cands[a as usize].score));
        self.order.truncate(limit);
    }

    /// Candidates the graph already chose: best first, as many as allowed.
    fn by_score(&mut self, cfg: &PostprocessConfig) {
        self.best_first(cfg.max_detections);
    }

    /// Greedy NMS per class by descending confidence; leaves the kept indices in `order`.
    fn nms(&mut self, cfg: &PostprocessConfig, iou_threshold: f32, class_offset: f32) {
        self.best_first(cfg.max_nms_candidates);
        let cands = &self.candidates;
        self.suppressed.clear();
        self.suppressed.resize(self.order.len(), false);
        let shifted = |i: u32| {
            let c = &cands[i as usize];
            let off = c.class_id as f32 * class_offset;
            [
                c.bbox[0] + off,
                c.bbox[1] + off,
                c.bbox[2] + off,
                c.bbox[3] + off,
            ]
        };
        let mut kept = 0;
        for a in 0..self.order.len() {
            if self.suppressed[a] {
                continue;
            }
            let ia = self.order[a];
            self.order[kept] = ia;
            kept += 1;
            if kept == cfg.max_detections {
                break;
            }
            let ba = shifted(ia);
            for b in a + 1..self.order.len() {
                if !self.suppressed[b] && iou(&ba, &shifted(self.order[b])) > iou_threshold {
                    self.suppressed[b] = true;
                }
            }
        }
        self.order.truncate(kept);
    }
}

/// Intersection over union of two corner boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::letterbox::placement;

    fn row(cx: f32, cy: f32, w: f32, h: f32, obj: f32, class: usize, p: f32) -> Vec<f32> {
        let mut r = vec![0.0; 85];
        r[..5].copy_from_slice(&[cx, cy, w, h, obj]);
        r[5 + class] = p;
        r
    }

    fn run(rows: Vec<Vec<f32>>) -> Vec<RawDetection> {
        let flat: Vec<f32> = rows.concat();
        let mut out = Vec::new();
        let p = placement(640, 640, 640, 640);
        Postprocessor::new().run(&flat, 85, &PostprocessConfig::default(), &p, &mut out);
        out
    }

    #[test]
    fn thresholds_objectness_then_confidence() {
        let out = run(vec![
            row(100.0, 100.0, 20.0, 20.0, 0.9, 3, 0.9), // 0.81: kept
            row(300.0, 300.0, 20.0, 20.0, 0.2, 3, 1.0), // objectness too low
            row(500.0, 500.0, 20.0, 20.0, 0.5, 3, 0.4), // 0.2: confidence too low
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 3);
        assert_eq!(out[0].bbox, [90.0, 90.0, 110.0, 110.0]);
        assert!((out[0].score - 0.81).abs() < 1e-6);
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let out = run(vec![
            row(100.0, 100.0, 40.0, 40.0, 0.9, 1, 0.9),
            row(102.0, 100.0, 40.0, 40.0, 0.9, 1, 0.8), // same class, IoU ~0.9: suppressed
            row(102.0, 100.0, 40.0, 40.0, 0.9, 2, 0.7), // other class: kept
            row(300.0, 100.0, 40.0, 40.0, 0.9, 1, 0.6), // same class, far: kept
        ]);
        let classes: Vec<u32> = out.iter().map(|d| d.class_id).collect();
        assert_eq!(classes, vec![1, 2, 1]);
    }

    #[test]
    fn maps_back_through_padding_and_clips() {
        let p = placement(1280, 720, 640, 384); // ratio 0.5, pad_y 12
        let rows = row(630.0, 20.0, 40.0, 40.0, 0.9, 0, 0.9);
        let mut out = Vec::new();
        Postprocessor::new().run(&rows, 85, &PostprocessConfig::default(), &p, &mut out);
        assert_eq!(out[0].bbox, [1220.0, 0.0, 1280.0, 56.0]);
    }

    #[test]
    fn each_producer_maps_boxes_back_its_own_way() {
        // 101x100 into 64x64: 63 rows high, so half a row of padding on top by YOLOv7's
        // reckoning, none by the padding actually applied (ultralytics').
        let p = placement(101, 100, 64, 64);
        assert_eq!((p.top, p.pad_y), (0, 0.5));
        let cfg = PostprocessConfig::default();
        // ultralytics [1,4+C,N]: 1 class, 1 anchor at (32, 20.5), 10x10, score 0.9.
        let mut out = Vec::new();
        let columns = [32.0, 20.5, 10.0, 10.0, 0.9];
        Postprocessor::new().run_format(
            ExportFormat::UltralyticsRaw,
            &columns,
            &[1, 5, 1],
            &cfg,
            &p,
            &mut out,
        );
        let r = p.ratio;
        assert_eq!(
            out[0].bbox,
            [27.0 / r, 15.5 / r, 37.0 / r, 25.5 / r],
            "not rounded, integer padding"
        );
        // The same box as YOLOv7 rows: half-pixel padding, then rounded.
        out.clear();
        let rows = [32.0, 20.5, 10.0, 10.0, 1.0, 0.9];
        Postprocessor::new().run_format(
            ExportFormat::ObjectnessRows,
            &rows,
            &[1, 1, 6],
            &cfg,
            &p,
            &mut out,
        );
        assert_eq!(
            out[0].bbox,
            [
                (27.0 / r).round(),
                (15.0 / r).round(),
                (37.0 / r).round(),
                (25.0 / r).round()
            ]
        );
    }

    #[test]
    fn graphs_with_nms_inside_are_not_suppressed_again_but_sorted_and_capped() {
        let p = placement(640, 640, 640, 640);
        let cfg = PostprocessConfig {
            max_detections: 2,
            ..PostprocessConfig::default()
        };
        // Three overlapping boxes of one class: kadr's NMS would keep one; the graph kept all.
        let rows = [
            0.0, 10.0, 10.0, 50.0, 50.0, 3.0, 0.5, //
            0.0, 11.0, 10.0, 50.0, 50.0, 3.0, 0.9, //
            0.0, 12.0, 10.0, 50.0, 50.0, 3.0, 0.7,
        ];
        let mut out = Vec::new();
        Postprocessor::new().run_format(
            ExportFormat::Yolov7End2End,
            &rows,
            &[3, 7],
            &cfg,
            &p,
            &mut out,
        );
        let scores: Vec<f32> = out.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
    }

    #[test]
    fn iou_basics() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 1.0 / 3.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[5.0, 5.0, 6.0, 6.0]), 0.0);
    }
}
