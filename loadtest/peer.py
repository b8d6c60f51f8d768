#!/usr/bin/env python3
"""The detector a user would write instead of kadr, measured on the same frames and model.

One Python process: cv2.imdecode -> letterbox (cv2.resize INTER_LINEAR, gray 114 padding) ->
OpenVINO (or ONNX Runtime) with its own defaults -> confidence filter and NMS (cv2.dnn), one
frame at a time, as the YOLOv7 examples do. `--requests 2` is the stronger variant that
OpenVINO's docs recommend for throughput: an AsyncInferQueue with two requests in flight.

    loadtest/peer.py --runtime openvino --model models/yolov7-tiny-random-384x640.onnx \
        --frames DIR_OF_JPEGS --seconds 20 --json peer.json

Frames: a folder of 1280x720 JPEGs (loadtest/run.sh encodes them from the demo clip with
FFmpeg at quality 3, as kadr-loadtest does). Prints frames per second, whole frame (decode to
boxes) and inference only.
"""
import argparse
import glob
import json
import os
import sys
import time

import cv2
import numpy as np


def letterbox(img, new_h, new_w):
    h, w = img.shape[:2]
    r = min(new_h / h, new_w / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = (new_w - nw) / 2, (new_h - nh) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)), r, (dw, dh)


def preprocess(jpeg, h, w):
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    boxed, r, pad = letterbox(img, h, w)
    blob = boxed[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(blob), r, pad


def postprocess(out, r, pad, conf=0.25, iou=0.45):
    rows = out[0]
    rows = rows[rows[:, 4] > conf]
    if not len(rows):
        return []
    scores = rows[:, 5:] * rows[:, 4:5]
    cls = scores.argmax(1)
    score = scores[np.arange(len(rows)), cls]
    keep = score > conf
    rows, cls, score = rows[keep], cls[keep], score[keep]
    xywh = rows[:, :4].copy()
    xywh[:, 0] -= xywh[:, 2] / 2
    xywh[:, 1] -= xywh[:, 3] / 2
    # Per-class NMS by offsetting boxes, as the reference does.
    shifted = xywh.copy()
    shifted[:, :2] += cls[:, None] * 4096
    idx = cv2.dnn.NMSBoxes(shifted.tolist(), score.tolist(), conf, iou)
    out = []
    for i in np.array(idx).reshape(-1)[:300]:
        x, y, bw, bh = xywh[i]
        x1, y1 = (x - pad[0]) / r, (y - pad[1]) / r
        out.append([x1, y1, x1 + bw / r, y1 + bh / r, float(score[i]), int(cls[i])])
    return out


def openvino_runner(model, requests):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(model, "CPU")  # OpenVINO's defaults (bf16 where AMX is)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    shape = compiled.input(0).shape
    if requests == 1:
        req = compiled.create_infer_request()

        def infer(blob):
            return req.infer({0: blob})[compiled.output(0)]

        return infer, shape, f"OpenVINO {ov.__version__.split('-')[0]}, {precision}, 1 request", None
    queue = ov.AsyncInferQueue(compiled, requests)
    return None, shape, f"OpenVINO {ov.__version__.split('-')[0]}, {precision}, {requests} async requests", queue


def onnxruntime_runner(model):
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])  # its defaults
    name = sess.get_inputs()[0].name
    shape = sess.get_inputs()[0].shape

    def infer(blob):
        return sess.run(None, {name: blob})[0]

    return infer, shape, f"ONNX Runtime {ort.__version__}, CPU EP defaults", None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtime", choices=["openvino", "onnxruntime"], default="openvino")
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", required=True, help="folder of JPEG frames")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--requests", type=int, default=1, help="OpenVINO async requests in flight")
    ap.add_argument("--json")
    ap.add_argument("--label", default="")
    a = ap.parse_args()

    files = sorted(glob.glob(os.path.join(a.frames, "*.jpg")))
    if not files:
        sys.exit(f"no JPEG frames in {a.frames}")
    jpegs = [open(f, "rb").read() for f in files]
    if a.runtime == "openvino":
        infer, shape, what, queue = openvino_runner(a.model, a.requests)
    else:
        infer, shape, what, queue = onnxruntime_runner(a.model)
    h, w = int(shape[2]), int(shape[3])

    # Warm up, then whole frames for `seconds`, then inference only for `seconds`.
    blob0, r0, pad0 = preprocess(jpegs[0], h, w)
    if queue is None:
        for _ in range(5):
            infer(blob0)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            blob, r, pad = preprocess(jpegs[n % len(jpegs)], h, w)
            postprocess(infer(blob), r, pad)
            n += 1
        frame_fps = n / (time.perf_counter() - t0)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            postprocess(infer(blob0), r0, pad0)
            n += 1
        infer_fps = n / (time.perf_counter() - t0)
    else:
        def done(req, meta):
            postprocess(req.get_output_tensor(0).data, *meta)

        queue.set_callback(done)
        for _ in range(5):
            queue.start_async({0: blob0}, (r0, pad0))
        queue.wait_all()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            blob, r, pad = preprocess(jpegs[n % len(jpegs)], h, w)
            queue.start_async({0: blob}, (r, pad))
            n += 1
        queue.wait_all()
        frame_fps = n / (time.perf_counter() - t0)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            queue.start_async({0: blob0}, (r0, pad0))
            n += 1
        queue.wait_all()
        infer_fps = n / (time.perf_counter() - t0)

    report = {
        "label": a.label or what,
        "runtime": what,
        "input": f"{w}x{h}",
        "frame_fps": round(frame_fps, 1),
        "inference_fps": round(infer_fps, 1),
    }
    print(f"peer: {what}: whole frame {frame_fps:.1f} fps, inference (+NMS) {infer_fps:.1f} fps")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
