//! [1,N,5+C] rows with objectness (YOLOv7 `export.py --grid`, YOLOv5's own export, Darknet
//! models converted by `models/darknet_to_onnx.py`), as the reference `non_max_suppression()`
//! selects its candidates.

use crate::model::postprocess::RawDetection;

/// Rows whose objectness and best class confidence both pass `conf`, as corner boxes in input
/// pixels. Confidence = objectness x class probability; the best class wins (first on ties).
pub fn candidates(rows: &[f32], row_len: usize, conf: f32, out: &mut Vec<RawDetection>) {
    if row_len < 6 {
        return;
    }
    for row in rows.chunks_exact(row_len) {
        let obj = row[4];
        if obj <= conf {
            continue;
        }
        let (mut best, mut class_id) = (f32::NEG_INFINITY, 0u32);
        for (j, &p) in row[5..].iter().enumerate() {
            let s = p * obj;
            if s > best {
                best = s;
                class_id = j as u32;
            }
        }
        if best <= conf {
            continue;
        }
        let (cx, cy, bw, bh) = (row[0], row[1], row[2], row[3]);
        out.push(RawDetection {
            bbox: [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
            score: best,
            class_id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectness_then_confidence() {
        let mut rows = vec![0.0; 3 * 7];
        rows[..7].copy_from_slice(&[100.0, 100.0, 20.0, 20.0, 0.9, 0.1, 0.9]); // 0.81, class 1
        rows[7..14].copy_from_slice(&[1.0, 1.0, 2.0, 2.0, 0.2, 1.0, 1.0]); // objectness too low
        rows[14..].copy_from_slice(&[1.0, 1.0, 2.0, 2.0, 0.5, 0.4, 0.3]); // 0.2: too low
        let mut out = Vec::new();
        candidates(&rows, 7, 0.25, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].class_id, out[0].bbox),
            (1, [90.0, 90.0, 110.0, 110.0])
        );
    }
}
