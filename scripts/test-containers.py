#!/usr/bin/env python3
"""kadr's cross-host fault suite: faults on a compose cluster whose nodes are separate hosts.

Brings up compose.yaml (Redis, node-1, node-2, one detector node) as project `kadr-faults`,
then, for each fault in turn, runs kadr-loadtest from this machine against it: one stream at
10 fps, every frame KEEP (none may be dropped). While the stream runs the fault is injected and
undone, and the admin API of node-1 and node-2 is asked twice a second what it sees. A fault
passes when every published frame came back once, in order (detected, or inside a gap with its
reason), and every node is `up` again in the cluster view afterwards; over Redis Streams, when
every frame came back detected (a kept frame is never lost there).

    scripts/test-containers.py                 # build the image if needed, run every fault
    scripts/test-containers.py --write-docs    # and put the table into docs/cluster.md
    scripts/test-containers.py --only redis    # faults whose name contains "redis"
    scripts/test-containers.py --single-lease  # one node-wide source lease, a standby source node

Needs a reachable Docker daemon, Compose (v2 plugin or docker-compose v1) and the release
binaries (cargo build --release --workspace --bins). Exits 0 when every fault passed, 1 when
one failed, 2 when it could not run.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "kadr-faults"
ADMIN_1, ADMIN_2, REDIS_PORT = 17500, 17501, 16379
FPS = 10
DOC = ROOT / "docs" / "cluster.md"
BEGIN, END = "<!-- fault-suite:begin -->", "<!-- fault-suite:end -->"


def say(*a):
    print("\033[1mtest-containers:\033[0m", *a, file=sys.stderr, flush=True)


def run(*cmd, check=True, quiet=True, env=None):
    r = subprocess.run(cmd, cwd=ROOT, env=env, text=True,
                       stdout=subprocess.PIPE if quiet else None,
                       stderr=subprocess.STDOUT if quiet else None)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout or ''}")
    return (r.stdout or "").strip()


class Compose:
    def __init__(self):
        if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
            self.base = ["docker", "compose"]
        else:
            self.base = ["docker-compose"]
        self.env = dict(os.environ,
                        COMPOSE_PROJECT_NAME=PROJECT,
                        KADR_CLUSTER_COOKIE=secrets.token_hex(16),
                        KADR_ADMIN_TOKEN=secrets.token_hex(16),
                        KADR_ADMIN_PORT_1=str(ADMIN_1), KADR_ADMIN_PORT_2=str(ADMIN_2),
                        KADR_FAULTS_REDIS_PORT=str(REDIS_PORT))

    def __call__(self, *args, check=True):
        files = ["-f", "compose.yaml", "-f", "scripts/compose.faults.yaml"]
        if SINGLE_LEASE:
            files += ["-f", "scripts/compose.single-lease.yaml"]
        return run(*self.base, *files, *args, check=check, env=self.env)

    def container(self, service):
        ids = self("ps", "-q", service).split()
        if not ids:
            raise RuntimeError(f"no container for {service}")
        return ids[0]


def get_json(port, path, timeout=1.0):
    """(HTTP status, JSON body) of the admin API on the host's port, or (None, None)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.load(e)
        except Exception:
            return e.code, None
    except Exception:
        return None, None


def members():
    """Members by name (status, started_at_us), from whichever of node-2 and node-1 answers."""
    for port in (ADMIN_2, ADMIN_1):
        code, body = get_json(port, "/cluster")
        if code == 200 and body:
            return {m["name"]: (m["status"], m["started_at_us"]) for m in body["members"]}
    return None


def all_up(n=3):
    view = members()
    return view is not None and len(view) == n and all(s == "up" for s, _ in view.values())


def rejoined(n=3, steady=3.0, timeout=120):
    """Wait until every node is up and stays up for `steady` seconds (a node just thawed or
    restarted can look up for a moment before its session closes); return how long it took."""
    start = time.monotonic()
    since = None
    while time.monotonic() - start < timeout:
        if all_up(n):
            since = since or time.monotonic()
            if time.monotonic() - since >= steady:
                return since - start
        else:
            since = None
        time.sleep(0.5)
    raise RuntimeError(f"not every node was up {timeout} s after the fault: {members()}")


def started_at(prefix):
    """The start time of the member whose name starts with `prefix`."""
    view = members() or {}
    return next((t for name, (_, t) in view.items() if name.startswith(prefix)), None)


def wait_for(what, pred, timeout):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


class AdminWatch(threading.Thread):
    """What the admin API says, twice a second: node-1's and node-2's /health, and the
    cluster view, folded into a list of distinct states with how long each lasted."""

    def __init__(self):
        super().__init__(daemon=True)
        self.states, self.stop_flag = [], threading.Event()

    def sample(self):
        parts = []
        for name, port in (("node-1", ADMIN_1), ("node-2", ADMIN_2)):
            code, body = get_json(port, "/health", timeout=0.5)
            parts.append(f"{name} " + ("no answer" if code is None else
                                        (body or {}).get("status", str(code))))
        view = members()
        if view is None:
            parts.append("no cluster view")
        else:
            counts = {}
            for s, _ in view.values():
                counts[s] = counts.get(s, 0) + 1
            parts.append(" ".join(f"{n} {s}" for s, n in sorted(counts.items(), reverse=True)))
        # Healthy nodes go without saying.
        return ", ".join(p for p in parts if not p.endswith(" ok"))

    def run(self):
        while not self.stop_flag.is_set():
            s, now = self.sample(), time.monotonic()
            if self.states and self.states[-1][0] == s:
                self.states[-1][2] = now
            else:
                self.states.append([s, now, now])
            self.stop_flag.wait(0.5)

    def summary(self):
        self.stop_flag.set()
        self.join()
        return " → ".join(f"{s} ({round(b - a)} s)" if b - a >= 1 else s
                          for s, a, b in self.states)


# --- the faults --------------------------------------------------------------------------------

def detector_container(c):
    return c.container("detector")


def kill_detector(c, log):
    cid = detector_container(c)
    run("docker", "kill", "-s", "KILL", cid)
    log("killed the detector node (SIGKILL)")
    time.sleep(5)
    run("docker", "start", cid)
    log("started it again")


def disconnect_detector(c, log):
    cid = detector_container(c)
    net = f"{PROJECT}_default"
    ip = run("docker", "inspect", "-f",
             "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % net, cid)
    run("docker", "network", "disconnect", net, cid)
    log("cut the detector node off the network")
    time.sleep(12)  # past three heartbeats (the `silent` mark) and its sessions' time-outs
    run("docker", "network", "connect", "--ip", ip, "--alias", "detector", net, cid)
    log("connected it again")


def pause(service, seconds):
    """Freeze `service` (or, for `source`, whichever node holds the source lease now)."""
    def fault(c, log):
        target = service
        if target == "source":
            target = "node-2" if lease_holder(c) == "node-2" else "node-1"
        cid = c.container(target)
        how = freeze(cid)
        log(f"froze {target} ({how})")
        time.sleep(seconds)
        if how == "docker pause":
            run("docker", "unpause", cid)
        else:
            run("docker", "kill", "-s", "CONT", cid)
        log("thawed it")
    return fault


def freeze(cid):
    """Freeze a container; say how. The cgroup freezer can fail under load ("OCI runtime pause
    failed: unable to freeze", seen in CI when the node's inference threads spin on both
    cores); try it again, then stop its process with SIGSTOP, which freezes the same node (the
    image runs kadr as PID 1, and the daemon's signal comes from outside its namespace)."""
    for attempt in range(3):
        r = subprocess.run(["docker", "pause", cid], capture_output=True, text=True)
        if r.returncode == 0:
            return "docker pause"
        say(f"  docker pause failed ({r.stderr.strip()}); "
            + ("trying again" if attempt < 2 else "sending SIGSTOP instead"))
        time.sleep(0.5)
    run("docker", "kill", "-s", "STOP", cid)
    return "SIGSTOP"


def kill_source(c, log):
    holder = lease_holder(c)
    service = "node-2" if holder == "node-2" else "node-1"
    cid = c.container(service)
    run("docker", "kill", "-s", "KILL", cid)
    log(f"killed {service}, the source lease holder (SIGKILL)")
    wait_for("another source node to take the stream's lease",
             lambda: lease_holder(c) not in (None, service), 30)
    log(f"{lease_holder(c)} took the stream over")
    time.sleep(3)
    run("docker", "start", cid)
    log(f"started {service} again")


def restart_redis(c, log):
    run("docker", "restart", "-t", "2", c.container("redis"))
    log("restarted Redis")


def rolling_restart(c, log):
    for service in ("detector", "node-2", "node-1"):
        before = started_at(service)
        run("docker", "restart", "-t", "20", c.container(service))
        log(f"restarted {service} (SIGTERM, then start)")
        wait_for(f"{service} back in the cluster", lambda: started_at(service) != before, 90)
        took = rejoined()
        log(f"all three up again, {service} as a new process, after {took:.0f} s more")


def lease_holder(c):
    """The node reading the stream: the holder of the one stream's lease (the suite publishes
    one stream), or with --single-lease the node-wide source lease's holder."""
    key = "kadr:source-lease" if SINGLE_LEASE else f"kadr:lease:{CURRENT_STREAMS[0]}"
    out = subprocess.run(["docker", "exec", c.container("redis"), "redis-cli", "GET",
                          key], capture_output=True, text=True).stdout.strip()
    # The lease's value is `{node}/{nonce}`.
    return out.split("/")[0] if out else None


FAULTS = [
    # (name, fault, seconds of stream to publish, also over Redis Streams)
    # Over Streams the faults that cost frames on pub/sub run again: those of the source node,
    # of Redis, the rolling restart, and a killed and a frozen detector node (the frames sent
    # again, on both transports).
    ("kill -9 a detector node, start it again", kill_detector, 30, True),
    ("cut a detector node off the network for 12 s", disconnect_detector, 35, False),
    ("freeze a detector node for 5 s", pause("detector", 5), 25, True),
    ("freeze the source node for 5 s", pause("source", 5), 25, True),
    ("freeze the source node for 8 s", pause("source", 8), 30, True),
    ("freeze a detector node for 60 s", pause("detector", 60), 80, False),
    ("kill -9 the source node: another takes over", kill_source, 40, True),
    ("restart Redis", restart_redis, 25, True),
    ("rolling restart of every node", rolling_restart, 100, True),
]
TRANSPORTS = ("pubsub", "streams")
# Set by --single-lease: the source nodes run with cluster.stream_leases = false.
SINGLE_LEASE = False
# The streams the load generator of the fault running now publishes (from its started file).
CURRENT_STREAMS = [""]


# --- running -----------------------------------------------------------------------------------

def run_fault(c, name, fault, seconds, transport, out_dir):
    say(f"== {name} ({transport})")
    rejoined()
    slug = transport + "-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    report, started = out_dir / f"{slug}.json", out_dir / f"{slug}.started"
    for p in (report, started):
        p.unlink(missing_ok=True)
    loadtest = subprocess.Popen(
        [str(ROOT / "target/release/kadr-loadtest"), "--redis-url",
         f"redis://127.0.0.1:{REDIS_PORT}", "--keep", "--fps", str(FPS), "--seconds",
         str(seconds), "--drain", "120", "--json", str(report), "--started-file", str(started),
         "--transport", transport, "--label", f"{name} ({transport})"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(out_dir / f"{slug}.log", "w"))
    wait_for("the load generator to start publishing", started.exists, 120)
    CURRENT_STREAMS[:] = started.read_text().split() or [""]
    watch = AdminWatch()
    watch.start()
    time.sleep(5)
    events, t0 = [], time.monotonic()

    def log(what):
        events.append(f"{time.monotonic() - t0 + 5:.0f} s: {what}")
        say("  " + events[-1])

    error, rejoin = None, None
    try:
        fault(c, log)
        rejoin = rejoined()
        log(f"every node up (for 3 s running) {rejoin:.0f} s after the fault was undone")
    except Exception as e:  # the fault's own failure is a finding, not a crash of the suite
        error = str(e)
        log(f"ERROR: {error}")
    code = loadtest.wait(timeout=seconds + 300)
    admin = watch.summary()
    r = json.loads(report.read_text()) if report.exists() else {}
    passed = error is None and code == 0 and bool(r.get("complete"))
    # Over Redis Streams a kept frame is never lost: every frame published must be detected.
    if transport == "streams" and r.get("detected") != r.get("published"):
        passed = False
        log(f"kept frames lost over Redis Streams: {r.get('published')} published, "
            f"{r.get('detected')} detected")
    say(f"  {'PASS' if passed else 'FAIL'}: {r.get('accounted')}/{r.get('published')} "
        f"accounted, {r.get('detected')} detected, gaps {r.get('gaps')}, "
        f"order violations {r.get('order_violations')}, duplicates {r.get('duplicates')}, "
        f"longest stall {r.get('longest_stall_ms')} ms")
    return dict(name=name, transport=transport, passed=passed, report=r, events=events,
                admin=admin, error=error, rejoin=rejoin)


def table(results, cpu):
    lines = [
        f"Measured by `scripts/test-containers.py` on {time.strftime('%Y-%m-%d')}, "
        f"{cpu}: one stream, {FPS} fps, every frame `KEEP`; "
        "Redis (append-only file on), node-1, node-2 and a detector node each a container on "
        "one compose network. `pubsub`: frames published on the channel; `streams`: appended "
        "to the Redis Stream (`--transport streams`)."
        + (" The source nodes ran with one node-wide source lease (`--single-lease`)."
           if SINGLE_LEASE else
           " The source nodes ran with the default configuration: a lease per stream."),
        "",
        "| fault | transport | result | published | detected | in gaps (reason) | "
        "order violations | duplicates | longest stall | every node up again | "
        "what the admin API said |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for res in results:
        r = res["report"]
        gaps = ", ".join(f"{n} {k}" for k, n in r.get("gaps", {}).items()) or "0"
        stall = r.get("longest_stall_ms")
        back = "never" if res["rejoin"] is None else f"{res['rejoin']:.0f} s after"
        lines.append(
            f"| {res['name']} | {res['transport']} | {'pass' if res['passed'] else '**FAIL**'} | "
            f"{r.get('published', '-')} | {r.get('detected', '-')} | {gaps} | "
            f"{r.get('order_violations', '-')} | {r.get('duplicates', '-')} | "
            f"{'-' if stall is None else f'{stall / 1000:.1f} s'} | {back} | {res['admin']} |")
    return "\n".join(lines)


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{os.cpu_count()} x {line.split(':', 1)[1].strip()}"
    return f"{os.cpu_count()} CPUs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run only the faults whose name contains this (several: "
                    "separated by |, run in the suite's order)")
    ap.add_argument("--transport", choices=TRANSPORTS,
                    help="run over this transport only (default: both)")
    ap.add_argument("--write-docs", action="store_true",
                    help=f"put the table into {DOC.relative_to(ROOT)}")
    ap.add_argument("--keep-up", action="store_true", help="leave the cluster running")
    ap.add_argument("--no-build", action="store_true",
                    help="use the kadr:latest image as it is (built from this tree already)")
    ap.add_argument("--single-lease", action="store_true",
                    help="run the source nodes with one node-wide source lease "
                         "(cluster.stream_leases = false) instead of the default lease per stream")
    args = ap.parse_args()
    global SINGLE_LEASE
    SINGLE_LEASE = args.single_lease

    if shutil.which("docker") is None or \
            subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        say("SKIP: no Docker daemon is reachable; the cross-host fault suite did not run")
        return 2
    for binary in ("kadr", "kadr-loadtest"):
        if not (ROOT / "target/release" / binary).exists():
            say(f"target/release/{binary} is missing: cargo build --release --workspace --bins")
            return 2
    if any(run("docker", "images", "-q", img) == "" for img in
           ("debian:bookworm-slim", "rust:1-bookworm", "redis:7-bookworm")):
        say("base images missing: making them with scripts/docker-base.sh")
        run("scripts/docker-base.sh", quiet=False)
    if not args.no_build:
        # Always from this tree (Docker's layer cache makes an unchanged tree quick).
        say("building the image (docker build -t kadr .)")
        start = time.monotonic()
        run("docker", "build", "-q", "-t", "kadr", ".", quiet=False)
        say(f"image ready in {time.monotonic() - start:.0f} s")
    out_dir = ROOT / "loadtest" / "results" / ("faults-single-lease" if SINGLE_LEASE else "faults")
    out_dir.mkdir(parents=True, exist_ok=True)

    c = Compose()
    c("down", "-v", "--remove-orphans", check=False)
    say("bringing the cluster up")
    c("up", "-d", "redis", "node-1", "node-2", "detector")
    results = []
    try:
        took = rejoined(timeout=180)
        say(f"three nodes up after {took:.0f} s")
        for transport in TRANSPORTS:
            if args.transport not in (None, transport):
                continue
            for name, fault, seconds, over_streams in FAULTS:
                if (args.only and not any(part in name for part in args.only.split("|"))) or \
                        (transport == "streams" and not over_streams):
                    continue
                results.append(run_fault(c, name, fault, seconds, transport, out_dir))
    finally:
        if not args.keep_up:
            logs = c("logs", "--no-color", "--timestamps", check=False)
            (out_dir / "compose.log").write_text(logs)
            c("down", "-v", "--remove-orphans", check=False)

    text = table(results, cpu_name())
    print(text)
    (out_dir / "table.md").write_text(text + "\n")
    if args.write_docs and SINGLE_LEASE:
        say("--write-docs is for the default run; this table is in " + str(out_dir / "table.md"))
    elif args.write_docs:
        doc = DOC.read_text()
        if BEGIN not in doc:
            raise SystemExit(f"{DOC} lacks the {BEGIN} marker")
        head, rest = doc.split(BEGIN, 1)
        DOC.write_text(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])
        say(f"wrote the table into {DOC.relative_to(ROOT)}")
    failed = [f"{r['name']} ({r['transport']})" for r in results if not r["passed"]]
    if failed:
        say("FAILED: " + "; ".join(failed))
        return 1
    say(f"all {len(results)} faults passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
