#!/usr/bin/env python3
"""Write a YOLOv7-tiny ONNX model with seeded random weights.

The graph is the one the reference YOLOv7 `export.py --grid` writes for `yolov7-tiny.pt`
(Conv+BN fused, implicit layers folded, detection head decoded in the graph): input `images`
float32 [1,3,H,W], output `output` float32 [1,N,85]. Only the weights are random, so boxes are
meaningless as objects but the model costs exactly what the real one costs to run, and kadr's
whole pipeline (letterbox, decode, NMS, ordering) can be exercised without downloading anything.

    python3 models/generate_random_yolov7_tiny.py --height 384 --width 640 -o models/yolov7-tiny-random-384x640.onnx
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NUM_CLASSES = 80
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
STRIDES = [8, 16, 32]

# yolov7-tiny.yaml, after fusing: (index, source layer(s), kind, args).
# conv args: (out_channels, kernel, stride); "elan" expands to the 4-conv + concat + 1x1 block.
# Sources are absolute layer indices, as in the yaml's resolved graph.


class Builder:
    def __init__(self, rng):
        self.rng = rng
        self.nodes, self.inits = [], []
        self.channels = {}  # tensor name -> channels

    def conv(self, idx, src, cout, k, s, act=True, name=None):
        cin = self.channels[src]
        fan = cin * k * k
        gain = 8.0 if idx == 0 else 1.6  # first layer sees [0,1] pixels, so it needs a larger gain
        w = self.rng.normal(0.0, gain / np.sqrt(fan), (cout, cin, k, k)).astype(np.float32)
        b = self.rng.normal(0.0, 0.6, (cout,)).astype(np.float32)
        wname, bname = f"model.{idx}.conv.weight", f"model.{idx}.conv.bias"
        return self._conv(idx, src, w, b, k, s, wname, bname, act, name)

    def _conv(self, idx, src, w, b, k, s, wname, bname, act, name=None):
        self.inits += [numpy_helper.from_array(w, wname), numpy_helper.from_array(b, bname)]
        out = name or f"/model.{idx}/conv/Conv_output_0"
        p = k // 2
        self.nodes.append(helper.make_node(
            "Conv", [src, wname, bname], [out], dilations=[1, 1], group=1,
            kernel_shape=[k, k], pads=[p, p, p, p], strides=[s, s]))
        if act:
            y = f"/model.{idx}/act/LeakyRelu_output_0"
            self.nodes.append(helper.make_node("LeakyRelu", [out], [y], alpha=0.1))
            out = y
        self.channels[out] = w.shape[0]
        return out

    def maxpool(self, idx, src, k, s):
        out = f"/model.{idx}/m/MaxPool_output_0"
        p = (k - 1) // 2 if s == 1 else 0
        self.nodes.append(helper.make_node(
            "MaxPool", [src], [out], ceil_mode=0, dilations=[1, 1], kernel_shape=[k, k],
            pads=[p, p, p, p], strides=[s, s]))
        self.channels[out] = self.channels[src]
        return out

    def concat(self, idx, srcs):
        out = f"/model.{idx}/Concat_output_0"
        self.nodes.append(helper.make_node("Concat", srcs, [out], axis=1))
        self.channels[out] = sum(self.channels[x] for x in srcs)
        return out

    def const(self, name, array):
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(array)))
        return out

    def upsample(self, idx, src):
        scales = self.const(f"/model.{idx}/Constant", np.array([1, 1, 2, 2], np.float32))
        roi = self.const(f"/model.{idx}/Constant_1", np.array([], np.float32))
        out = f"/model.{idx}/Resize_output_0"
        self.nodes.append(helper.make_node(
            "Resize", [src, roi, scales], [out], coordinate_transformation_mode="asymmetric",
            cubic_coeff_a=-0.75, mode="nearest", nearest_mode="floor"))
        self.channels[out] = self.channels[src]
        return out


def elan(b, first, src, c):
    """The tiny ELAN block: two 1x1 branches, two 3x3 on the second, concat, 1x1."""
    a = b.conv(first, src, c, 1, 1)
    x = b.conv(first + 1, src, c, 1, 1)
    y = b.conv(first + 2, x, c, 3, 1)
    z = b.conv(first + 3, y, c, 3, 1)
    cat = b.concat(first + 4, [z, y, x, a])
    return b.conv(first + 5, cat, 2 * c, 1, 1)


def build(height, width, seed):
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        raise SystemExit("height and width must be positive multiples of 32")
    rng = np.random.default_rng(seed)
    b = Builder(rng)
    b.channels["images"] = 3
    L = {}
    L[0] = b.conv(0, "images", 32, 3, 2)
    L[1] = b.conv(1, L[0], 64, 3, 2)
    L[7] = elan(b, 2, L[1], 32)
    L[8] = b.maxpool(8, L[7], 2, 2)
    L[14] = elan(b, 9, L[8], 64)
    L[15] = b.maxpool(15, L[14], 2, 2)
    L[21] = elan(b, 16, L[15], 128)
    L[22] = b.maxpool(22, L[21], 2, 2)
    L[28] = elan(b, 23, L[22], 256)
    # SPP-CSP (tiny)
    L[29] = b.conv(29, L[28], 256, 1, 1)
    L[30] = b.conv(30, L[28], 256, 1, 1)
    p5 = b.maxpool(31, L[30], 5, 1)
    p9 = b.maxpool(32, L[30], 9, 1)
    p13 = b.maxpool(33, L[30], 13, 1)
    cat = b.concat(34, [p13, p9, p5, L[30]])
    L[35] = b.conv(35, cat, 256, 1, 1)
    cat = b.concat(36, [L[35], L[29]])
    L[37] = b.conv(37, cat, 256, 1, 1)
    # FPN
    L[38] = b.conv(38, L[37], 128, 1, 1)
    up = b.upsample(39, L[38])
    L[40] = b.conv(40, L[21], 128, 1, 1)
    cat = b.concat(41, [L[40], up])
    L[47] = elan(b, 42, cat, 64)
    L[48] = b.conv(48, L[47], 64, 1, 1)
    up = b.upsample(49, L[48])
    L[50] = b.conv(50, L[14], 64, 1, 1)
    cat = b.concat(51, [L[50], up])
    L[57] = elan(b, 52, cat, 32)
    # PAN
    L[58] = b.conv(58, L[57], 128, 3, 2)
    cat = b.concat(59, [L[58], L[47]])
    L[65] = elan(b, 60, cat, 64)
    L[66] = b.conv(66, L[65], 256, 3, 2)
    cat = b.concat(67, [L[66], L[37]])
    L[73] = elan(b, 68, cat, 128)
    L[74] = b.conv(74, L[57], 128, 3, 1)
    L[75] = b.conv(75, L[65], 256, 3, 1)
    L[76] = b.conv(76, L[73], 512, 3, 1)

    # IDetect head, decoded in the graph as `export.py --grid` does.
    no = NUM_CLASSES + 5
    outs = []
    ci = 0
    for i, (src, stride) in enumerate(zip([L[74], L[75], L[76]], STRIDES)):
        ny, nx = height // stride, width // stride
        cin = b.channels[src]
        w = rng.normal(0.0, 0.578 / np.sqrt(cin), (3 * no, cin, 1, 1)).astype(np.float32)
        bias = np.zeros((3, no), np.float32)
        bias[:, :4] = rng.normal(0.0, 0.05, (3, 4))
        bias[:, 4] = -4.8 + rng.normal(0.0, 0.2, 3)  # objectness: a few cells pass 0.25
        bias[:, 5:] = rng.normal(0.87, 1.43, (3, NUM_CLASSES))
        conv = b._conv(77, src, w, bias.reshape(-1), 1, 1, f"model.77.m.{i}.weight",
                       f"model.77.m.{i}.bias", act=False, name=f"/model.77/m.{i}/Conv_output_0")
        sfx = lambda k: f"_{k}" if k else ""
        shape = b.const(f"/model.77/Constant{sfx(ci)}", np.array([1, 3, no, ny, nx], np.int64)); ci += 1
        r = f"/model.77/Reshape{sfx(2 * i)}_output_0"
        b.nodes.append(helper.make_node("Reshape", [conv, shape], [r]))
        t = f"/model.77/Transpose{sfx(i)}_output_0"
        b.nodes.append(helper.make_node("Transpose", [r], [t], perm=[0, 1, 3, 4, 2]))
        s = f"/model.77/Sigmoid{sfx(i)}_output_0"
        b.nodes.append(helper.make_node("Sigmoid", [t], [s]))
        sp = [f"/model.77/Split{sfx(i)}_output_{k}" for k in range(3)]
        b.nodes.append(helper.make_node("Split", [s], sp, axis=4, split=[2, 2, no - 4]))
        two_stride = b.const(f"/model.77/Constant_{ci}", np.array(2.0 * stride, np.float32)); ci += 1
        m = f"/model.77/Mul{sfx(2 * i)}_output_0"
        b.nodes.append(helper.make_node("Mul", [sp[0], two_stride], [m]))
        yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = ((np.stack((xv, yv), 2) - 0.5) * stride).reshape(1, 1, ny, nx, 2).astype(np.float32)
        g = b.const(f"/model.77/Constant_{ci}", grid); ci += 1
        xy = f"/model.77/Add{sfx(i)}_output_0"
        b.nodes.append(helper.make_node("Add", [m, g], [xy]))
        two = b.const(f"/model.77/Constant_{ci}", np.array(2.0, np.float32)); ci += 1
        p = f"/model.77/Pow{sfx(i)}_output_0"
        b.nodes.append(helper.make_node("Pow", [sp[1], two], [p]))
        anchor = (np.array(ANCHORS[i], np.float32).reshape(1, 3, 1, 1, 2) * 4.0).astype(np.float32)
        a = b.const(f"/model.77/Constant_{ci}", anchor); ci += 1
        wh = f"/model.77/Mul{sfx(2 * i + 1)}_output_0"
        b.nodes.append(helper.make_node("Mul", [p, a], [wh]))
        c = f"/model.77/Concat{sfx(i)}_output_0"
        b.nodes.append(helper.make_node("Concat", [xy, wh, sp[2]], [c], axis=4))
        flat = b.const(f"/model.77/Constant_{ci}", np.array([1, -1, no], np.int64)); ci += 1
        o = f"/model.77/Reshape_{2 * i + 1}_output_0"
        b.nodes.append(helper.make_node("Reshape", [c, flat], [o]))
        outs.append(o)
    b.nodes.append(helper.make_node("Concat", outs, ["output"], axis=1))

    n = sum(3 * (height // s) * (width // s) for s in STRIDES)
    graph = helper.make_graph(
        b.nodes, "main_graph",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n, no])],
        b.inits)
    model = helper.make_model(graph, producer_name="kadr-random-yolov7-tiny",
                              opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    calibrate_head(model, height, width, rng)
    return model


def calibration_image(height, width, rng):
    """A deterministic picture-like input: smooth gradients, flat blocks and a little noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 37.0) * np.cos(yy / 23.0)])
    for _ in range(12):
        y0, x0 = rng.integers(0, height - 32), rng.integers(0, width - 32)
        img[:, y0:y0 + rng.integers(16, height // 2), x0:x0 + rng.integers(16, width // 2)] = rng.random((3, 1, 1))
    img += rng.normal(0.0, 0.03, img.shape)
    return np.clip(img, 0.0, 1.0)[None].astype(np.float32)


def calibrate_head(model, height, width, rng):
    """Rescale the head so its logits have the spread of a trained YOLOv7's on a picture.

    Random convolutions let activations drift layer by layer; without this every cell would
    claim an object. Like the BatchNorm statistics of the fixture models, the head is set from
    statistics measured on an input: box logits near 0, objectness so that a few cells per frame
    pass 0.25, class logits spread like a real head's.
    """
    import onnxruntime as ort

    head = [f"/model.77/m.{i}/Conv_output_0" for i in range(3)]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend([helper.make_tensor_value_info(h, TensorProto.FLOAT, None) for h in head])
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(head, {"images": calibration_image(height, width, rng)})
    inits = {t.name: t for t in model.graph.initializer}
    no = NUM_CLASSES + 5
    for i, z in enumerate(logits):
        z = z[0].reshape(3 * no, -1)
        mean, std = z.mean(1), z.std(1) + 1e-6
        target_mean = np.zeros(3 * no, np.float32)
        target_std = np.full(3 * no, 0.4, np.float32)
        for a in range(3):
            target_mean[a * no + 4], target_std[a * no + 4] = -3.6, 0.9  # objectness
            target_mean[a * no + 5:(a + 1) * no] = rng.normal(1.5, 0.8, NUM_CLASSES)
            target_std[a * no + 5:(a + 1) * no] = 0.6
        scale = target_std / std
        w = numpy_helper.to_array(inits[f"model.77.m.{i}.weight"]) * scale[:, None, None, None]
        b = (numpy_helper.to_array(inits[f"model.77.m.{i}.bias"]) - mean) * scale + target_mean
        inits[f"model.77.m.{i}.weight"].CopyFrom(numpy_helper.from_array(w.astype(np.float32), f"model.77.m.{i}.weight"))
        inits[f"model.77.m.{i}.bias"].CopyFrom(numpy_helper.from_array(b.astype(np.float32), f"model.77.m.{i}.bias"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    model = build(args.height, args.width, args.seed)
    onnx.save(model, args.output)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"wrote {args.output}: yolov7-tiny {args.height}x{args.width}, {params} parameters, seed {args.seed}")


if __name__ == "__main__":
    main()
