//! [1,4+C,N]: ultralytics' default detection export (YOLOv5u, v8, v9, 11, 12, 26 with
//! `nms=False` on a one-to-many head). Per anchor, in columns: cx, cy, w, h in input pixels, then
//! C class scores already through the sigmoid; no objectness. Candidates as ultralytics'
//! `non_max_suppression()` takes them: the best class score over `conf`.

use crate::model::postprocess::RawDetection;

/// Anchors whose best class score is over `conf`, as corner boxes in input pixels.
pub fn candidates(
    output: &[f32],
    channels: usize,
    anchors: usize,
    conf: f32,
    out: &mut Vec<RawDetection>,
) {
    if channels < 5 || output.len() < channels * anchors {
        return;
    }
    let column = |c: usize| &output[c * anchors..(c + 1) * anchors];
    let (cx, cy, w, h) = (column(0), column(1), column(2), column(3));
    // Best class per anchor, class by class so memory is read in order.
    let mut best: Vec<(f32, u32)> = column(4).iter().map(|&s| (s, 0)).collect();
    for c in 1..channels - 4 {
        for (b, &s) in best.iter_mut().zip(column(4 + c)) {
            if s > b.0 {
                *b = (s, c as u32);
            }
        }
    }
    for (i, &(score, class_id)) in best.iter().enumerate() {
        if score > conf {
            let (dw, dh) = (w[i] / 2.0, h[i] / 2.0);
            out.push(RawDetection {
                bbox: [cx[i] - dw, cy[i] - dh, cx[i] + dw, cy[i] + dh],
                score,
                class_id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_not_rows_and_no_objectness() {
        // 2 classes, 3 anchors: channels cx, cy, w, h, class0, class1.
        #[rustfmt::skip]
        let output = [
            10.0, 50.0, 90.0, // cx
            10.0, 50.0, 90.0, // cy
            4.0, 8.0, 2.0,    // w
            2.0, 8.0, 2.0,    // h
            0.9, 0.1, 0.2,    // class 0
            0.3, 0.6, 0.25,   // class 1
        ];
        let mut out = Vec::new();
        candidates(&output, 6, 3, 0.25, &mut out);
        assert_eq!(out.len(), 2, "the third anchor's best is 0.25, not over it");
        assert_eq!(
            (out[0].class_id, out[0].score, out[0].bbox),
            (0, 0.9, [8.0, 9.0, 12.0, 11.0])
        );
        assert_eq!(
            (out[1].class_id, out[1].score, out[1].bbox),
            (1, 0.6, [46.0, 46.0, 54.0, 54.0])
        );
    }
}
