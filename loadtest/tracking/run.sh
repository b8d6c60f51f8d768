#!/usr/bin/env bash
# The tracking benchmark: kadr's tracker against the trackers users pick instead, on the same
# synthetic detections, scored with py-motmetrics.
#
#   loadtest/tracking/run.sh     # about two minutes; tables on stdout and in loadtest/results/{tracking,events}/
#
# 1. synth.py makes five MOTChallenge sequences (ground truth and detections with misses,
#    occlusion, jitter, false positives; see its docstring). No real detector's boxes can be had
#    here (no pretrained weights), so the detections are synthetic.
# 2. compare.py runs `kadr track --mot` and, in Python on the same rows, Roboflow's `trackers`
#    (ByteTrack, OC-SORT, SORT) and norfair, then scores each (IDF1, MOTA, ID switches).
# The Python packages go in .deps/tracking-venv (pinned below).
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
trap 'echo "tracking/run.sh: stopped: \"$BASH_COMMAND\" failed (line $LINENO, status $?)" >&2' ERR
VENV=.deps/tracking-venv
if [ ! -x "$VENV/bin/python" ]; then
    echo "tracking: installing trackers, norfair and py-motmetrics into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q trackers==2.6.1 motmetrics==1.4.0 filterpy==1.4.5
    # norfair 2.1.1 asks for rich<13, trackers for a newer one; norfair's tracking does not
    # use rich (only its drawing does), so it goes in without its pins.
    "$VENV/bin/pip" install -q --no-deps norfair==2.1.1
fi
cargo build --release --quiet --bin kadr
OUT=loadtest/results/tracking
rm -rf "$OUT" && mkdir -p "$OUT"
echo "tracking: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs" >&2
python3 loadtest/tracking/synth.py "$OUT"
"$VENV/bin/python" loadtest/tracking/compare.py "$OUT" target/release/kadr 2> >(grep -v -e UserWarning -e 'from supervision' >&2)
# 3. events.py: line crossings and zone visits counted by `kadr track --analytics` and by
#    Roboflow trackers + supervision's LineZone / PolygonZone, against the scenes' true counts.
mkdir -p loadtest/results/events
"$VENV/bin/python" loadtest/tracking/events.py loadtest/results/events target/release/kadr 2> >(grep -v -e UserWarning -e 'from supervision' >&2)
