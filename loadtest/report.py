#!/usr/bin/env python3
"""Markdown tables for BENCHMARKS.md from the JSON that loadtest/run.sh leaves in a folder.

    python3 loadtest/report.py loadtest/results
"""
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "loadtest/results"


def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None


m = load("machine.json") or {}
print(f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, bf16: {m.get('bf16', '?')}, {m.get('date', '?')}")
print()

peers = [(s, load(f"{s}.json")) for s in ("peer-ov-1", "peer-ov-2", "peer-ort")]
peer_base = (load("peer-ov-1.json") or {}).get("frame_fps")
print("| peer (one Python process, same frames and model) | whole-frame fps | inference fps |")
print("| --- | --- | --- |")
for _, p in peers:
    if p:
        print(f"| {p['runtime']} | {p['frame_fps']} | {p['inference_fps']} |")
print()

print("| configuration | chosen | bench-model inference fps | whole-frame fps | ms per frame: decode / letterbox / inference / NMS "
      "| 30 fps run: delivered | dropped | p50 / p95 / p99 ms | node CPU (cores) | saturated: delivered fps "
      "| to bench-model | to the peer (OpenVINO, 1 request) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for slug in ("defaults", "defaults-nobf16", "fp32-exact", "ov-bf16-1x2", "int8-2x1"):
    b, r, s = load(f"{slug}.bench.json"), load(f"{slug}.30fps.json"), load(f"{slug}.saturated.json")
    if not (b and r and s):
        continue
    chosen = f"{b['provider']} {b['precision']}, {b['parallel']} x {b['intra_threads']}, DCT {'on' if b['dct_scaling'] else 'off'}"
    to_peer = f"{s['delivered_fps'] / peer_base:.2f}" if peer_base else "-"
    print(f"| {r['label']} | {chosen} | {b['inference_fps']} | {b['frame_fps']} "
          f"| {b['decode_ms']} / {b['letterbox_ms']} / {b['infer_ms']} / {b['postprocess_ms']} "
          f"| {r['delivered_fps']} ({r['detected']}/{r['published']}) | {r['dropped']} "
          f"| {r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_p99']} | {r['nodes_cpu_cores']} "
          f"| {s['delivered_fps']} | {s['delivered_fps'] / b['frame_fps']:.2f} | {to_peer} |")
print()

print("| streams x 30 fps, shipped defaults | published | detected | dropped | other gaps | delivered fps | p50 / p95 / p99 ms | machine CPU | node CPU (cores) | node RSS MiB start / end |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n in (1, 2, 3, 4):
    r = load(f"streams-{n}.json")
    if not r:
        continue
    other = sum(v for k, v in r["gaps"].items() if k != "dropped")
    rss = r["nodes_rss_mib"] or [0, 0, 0, 0]
    print(f"| {n} | {r['published']} | {r['detected']} | {r['dropped']} | {other} | {r['delivered_fps']} "
          f"| {r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_p99']} | {r['machine_cpu_percent']}% "
          f"| {r['nodes_cpu_cores']} | {rss[0]} / {rss[1]} |")
print()

one, two = load("scale-1.json"), load("scale-2.json")
if one and two:
    print("| scaling, shipped defaults (60 fps offered) | delivered fps | p50 ms | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| {one['label']} | {one['delivered_fps']} | {one['latency_ms_p50']} | 1.00 |")
    print(f"| {two['label']} | {two['delivered_fps']} | {two['latency_ms_p50']} | {two['delivered_fps'] / max(one['delivered_fps'], 1e-9):.2f} |")
print()

# Ingress: the source node's CPU per frame, its detectors on another node.
runs = [r for r in (load("ingress-30.json"), load("ingress-saturated.json")) if r]
if runs:
    print("| ingress (source node alone, detectors on another node, KEEP) | published | detected | delivered fps | source node cores | source CPU ms per frame | frames/s one core of ingress could take |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        per_frame = 1000 * r["nodes_cpu_cores"] / max(r["delivered_fps"], 1e-9)
        print(f"| {r['label']} | {r['published']} | {r['detected']} | {r['delivered_fps']} | {r['nodes_cpu_cores']} "
              f"| {per_frame:.2f} | {1000 / max(per_frame, 1e-9):.0f} |")
    print()

# Ingress spread: the same 30 fps over 1, 2 and 3 source nodes, a lease per stream.
for t in ("pubsub", "streams"):
    spread = [(n, load(f"ingress-spread-{t}-{n}.json")) for n in (1, 2, 3)]
    spread = [(n, r) for n, r in spread if r]
    if not spread:
        continue

    def held(n):
        shares = []
        for i in range(1, n + 1):
            try:
                shares.append(open(os.path.join(out, f"ingress-spread-{t}-{n}.held-{i}.txt")).read().split()[1])
            except (OSError, IndexError):
                shares.append("?")
        return " / ".join(shares)

    base = None
    print(f"| ingress spread over {t} (12 x 2.5 fps, KEEP, a lease per stream) | streams held per node | detected / published | source nodes' cores, together | source CPU ms per frame, all nodes | per node, if split evenly | aggregate ingress N cores could take (frames/s) | ratio to 1 node |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, r in spread:
        per_frame = 1000 * r["nodes_cpu_cores"] / max(r["delivered_fps"], 1e-9)
        ceiling = n * 1000 / max(per_frame, 1e-9)
        base = base or ceiling
        print(f"| {n} source node(s) | {held(n)} | {r['detected']} / {r['published']} | {r['nodes_cpu_cores']} | {per_frame:.2f} "
              f"| {per_frame / n:.2f} | {ceiling:.0f} | {ceiling / base:.2f} |")
    print()

# Live: freshness when detection is slower than the cameras (issue 18's targets).
for variant, what in (("nobf16", "a CPU acting without bf16 (KADR_CPU_FLAGS='': fp32)"), ("defaults", "the shipped defaults")):
    b = load(f"live-{variant}.bench.json")
    if not b:
        continue
    call = b["infer_ms"] + b["decode_ms"] + b["letterbox_ms"] + b["postprocess_ms"]
    print(f"Live, {what}: bench-model {b['frame_fps']} whole frames/s, {call:.1f} ms per call "
          f"(targets: p50 <= {2.5 * call:.0f} ms, p99 <= {4 * call:.0f} ms, delivered >= {0.9 * b['frame_fps']:.1f} fps when overloaded)")
    print()
    print("| scenario | rule | published | detected | dropped | other gaps | delivered fps (to bench-model) | p50 / p95 / p99 ms (p50, p99 / call) "
          "| worst stream p50 / p99 ms | share (fewest / most detected) | detected after the stream's next frame |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for scenario in ("1x", "3x", "100x", "keepsup"):
        for rule, name in (("new", "shipped: queue_depth = 2 + age rule"), ("d1", "queue_depth = 1")):
            r = load(f"live-{variant}-{rule}-{scenario}.json")
            if not r:
                continue
            other = sum(v for k, v in r["gaps"].items() if k != "dropped")
            ps = r["per_stream"]
            print(f"| {r['label']} | {name} | {r['published']} | {r['detected']} | {r['dropped']} | {other} "
                  f"| {r['delivered_fps']} ({r['delivered_fps'] / b['frame_fps']:.2f}) "
                  f"| {r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_p99']} "
                  f"({r['latency_ms_p50'] / call:.1f}x, {r['latency_ms_p99'] / call:.1f}x) "
                  f"| {ps['worst_latency_ms_p50']} / {ps['worst_latency_ms_p99']} "
                  f"| {ps['fair_share']} ({ps['detected_min']} / {ps['detected_max']}) | {ps['after_next_frame']} |")
    print()

rows = [(t, r, load(f"transport-{t}-{r}.json")) for r in (1, 2) for t in ("pubsub", "streams")]
if any(x for _, _, x in rows):
    print("| transport (KEEP, saturating) | round | detected fps | vs pub/sub, same round | dropped | missing | Redis used memory, max MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for t, r, x in rows:
        if not x:
            continue
        base = load(f"transport-pubsub-{r}.json")
        ratio = x["delivered_fps"] / base["delivered_fps"] if base and base["delivered_fps"] else float("nan")
        mem_path = os.path.join(out, f"transport-{t}-{r}.redis-memory")
        mem = [int(v) for v in open(mem_path).read().split()] if os.path.exists(mem_path) else []
        peak = f"{max(mem) / 2**20:.0f}" if mem else "?"
        gaps = x.get("gaps", {})
        print(f"| {t} | {r} | {x['delivered_fps']:.1f} | {ratio:.2f}x | {gaps.get('dropped', 0)} | {gaps.get('missing', 0)} | {peak} |")
    print()

def on_off_table(slug, on, off, title, extra=None):
    """Saturated runs of one setting on and off, alternated over three rounds: each run against
    the run with it off in the same round. `extra`: (column title, value of a run)."""
    rows = [(v, r, load(f"{slug}-{v}-{r}.json")) for r in (1, 2, 3) for v in (on, off)]
    if not any(x for _, _, x in rows):
        return
    head = [title, "round", "detected fps", "vs off, same round"]
    head += [extra[0]] if extra else []
    head += ["latency p50 / p99 ms"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for v, r, x in rows:
        if not x:
            continue
        base = load(f"{slug}-{off}-{r}.json")
        ratio = x["delivered_fps"] / base["delivered_fps"] if base and base["delivered_fps"] else float("nan")
        cells = [v, r, f"{x['delivered_fps']:.1f}", f"{ratio:.2f}x"]
        cells += [extra[1](x)] if extra else []
        cells += [f"{x['latency_ms_p50']} / {x['latency_ms_p99']}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print()


on_off_table("tracker", "true", "false", "tracker.enabled (saturated)")
on_off_table("events", "on", "off", "analytics, 10 lines + 10 zones (saturated)",
             ("events", lambda x: x.get("events", "-")))
