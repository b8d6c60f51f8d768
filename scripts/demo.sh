#!/usr/bin/env bash
# The kadr demo: a real 1280x720 video through Redis pub/sub, a pool of detector actors running
# a trained COCO detector (Darknet YOLOv3-tiny, converted by setup.sh; cluster.toml's model.path)
# and the sequencer, back out as detections in frame order, with the classes it saw.
#
#   scripts/demo.sh            publish at the video's own rate (25 fps), like a camera
#   scripts/demo.sh --fast     publish as fast as possible: measures throughput
#   scripts/demo.sh --cluster  three nodes on this machine (one source, two more detector
#                              nodes, all from cluster.toml with overrides); combine with --fast
#
# Installs what is missing (scripts/setup.sh), builds, uses the Redis at $REDIS_URL or
# 127.0.0.1:6379 or starts its own, runs the node(s) with cluster.toml, and prints live fps,
# a summary and a sample of detections.
set -euo pipefail
cd "$(dirname "$0")/.."
PUBLISH_FLAGS=()
CLUSTER=0
for arg in "$@"; do
    case "$arg" in
        --fast) PUBLISH_FLAGS+=(--fast) ;;
        --cluster) CLUSTER=1 ;;
        *) echo "usage: scripts/demo.sh [--fast] [--cluster]" >&2; exit 2 ;;
    esac
done
say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }

scripts/setup.sh
say "building kadr (release)"
cargo build --release --quiet
KADR=target/release/kadr
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

redis_up() { .deps/venv/bin/python -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_timeout=1).ping()" "$1" 2>/dev/null; }
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
if ! redis_up "$REDIS_URL"; then
    PORT=$(.deps/venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
    say "no Redis at $REDIS_URL; starting redis-server on 127.0.0.1:$PORT"
    redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null &
    PIDS+=($!)
    REDIS_URL=redis://127.0.0.1:$PORT
    for _ in $(seq 50); do redis_up "$REDIS_URL" && break; sleep 0.1; done
fi
export REDIS_URL

# Every node of a cluster shares one secret; the demo makes one up.
export KADR_CLUSTER_COOKIE=${KADR_CLUSTER_COOKIE:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
start_node() { # name log overrides...
    local name=$1 log=$2; shift 2
    $KADR node --config cluster.toml --redis-url "$REDIS_URL" --set "node.name=$name" "$@" 2>"$log" &
    PIDS+=($!)
    for _ in $(seq 300); do grep -q "node started" "$log" && break; sleep 0.1; done
    grep -q "node started" "$log" || { cat "$log" >&2; exit 1; }
}
if [ "$CLUSTER" = 1 ]; then
    say "starting three nodes against $REDIS_URL: node-1 (source, sequencer, detector), node-2 and node-3 (detector)"
    start_node node-1 "$WORK/node-1.log" --set detector.pool_size=1
    for i in 2 3; do
        start_node "node-$i" "$WORK/node-$i.log" --set 'node.roles=["detector"]' --set detector.pool_size=1 \
            --set "cluster.listen=127.0.0.1:$((7399 + i))" --set "admin.listen=127.0.0.1:$((7499 + i))" \
            --set 'cluster.seeds=["127.0.0.1:7400"]'
    done
    sleep 1.5
    say "the cluster as node-1 sees it (GET http://127.0.0.1:7500/cluster):"
    .deps/venv/bin/python - <<'PY'
import json, urllib.request
view = json.load(urllib.request.urlopen("http://127.0.0.1:7500/cluster"))
for m in view["members"]:
    b = m.get("backend") or {}
    print(f"  {m['name']:8} {m['address']:16} {','.join(m['roles']):26} detectors={m['detectors']} {b.get('provider', '-')} {b.get('precision', '-')} {m['status']}")
PY
else
    say "starting a node (cluster.toml) against $REDIS_URL"
    start_node node-1 "$WORK/node.log"
fi

# What runs the model, as node-1 chose it (model.precision and model.execution_provider "auto").
BACKEND=$(.deps/venv/bin/python - <<'PY'
import json, urllib.request
b = json.load(urllib.request.urlopen("http://127.0.0.1:7500/health"))["backend"]
dct = "on" if b["dct_scaling"] else "off"
print(f"{b['provider']} {b['precision']}, DCT-scaled decoding {dct}, on {b['cpu']} ({b['reason']})")
PY
)
say "model backend: $BACKEND"

VIDEO=.deps/video/bigbuckbunny.mp4
FRAMES=$(ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 "$VIDEO")
$KADR subscribe --stream demo --count "$FRAMES" --idle-timeout 30 --ready-file "$WORK/ready" \
    --summary-json "$WORK/summary.json" >"$WORK/detections.jsonl" &
SUB=$!
for _ in $(seq 100); do [ -e "$WORK/ready" ] && break; sleep 0.05; done
say "publishing $VIDEO ($FRAMES frames, 1280x720) to stream 'demo' ${PUBLISH_FLAGS[*]:-at 25 fps}"
say "watch it live in a browser: http://127.0.0.1:7500/view/demo (all streams: http://127.0.0.1:7500/)"
$KADR publish --input "$VIDEO" --stream demo --keep-all "${PUBLISH_FLAGS[@]}"
wait "$SUB"

echo
say "a sample of the detections (kadr:detections:demo):"
head -n 3 "$WORK/detections.jsonl" | cut -c1-300
echo
say "summary:"
cat "$WORK/summary.json"
echo
if [ "$CLUSTER" = 1 ]; then
    say "frames each node's detectors did (kadr_inferences_total from /metrics on ports 7500-7502):"
    .deps/venv/bin/python - <<'PY'
import urllib.request
for i in (1, 2, 3):
    text = urllib.request.urlopen(f"http://127.0.0.1:{7499 + i}/metrics").read().decode()
    print(f"  node-{i}", next(l.split()[1] for l in text.splitlines() if l.startswith("kadr_inferences_total")))
PY
fi
.deps/venv/bin/python - "$WORK/summary.json" "$FRAMES" "$WORK/detections.jsonl" <<'PY'
import collections, json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2])
seen, frames_with = collections.Counter(), collections.Counter()
for line in open(sys.argv[3]):
    m = json.loads(line)
    classes = [d["class"] for d in m.get("detections") or []]
    seen.update(classes)
    frames_with.update(set(classes))
if seen:
    print("objects seen (boxes, in how many frames): " + ", ".join(
        f"{c} {k} ({frames_with[c]})" for c, k in seen.most_common()))
else:
    print("objects seen: none")
ok = s["frames"] == n and s["order_violations"] == 0 and s["first_seq"] == 0 and s["last_seq"] == n - 1
print(f"{s['detected']} of {n} frames detected in order, {s['gap_frames']} in gaps, "
      f"{s['fps']:.1f} fps delivered, latency p50 {s['latency_ms_p50']:.0f} ms, p95 {s['latency_ms_p95']:.0f} ms, p99 {s['latency_ms_p99']:.0f} ms")
sys.exit(0 if ok else 1)
PY
