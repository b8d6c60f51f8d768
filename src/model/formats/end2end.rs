//! Outputs whose NMS ran inside the graph (or whose head needs none): kadr only keeps the rows
//! over its confidence threshold, as the producers' own predictors do.
//! - YOLOv7 `export.py --grid --end2end --max-wh N`: [K,7] rows `[batch, x0, y0, x1, y1, class,
//!   score]`, K dynamic; the graph's own thresholds already applied (`kadr inspect` shows them).
//! - ultralytics `nms=True`, and the NMS-free YOLO26/YOLOv10 heads: [1,K,6] rows `[x1, y1, x2,
//!   y2, score, class]`, padded with zero rows.

use crate::model::postprocess::RawDetection;

/// YOLOv7 `--end2end` rows of batch 0 with a score over `conf`.
pub fn yolov7_candidates(rows: &[f32], conf: f32, out: &mut Vec<RawDetection>) {
    for r in rows.chunks_exact(7) {
        if r[0] == 0.0 && r[6] > conf && r[5] >= 0.0 && r[5].is_finite() {
            out.push(RawDetection {
                bbox: [r[1], r[2], r[3], r[4]],
                score: r[6],
                class_id: r[5] as u32,
            });
        }
    }
}

/// ultralytics end-to-end rows with a score over `conf`.
pub fn ultralytics_candidates(rows: &[f32], conf: f32, out: &mut Vec<RawDetection>) {
    for r in rows.chunks_exact(6) {
        if r[4] > conf && r[5] >= 0.0 && r[5].is_finite() {
            out.push(RawDetection {
                bbox: [r[0], r[1], r[2], r[3]],
                score: r[4],
                class_id: r[5] as u32,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_over_the_threshold_in_each_layout() {
        let v7 = [
            0.0, 1.0, 2.0, 3.0, 4.0, 37.0, 0.41, //
            0.0, 1.0, 2.0, 3.0, 4.0, 2.0, 0.2, // under 0.25
            1.0, 1.0, 2.0, 3.0, 4.0, 2.0, 0.9, // another batch entry
        ];
        let mut out = Vec::new();
        yolov7_candidates(&v7, 0.25, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].bbox, out[0].class_id), ([1.0, 2.0, 3.0, 4.0], 37));
        let ul = [
            5.0, 6.0, 7.0, 8.0, 0.7, 69.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, // padding
        ];
        out.clear();
        ultralytics_candidates(&ul, 0.25, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].bbox, out[0].class_id, out[0].score),
            ([5.0, 6.0, 7.0, 8.0], 69, 0.7)
        );
    }
}
