#!/usr/bin/env python3
"""Score kadr's tracker against the trackers users pick instead, on the same detections.

For each sequence made by synth.py, runs `kadr track --mot det.txt`, Roboflow's `trackers`
(ByteTrack, OC-SORT, SORT) and norfair, each with its defaults and a 30-frame lost-track buffer
(where the tracker has one), and scores every output against the ground truth with
py-motmetrics (IoU >= 0.5): IDF1, MOTA, ID switches. Prints a Markdown table (per sequence and
the mean) and writes it, with the raw figures as JSON, next to the sequences.

    python3 compare.py SEQUENCES_DIR path/to/kadr
"""

import io
import json
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
# py-motmetrics 1.4.0 (the latest) still calls np.asfarray, which NumPy 2 removed; the trackers
# compared need NumPy 2.
if not hasattr(np, "asfarray"):
    np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)


def read_det(path):
    frames = {}
    for line in Path(path).read_text().splitlines():
        f = line.split(",")
        frame = int(float(f[0]))
        l, t, w, h, s = map(float, f[2:7])
        frames.setdefault(frame, []).append((l, t, l + w, t + h, s, int(float(f[7]))))
    return frames


def rows_of(frame, ids, boxes):
    return [f"{frame},{i},{b[0]:.2f},{b[1]:.2f},{b[2] - b[0]:.2f},{b[3] - b[1]:.2f},1,-1,-1,-1"
            for i, b in zip(ids, boxes)]


def run_kadr(kadr, seq):
    r = subprocess.run([kadr, "track", "--mot", str(seq / "det.txt")], capture_output=True,
                       text=True, check=True)
    ms = float(re.search(r"([0-9.]+) ms per frame", r.stderr).group(1))
    return r.stdout, ms


def run_roboflow(make, frames, last):
    import supervision as sv
    tracker = make()
    out, took = [], 0.0
    for frame in range(1, last + 1):
        dets = frames.get(frame, [])
        arr = np.array([d[:4] for d in dets], dtype=np.float32).reshape(-1, 4)
        det = sv.Detections(xyxy=arr,
                            confidence=np.array([d[4] for d in dets], dtype=np.float32),
                            class_id=np.array([d[5] for d in dets], dtype=int))
        start = time.perf_counter()
        tracked = tracker.update(det)
        took += time.perf_counter() - start
        if tracked.tracker_id is None:
            continue
        keep = tracked.tracker_id >= 0
        out += rows_of(frame, tracked.tracker_id[keep], tracked.xyxy[keep])
    return "\n".join(out) + "\n", took * 1000 / last


def run_norfair(frames, last):
    from norfair import Detection, Tracker
    tracker = Tracker(distance_function="iou", distance_threshold=0.7, hit_counter_max=30)
    out, took = [], 0.0
    for frame in range(1, last + 1):
        dets = [Detection(points=np.array([[d[0], d[1]], [d[2], d[3]]]),
                          scores=np.array([d[4], d[4]]), label=d[5])
                for d in frames.get(frame, [])]
        start = time.perf_counter()
        objs = tracker.update(detections=dets)
        took += time.perf_counter() - start
        boxes, ids = [], []
        this_frame = {id(d) for d in dets}
        for o in objs:
            if id(o.last_detection) not in this_frame:
                continue  # not matched in this frame: its box would be a guess
            p = o.last_detection.points
            boxes.append((p[0][0], p[0][1], p[1][0], p[1][1]))
            ids.append(o.id)
        out += rows_of(frame, ids, boxes)
    return "\n".join(out) + "\n", took * 1000 / last


def score(gt_path, text):
    import motmetrics as mm
    gt = mm.io.loadtxt(str(gt_path), fmt="mot15-2D", min_confidence=1)
    ts = mm.io.loadtxt(io.StringIO(text), fmt="mot15-2D") if text.strip() else None
    acc = mm.utils.compare_to_groundtruth(gt, ts, "iou", distth=0.5)
    s = mm.metrics.create().compute(acc, metrics=["idf1", "mota", "num_switches"],
                                    name="x")
    return dict(idf1=float(s["idf1"].iloc[0]), mota=float(s["mota"].iloc[0]),
                switches=int(s["num_switches"].iloc[0]))


def main():
    seqs_dir, kadr = Path(sys.argv[1]), sys.argv[2]
    import trackers
    peers = {
        "Roboflow trackers ByteTrack": lambda: trackers.ByteTrackTracker(lost_track_buffer=30),
        # The same new-track threshold as kadr's default, so that difference is not the one
        # that is measured.
        "Roboflow trackers ByteTrack, tracks from 0.3": lambda: trackers.ByteTrackTracker(
            lost_track_buffer=30, track_activation_threshold=0.3),
        "Roboflow trackers OC-SORT": lambda: trackers.OCSORTTracker(lost_track_buffer=30),
        "Roboflow trackers SORT": lambda: trackers.SORTTracker(lost_track_buffer=30),
    }
    results = {}
    seqs = sorted(p for p in seqs_dir.iterdir() if (p / "det.txt").exists())
    for seq in seqs:
        frames = read_det(seq / "det.txt")
        last = max(frames)
        per = {}
        text, ms = run_kadr(kadr, seq)
        per["kadr (ByteTrack, Rust)"] = dict(score(seq / "gt.txt", text), ms=ms)
        for name, make in peers.items():
            text, ms = run_roboflow(make, frames, last)
            per[name] = dict(score(seq / "gt.txt", text), ms=ms)
        text, ms = run_norfair(frames, last)
        per["norfair (IoU)"] = dict(score(seq / "gt.txt", text), ms=ms)
        dets = sum(len(v) for v in frames.values()) / last
        results[seq.name] = dict(trackers=per, detections_per_frame=dets)
        print(f"{seq.name}: " + ", ".join(f"{n} IDF1 {r['idf1']:.3f} MOTA {r['mota']:.3f}"
                                          for n, r in per.items()), file=sys.stderr)
    names = list(next(iter(results.values()))["trackers"])
    lines = ["| tracker | " + " | ".join(
        f"{s} ({r['detections_per_frame']:.0f} det/frame) IDF1 / MOTA / IDsw"
        for s, r in results.items())
             + " | mean IDF1 | mean MOTA | ms per frame (mean) |",
             "| --- |" + " --- |" * (len(results) + 3)]
    for n in names:
        cells = [f"{r['trackers'][n]['idf1']:.3f} / {r['trackers'][n]['mota']:.3f} / "
                 f"{r['trackers'][n]['switches']}" for r in results.values()]
        mean = lambda k: sum(r["trackers"][n][k] for r in results.values()) / len(results)
        lines.append(f"| {n} | " + " | ".join(cells)
                     + f" | {mean('idf1'):.3f} | {mean('mota'):.3f} | {mean('ms'):.3f} |")
    table = "\n".join(lines)
    print(table)
    (seqs_dir / "table.md").write_text(table + "\n")
    (seqs_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
