#!/usr/bin/env python3
"""The hostile-camera audit's scale runs against one running kadr node over Redis Streams.

    loadtest/hostile_streams.py REDIS_URL JPEG [PREFIX] [--pid PID] [--log FILE]

1. 2,000 streams with one KEEP frame each (against limits.max_kept_frames = 288 and
   limits.max_streams = 1024 by default): how many are detected, how many become gaps.
2. 2,100 frames streams of one junk entry each (more than max_streams), then a new camera of
   20 KEEP frames: how many of its frames are detected.
3. 20,000 junk messages on new stream ids over pub/sub: how many lease keys are left, and (with
   --log, the node's log file) how many log lines they cost.
4. With --pid (the node's process): its resident memory before, after each run, after one
   50 MB entry (refused: too large) and a minute later.

Results are read from each stream's results stream ({prefix}:detections:{stream}). Start the
node first (its Redis empty), e.g. `kadr node --redis-url redis://127.0.0.1:6391`; run with
.deps/venv/bin/python. Prints one line per scenario.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import redis

# The frame encoder of the Python client example (docs/protocol.md's header).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "python"))
from kadr_client import frame_message  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("url")
ap.add_argument("jpeg")
ap.add_argument("prefix", nargs="?", default="kadr")
ap.add_argument("--pid", type=int, help="the node's process id: report its resident memory")
ap.add_argument("--log", help="the node's log file: count the lines each run adds")
args = ap.parse_args()
URL, JPEG, PREFIX = args.url, open(args.jpeg, "rb").read(), args.prefix
r = redis.Redis.from_url(URL)


def rss_mb():
    """The node's resident memory (MB), or None without --pid."""
    if args.pid is None:
        return None
    for line in Path(f"/proc/{args.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def log_lines():
    return sum(1 for _ in open(args.log, "rb")) if args.log else 0


def memory(when):
    mb = rss_mb()
    if mb is not None:
        print(f"  node's resident memory {when}: {mb:.0f} MB")


def outcome(streams, frames, timeout):
    """(detected, gaps by reason, accounted) once `frames` are accounted or `timeout` passes."""
    deadline = time.time() + timeout
    while True:
        detected, gaps, accounted = 0, {}, 0
        pipe = r.pipeline()
        for s in streams:
            pipe.xrange(f"{PREFIX}:detections:{s}")
        for entries in pipe.execute():
            for _, fields in entries:
                m = json.loads(fields[b"json"])
                if m["type"] == "detections":
                    detected += 1
                    accounted += 1
                else:
                    gaps[m["reason"]] = gaps.get(m["reason"], 0) + m["count"]
                    accounted += m["count"]
        if accounted >= frames or time.time() > deadline:
            return detected, gaps, accounted
        time.sleep(1)


memory("at the start")
start = time.time()
streams = [f"keep{i}" for i in range(2000)]
pipe = r.pipeline()
for s in streams:
    pipe.xadd(f"{PREFIX}:frames:{s}", {"frame": frame_message(s, 0, JPEG, keep=True)})
pipe.execute()
detected, gaps, accounted = outcome(streams, len(streams), 300)
print(f"2,000 one-frame KEEP streams: {detected} detected, gaps {gaps}, "
      f"{accounted} accounted, in {time.time() - start:.1f} s")

pipe = r.pipeline()
for i in range(2100):
    pipe.xadd(f"{PREFIX}:frames:junk{i}", {"frame": frame_message(f"junk{i}", 0, b"x", keep=False)})
pipe.execute()
time.sleep(3)
start = time.time()
for seq in range(20):
    r.xadd(f"{PREFIX}:frames:newcam", {"frame": frame_message("newcam", seq, JPEG, keep=True)})
detected, gaps, _ = outcome(["newcam"], 20, 120)
print(f"2,100 junk frames streams, then a camera of 20 frames: {detected} detected, "
      f"gaps {gaps}, in {time.time() - start:.1f} s")
memory("after runs 1 and 2")

lines_before = log_lines()
pipe = r.pipeline()
for i in range(20000):
    pipe.publish(f"{PREFIX}:frames:junkid{i}", b"not a frame")
    if i % 1000 == 999:
        pipe.execute()
pipe.execute()
time.sleep(5)
leases = len(r.keys(f"{PREFIX}:lease:junkid*"))
print(f"20,000 junk messages on new ids over pub/sub: {leases} lease keys left"
      + (f", {log_lines() - lines_before} log lines" if args.log else ""))

if args.pid is not None:
    memory("before a 50 MB entry")
    r.xadd(f"{PREFIX}:frames:huge", {"frame": b"\0" * (50 << 20)})
    time.sleep(3)
    memory("3 s after it")
    time.sleep(60)
    memory("a minute later")
