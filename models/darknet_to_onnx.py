#!/usr/bin/env python3
"""Convert a Darknet YOLOv3/YOLOv3-tiny detector (`.cfg` + `.weights`) to ONNX, in the layout
kadr reads: input `images` float32 [1,3,H,W] (RGB, 0..1, letterboxed), output `output` float32
[1,N,5+C] with the boxes decoded in the graph (cx, cy, w, h in input pixels, then objectness and
the C class probabilities, all after the sigmoid), as the reference YOLOv7 `export.py --grid`.

    .deps/venv/bin/python models/darknet_to_onnx.py --cfg yolov3-tiny.cfg \
        --weights yolov3-tiny.weights --names coco.names --height 384 --width 640 \
        -o models/yolov3-tiny-coco-384x640.onnx

numpy and onnx only. H and W are any multiples of 32. Rows come scale by scale in the order of
the cfg's [yolo] layers, and within a scale cell by cell with the anchors innermost: the order of
OpenCV's Darknet importer, so `check_darknet.py` compares the two outputs row for row.

What Darknet computes, and how it is written here:
- [convolutional]: `pad=1` means a padding of size/2; batch normalisation is folded into the
  convolution (scale / sqrt(var + 1e-6), OpenCV's epsilon for Darknet), `leaky` is LeakyRelu 0.1.
- [maxpool]: Darknet pads size-1 at the end (right and bottom) only, so a 2x2 pool of stride 1
  keeps the size (the 13x13 layer of YOLOv3-tiny).
- [upsample]: nearest neighbour; [route]: concatenation over channels (negative indexes are
  relative); [shortcut] (YOLOv3): element-wise sum.
- [yolo]: x = (col + sigmoid(tx)) * stride, w = exp(tw) * anchor_w, objectness and class scores
  through the sigmoid (Darknet's logistic classes, not a softmax).
The class names go into the model's metadata (`names`, as ultralytics writes them) so kadr names
its classes without a separate file.
"""
import argparse
import hashlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BN_EPSILON = 1e-6
OPSET = 13


def parse_cfg(path):
    """The cfg's sections, as (type, {key: value}) in file order."""
    sections = []
    for raw in open(path, encoding="utf-8"):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"{path}: bad section header {line!r}")
            sections.append((line[1:-1].strip(), {}))
        elif "=" in line:
            if not sections:
                raise ValueError(f"{path}: {line!r} before any section")
            k, v = line.split("=", 1)
            sections[-1][1][k.strip()] = v.strip()
        else:
            raise ValueError(f"{path}: cannot read line {line!r}")
    if not sections or sections[0][0] not in ("net", "network"):
        raise ValueError(f"{path}: the first section must be [net]")
    return sections


class Weights:
    """Darknet's .weights: a header, then float32 parameters read in layer order."""

    def __init__(self, path):
        data = open(path, "rb").read()
        major, minor, _revision = np.frombuffer(data[:12], np.int32)
        # `seen` is 64-bit from format 0.2 on.
        header = 20 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 16
        self.values = np.frombuffer(data[header:], np.float32)
        self.at = 0
        self.md5 = hashlib.md5(data).hexdigest()

    def take(self, n):
        if self.at + n > len(self.values):
            raise ValueError(
                f"the weights file ends early: a layer needs {n} values, {len(self.values) - self.at} are left "
                "(is the .weights file for this .cfg?)")
        out = self.values[self.at:self.at + n]
        self.at += n
        return out

    def check_all_read(self):
        if self.at != len(self.values):
            raise ValueError(
                f"{len(self.values) - self.at} values of the weights file are left over (is it for this .cfg?)")


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint, array):
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), n))
        return n

    def op(self, op_type, inputs, hint=None, **attrs):
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def convert(cfg_path, weights_path, names, height, width):
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        raise ValueError(f"H and W must be positive multiples of 32, not {height}x{width}")
    sections = parse_cfg(cfg_path)
    weights = Weights(weights_path)
    g = Graph()
    x, channels = "images", 3
    size = (height, width)
    outputs = []  # per layer: (tensor, channels, (h, w))
    heads = []  # decoded [1, n, 5+C] per [yolo] layer
    for index, (kind, p) in enumerate(sections[1:]):
        if kind == "convolutional":
            filters, k = int(p["filters"]), int(p.get("size", 1))
            stride = int(p.get("stride", 1))
            pad = k // 2 if int(p.get("pad", 0)) else int(p.get("padding", 0))
            bn = int(p.get("batch_normalize", 0))
            bias = weights.take(filters).copy()
            if bn:
                gamma, mean, var = (weights.take(filters) for _ in range(3))
            w = weights.take(filters * channels * k * k).reshape(filters, channels, k, k).copy()
            if bn:
                scale = gamma / np.sqrt(var + BN_EPSILON)
                w *= scale[:, None, None, None]
                bias = bias - mean * scale  # Darknet's conv bias is the BN shift
            x = g.op("Conv", [x, g.const("w", w.astype(np.float32)), g.const("b", bias.astype(np.float32))],
                     "conv", kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
            act = p.get("activation", "linear")
            if act == "leaky":
                x = g.op("LeakyRelu", [x], "leaky", alpha=0.1)
            elif act != "linear":
                raise ValueError(f"layer {index}: activation {act!r} is not supported")
            channels = filters
            size = ((size[0] + 2 * pad - k) // stride + 1, (size[1] + 2 * pad - k) // stride + 1)
        elif kind == "maxpool":
            k, stride = int(p.get("size", 2)), int(p.get("stride", 2))
            extra = int(p.get("padding", k - 1))
            x = g.op("MaxPool", [x], "maxpool", kernel_shape=[k, k], strides=[stride, stride],
                     pads=[0, 0, extra, extra])
            size = ((size[0] + extra - k) // stride + 1, (size[1] + extra - k) // stride + 1)
        elif kind == "upsample":
            s = int(p.get("stride", 2))
            x = g.op("Resize", [x, "", g.const("scales", np.array([1, 1, s, s], np.float32))], "upsample",
                     mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            size = (size[0] * s, size[1] * s)
        elif kind == "route":
            layers = [int(v) for v in p["layers"].split(",")]
            layers = [i if i >= 0 else index + i for i in layers]
            parts = [outputs[i] for i in layers]
            if len({s for _, _, s in parts}) != 1:
                raise ValueError(f"layer {index}: route of layers of different sizes")
            x = parts[0][0] if len(parts) == 1 else g.op("Concat", [t for t, _, _ in parts], "route", axis=1)
            channels, size = sum(c for _, c, _ in parts), parts[0][2]
        elif kind == "shortcut":
            other = int(p["from"])
            other = other if other >= 0 else index + other
            x = g.op("Add", [x, outputs[other][0]], "shortcut")
            if p.get("activation", "linear") != "linear":
                raise ValueError(f"layer {index}: shortcut activation is not supported")
        elif kind == "yolo":
            heads.append(yolo_head(g, x, p, channels, size, (height, width)))
        else:
            raise ValueError(f"layer {index}: [{kind}] is not supported")
        outputs.append((x, channels, size))
    weights.check_all_read()
    if not heads:
        raise ValueError("the cfg has no [yolo] layer")
    classes = {int(s[1]["classes"]) for s in sections if s[0] == "yolo"}
    if len(classes) != 1:
        raise ValueError("[yolo] layers disagree on the number of classes")
    (nc,) = classes
    if names is not None and len(names) != nc:
        raise ValueError(f"the names file has {len(names)} names, the model {nc} classes")
    g.op("Concat", heads, "output", axis=1)
    g.nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        g.nodes, "darknet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, None, 5 + nc])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="kadr darknet_to_onnx")
    model.ir_version = 8
    meta = {
        "names": "{" + ", ".join(f"{i}: {n!r}" for i, n in enumerate(names or [])) + "}",
        "imgsz": f"[{height}, {width}]",
        "source": f"darknet {cfg_path.split('/')[-1]} + weights md5 {weights.md5}",
    }
    if names is None:
        del meta["names"]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    # Fix the output's row count now that it is known.
    inferred = onnx.shape_inference.infer_shapes(model)
    for o in inferred.graph.output:
        model.graph.output[0].CopyFrom(o)
    return model


def yolo_head(g, x, p, channels, size, net):
    """Decode one [yolo] layer's raw map [1, A*(5+C), h, w] into rows [1, h*w*A, 5+C]."""
    anchors = np.array([float(v) for v in p["anchors"].split(",")], np.float32).reshape(-1, 2)
    mask = [int(v) for v in p.get("mask", ",".join(str(i) for i in range(len(anchors)))).split(",")]
    nc = int(p["classes"])
    if float(p.get("scale_x_y", 1)) != 1.0:
        raise ValueError("[yolo] scale_x_y other than 1 is not supported")
    a, per = len(mask), 5 + nc
    if channels != a * per:
        raise ValueError(f"[yolo] expects {a * per} channels, the layer before has {channels}")
    h, w = size
    stride_y, stride_x = net[0] / h, net[1] / w
    n = h * w * a
    # [1, A, 5+C, h, w] -> [1, h, w, A, 5+C] -> [1, h*w*A, 5+C]: cells in order, anchors inside.
    t = g.op("Reshape", [x, g.const("shape", np.array([1, a, per, h, w], np.int64))], "yolo")
    t = g.op("Transpose", [t], "yolo", perm=[0, 3, 4, 1, 2])
    t = g.op("Reshape", [t, g.const("shape", np.array([1, n, per], np.int64))], "yolo")
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    grid = np.stack([gx, gy], -1)[:, :, None, :].repeat(a, 2).reshape(1, n, 2)
    wh = np.tile(anchors[mask][None, None], (h, w, 1, 1)).reshape(1, n, 2)
    stride = np.array([stride_x, stride_y], np.float32)

    def part(lo, hi):
        return g.op("Slice", [t, g.const("lo", np.array([lo], np.int64)), g.const("hi", np.array([hi], np.int64)),
                              g.const("axis", np.array([2], np.int64))], "slice")

    xy = g.op("Sigmoid", [part(0, 2)])
    xy = g.op("Mul", [g.op("Add", [xy, g.const("grid", grid)]), g.const("stride", stride[None, None])], "xy")
    size_wh = g.op("Mul", [g.op("Exp", [part(2, 4)]), g.const("anchors", wh)], "wh")
    scores = g.op("Sigmoid", [part(4, per)], "scores")
    return g.op("Concat", [xy, size_wh, scores], "rows", axis=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--names", help="class names, one per line (coco.names)")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    names = None
    if args.names:
        names = [line.strip() for line in open(args.names, encoding="utf-8") if line.strip()]
    try:
        model = convert(args.cfg, args.weights, names, args.height, args.width)
    except ValueError as e:
        sys.exit(f"darknet_to_onnx: {e}")
    onnx.save(model, args.output)
    shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    print(f"wrote {args.output}: input [1,3,{args.height},{args.width}], output {shape}", file=sys.stderr)


if __name__ == "__main__":
    main()
