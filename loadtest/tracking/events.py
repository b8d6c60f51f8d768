#!/usr/bin/env python3
"""Count line crossings and zone visits: kadr's analytics against what users build today.

Makes scenes with known true crossings and zone visits (1280x720, 30 fps): people and cars that
cross a counting line from both sides, some that walk up to the line and hover on it before
going on or turning back, some hidden by a pillar while they cross, and some that walk into a
zone, stay one to six seconds and leave. Detections carry a detector's errors as in synth.py
(misses, jitter of a few percent of the box, false positives). The truth is counted on the true
paths (no jitter), with the same geometry as kadr.

Every counter gets the same detection rows: `kadr track --mot det.txt --analytics
A.toml --events OUT`, and, in Python, Roboflow `trackers` (ByteTrack, SORT) feeding
`supervision`'s LineZone (at each `minimum_crossing_threshold` a user might pick) and
PolygonZone (entries counted per tracker id, time in zone from its first frame inside, as
Roboflow's time-in-zone does). Count error = sum |counted - true| / sum true.

    python3 events.py OUT_DIR path/to/kadr      # prints a Markdown table, writes events.json
"""

import json
import math
import random
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from compare import read_det  # the tracking benchmark's reader of detection rows

warnings.filterwarnings("ignore")

W, H, FPS, FRAMES = 1280, 720, 30, 1800
PERSON, CAR = 0, 2
LINE = ((640.0, 120.0), (640.0, 710.0))
ZONE = [(820.0, 330.0), (1180.0, 330.0), (1180.0, 690.0), (820.0, 690.0)]
DWELL_S = 2.0
# A pillar in front of the line's upper part: objects whose middle is behind it are not
# detected (for half a second to a second and a half at a walker's pace).
PILLAR = (615.0, 120.0, 665.0, 420.0)

# name: (crossers, hoverers, parkers, miss rate, jitter (share of size), false positives per
#        frame, seed)
SCENES = {
    "gate": (90, 40, 0, 0.05, 0.04, 0.5, 11),
    "gate-noisy": (90, 40, 0, 0.15, 0.07, 1.5, 12),
    "lot": (30, 10, 45, 0.05, 0.04, 0.5, 13),
}


def side(p):
    (fx, fy), (tx, ty) = LINE
    return (tx - fx) * (p[1] - fy) - (ty - fy) * (p[0] - fx)


def through_segment(a, b):
    (fx, fy), (tx, ty) = LINE
    da, db = side(a), side(b)
    if da * db > 0 or da == db:
        return False
    t = da / (da - db)
    hit = (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
    dx, dy = tx - fx, ty - fy
    along = ((hit[0] - fx) * dx + (hit[1] - fy) * dy) / (dx * dx + dy * dy)
    return 0 <= along <= 1


def inside(p, poly=ZONE):
    x, y = p
    c = False
    j = len(poly) - 1
    for i in range(len(poly)):
        (ax, ay), (bx, by) = poly[i], poly[j]
        if (ay > y) != (by > y) and x < ax + (y - ay) / (by - ay) * (bx - ax):
            c = not c
        j = i
    return c


class Obj:
    """An object on a scripted path: a list of (x, y) anchor points, one per frame."""

    def __init__(self, oid, cls, start, path):
        self.id, self.cls, self.start, self.path = oid, cls, start, path
        if cls == CAR:
            self.w = random.uniform(110, 200)
            self.h = self.w * random.uniform(0.5, 0.7)
        else:
            self.w = random.uniform(30, 70)
            self.h = self.w * random.uniform(2.2, 2.8)

    def anchor(self, f):
        i = f - self.start
        return self.path[i] if 0 <= i < len(self.path) else None


def walk(a, b, speed):
    n = max(1, int(math.dist(a, b) / speed))
    return [(a[0] + (b[0] - a[0]) * k / n, a[1] + (b[1] - a[1]) * k / n) for k in range(n)]


def stay(p, frames, sway=0.5):
    """Standing at `p`, swaying a little (the true anchor; the detector's jitter comes later)."""
    return [(p[0] + random.uniform(-sway, sway), p[1] + random.uniform(-sway, sway))
            for _ in range(frames)]


def make_scene(name, out):
    crossers, hoverers, parkers, miss, jitter, fp_rate, seed = SCENES[name]
    random.seed(seed)
    objs, oid = [], 0

    def new(cls, path):
        nonlocal oid
        oid += 1
        objs.append(Obj(oid, cls, random.randint(1, FRAMES - len(path) // 2), path))

    for _ in range(crossers):
        cls = CAR if random.random() < 0.3 else PERSON
        speed = random.uniform(4, 9) if cls == CAR else random.uniform(1.2, 3.5)
        y0, y1 = random.uniform(200, 700), random.uniform(200, 700)
        a, b = (-60.0, y0), (W + 60.0, y1)
        if random.random() < 0.5:
            a, b = b, a
        new(cls, walk(a, b, speed))
    for _ in range(hoverers):
        speed = random.uniform(1.0, 3.0)
        y = random.uniform(250, 700)
        left = random.random() < 0.5
        start = (-60.0, y) if left else (W + 60.0, y)
        # Stops with its feet 3 to 12 px from the line, a second or three, then goes on or back.
        near = random.uniform(3, 12) * (-1 if left else 1)
        stop = (640.0 + near, y + random.uniform(-20, 20))
        path = walk(start, stop, speed) + stay(stop, random.randint(30, 90))
        end = (W + 60.0, y) if left else (-60.0, y)
        path += walk(path[-1], end if random.random() < 0.5 else start, speed)
        new(PERSON, path)
    for _ in range(parkers):
        cls = CAR if random.random() < 0.5 else PERSON
        speed = random.uniform(2, 5) if cls == CAR else random.uniform(1.2, 3.0)
        spot = (random.uniform(880, 1120), random.uniform(400, 650))
        start = (W + 60.0, random.uniform(350, 700))
        path = walk(start, spot, speed) + stay(spot, random.randint(30, 180))
        path += walk(path[-1], (W + 60.0, random.uniform(350, 700)), speed)
        new(cls, path)

    truth = dict(line_in=0, line_out=0, zone_entered=0, dwell_frames=[])
    det_rows = []
    for o in objs:
        prev, inside_since = None, None
        for i, p in enumerate(o.path):
            f = o.start + i
            if f > FRAMES:
                break
            if prev is not None and (side(prev) > 0) != (side(p) > 0) and through_segment(prev, p):
                if side(p) > 0:
                    truth["line_in"] += 1
                else:
                    truth["line_out"] += 1
            now_in = inside(p)
            if now_in and inside_since is None:
                inside_since = f
                truth["zone_entered"] += 1
            elif not now_in and inside_since is not None:
                if f - inside_since >= DWELL_S * FPS:
                    truth["dwell_frames"].append(inside_since + int(DWELL_S * FPS))
                inside_since = None
            prev = p
        end = min(o.start + len(o.path), FRAMES + 1)
        if inside_since is not None and end - inside_since >= DWELL_S * FPS:
            truth["dwell_frames"].append(inside_since + int(DWELL_S * FPS))

    rng = random.Random(seed + 100)
    for f in range(1, FRAMES + 1):
        for o in objs:
            p = o.anchor(f)
            if p is None:
                continue
            x1, y1 = p[0] - o.w / 2, p[1] - o.h
            cx, cy = p[0], p[1] - o.h / 2
            if not (0 <= cx < W and 0 <= p[1] - o.h / 4 < H):
                continue
            hidden = PILLAR[0] <= cx <= PILLAR[2] and PILLAR[1] <= cy <= PILLAR[3]
            if hidden or rng.random() < miss:
                continue
            bx = x1 + rng.gauss(0, jitter * o.w)
            by = y1 + rng.gauss(0, jitter * o.h)
            bw = max(4, o.w + rng.gauss(0, jitter * o.w))
            bh = max(4, o.h + rng.gauss(0, jitter * o.h))
            score = min(0.99, max(0.3, rng.gauss(0.78, 0.12)))
            det_rows.append(f"{f},-1,{bx:.2f},{by:.2f},{bw:.2f},{bh:.2f},{score:.3f},{o.cls},-1,-1")
        for _ in range(sum(1 for _ in range(8) if rng.random() < fp_rate / 8)):
            w = rng.uniform(25, 120)
            h = w * rng.uniform(0.6, 2.6)
            det_rows.append(f"{f},-1,{rng.uniform(0, W - w):.2f},{rng.uniform(0, H - h):.2f},"
                            f"{w:.2f},{h:.2f},{rng.uniform(0.1, 0.6):.3f},{PERSON},-1,-1")
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "det.txt").write_text("\n".join(det_rows) + "\n")
    (d / "truth.json").write_text(json.dumps(truth))
    return truth


def analytics_toml(rejoin_frames=None):
    (fx, fy), (tx, ty) = LINE
    poly = ", ".join(f"[{x}, {y}]" for x, y in ZONE)
    head = f"rejoin_frames = {rejoin_frames}\n\n" if rejoin_frames is not None else ""
    return (head + f'[[lines]]\nname = "gate"\nfrom = [{fx}, {fy}]\nto = [{tx}, {ty}]\n\n'
            f'[[zones]]\nname = "lot"\npolygon = [{poly}]\ndwell_s = {DWELL_S}\n')


def run_kadr(kadr, seq, rejoin_frames=None):
    """kadr with its defaults, or with `rejoin_frames` set (0: a new track id is never taken for
    an object found again)."""
    cfg = seq / "analytics.toml"
    cfg.write_text(analytics_toml(rejoin_frames))
    events = seq / "kadr-events.jsonl"
    r = subprocess.run([kadr, "track", "--mot", str(seq / "det.txt"), "--analytics", str(cfg),
                        "--events", str(events), "--fps", str(FPS)],
                       capture_output=True, text=True, check=True)
    ms = float(re.search(r"analytics ([0-9.]+) ms per frame", r.stderr).group(1))
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    counts = rows[-1]
    dwell = [e["seq"] for e in rows[:-1] if e.get("event") == "dwell"]
    return dict(line_in=counts["lines"]["gate"]["in"], line_out=counts["lines"]["gate"]["out"],
                zone_entered=counts["zones"]["lot"]["entered"], dwell_frames=dwell, ms=ms)


def run_peer(make_tracker, frames, threshold):
    import supervision as sv
    tracker = make_tracker()
    (fx, fy), (tx, ty) = LINE
    line = sv.LineZone(start=sv.Point(fx, fy), end=sv.Point(tx, ty),
                       triggering_anchors=[sv.Position.BOTTOM_CENTER],
                       minimum_crossing_threshold=threshold)
    zone = sv.PolygonZone(polygon=np.array(ZONE, dtype=np.int32),
                          triggering_anchors=[sv.Position.BOTTOM_CENTER])
    in_zone_since, entered, dwell, told, took = {}, 0, [], set(), 0.0
    for f in range(1, FRAMES + 1):
        dets = frames.get(f, [])
        det = sv.Detections(
            xyxy=np.array([d[:4] for d in dets], dtype=np.float32).reshape(-1, 4),
            confidence=np.array([d[4] for d in dets], dtype=np.float32),
            class_id=np.array([d[5] for d in dets], dtype=int))
        tracked = tracker.update(det)
        if tracked.tracker_id is None:
            continue
        tracked = tracked[tracked.tracker_id >= 0]
        start = time.perf_counter()
        line.trigger(tracked)
        inside_now = zone.trigger(tracked)
        seen = set()
        for tid, now_in in zip(tracked.tracker_id, inside_now):
            tid = int(tid)
            seen.add(tid)
            if now_in and tid not in in_zone_since:
                in_zone_since[tid] = f
                entered += 1
            elif not now_in:
                in_zone_since.pop(tid, None)
            if tid in in_zone_since and tid not in told and \
                    f - in_zone_since[tid] >= DWELL_S * FPS:
                told.add(tid)
                dwell.append(f)
        took += time.perf_counter() - start
    return dict(line_in=line.in_count, line_out=line.out_count, zone_entered=entered,
                dwell_frames=dwell, ms=took * 1000 / FRAMES)


def line_error(r, t):
    # supervision's `in` may be kadr's `out`: the peer is scored with whichever is better.
    straight = abs(r["line_in"] - t["line_in"]) + abs(r["line_out"] - t["line_out"])
    swapped = abs(r["line_out"] - t["line_in"]) + abs(r["line_in"] - t["line_out"])
    return min(straight, swapped), t["line_in"] + t["line_out"]


def dwell_error(found, truth):
    """Dwell events: count error, and the mean frames from each true one to its nearest."""
    if not truth:
        return 0, 0, None
    offsets = [min((abs(f - t) for f in found), default=None) for t in truth]
    near = [o for o in offsets if o is not None and o <= 30]
    return abs(len(found) - len(truth)), len(truth), (sum(near) / len(near) if near else None)


def cost(out, kadr):
    """kadr's analytics cost per frame with 10 lines and 10 zones over 50 tracked objects."""
    d = out / "cost"
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for f in range(1, 601):
        for k in range(50):
            # 50 people on a grid, each walking its own small loop.
            x = 40 + (k % 10) * 120 + 30 * math.cos(f / 20 + k)
            y = 60 + (k // 10) * 130 + 30 * math.sin(f / 20 + k)
            rows.append(f"{f},-1,{x:.2f},{y:.2f},40.00,100.00,0.900,0,-1,-1")
    (d / "det.txt").write_text("\n".join(rows) + "\n")
    toml = []
    for i in range(10):
        x = 100 + i * 120
        toml.append(f'[[lines]]\nname = "l{i}"\nfrom = [{x}, 0]\nto = [{x}, 719]\n')
        y = 60 + (i % 5) * 130
        toml.append(f'[[zones]]\nname = "z{i}"\npolygon = [[{x - 50}, {y}], [{x + 50}, {y}], '
                    f'[{x + 50}, {y + 120}], [{x - 50}, {y + 120}]]\ndwell_s = 1\n')
    (d / "analytics.toml").write_text("\n".join(toml))
    r = subprocess.run([kadr, "track", "--mot", str(d / "det.txt"), "--analytics",
                        str(d / "analytics.toml"), "--events", str(d / "events.jsonl")],
                       capture_output=True, text=True, check=True)
    tracked = len(r.stdout.splitlines()) / 600
    ms = float(re.search(r"analytics ([0-9.]+) ms per frame", r.stderr).group(1))
    return tracked, ms


def main():
    out, kadr = Path(sys.argv[1]), sys.argv[2]
    import trackers
    peers = {
        "ByteTrack": lambda: trackers.ByteTrackTracker(lost_track_buffer=30),
        "SORT": lambda: trackers.SORTTracker(lost_track_buffer=30),
    }
    thresholds = [1, 2, 4, 8]
    results = {}
    for name in SCENES:
        truth = make_scene(name, out)
        seq = out / name
        frames = read_det(seq / "det.txt")
        per = {"kadr (ByteTrack + analytics, Rust)": run_kadr(kadr, seq),
               "kadr, rejoin_frames = 0 (no object found again under a new id)":
                   run_kadr(kadr, seq, rejoin_frames=0)}
        for tname, make in peers.items():
            for k in thresholds:
                per[f"Roboflow trackers {tname} + supervision, minimum_crossing_threshold={k}"] = \
                    run_peer(make, frames, k)
        results[name] = dict(truth=truth, counters=per)
        print(f"{name}: truth in {truth['line_in']} out {truth['line_out']} "
              f"entered {truth['zone_entered']} dwell {len(truth['dwell_frames'])}", file=sys.stderr)
    names = list(next(iter(results.values()))["counters"])
    rows = ["| counter | " + " | ".join(f"{s}: line / zone entries / dwell" for s in results)
            + " | line count error (all) | zone entry error (all) | dwell count error (all) "
              "| dwell frames off (mean) | ms per frame |",
            "| --- " * (len(results) + 6) + "|"]
    summary = {}
    for n in names:
        cells, tot = [], dict(l=0, lt=0, z=0, zt=0, d=0, dt=0, off=[], ms=[])
        for s, r in results.items():
            c, t = r["counters"][n], r["truth"]
            le, lt = line_error(c, t)
            ze, zt = abs(c["zone_entered"] - t["zone_entered"]), t["zone_entered"]
            de, dt, off = dwell_error(c["dwell_frames"], t["dwell_frames"])
            tot["l"] += le; tot["lt"] += lt; tot["z"] += ze; tot["zt"] += zt
            tot["d"] += de; tot["dt"] += dt; tot["ms"].append(c["ms"])
            if off is not None:
                tot["off"].append(off)
            cells.append(f"{c['line_in']}+{c['line_out']} (true {t['line_in']}+{t['line_out']})"
                         f" / {c['zone_entered']} ({zt}) / {len(c['dwell_frames'])} ({dt})")
        pct = lambda a, b: f"{100 * a / b:.1f}%" if b else "-"
        off = f"{sum(tot['off']) / len(tot['off']):.1f}" if tot["off"] else "-"
        summary[n] = dict(line_error=tot["l"] / max(1, tot["lt"]), zone_error=tot["z"] / max(1, tot["zt"]),
                          dwell_error=tot["d"] / max(1, tot["dt"]), dwell_frames_off=off)
        rows.append(f"| {n} | " + " | ".join(cells) + f" | {pct(tot['l'], tot['lt'])} | "
                    f"{pct(tot['z'], tot['zt'])} | {pct(tot['d'], tot['dt'])} | {off} | "
                    f"{sum(tot['ms']) / len(tot['ms']):.4f} |")
    table = "\n".join(rows)
    tracked, ms = cost(out, kadr)
    table += (f"\n\nkadr's analytics with 10 lines and 10 zones, {tracked:.0f} tracked objects a "
              f"frame on average: {ms:.4f} ms per frame")
    print(table)
    (out / "events.json").write_text(json.dumps(dict(results=results, summary=summary), indent=1))
    (out / "events.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
