#!/usr/bin/env python3
"""A hostile publisher for soak tests: frame messages that are wrong in every way a node must
refuse, at a steady rate, on streams of their own (`fz-*`), so that what they cost the node and
the legitimate streams beside them can be measured.

    loadtest/fuzz.py --redis-url redis://127.0.0.1:6379 --prefix kadr --rate 200 --seconds 600

Each message is one of: random bytes; a truncated header; bad magic, version or flags; a stream
id that disagrees with the channel; junk on a new stream id (one never seen); a sequence number
near 2^64 or a jump far ahead; a JPEG header declaring 16000x2500; a real frame cut short; a
real frame marked KEEP at the flood's own pace. Prints a count per kind at the end (JSON).
"""
import argparse
import json
import os
import random
import struct
import sys
import time

import redis


def header(stream: bytes, seq: int, flags: int = 0, magic=b"KADR", version=1) -> bytes:
    return struct.pack(">4sBBHQQ", magic, version, flags, len(stream), seq, time.time_ns() // 1000) + stream


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    ap.add_argument("--prefix", default="kadr")
    ap.add_argument("--rate", type=float, default=200.0, help="messages per second")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--jpeg", help="a real JPEG frame to corrupt (default: a minimal header only)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    r = redis.Redis.from_url(args.redis_url)
    jpeg = open(args.jpeg, "rb").read() if args.jpeg else b"\xff\xd8\xff\xd9"
    # A baseline frame header declaring 16000x2500, then the real frame's remaining bytes.
    huge = b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 2500, 16000) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01" + jpeg[2:]
    counts: dict[str, int] = {}
    seqs = {b"fz-keep": 0, b"fz-jump": 0}
    fresh = 0

    def kind_message(kind: str) -> tuple[bytes, bytes]:
        nonlocal fresh
        s = b"fz-" + kind.encode()
        if kind == "random":
            return s, os.urandom(rng.randint(0, 2048))
        if kind == "truncated":
            return s, header(s, 1)[: rng.randint(0, 23)]
        if kind == "bad_magic":
            return s, header(s, 1, magic=b"KADX") + jpeg
        if kind == "bad_version":
            return s, header(s, 1, version=9) + jpeg
        if kind == "bad_flags":
            return s, header(s, 1, flags=0x80) + jpeg
        if kind == "mismatch":
            return s, header(b"someone-else", 1) + jpeg
        if kind == "new_stream_junk":
            fresh += 1
            s = b"fz-new-%d" % fresh
            return s, header(s, 0) + os.urandom(16)
        if kind == "seq_huge":
            return s, header(s, rng.choice([2**64 - 1, 2**64 - 10, 2**53]), 0) + jpeg
        if kind == "seq_jump":
            seqs[b"fz-jump"] += 1
            seq = seqs[b"fz-jump"] + (900 if rng.random() < 0.5 else 0)
            return b"fz-jump", header(b"fz-jump", seq) + jpeg
        if kind == "huge_header":
            return s, header(s, rng.randint(1, 10**6)) + huge
        if kind == "cut_short":
            return s, header(s, rng.randint(1, 10**6)) + jpeg[: len(jpeg) // 2]
        if kind == "keep_flood":
            seqs[b"fz-keep"] += 1
            return b"fz-keep", header(b"fz-keep", seqs[b"fz-keep"], flags=1) + jpeg
        raise ValueError(kind)

    kinds = ["random", "truncated", "bad_magic", "bad_version", "bad_flags", "mismatch",
             "new_stream_junk", "seq_huge", "seq_jump", "huge_header", "cut_short", "keep_flood"]
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < args.seconds:
        kind = rng.choice(kinds)
        stream, payload = kind_message(kind)
        try:
            r.publish(b"%s:frames:%s" % (args.prefix.encode(), stream), payload)
        except redis.RedisError as e:
            print(f"fuzz: publish failed: {e}", file=sys.stderr)
            time.sleep(0.5)
        counts[kind] = counts.get(kind, 0) + 1
        sent += 1
        delay = start + sent / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"sent": sent, "by_kind": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
