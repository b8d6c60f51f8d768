#!/usr/bin/env bash
# Regenerate the benchmark tables of BENCHMARKS.md on this machine, in one sitting:
#
#   loadtest/run.sh [SECONDS] [SECTION...]   # SECONDS per 30 fps load run (default 60)
#
# SECTIONs (default: all, in this order): peer configs streams scaling ingress ingress-spread live transports tracking events
#
# 1. The peer: what a user would write instead (loadtest/peer.py: one Python process, OpenVINO
#    with its own defaults, and ONNX Runtime with its own), on the very frames kadr-loadtest sends.
# 2. For each configuration: `kadr bench-model` (the model alone, same settings), then a node with
#    those settings under `kadr-loadtest`: one 1280x720 stream at 30 fps, and a saturating run
#    (60 fps offered: the node drops the oldest frames and its delivered fps is its capacity).
# 3. Streams: the shipped defaults under 1..4 streams of 30 fps.
# 4. Scaling: one node pinned to one core, then a second node pinned to the other.
# 5. Live: freshness when detection is slower than the cameras (see below): the shipped [live]
#    rule and live.queue_depth = 1, on the same node settings.
# 6. Transports: saturating KEEP runs over pub/sub and over Redis Streams.
# 7. Tracking: kadr's tracker against Roboflow's trackers and norfair (loadtest/tracking/run.sh),
#    and a saturated node with the tracker on and off, alternated three times.
# 8. Events: a saturated node with ten lines and ten zones on its stream and without,
#    alternated three times.
# Every step says what it does; a step that fails says which and why before the script stops.
# Results go to loadtest/results/*.json and markdown tables on stdout.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
trap 'echo "run.sh: stopped: \"$BASH_COMMAND\" failed (line $LINENO, status $?)" >&2' ERR
SECONDS_PER_RUN=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
SECTIONS=${*:-peer configs streams scaling ingress ingress-spread live transports tracking events}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
SATURATE=${SATURATE:-60}   # fps offered in the saturating runs: more than any configuration here detects
STREAM_SECONDS=${STREAM_SECONDS:-$SECONDS_PER_RUN}
scripts/setup.sh >/dev/null
cargo build --release --quiet --workspace
KADR=target/release/kadr
LOAD=target/release/kadr-loadtest
MODEL=models/yolov7-tiny-random-384x640.onnx
OUT=loadtest/results
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
export KADR_CLUSTER_COOKIE=${KADR_CLUSTER_COOKIE:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
# No bf16 flag is an answer, not a failure (grep's status 1 would stop the script).
BF16=$( (grep -o -w -E 'amx_bf16|avx512_bf16' /proc/cpuinfo || true) | sort -u | tr '\n' ' ')
echo "{\"cpu\": \"$CPU\", \"bf16\": \"${BF16:-none}\", \"cores\": $(nproc), \"date\": \"$(date -u +%F)\"}" > "$OUT/machine.json"
echo "== machine: $CPU, $(nproc) cores, bf16: ${BF16:-none}" >&2

redis_up() { .deps/venv/bin/python -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_timeout=1).ping()" "$1" 2>/dev/null; }
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
if ! redis_up "$REDIS_URL"; then
    redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null &
    PIDS+=($!); REDIS_URL=redis://127.0.0.1:6390
    for _ in $(seq 50); do redis_up "$REDIS_URL" && break; sleep 0.1; done
fi
export REDIS_URL
REDIS_PID=${PIDS[0]:-}

# --- 1. The peer, on the frames kadr-loadtest publishes.
run_peer() {
PEER=.deps/peer-venv
if [ ! -x "$PEER/bin/python" ] || ! "$PEER/bin/python" -c 'import openvino, cv2, onnxruntime' 2>/dev/null; then
    echo "== installing the peer's packages (openvino, opencv-python-headless, onnxruntime) into $PEER" >&2
    python3 -m venv "$PEER"
    "$PEER/bin/python" -m pip install -q --disable-pip-version-check openvino opencv-python-headless numpy "onnxruntime==1.32.0"
fi
$LOAD --write-frames "$WORK/frames" >/dev/null
echo "== peer" >&2
"$PEER/bin/python" loadtest/peer.py --runtime openvino --requests 1 --model "$MODEL" --frames "$WORK/frames" --seconds 20 --json "$OUT/peer-ov-1.json" >&2
"$PEER/bin/python" loadtest/peer.py --runtime openvino --requests 2 --model "$MODEL" --frames "$WORK/frames" --seconds 20 --json "$OUT/peer-ov-2.json" >&2
"$PEER/bin/python" loadtest/peer.py --runtime onnxruntime --model "$MODEL" --frames "$WORK/frames" --seconds 20 --json "$OUT/peer-ort.json" >&2
}
want peer && run_peer

# start_node NAME PIN SETS...: a node (pinned to CPU list PIN unless "-"), waits until it is up.
# NODE_ENV, if set, is prepended to the command (e.g. KADR_CPU_FLAGS= to act as a CPU without bf16).
start_node() {
    local name=$1 pin=$2; shift 2
    local cmd=($KADR node --config cluster.toml --redis-url "$REDIS_URL" --set "node.name=$name" "$@")
    [ "$pin" != "-" ] && cmd=(taskset -c "$pin" "${cmd[@]}")
    env ${NODE_ENV:-} "${cmd[@]}" 2>"$WORK/$name.log" &
    PIDS+=($!); LAST_PID=$!
    for _ in $(seq 600); do grep -q "node started" "$WORK/$name.log" && return; sleep 0.1; done
    cat "$WORK/$name.log" >&2; exit 1
}
# Stops every node and waits for each to exit (a draining node holds its ports a while).
stop_nodes() {
    for p in "${PIDS[@]}"; do [ "$p" = "$REDIS_PID" ] || kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do [ "$p" = "$REDIS_PID" ] || wait "$p" 2>/dev/null || true; done
    sleep 1; PIDS=(${REDIS_PID:-})
}
NODE_PORTS=(--set cluster.listen=127.0.0.1:7410 --set admin.listen=127.0.0.1:7510)

# --- 2. run_config LABEL SLUG ENV SETS...: bench-model, a 30 fps run and a saturating run.
run_config() {
    local label=$1 slug=$2 envs=$3; shift 3
    local sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    echo "== $label" >&2
    env $envs $KADR bench-model --seconds 10 "${sets[@]}" --json "$OUT/$slug.bench.json" >&2
    NODE_ENV=$envs start_node lt-1 - "${sets[@]}" "${NODE_PORTS[@]}"
    local pid=$LAST_PID
    grep -m1 "model backend chosen" "$WORK/lt-1.log" | sed 's/.*INFO //' >&2 || true
    $LOAD --fps 30 --seconds "$SECONDS_PER_RUN" --node-pid "$pid" --label "$label" --json "$OUT/$slug.30fps.json" >/dev/null
    $LOAD --fps "$SATURATE" --seconds 30 --node-pid "$pid" --label "$label" --json "$OUT/$slug.saturated.json" >/dev/null
    stop_nodes
}

run_configs() {
INT8=models/yolov7-tiny-random-384x640-int8.onnx
[ -e "$INT8" ] || .deps/venv/bin/python models/quantize_int8.py --model "$MODEL" \
    --video .deps/video/bigbuckbunny.mp4 --frames 64 --out "$INT8"
run_config "shipped defaults (auto)" defaults ""
run_config "defaults on a CPU without bf16 (KADR_CPU_FLAGS='')" defaults-nobf16 "KADR_CPU_FLAGS="
run_config "precision = fp32 (the exact path; the old default)" fp32-exact "" 'model.precision="fp32"'
run_config "OpenVINO bf16, 1 x 2 threads" ov-bf16-1x2 "" 'model.precision="bf16"' detector.pool_size=1 detector.intra_threads=2
run_config "int8 model, CPU EP, 2 x 1, DCT" int8-2x1 "" "model.path=\"$PWD/$INT8\"" 'model.execution_provider="cpu"'
}
want configs && run_configs

# --- 3. Streams of 30 fps against the shipped defaults.
run_streams() {
echo "== streams" >&2
start_node lt-1 - "${NODE_PORTS[@]}"
pid=$LAST_PID
for n in 1 2 3 4; do
    $LOAD --streams "$n" --fps 30 --seconds "$STREAM_SECONDS" --node-pid "$pid" --label "$n x 30 fps, shipped defaults" --json "$OUT/streams-$n.json" >/dev/null
done
stop_nodes
}
want streams && run_streams

# --- 4. Scaling: one node on core 0, then a second (detector only) on core 1.
run_scaling() {
echo "== scaling" >&2
start_node one 0 --set detector.pool_size=1 "${NODE_PORTS[@]}"
ONE=$LAST_PID
$LOAD --fps 60 --seconds 30 --node-pid "$ONE" --label "1 node, core 0" --json "$OUT/scale-1.json" >/dev/null
start_node two 1 --set detector.pool_size=1 --set 'node.roles=["detector"]' --set cluster.listen=127.0.0.1:7411 \
    --set admin.listen=127.0.0.1:7511 --set 'cluster.seeds=["127.0.0.1:7410"]'
TWO=$LAST_PID
sleep 2
$LOAD --fps 60 --seconds 30 --node-pid "$ONE" "$TWO" --label "2 nodes, cores 0 and 1" --json "$OUT/scale-2.json" >/dev/null
stop_nodes
}
want scaling && run_scaling

# --- 4b. Ingress: what a source node spends per frame when its detectors are elsewhere. A
# source-only node (source, sequencer) and a detector-only node; every frame KEEP, offered at
# 30 fps (all detected) and at SATURATE fps; only the source node's CPU is measured.
run_ingress() {
echo "== ingress" >&2
start_node src - --set 'node.roles=["source", "sequencer"]' "${NODE_PORTS[@]}"
SRC=$LAST_PID
start_node det - --set 'node.roles=["detector"]' --set cluster.listen=127.0.0.1:7411 \
    --set admin.listen=127.0.0.1:7511 --set 'cluster.seeds=["127.0.0.1:7410"]'
sleep 2
$LOAD --fps 30 --keep --seconds "$SECONDS_PER_RUN" --node-pid "$SRC" --label "source node, detectors elsewhere, 30 fps" --json "$OUT/ingress-30.json" >/dev/null
$LOAD --fps "$SATURATE" --keep --seconds 30 --node-pid "$SRC" --label "source node, detectors elsewhere, saturated" --json "$OUT/ingress-saturated.json" >/dev/null
stop_nodes
}
want ingress && run_ingress

# --- 4c. Ingress spread: 12 streams of 2.5 fps (30 fps in all, every frame KEEP) over 1, 2 and
# 3 source-only nodes with a lease per stream, one detector node, over pub/sub and over Redis
# Streams; the source nodes' CPU is measured together.
run_ingress_spread() {
echo "== ingress spread" >&2
for t in pubsub streams; do
    for n in 1 2 3; do
        # Each run starts from no streams: earlier runs' frames streams (and the leases a
        # node would keep renewing for them) are deleted.
        redis-cli -u "$REDIS_URL" --scan --pattern 'kadr:*' | xargs -r redis-cli -u "$REDIS_URL" DEL >/dev/null
        start_node det - --set 'node.roles=["detector"]' "${NODE_PORTS[@]}"
        local pids=()
        for i in $(seq "$n"); do
            start_node "src$i" - --set 'node.roles=["source", "sequencer"]' --set cluster.stream_leases=true \
                --set "cluster.listen=127.0.0.1:$((7420 + i))" --set "admin.listen=127.0.0.1:$((7520 + i))" \
                --set 'cluster.seeds=["127.0.0.1:7410"]'
            pids+=("$LAST_PID")
        done
        sleep 3
        $LOAD --transport "$t" --streams 12 --fps 2.5 --keep --seconds "$SECONDS_PER_RUN" --node-pid "${pids[@]}" \
            --label "12 x 2.5 fps over $n source node(s), $t" --json "$OUT/ingress-spread-$t-$n.json" >/dev/null
        for i in $(seq "$n"); do
            curl -sS "http://127.0.0.1:$((7520 + i))/metrics" | sed -n 's/^kadr_streams_held{[^}]*} /held /p' \
                > "$OUT/ingress-spread-$t-$n.held-$i.txt"
        done
        stop_nodes
    done
done
}
want ingress-spread && run_ingress_spread

# --- 5. Live: cameras faster than the detectors, many slow cameras in step, and a camera the
# node keeps up with. Each on a CPU acting without bf16 (KADR_CPU_FLAGS=: fp32, about the
# speed of the AVX2-only machines most users have) and on the shipped defaults; the shipped
# [live] rule, then live.queue_depth = 1 (only the newest frame waits). bench-model first, so
# latency reads as multiples of one call.
LIVE_SECONDS=${LIVE_SECONDS:-30}
live_runs() {  # live_runs SLUG FPS_OVER: the scenarios against the node just started
    local slug=$1 over=$2 pid=$LAST_PID
    $LOAD --fps "$over" --seconds "$LIVE_SECONDS" --node-pid "$pid" --label "1 x $over fps" --json "$OUT/live-$slug-1x.json" >/dev/null
    $LOAD --streams 3 --fps "$over" --seconds "$LIVE_SECONDS" --node-pid "$pid" --label "3 x $over fps" --json "$OUT/live-$slug-3x.json" >/dev/null
    $LOAD --streams 100 --fps 0.15 --seconds 40 --node-pid "$pid" --label "100 x 0.15 fps" --json "$OUT/live-$slug-100x.json" >/dev/null
    $LOAD --fps 10 --seconds "$LIVE_SECONDS" --node-pid "$pid" --label "1 x 10 fps (keeps up)" --json "$OUT/live-$slug-keepsup.json" >/dev/null
}
run_live() {
echo "== live" >&2
for variant in nobf16 defaults; do
    local envs="" over=60
    [ "$variant" = nobf16 ] && envs="KADR_CPU_FLAGS=" && over=30
    env $envs $KADR bench-model --config cluster.toml --seconds 10 --json "$OUT/live-$variant.bench.json" >&2
    for rule in new d1; do
        local sets=("${NODE_PORTS[@]}")
        [ "$rule" = d1 ] && sets+=(--set live.queue_depth=1)
        echo "== live: $variant, $rule" >&2
        NODE_ENV=$envs start_node lt-1 - "${sets[@]}"
        live_runs "$variant-$rule" "$over"
        stop_nodes
    done
done
}
want live && run_live

# --- 6. Transports: saturating KEEP runs over pub/sub and over Redis Streams, alternated twice
# on one node (ratios of one sitting), with Redis's memory sampled while Streams run.
run_transports() {
echo "== transports" >&2
start_node lt-1 - "${NODE_PORTS[@]}"
local pid=$LAST_PID
for round in 1 2; do
    for t in pubsub streams; do
        local mem="$OUT/transport-$t-$round.redis-memory"
        : > "$mem"
        ( for _ in $(seq 40); do redis-cli -u "$REDIS_URL" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p' >> "$mem"; sleep 1; done ) &
        local sampler=$!
        $LOAD --transport "$t" --keep --fps "$SATURATE" --seconds 30 --node-pid "$pid" \
            --prefix "kadr" --label "$t, KEEP, $SATURATE fps offered (round $round)" \
            --json "$OUT/transport-$t-$round.json" >/dev/null
        kill "$sampler" 2>/dev/null || true
        # Next run on an idle node: no frames of this run left in Redis or inside the node.
        redis-cli -u "$REDIS_URL" --scan --pattern 'kadr:frames:lt*' | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
        for _ in $(seq 120); do
            curl -s http://127.0.0.1:7510/metrics | grep -qE '^kadr_frames_(queued|in_flight)(\{[^}]*\})? [1-9]' || break
            sleep 0.5
        done
    done
done
stop_nodes
}
want transports && run_transports

# --- 7. Tracking: quality and speed against the peers, then what it costs a saturated node
# (detections on the real video, tracker on and off, alternated three times).
run_tracking() {
echo "== tracking" >&2
loadtest/tracking/run.sh
for round in 1 2 3; do
    # Each order in turn, so neither setting always runs first.
    local order="true false"; [ $((round % 2)) = 0 ] && order="false true"
    for t in $order; do
        start_node lt-1 - --set "tracker.enabled=$t" "${NODE_PORTS[@]}"
        $LOAD --fps "$SATURATE" --seconds 30 --node-pid "$LAST_PID" \
            --label "tracker.enabled = $t, $SATURATE fps offered (round $round)" \
            --json "$OUT/tracker-$t-$round.json" >/dev/null
        stop_nodes
    done
done
}
want tracking && run_tracking

# --- 8. Events: what counting 10 lines and 10 zones (loadtest/analytics-20.toml, set on the
# stream as the admin API sets it) costs a saturated node, alternated three times.
run_events() {
echo "== events" >&2
for round in 1 2 3; do
    local order="on off"; [ $((round % 2)) = 0 ] && order="off on"
    for a in $order; do
        local with=(); [ "$a" = on ] && with=(--analytics loadtest/analytics-20.toml)
        start_node lt-1 - "${NODE_PORTS[@]}"
        $LOAD --fps "$SATURATE" --seconds 30 --node-pid "$LAST_PID" "${with[@]}" \
            --label "analytics $a (10 lines, 10 zones), $SATURATE fps offered (round $round)" \
            --json "$OUT/events-$a-$round.json" >/dev/null
        stop_nodes
    done
done
}
want events && run_events

.deps/venv/bin/python loadtest/report.py "$OUT"
