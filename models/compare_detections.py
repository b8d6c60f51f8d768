#!/usr/bin/env python3
"""How far two runs of `kadr detect` agree: boxes matched one to one by class with IoU >= 0.5.

    kadr detect --model A.onnx images... > a.jsonl
    kadr detect --model B.onnx images... > b.jsonl
    python3 models/compare_detections.py a.jsonl b.jsonl

Prints, over all images: boxes in A, in B, matched, recall of A's boxes in B, mean IoU and mean
score difference of the matches. Used to report what int8 or DCT-scaled decoding costs.
"""
import json
import sys


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union <= 0:  # degenerate (zero-area) boxes: equal or not
        return 1.0 if list(a) == list(b) else 0.0
    return inter / union


def main():
    a = [json.loads(l) for l in open(sys.argv[1])]
    b = {d["image"]: d for d in (json.loads(l) for l in open(sys.argv[2]))}
    n_a = n_b = matched = 0
    ious, dscore = [], []
    for img in a:
        da = sorted(img["detections"], key=lambda d: -d["score"])
        db = list(b[img["image"]]["detections"])
        n_a += len(da)
        n_b += len(db)
        for d in da:
            best, best_iou = None, 0.5
            for e in db:
                if e["class_id"] == d["class_id"]:
                    v = iou(d["box"], e["box"])
                    if v >= best_iou:
                        best, best_iou = e, v
            if best is not None:
                db.remove(best)
                matched += 1
                ious.append(best_iou)
                dscore.append(abs(best["score"] - d["score"]))
    mean = lambda v: sum(v) / len(v) if v else 0.0
    print(json.dumps({
        "boxes_a": n_a, "boxes_b": n_b, "matched": matched,
        "recall": round(matched / n_a, 3) if n_a else None,
        "precision": round(matched / n_b, 3) if n_b else None,
        "mean_iou": round(mean(ious), 3), "mean_abs_score_delta": round(mean(dscore), 4),
    }))


if __name__ == "__main__":
    main()
