#!/usr/bin/env python3
"""int8 post-training quantization of a YOLOv7 ONNX export, calibrated on real video frames.

    .deps/venv/bin/python models/quantize_int8.py \
        --model models/yolov7-tiny-random-384x640.onnx \
        --video .deps/video/bigbuckbunny.mp4 --frames 64 \
        --out models/yolov7-tiny-random-384x640-int8.onnx

Frames are decoded and letterboxed by FFmpeg exactly as kadr feeds the model (scale to fit,
pad with grey 114, RGB, /255), so the activation ranges are those the model will see. The
output is a QDQ model (int8 weights per channel, uint8 activations) that ONNX Runtime's CPU
provider and its OpenVINO provider both run with int8 kernels. The detection head (the last
Concat/Reshape/Mul/Add that decode boxes) is left in float: quantizing box coordinates costs
more accuracy than it saves time.
"""
import argparse
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnx.version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


def model_input(path):
    m = onnx.load(path)
    inp = m.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims[2], dims[3], m


def letterboxed_frames(video, h, w, count):
    """Frames of `video` letterboxed to HxW, as float32 NCHW in [0, 1]."""
    vf = (f"scale={w}:{h}:force_original_aspect_ratio=decrease:flags=bilinear,"
          f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=0x727272")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", video, "-vf", vf,
           "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, check=True, capture_output=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    return [(f.transpose(2, 0, 1)[None].astype(np.float32) / 255.0) for f in frames]


class Frames(CalibrationDataReader):
    def __init__(self, name, tensors):
        self.it = iter([{name: t} for t in tensors])

    def get_next(self):
        return next(self.it, None)


def head_nodes(model):
    """Everything downstream of the detection convolutions (the Convs that feed a Reshape): the
    --grid box decoding. Its Concat mixes coordinates (0..640) with scores (0..1); one int8
    scale for both would round every score to zero."""
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    heads = [n for n in model.graph.node if n.op_type == "Conv"
             and any(c.op_type == "Reshape" for c in consumers.get(n.output[0], []))]
    seen, todo = set(), [o for n in heads for o in n.output]
    while todo:
        for c in consumers.get(todo.pop(), []):
            if c.name not in seen:
                seen.add(c.name)
                todo.extend(c.output)
    return sorted(seen)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    name, h, w, model = model_input(args.model)
    tensors = letterboxed_frames(args.video, h, w, args.frames)
    print(f"calibrating on {len(tensors)} frames of {args.video} at {w}x{h}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        # Per-channel QDQ needs opset 13 (DequantizeLinear's axis); YOLOv7 exports opset 12.
        if model.opset_import[0].version < 13:
            model = onnx.version_converter.convert_version(model, 13)
        # Exclusions go by node name, and the export leaves nodes unnamed.
        for i, n in enumerate(model.graph.node):
            if not n.name:
                n.name = f"{n.op_type}_{i}"
        src = f"{tmp}/named.onnx"
        onnx.save(model, src)
        pre = f"{tmp}/pre.onnx"
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(
            pre,
            args.out,
            Frames(name, tensors),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=head_nodes(onnx.load(pre)),
        )
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
