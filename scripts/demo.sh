#!/usr/bin/env bash
# The kadr demo: a real 1280x720 video through Redis pub/sub, a pool of YOLOv7 detector actors
# and the sequencer, back out as detections in frame order.
#
#   scripts/demo.sh            publish at the video's own rate (25 fps), like a camera
#   scripts/demo.sh --fast     publish as fast as possible: measures throughput
#
# Installs what is missing (scripts/setup.sh), builds, uses the Redis at $REDIS_URL or
# 127.0.0.1:6379 or starts its own, runs one node with cluster.toml, and prints live fps,
# a summary and a sample of detections.
set -euo pipefail
cd "$(dirname "$0")/.."
PUBLISH_FLAGS=()
[ "${1:-}" = "--fast" ] && PUBLISH_FLAGS+=(--fast)
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

say "starting a node (cluster.toml) against $REDIS_URL"
$KADR node --config cluster.toml --redis-url "$REDIS_URL" 2>"$WORK/node.log" &
PIDS+=($!)
for _ in $(seq 300); do grep -q "node started" "$WORK/node.log" && break; sleep 0.1; done
grep -q "node started" "$WORK/node.log" || { cat "$WORK/node.log" >&2; exit 1; }

VIDEO=.deps/video/bigbuckbunny.mp4
FRAMES=$(ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 "$VIDEO")
$KADR subscribe --stream demo --count "$FRAMES" --idle-timeout 30 --ready-file "$WORK/ready" \
    --summary-json "$WORK/summary.json" >"$WORK/detections.jsonl" &
SUB=$!
for _ in $(seq 100); do [ -e "$WORK/ready" ] && break; sleep 0.05; done
say "publishing $VIDEO ($FRAMES frames, 1280x720) to stream 'demo' ${PUBLISH_FLAGS[*]:-at 25 fps}"
$KADR publish --input "$VIDEO" --stream demo --keep-all "${PUBLISH_FLAGS[@]}"
wait "$SUB"

echo
say "a sample of the detections (kadr:detections:demo):"
head -n 3 "$WORK/detections.jsonl" | cut -c1-300
echo
say "summary:"
cat "$WORK/summary.json"
echo
.deps/venv/bin/python - "$WORK/summary.json" "$FRAMES" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2])
ok = s["frames"] == n and s["order_violations"] == 0 and s["first_seq"] == 0 and s["last_seq"] == n - 1
print(f"{s['detected']} of {n} frames detected in order, {s['gap_frames']} in gaps, "
      f"{s['fps']:.1f} fps delivered, latency p50 {s['latency_ms_p50']:.0f} ms, p95 {s['latency_ms_p95']:.0f} ms, p99 {s['latency_ms_p99']:.0f} ms")
sys.exit(0 if ok else 1)
PY
