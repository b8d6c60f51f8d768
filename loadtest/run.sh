#!/usr/bin/env bash
# Regenerate the benchmark table of BENCHMARKS.md on this machine:
#
#   loadtest/run.sh [SECONDS]      # SECONDS per load run (default 60)
#
# For each configuration: `kadr bench-model` (the model alone, same settings), then a node with
# those settings under `kadr-loadtest`: one 1280x720 stream at 30 fps (the target), and a
# saturating run (120 fps offered, more than any configuration here can detect: the node drops
# the oldest frames and its delivered fps is its capacity), compared with bench-model's
# whole-frame fps. Then scaling: one node
# pinned to one core, then a second node pinned to the other. Results go to
# loadtest/results/*.json and a markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-60}
SATURATE=${SATURATE:-120}   # fps offered in the saturating runs: more than any configuration here detects
scripts/setup.sh >/dev/null
cargo build --release --quiet --workspace
KADR=target/release/kadr
LOAD=target/release/kadr-loadtest
OUT=loadtest/results
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
export KADR_CLUSTER_COOKIE=${KADR_CLUSTER_COOKIE:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}

redis_up() { .deps/venv/bin/python -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_timeout=1).ping()" "$1" 2>/dev/null; }
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
if ! redis_up "$REDIS_URL"; then
    redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null &
    PIDS+=($!); REDIS_URL=redis://127.0.0.1:6390
    for _ in $(seq 50); do redis_up "$REDIS_URL" && break; sleep 0.1; done
fi
export REDIS_URL

# start_node NAME PIN SETS...: a node (pinned to CPU list PIN unless "-"), waits until it is up.
start_node() {
    local name=$1 pin=$2; shift 2
    local cmd=($KADR node --config cluster.toml --redis-url "$REDIS_URL" --set "node.name=$name" "$@")
    [ "$pin" != "-" ] && cmd=(taskset -c "$pin" "${cmd[@]}")
    "${cmd[@]}" 2>"$WORK/$name.log" &
    PIDS+=($!); LAST_PID=$!
    for _ in $(seq 300); do grep -q "node started" "$WORK/$name.log" && return; sleep 0.1; done
    cat "$WORK/$name.log" >&2; exit 1
}
stop_nodes() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); redis_up "$REDIS_URL" || true; }

# configuration: label, then --set overrides
run_config() {
    local label=$1 slug=$2; shift 2
    local sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    echo "== $label" >&2
    $KADR bench-model --seconds 10 "${sets[@]}" --json "$OUT/$slug.bench.json" >&2
    start_node lt-1 - "${sets[@]}" --set cluster.listen=127.0.0.1:7410 --set admin.listen=127.0.0.1:7510
    local pid=$LAST_PID
    $LOAD --fps 30 --seconds "$SECONDS_PER_RUN" --node-pid "$pid" --label "$label" --json "$OUT/$slug.30fps.json" >/dev/null
    $LOAD --fps "$SATURATE" --seconds 30 --node-pid "$pid" --label "$label" --json "$OUT/$slug.saturated.json" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true; PIDS=()
}

INT8=models/yolov7-tiny-random-384x640-int8.onnx
[ -e "$INT8" ] || .deps/venv/bin/python models/quantize_int8.py --model models/yolov7-tiny-random-384x640.onnx \
    --video .deps/video/bigbuckbunny.mp4 --frames 64 --out "$INT8"
run_config "fp32, CPU EP, 2 detectors x 1 thread" fp32-2x1 detector.pool_size=2 detector.intra_threads=1
run_config "fp32, CPU EP, 2 x 1, DCT-scaled decode" fp32-2x1-dct detector.pool_size=2 detector.intra_threads=1 model.dct_scaling=true
run_config "fp32, CPU EP, 1 detector x 2 threads" fp32-1x2 detector.pool_size=1 detector.intra_threads=2
run_config "fp32, OpenVINO EP, 1 x 2" fp32-ov-1x2 detector.pool_size=1 detector.intra_threads=2 'model.execution_provider="openvino"'
run_config "int8, CPU EP, 2 x 1" int8-2x1 detector.pool_size=2 detector.intra_threads=1 "model.path=\"$PWD/$INT8\""
run_config "int8, CPU EP, 2 x 1, DCT-scaled decode" int8-2x1-dct detector.pool_size=2 detector.intra_threads=1 "model.path=\"$PWD/$INT8\"" model.dct_scaling=true
run_config "int8, OpenVINO EP, 1 x 2" int8-ov-1x2 detector.pool_size=1 detector.intra_threads=2 "model.path=\"$PWD/$INT8\"" 'model.execution_provider="openvino"'

# Scaling: one node on core 0, then a second (detector only) on core 1.
echo "== scaling" >&2
start_node one 0 --set detector.pool_size=1 --set cluster.listen=127.0.0.1:7410 --set admin.listen=127.0.0.1:7510
ONE=$LAST_PID
$LOAD --fps 60 --seconds 30 --node-pid "$ONE" --label "1 node, core 0" --json "$OUT/scale-1.json" >/dev/null
start_node two 1 --set detector.pool_size=1 --set 'node.roles=["detector"]' --set cluster.listen=127.0.0.1:7411 \
    --set admin.listen=127.0.0.1:7511 --set 'cluster.seeds=["127.0.0.1:7410"]'
TWO=$LAST_PID
sleep 2
$LOAD --fps 60 --seconds 30 --node-pid "$ONE" "$TWO" --label "2 nodes, cores 0 and 1" --json "$OUT/scale-2.json" >/dev/null
stop_nodes

.deps/venv/bin/python - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
print("| configuration | bench-model inference fps | bench-model whole-frame fps | 30 fps run: delivered | dropped | gaps | p50 / p95 / p99 ms | node CPU (cores) | RSS start/end MiB | saturated: delivered fps | ratio to bench-model |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for slug in ("fp32-2x1", "fp32-2x1-dct", "fp32-1x2", "fp32-ov-1x2", "int8-2x1", "int8-2x1-dct", "int8-ov-1x2"):
    b, r, s = load(f"{slug}.bench.json"), load(f"{slug}.30fps.json"), load(f"{slug}.saturated.json")
    if not (b and r and s): continue
    gaps = sum(v for k, v in r["gaps"].items() if k != "dropped")
    rss = r["nodes_rss_mib"] or [0, 0, 0, 0]
    print(f"| {r['label']} | {b['inference_fps']} | {b['frame_fps']} | {r['delivered_fps']} ({r['detected']}/{r['published']}) | {r['dropped']} | {gaps} "
          f"| {r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_p99']} | {r['nodes_cpu_cores']} | {rss[0]} / {rss[1]} "
          f"| {s['delivered_fps']} | {s['delivered_fps'] / b['frame_fps']:.2f} |")
one, two = load("scale-1.json"), load("scale-2.json")
if one and two:
    print()
    print("| scaling (60 fps offered) | delivered fps | p50 ms | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| {one['label']} | {one['delivered_fps']} | {one['latency_ms_p50']} | 1.00 |")
    print(f"| {two['label']} | {two['delivered_fps']} | {two['latency_ms_p50']} | {two['delivered_fps'] / max(one['delivered_fps'], 1e-9):.2f} |")
PY
