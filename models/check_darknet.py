#!/usr/bin/env python3
"""Prove a `darknet_to_onnx.py` conversion against OpenCV's own Darknet importer
(`cv2.dnn.readNetFromDarknet`, opencv-python-headless before 5.0).

    .deps/venv/bin/python models/check_darknet.py --cfg yolov3-tiny.cfg \
        --weights yolov3-tiny.weights --onnx models/yolov3-tiny-coco-384x640.onnx \
        images... [--video clip.mp4 --every 10]

Both networks get the same letterboxed tensor per image (the reference YOLOv7 letterbox: bilinear
resize, grey 114 padding, RGB / 255). Then, per image:
- raw outputs: OpenCV's rows are [cx, cy, w, h] relative to the input, objectness, and
  objectness x class probability (zeroed under its region threshold); the ONNX rows are in input
  pixels with the plain class probability. Both are brought to OpenCV's form and compared: the
  largest absolute difference of boxes (in pixels) and of scores;
- detections: the same post-processing on both (confidence = objectness x class > 0.25, NMS per
  class at IoU 0.45): boxes matched one to one by class with IoU >= 0.9 and score within 0.02.
Prints one JSON object; exits 1 when a tolerance is broken.
"""
import argparse
import json
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort

BOX_TOLERANCE_PX = 0.05  # float32 arithmetic in two different orders
SCORE_TOLERANCE = 1e-4
CONF = 0.25
IOU = 0.45


def letterbox(bgr, h, w):
    sh, sw = bgr.shape[:2]
    r = min(h / sh, w / sw)
    nw, nh = int(round(sw * r)), int(round(sh * r))
    img = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (sw, sh) else bgr
    dw, dh = (w - nw) / 2, (h - nh) / 2
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    img = cv2.copyMakeBorder(img, top, h - nh - top, left, w - nw - left, cv2.BORDER_CONSTANT,
                             value=(114, 114, 114))
    return np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))[None].astype(np.float32) / 255.0


def detections(rows):
    """rows: [N, 5+C] as OpenCV gives them (class scores already times objectness)."""
    scores = rows[:, 5:]
    cls = scores.argmax(1)
    conf = scores[np.arange(len(rows)), cls]
    keep = conf > CONF
    boxes, conf, cls = rows[keep, :4], conf[keep], cls[keep]
    corners = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
                        boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2], 1)
    order = np.argsort(-conf, kind="stable")
    kept = []
    for i in order:
        if all(cls[j] != cls[i] or iou(corners[i], corners[j]) <= IOU for j in kept):
            kept.append(i)
    return [(corners[i], float(conf[i]), int(cls[i])) for i in kept]


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched(a, b):
    left, n = list(b), 0
    for box, score, cls in a:
        for k, (box2, score2, cls2) in enumerate(left):
            if cls2 == cls and iou(box, box2) >= 0.9 and abs(score - score2) <= 0.02:
                del left[k]
                n += 1
                break
    return n


def video_frames(path, every):
    cap = cv2.VideoCapture(path)
    frames, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % every == 0:
            frames.append((f"{path}#{i}", frame))
        i += 1
    if not frames:
        # OpenCV's wheel may lack a video backend: FFmpeg decodes instead.
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                             check=True, capture_output=True).stdout
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "stream=width,height", "-of", "csv=p=0", path],
                               check=True, capture_output=True, text=True).stdout
        w, h = (int(v) for v in probe.strip().split(",")[:2])
        all_frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
        frames = [(f"{path}#{i}", f) for i, f in enumerate(all_frames) if i % every == 0]
    return frames


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--video", action="append", default=[])
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("images", nargs="*")
    args = ap.parse_args()

    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    _, _, h, w = session.get_inputs()[0].shape
    net = cv2.dnn.readNetFromDarknet(args.cfg, args.weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    out_names = net.getUnconnectedOutLayersNames()

    inputs = [(p, cv2.imread(p)) for p in args.images]
    for v in args.video:
        inputs += video_frames(v, args.every)
    worst_box = worst_score = 0.0
    boxes_cv = boxes_onnx = both = 0
    classes_seen = {}
    for label, bgr in inputs:
        if bgr is None:
            sys.exit(f"check_darknet: cannot read {label}")
        x = letterbox(bgr, h, w)
        ours = session.run(None, {"images": x})[0][0]
        net.setInput(x)
        theirs = np.concatenate([o.reshape(-1, o.shape[-1]) for o in net.forward(out_names)])
        if theirs.shape != ours.shape:
            sys.exit(f"check_darknet: OpenCV gives {theirs.shape} rows, the ONNX model {ours.shape}")
        # ONNX rows in OpenCV's form: relative boxes, class scores times objectness, zeroed
        # where OpenCV's region layer zeroes them (at or under its threshold; compare where
        # both sides are clearly on one side of it).
        mine = ours.copy()
        mine[:, [0, 2]] /= w
        mine[:, [1, 3]] /= h
        mine[:, 5:] *= mine[:, 4:5]
        box_err = np.abs(mine[:, :4] - theirs[:, :4]) * np.array([w, h, w, h])
        worst_box = max(worst_box, float(box_err.max()))
        # OpenCV zeroes class scores under its threshold: compare those it kept, and check that
        # what it zeroed is small on our side too.
        kept = theirs[:, 5:] > 0
        score_err = np.where(kept, np.abs(mine[:, 5:] - theirs[:, 5:]), 0.0)
        zeroed_ok = np.where(~kept, mine[:, 5:] <= 0.2 + SCORE_TOLERANCE, True)
        worst_score = max(worst_score, float(score_err.max()), float(np.abs(mine[:, 4] - theirs[:, 4]).max()))
        if not zeroed_ok.all():
            worst_score = max(worst_score, 1.0)
        theirs_px = theirs.copy()
        theirs_px[:, [0, 2]] *= w
        theirs_px[:, [1, 3]] *= h
        mine_px = ours.copy()
        mine_px[:, 5:] *= mine_px[:, 4:5]
        a, b = detections(theirs_px), detections(mine_px)
        boxes_cv += len(a)
        boxes_onnx += len(b)
        both += matched(a, b)
        for _, _, c in b:
            classes_seen[c] = classes_seen.get(c, 0) + 1
    report = {
        "images": len(inputs),
        "max_box_diff_px": round(worst_box, 5),
        "max_score_diff": round(worst_score, 7),
        "detections_opencv": boxes_cv,
        "detections_onnx": boxes_onnx,
        "matched": both,
        "classes_seen": {str(k): v for k, v in sorted(classes_seen.items())},
        "opencv": cv2.__version__,
    }
    print(json.dumps(report))
    ok = worst_box <= BOX_TOLERANCE_PX and worst_score <= SCORE_TOLERANCE and both == boxes_cv == boxes_onnx
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
