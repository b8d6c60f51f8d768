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
import struct
import sys
import time

import redis

URL, JPEG = sys.argv[1], open(sys.argv[2], "rb").read()
PREFIX = sys.argv[3] if len(sys.argv) > 3 else "kadr"
KEEP = 1
r = redis.Redis.from_url(URL)


def frame(stream, seq, flags, jpeg):
    """A frame message (docs/protocol.md): magic, version, flags, id length, seq, capture time."""
    sid = stream.encode()
    header = struct.pack(">HQQ", len(sid), seq, int(time.time() * 1e6))
    return b"KADR" + bytes([1, flags]) + header + sid + jpeg


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
    pipe.xadd(f"{PREFIX}:frames:{s}", {"frame": frame(s, 0, KEEP, JPEG)})
pipe.execute()
detected, gaps, accounted = outcome(streams, len(streams), 300)
print(f"2,000 one-frame KEEP streams: {detected} detected, gaps {gaps}, "
      f"{accounted} accounted, in {time.time() - start:.1f} s")

pipe = r.pipeline()
for i in range(2100):
    pipe.xadd(f"{PREFIX}:frames:junk{i}", {"frame": frame(f"junk{i}", 0, 0, b"x")})
pipe.execute()
time.sleep(3)
start = time.time()
for seq in range(20):
    r.xadd(f"{PREFIX}:frames:newcam", {"frame": frame("newcam", seq, KEEP, JPEG)})
detected, gaps, _ = outcome(["newcam"], 20, 120)
print(f"2,100 junk frames streams, then a camera of 20 frames: {detected} detected, "
      f"gaps {gaps}, in {time.time() - start:.1f} s")
