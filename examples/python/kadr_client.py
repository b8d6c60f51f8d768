#!/usr/bin/env python3
"""Publish a video to kadr and print its detections: a complete client in plain redis-py.

    python3 examples/python/kadr_client.py --video clip.mp4 --stream cam1
    python3 examples/python/kadr_client.py --video clip.mp4 --stream cam1 --transport streams

Frames are cut from the video with ffmpeg (1280x720 JPEG), wrapped in kadr's 24-byte header
(docs/protocol.md) and published on `kadr:frames:<stream>`; results arrive in frame order on
`kadr:detections:<stream>`, refused frames on `kadr:errors:<stream>`, and, for a stream with
lines or zones (`[streams."ID".analytics]`), its crossings and zone visits on
`kadr:events:<stream>`. With `--transport
streams` the same names are Redis Streams: frames are XADDed (kept until a node has answered),
results read with XREAD from an entry id (`--from`: resume after the last id a run printed).
With `--cluster` (kadr on a Redis Cluster) every name has the stream in braces,
`kadr:frames:{<stream>}` (names version 2: one slot per stream).
"""
import argparse
import glob
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time

import redis
import redis.cluster

HEADER = struct.Struct(">4sBBHQQ")  # magic, version, flags, stream id length, seq, capture us
FLAG_KEEP = 1


def frame_message(stream: str, seq: int, jpeg: bytes, keep: bool) -> bytes:
    sid = stream.encode()
    capture_us = time.time_ns() // 1000
    return HEADER.pack(b"KADR", 1, FLAG_KEEP if keep else 0, len(sid), seq, capture_us) + sid + jpeg


def jpeg_frames(video: str, limit: int):
    """Decode the video to 1280x720 JPEG files with ffmpeg and yield their bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", video,
               "-vf", "scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2",
               "-q:v", "3"]
        if limit:
            cmd += ["-frames:v", str(limit)]
        subprocess.run(cmd + [os.path.join(tmp, "%06d.jpg")], check=True)
        for path in sorted(glob.glob(os.path.join(tmp, "*.jpg"))):
            with open(path, "rb") as f:
                yield f.read()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True)
    ap.add_argument("--stream", default="cam1")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    ap.add_argument("--prefix", default="kadr")
    ap.add_argument("--fps", type=float, default=25.0, help="publishing rate (0: as fast as possible)")
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the results")
    ap.add_argument("--transport", choices=["pubsub", "streams"], default="pubsub")
    ap.add_argument("--cluster", action="store_true",
                    help="Redis is a Redis Cluster (--redis-url one of its nodes): names version 2")
    ap.add_argument("--from", dest="from_id", default=None,
                    help="streams: read results after this entry id (default: from now on)")
    args = ap.parse_args()

    # On a Redis Cluster, commands go to the shard of their key; a PUBLISH reaches every node,
    # so pub/sub works through any one of them.
    node = redis.Redis.from_url(args.redis_url)
    r = redis.cluster.RedisCluster.from_url(args.redis_url) if args.cluster else node
    frames = list(jpeg_frames(args.video, args.max_frames))
    tag = f"{{{args.stream}}}" if args.cluster else args.stream
    frames_key = f"{args.prefix}:frames:{tag}"
    detections, errors = f"{args.prefix}:detections:{tag}", f"{args.prefix}:errors:{tag}"
    events = f"{args.prefix}:events:{tag}"
    streams = args.transport == "streams"
    if streams:
        # Where to read from: an id a previous run printed, or the newest entry now.
        def newest(key):
            last = r.xrevrange(key, count=1)
            return last[0][0] if last else "0-0"
        positions = {k: args.from_id or newest(k) for k in (detections, errors, events)}
    else:
        # Subscribe before publishing, so no result is missed.
        sub = node.pubsub()
        sub.subscribe(detections, errors, events)
        while sub.get_message(timeout=1.0) is not None:
            pass  # the subscribe confirmations

    def publish():
        start = time.monotonic()
        for seq, jpeg in enumerate(frames):
            if args.fps > 0:
                time.sleep(max(0.0, start + seq / args.fps - time.monotonic()))
            message = frame_message(args.stream, seq, jpeg, keep=True)
            if streams:
                r.xadd(frames_key, {"frame": message}, maxlen=300, approximate=True)
            else:
                r.publish(frames_key, message)

    threading.Thread(target=publish, daemon=True).start()

    def messages():
        """Results and errors as they come (JSON texts), one second at a time."""
        if not streams:
            msg = sub.get_message(timeout=1.0)
            return [msg["data"]] if msg and msg["type"] == "message" else []
        out = []
        for key, entries in r.xread(positions, block=1000) or []:
            for entry_id, fields in entries:
                positions[key.decode()] = entry_id
                out.append(fields[b"json"])
        if out:
            print(f"last id {positions[detections]!r}", file=sys.stderr)
        return out

    accounted, deadline = 0, time.monotonic() + args.timeout
    while accounted < len(frames) and time.monotonic() < deadline:
        for data in messages():
            result = json.loads(data)
            if result["type"] == "detections":
                accounted += 1
                names = ", ".join(f'{d["class"]} {d["score"]:.2f}' for d in result["detections"][:3])
                print(f'frame {result["seq"]}: {len(result["detections"])} objects {names}')
            elif result["type"] == "gap":
                accounted += result["count"]
                print(f'frames {result["seq"]}..{result["seq"] + result["count"] - 1}: {result["reason"]}')
            elif result["type"] in ("line", "zone"):
                print(f'event: {result["name"]} {result["event"]} #{result["track_id"]} '
                      f'(class {result["class_id"]}) in frame {result["seq"]}')
            else:
                print(f'error: {result["code"]}: {result["message"]}', file=sys.stderr)
    print(f"{accounted} of {len(frames)} frames accounted for")
    return 0 if accounted == len(frames) else 1


if __name__ == "__main__":
    sys.exit(main())
