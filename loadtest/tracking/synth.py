#!/usr/bin/env python3
"""Synthetic MOTChallenge sequences for scoring trackers: ground truth and detections.

No real detector's boxes can be had on the machines this project is built on (no pretrained
weights), so the detections are made the way a detector errs: objects walk or drive, enter and
leave, cross and hide one another; the detector misses some, scores a partly hidden one low,
jitters every box, and sees things that are not there (scattered false positives, and clutter
that persists for a while). Each sequence is `{out}/{name}/gt.txt` (frame,id,l,t,w,h,1,class,vis)
and `{out}/{name}/det.txt` (frame,-1,l,t,w,h,score,class,-1,-1), frames from 1, 1280x720, 30 fps.

    python3 synth.py OUT_DIR          # the five standard sequences, fixed seeds
"""

import math
import random
import sys
from pathlib import Path

W, H, FRAMES = 1280, 720, 600
PERSON, CAR = 0, 2

# name: (objects on screen, share of cars, speed scale, miss rate, jitter (share of size),
#        scattered false positives per frame, clutter spots, turning, seed)
SEQUENCES = {
    "walkers": (8, 0.0, 1.0, 0.05, 0.03, 0.3, 1, 0.0, 1),
    "crossing-crowd": (64, 0.0, 1.0, 0.08, 0.04, 0.8, 3, 0.0, 2),
    "traffic": (14, 0.8, 3.0, 0.05, 0.03, 0.5, 2, 0.0, 3),
    "stop-and-go": (16, 0.3, 1.2, 0.08, 0.04, 0.5, 2, 0.08, 4),
    "noisy": (18, 0.3, 1.0, 0.20, 0.08, 2.0, 4, 0.03, 5),
}


class Obj:
    def __init__(self, rng, oid, cls, speed):
        self.id, self.cls = oid, cls
        if cls == CAR:
            self.w = rng.uniform(110, 220)
            self.h = self.w * rng.uniform(0.5, 0.7)
            v = rng.uniform(4, 9) * speed
        else:
            self.w = rng.uniform(30, 75)
            self.h = self.w * rng.uniform(2.2, 2.8)
            v = rng.uniform(1.0, 3.0) * speed
        # Enter from a side (mostly left or right, sometimes top or bottom), heading across.
        side = rng.choices(["l", "r", "t", "b"], [0.4, 0.4, 0.1, 0.1])[0]
        y = rng.uniform(0.25 * H, H - self.h)
        x = rng.uniform(0, W - self.w)
        if side == "l":
            self.x, self.y, ang = -self.w + 1, y, rng.uniform(-0.3, 0.3)
        elif side == "r":
            self.x, self.y, ang = W - 1, y, math.pi + rng.uniform(-0.3, 0.3)
        elif side == "t":
            self.x, self.y, ang = x, 0.15 * H, math.pi / 2 + rng.uniform(-0.5, 0.5)
        else:
            self.x, self.y, ang = x, H - 1, -math.pi / 2 + rng.uniform(-0.5, 0.5)
        self.vx, self.vy = v * math.cos(ang), v * math.sin(ang)
        self.v = v
        self.stopped = 0

    def step(self, rng, turning):
        if turning and rng.random() < turning:
            # Turn, stop or start again.
            choice = rng.random()
            if choice < 0.3:
                self.stopped = rng.randint(10, 60)
            else:
                ang = math.atan2(self.vy, self.vx) + rng.uniform(-0.8, 0.8)
                self.vx, self.vy = self.v * math.cos(ang), self.v * math.sin(ang)
        if self.stopped:
            self.stopped -= 1
            return
        self.x += self.vx
        self.y += self.vy
        # Perspective: nearer (lower) objects are a little larger; growth follows y.
        scale = 1 + 0.0004 * self.vy
        self.w *= scale
        self.h *= scale

    def box(self):
        return (self.x, self.y, self.w, self.h)

    def gone(self):
        return self.x > W or self.x + self.w < 0 or self.y > H or self.y + self.h < 0


def visible_share(o, in_front):
    """Share of `o` not hidden by the objects in front of it (a coarse grid, 8x8 cells)."""
    x, y, w, h = o.box()
    cells, seen = 0, 0
    for i in range(8):
        for j in range(8):
            cx, cy = x + (i + 0.5) * w / 8, y + (j + 0.5) * h / 8
            if not (0 <= cx < W and 0 <= cy < H):
                continue
            cells += 1
            if not any(f.x <= cx < f.x + f.w and f.y <= cy < f.y + f.h for f in in_front):
                seen += 1
    return seen / 64, cells / 64


def clip(x, y, w, h):
    x1, y1, x2, y2 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    return x1, y1, x2 - x1, y2 - y1


def make(name, out):
    (count, cars, speed, miss, jitter, fp_rate, clutter_spots, turning, seed) = SEQUENCES[name]
    rng = random.Random(seed)
    objs, next_id = [], 1
    gt_rows, det_rows = [], []
    clutter = [dict(x=rng.uniform(0, W - 80), y=rng.uniform(0, H - 120), w=rng.uniform(30, 80),
                    h=rng.uniform(60, 150), on=0) for _ in range(clutter_spots)]
    # Start with the scene already populated: objects placed across the frame.
    for _ in range(count):
        o = Obj(rng, next_id, CAR if rng.random() < cars else PERSON, speed)
        o.x = rng.uniform(0, W - o.w)
        next_id += 1
        objs.append(o)
    for f in range(1, FRAMES + 1):
        for o in objs:
            o.step(rng, turning)
        objs = [o for o in objs if not o.gone()]
        while len(objs) < count and rng.random() < 0.3:
            objs.append(Obj(rng, next_id, CAR if rng.random() < cars else PERSON, speed))
            next_id += 1
        # Nearer objects (lower bottom edge) hide farther ones.
        by_depth = sorted(objs, key=lambda o: o.y + o.h)
        for k, o in enumerate(by_depth):
            vis, inside = visible_share(o, by_depth[k + 1:])
            x, y, w, h = clip(*o.box())
            if w < 4 or h < 4 or inside < 0.3:
                continue
            if vis >= 0.25:
                gt_rows.append(f"{f},{o.id},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,{o.cls + 1},{vis:.2f}")
            if vis < 0.3 or rng.random() < miss:
                continue
            # A detector's scores: most true boxes confident, partly hidden ones low.
            if vis < 0.7:
                score = rng.uniform(0.1, 0.55)
            else:
                score = min(0.99, max(0.3, rng.gauss(0.78, 0.12)))
            j = jitter
            dx, dy = rng.gauss(0, j * w), rng.gauss(0, j * h)
            dw, dh = rng.gauss(0, j * w), rng.gauss(0, j * h)
            bx, by, bw, bh = clip(x + dx, y + dy, max(4, w + dw), max(4, h + dh))
            if bw >= 2 and bh >= 2:
                det_rows.append(f"{f},-1,{bx:.2f},{by:.2f},{bw:.2f},{bh:.2f},{score:.3f},{o.cls},-1,-1")
        # Scattered false positives, mostly low-scoring, and clutter that lasts a while.
        n_fp = sum(1 for _ in range(8) if rng.random() < fp_rate / 8)
        for _ in range(n_fp):
            w = rng.uniform(25, 120)
            h = w * rng.uniform(0.6, 2.6)
            score = rng.uniform(0.1, 0.45) if rng.random() < 0.8 else rng.uniform(0.45, 0.75)
            det_rows.append(f"{f},-1,{rng.uniform(0, W - w):.2f},{rng.uniform(0, H - h):.2f},"
                            f"{w:.2f},{h:.2f},{score:.3f},{PERSON},-1,-1")
        for c in clutter:
            if c["on"] == 0 and rng.random() < 0.01:
                c["on"] = rng.randint(10, 45)
            if c["on"]:
                c["on"] -= 1
                if rng.random() < 0.8:
                    det_rows.append(f"{f},-1,{c['x'] + rng.gauss(0, 3):.2f},{c['y'] + rng.gauss(0, 3):.2f},"
                                    f"{c['w']:.2f},{c['h']:.2f},{rng.uniform(0.35, 0.7):.3f},{PERSON},-1,-1")
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "gt.txt").write_text("\n".join(gt_rows) + "\n")
    (d / "det.txt").write_text("\n".join(det_rows) + "\n")
    return len(gt_rows), len(det_rows), next_id - 1


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "loadtest/results/tracking/sequences")
    for name in SEQUENCES:
        gt, det, ids = make(name, out)
        print(f"{name}: {FRAMES} frames, {ids} objects, {gt} ground-truth boxes, {det} detections",
              file=sys.stderr)


if __name__ == "__main__":
    main()
