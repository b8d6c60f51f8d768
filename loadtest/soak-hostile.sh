#!/usr/bin/env bash
# Soak under hostile load (issue 12's acceptance run), one node with the shipped defaults:
#
#   loadtest/soak-hostile.sh [SECONDS]     # default 600
#
# - a legitimate live camera: 1 stream at 10 fps (droppable, as cameras are);
# - an overload: 2 streams x 60 fps, every frame KEEP (about 3x what a 2-core node detects);
# - loadtest/fuzz.py at 200 messages/s: every kind of bad message, junk streams, forged
#   sequence numbers and sizes, a KEEP flood of its own.
# Prints the camera's share, what the overload got, RSS over time and the node's log size, and
# writes loadtest/results/soak-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
scripts/setup.sh >/dev/null
cargo build --release --quiet --workspace
KADR=target/release/kadr
LOAD=target/release/kadr-loadtest
PY=.deps/venv/bin/python
OUT=loadtest/results
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
export KADR_CLUSTER_COOKIE=${KADR_CLUSTER_COOKIE:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "== soak: $CPU, $(nproc) cores, ${DURATION}s" >&2

redis-server --port 6391 --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null &
PIDS+=($!)
export REDIS_URL=redis://127.0.0.1:6391
for _ in $(seq 50); do $PY -c "import redis; redis.Redis.from_url('$REDIS_URL').ping()" 2>/dev/null && break; sleep 0.1; done

$KADR node --config cluster.toml --redis-url "$REDIS_URL" --set node.name=soak \
    --set cluster.listen=127.0.0.1:7411 --set admin.listen=127.0.0.1:7511 2>"$WORK/node.log" &
NODE=$!; PIDS+=($NODE)
for _ in $(seq 600); do grep -q "node started" "$WORK/node.log" && break; sleep 0.1; done

$LOAD --write-frames "$WORK/frames" >/dev/null
FRAME=$(ls "$WORK/frames" | head -1)

rss() { awk '/VmRSS/ {print $2}' /proc/$NODE/status; }
echo "t_s,rss_kib" > "$OUT/soak-rss.csv"
( t=0; while kill -0 $NODE 2>/dev/null; do echo "$t,$(rss)" >> "$OUT/soak-rss.csv"; sleep 10; t=$((t+10)); done ) &
PIDS+=($!)

$LOAD --streams 2 --fps 60 --keep --seconds "$DURATION" --drain 20 --label overload \
    --json "$OUT/soak-overload.json" >"$WORK/overload.txt" 2>&1 &
OVERLOAD=$!
$PY loadtest/fuzz.py --prefix kadr --rate 200 --seconds "$DURATION" --jpeg "$WORK/frames/$FRAME" \
    >"$OUT/soak-fuzz.json" 2>"$WORK/fuzz.err" &
FUZZ=$!
$LOAD --streams 1 --fps 10 --seconds "$DURATION" --drain 20 --label camera --node-pid $NODE \
    --json "$OUT/soak-camera.json" >"$WORK/camera.txt" 2>&1
wait $OVERLOAD $FUZZ || true

curl -s 127.0.0.1:7511/metrics > "$OUT/soak-metrics.txt" || true
alive=$(kill -0 $NODE 2>/dev/null && echo yes || echo no)
panics=$(grep -c -i "panicked" "$WORK/node.log" || true)
$PY - "$OUT" "$alive" "$panics" "$(stat -c %s "$WORK/node.log")" <<'PYEOF'
import csv, json, sys
out, alive, panics, log_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cam = json.load(open(f"{out}/soak-camera.json"))
over = json.load(open(f"{out}/soak-overload.json"))
fuzz = json.load(open(f"{out}/soak-fuzz.json"))
rss = [int(r["rss_kib"]) for r in csv.DictReader(open(f"{out}/soak-rss.csv")) if r["rss_kib"]]
first_min = [v for i, v in enumerate(rss) if i >= 6] or rss
summary = {
    "camera": {k: cam.get(k) for k in ("published", "accounted", "detected", "gaps", "errors", "order_violations", "latency_ms_p50", "latency_ms_p99")},
    "overload": {k: over.get(k) for k in ("published", "accounted", "detected", "gaps", "delivered_fps", "order_violations")},
    "fuzz": fuzz,
    "rss_mib": {"start": round(rss[0] / 1024), "max": round(max(rss) / 1024),
                "after_1_min_min": round(min(first_min) / 1024), "after_1_min_max": round(max(first_min) / 1024),
                "end": round(rss[-1] / 1024)},
    "node_alive": alive == "yes", "panics": panics, "log_bytes": log_bytes,
}
json.dump(summary, open(f"{out}/soak-summary.json", "w"), indent=1)
print(json.dumps(summary, indent=1))
PYEOF
