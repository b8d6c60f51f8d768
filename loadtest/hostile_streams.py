#!/usr/bin/env python3
"""The hostile-camera audit's scale runs against one running kadr node over Redis Streams.

    loadtest/hostile_streams.py REDIS_URL JPEG [PREFIX]

1. 2,000 streams with one KEEP frame each (against limits.max_kept_frames = 288 and
   limits.max_streams = 1024 by default): how many are detected, how many become gaps.
2. 2,100 frames streams of one junk entry each (more than max_streams), then a new camera of
   20 KEEP frames: how many of its frames are detected.

Results are read from each stream's results stream ({prefix}:detections:{stream}). Start the
node first (its Redis empty), e.g. `kadr node --redis-url redis://127.0.0.1:6391`; run with
.deps/venv/bin/python. Prints one line per scenario.
"""
import json
import sys
import time
from pathlib import Path

import redis

# The frame encoder of the Python client example (docs/protocol.md's header).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "python"))
from kadr_client import frame_message  # noqa: E402

URL, JPEG = sys.argv[1], open(sys.argv[2], "rb").read()
PREFIX = sys.argv[3] if len(sys.argv) > 3 else "kadr"
r = redis.Redis.from_url(URL)


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
