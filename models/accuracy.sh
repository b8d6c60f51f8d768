#!/usr/bin/env bash
# How far the fast paths' detections are from the reference-exact fp32 path, on real images:
# the fixture JPEGs (../shared/fixtures/yolov7, if present) and every 10th frame of the two demo
# clips. Prints one markdown row per variant (models/compare_detections.py: boxes matched one
# to one by class with IoU >= 0.5).
#
#   models/accuracy.sh [MODEL]     # default: the demo model; an int8 model is made if missing
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/yolov7-tiny-random-384x640.onnx}
KADR=target/release/kadr
PY=.deps/venv/bin/python
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The int8 model beside the demo model (loadtest/run.sh makes the same one); for any other
# model, a temporary one: never write next to a model we do not own.
if [ "$MODEL" = models/yolov7-tiny-random-384x640.onnx ]; then INT8=${MODEL%.onnx}-int8.onnx; else INT8=$WORK/int8.onnx; fi
mkdir -p "$WORK/images"
for clip in bigbuckbunny bikes; do
    ffmpeg -loglevel error -i ".deps/video/$clip.mp4" -vf "select=not(mod(n\,10))" -vsync vfr -q:v 3 "$WORK/images/$clip-%03d.jpg"
done
if [ -d ../shared/fixtures/yolov7 ]; then cp ../shared/fixtures/yolov7/*.jpg "$WORK/images/"; fi
[ -e "$INT8" ] || "$PY" models/quantize_int8.py --model "$MODEL" --video .deps/video/bigbuckbunny.mp4 --frames 64 --out "$INT8" >&2
IMAGES=("$WORK"/images/*.jpg)
echo "${#IMAGES[@]} images; reference: $MODEL, --precision fp32 (the exact path)" >&2

detect() { local out=$1 model=$2; shift 2; "$KADR" detect --model "$model" "$@" "${IMAGES[@]}" 2>/dev/null >"$WORK/$out.jsonl"; }
detect fp32 "$MODEL" --precision fp32
echo "| variant | fp32 boxes | its boxes | matched | recall / precision | mean IoU | mean score change |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
row() {
    local label=$1 name=$2
    "$PY" - "$label" "$WORK/fp32.jsonl" "$WORK/$name.jsonl" <<'PY'
import json, subprocess, sys
label, a, b = sys.argv[1:]
r = json.loads(subprocess.check_output([sys.executable, "models/compare_detections.py", a, b]))
print(f"| {label} | {r['boxes_a']} | {r['boxes_b']} | {r['matched']} | {r['recall']:.2f} / {r['precision']:.2f} | {r['mean_iou']:.2f} | {r['mean_abs_score_delta']:.3f} |")
PY
}
detect ov-fp32 "$MODEL" --execution-provider openvino --precision fp32 --dct-scaling false
row "fp32, OpenVINO" ov-fp32
detect dct "$MODEL" --precision fp32 --dct-scaling true
row "fp32, DCT-scaled decoding" dct
detect bf16 "$MODEL" --precision bf16 --dct-scaling false
row "bf16 (OpenVINO)" bf16
detect auto "$MODEL"
row "shipped defaults (auto: $("$KADR" detect --model "$MODEL" "${IMAGES[0]}" 2>&1 >/dev/null | grep -o 'detect: [a-z0-9 ]*' | cut -c9-), DCT)" auto
detect int8 "$INT8" --precision fp32 --dct-scaling false
row "int8 model (CPU kernels)" int8
