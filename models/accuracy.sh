#!/usr/bin/env bash
# What each fast path costs against the reference-exact fp32 path, on real images: every frame
# of the two demo clips (bigbuckbunny 1280x720, bikes 640x272) and the fixture photos
# (../shared/fixtures/yolov7/*.jpg, if present). Prints one markdown row per variant: boxes
# matched one to one by class with IoU >= 0.5 (models/compare_detections.py), recall and
# precision against the exact path, mean IoU and score change of the matches, and the speed of
# each (whole frames per second: decode, letterbox, inference, NMS, with the node's pool, from
# `kadr bench-model` on 1280x720 frames).
#
#   models/accuracy.sh [MODEL]   # default: the trained detector (models/yolov3-tiny-coco-384x640.onnx)
#
# An int8 model is made from MODEL by quantize_int8.py (calibrated on 64 frames of bigbuckbunny).
# KADR_ACCURACY_EVERY=N takes every Nth frame instead of every frame; KADR_ACCURACY_SECONDS sets
# each speed measurement (default 8 s).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/yolov3-tiny-coco-384x640.onnx}
EVERY=${KADR_ACCURACY_EVERY:-1}
SECONDS_EACH=${KADR_ACCURACY_SECONDS:-8}
KADR=target/release/kadr
PY=.deps/venv/bin/python
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The int8 model beside a model of ours (loadtest/run.sh makes the same one for the demo
# model); for any other model, a temporary one: never write next to a model we do not own.
case "$MODEL" in
    models/yolov7-tiny-random-384x640.onnx | models/yolov3-tiny-coco-384x640.onnx) INT8=${MODEL%.onnx}-int8.onnx ;;
    *) INT8=$WORK/int8.onnx ;;
esac
mkdir -p "$WORK/images"
for clip in bigbuckbunny bikes; do
    ffmpeg -loglevel error -i ".deps/video/$clip.mp4" -vf "select=not(mod(n\,$EVERY))" -vsync vfr -q:v 2 "$WORK/images/$clip-%03d.jpg"
done
if [ -d ../shared/fixtures/yolov7 ]; then cp ../shared/fixtures/yolov7/*.jpg "$WORK/images/"; fi
[ -e "$INT8" ] || "$PY" models/quantize_int8.py --model "$MODEL" --video .deps/video/bigbuckbunny.mp4 --frames 64 --out "$INT8" >&2
IMAGES=("$WORK"/images/*.jpg)
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; ${#IMAGES[@]} images; reference: $MODEL, --precision fp32 (the exact path)" >&2

detect() { local out=$1 model=$2; shift 2; "$KADR" detect --model "$model" "$@" "${IMAGES[@]}" 2>/dev/null >"$WORK/$out.jsonl"; }
# Whole 1280x720 frames per second with the node's settings (cluster.toml, pool of one per core).
speed() {
    local model=$1; shift
    local sets=(--set "model.path=\"$PWD/$model\"")
    for s in "$@"; do sets+=(--set "$s"); done
    "$KADR" bench-model --config cluster.toml "${sets[@]}" --seconds "$SECONDS_EACH" --json "$WORK/speed.json" >/dev/null 2>&1
    "$PY" -c "import json, sys; print('%.1f' % json.load(open(sys.argv[1]))['frame_fps'])" "$WORK/speed.json"
}
detect fp32 "$MODEL" --precision fp32
echo "| variant | exact-path boxes | its boxes | matched | recall / precision | mean IoU | mean score change | frames/s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
row() {
    local label=$1 name=$2 fps=$3
    "$PY" - "$label" "$WORK/fp32.jsonl" "$WORK/$name.jsonl" "$fps" <<'PY'
import json, subprocess, sys
label, a, b, fps = sys.argv[1:]
r = json.loads(subprocess.check_output([sys.executable, "models/compare_detections.py", a, b]))
print(f"| {label} | {r['boxes_a']} | {r['boxes_b']} | {r['matched']} | {r['recall']:.3f} / {r['precision']:.3f} | {r['mean_iou']:.3f} | {r['mean_abs_score_delta']:.4f} | {fps} |")
PY
}
row "fp32, CPU kernels, full-size decoding (the exact path)" fp32 "$(speed "$MODEL" 'model.precision="fp32"' 'model.execution_provider="cpu"' model.dct_scaling=false)"
detect ov-fp32 "$MODEL" --execution-provider openvino --precision fp32 --dct-scaling false
row "fp32, OpenVINO" ov-fp32 "$(speed "$MODEL" 'model.precision="fp32"' 'model.execution_provider="openvino"' model.dct_scaling=false)"
detect dct "$MODEL" --precision fp32 --dct-scaling true
row "fp32, DCT-scaled decoding" dct "$(speed "$MODEL" 'model.precision="fp32"' 'model.execution_provider="cpu"' model.dct_scaling=true)"
detect bf16-plain "$MODEL" --precision bf16 --dct-scaling false --split-input-conv false
row "bf16 (OpenVINO), input convolutions not split, full-size decoding" bf16-plain "$(speed "$MODEL" 'model.precision="bf16"' model.dct_scaling=false model.split_input_conv=false)"
detect bf16-plain-dct "$MODEL" --precision bf16 --dct-scaling true --split-input-conv false
row "bf16 (OpenVINO), input convolutions not split, DCT-scaled decoding" bf16-plain-dct "$(speed "$MODEL" 'model.precision="bf16"' model.dct_scaling=true model.split_input_conv=false)"
detect bf16 "$MODEL" --precision bf16 --dct-scaling false
row "bf16 (OpenVINO), full-size decoding" bf16 "$(speed "$MODEL" 'model.precision="bf16"' model.dct_scaling=false)"
detect bf16-dct "$MODEL" --precision bf16 --dct-scaling true
row "bf16 (OpenVINO), DCT-scaled decoding" bf16-dct "$(speed "$MODEL" 'model.precision="bf16"' model.dct_scaling=true)"
detect auto "$MODEL"
shipped=$("$KADR" detect --model "$MODEL" "${IMAGES[0]}" 2>&1 >/dev/null | grep -o 'detect: [a-z0-9]* [a-z0-9]*, dct_scaling [a-z]*, input convolutions split [a-z]*' | cut -c9-)
row "shipped defaults (auto: $shipped)" auto "$(speed "$MODEL")"
detect int8 "$INT8" --precision fp32 --dct-scaling false
row "int8 model (CPU kernels), full-size decoding" int8 "$(speed "$INT8" 'model.precision="fp32"' 'model.execution_provider="cpu"' model.dct_scaling=false)"
detect int8-dct "$INT8" --precision fp32 --dct-scaling true
row "int8 model (CPU kernels), DCT-scaled decoding" int8-dct "$(speed "$INT8" 'model.precision="fp32"' 'model.execution_provider="cpu"' model.dct_scaling=true)"
