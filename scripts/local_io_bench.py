#!/usr/bin/env python3
"""The local directory store written by the I/O threads against the shards' own
io_uring, same run (`make bench-local-io`): the section "Local directory I/O:
threads against io_uring" of docs/benchmarks.md.

For each round, and within it for each KAFSCALE_LOCAL_IO mode in turn (thread,
uring, thread, uring, ...; a fresh broker and topic each time, 2 shards), so
that drift in what else the machine does falls on both alike:

  saturation  kafscale-bench produce, acks=all, 1 KiB, 6 partitions, as fast as it can
  50% rate    the same at half the *thread* mode's saturation rate of that round
              (one fixed rate for both modes, so their latencies compare)

Both modes fsync each segment and its directory before `acks=all` is answered.
Each run records MB/s, p50/p99 latency and the broker's CPU seconds per GB
(utime + stime from /proc). A run with delivery errors is listed and left out
of the medians.

`render(rows, meta)` is pure, for tests/test_bench.py.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_report  # noqa: E402
import scratch  # noqa: E402
from bench_report import LOCAL_IO_BEGIN as BEGIN, LOCAL_IO_END as END  # noqa: E402

MODES = ("thread", "uring")
LOADS = ("saturation", "50% rate")
PARTITIONS, SIZE = 6, 1024


def log(msg):
    print(f"[local-io-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _f(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def summary(rows, load, mode):
    mine = [r for r in rows if (r["load"], r["mode"]) == (load, mode)]
    ok = [r for r in mine if not r.get("errors") and not r.get("error")]
    return {"runs": len(mine), "ok": len(ok),
            "mb_per_sec": median([r["mb_per_sec"] for r in ok]),
            "p50": median([r["latency"]["p50_ms"] for r in ok]),
            "p99": median([r["latency"]["p99_ms"] for r in ok]),
            "cpu_per_gb": median([r["cpu_s"] / (r["bytes"] / 1e9) if r["bytes"] else None for r in ok])}


def render(rows, meta):
    """The section between its markers."""
    out = [BEGIN, "## Local directory I/O: threads against io_uring", "",
           f"`make bench-local-io` on {meta['machine']}, {meta['date']} (commit `{meta['commit']}`): "
           f"one broker (2 shards, local directory store on {meta['fs']}) per run, "
           f"`KAFSCALE_LOCAL_IO=thread` (object_store's file writes and two fsyncs per object on the "
           f"I/O runtime's blocking threads) against `uring` (each shard writes and fdatasyncs its "
           f"segments on its own io_uring, one directory fsync per segment); `kafscale-bench produce`, "
           f"`acks=all`, {SIZE // 1024} KiB values, {PARTITIONS} partitions, {meta['seconds']} s per run, "
           f"{meta['rounds']} rounds alternating between the modes. The 50% rate is half the thread "
           f"mode's saturation rate of the same round, for both. Medians; broker CPU is its user + "
           f"system time per GB written. Load average {meta['load_before']} before, "
           f"{meta['load_after']} after.", "",
           "| load | mode | MB/s | p50 ms | p99 ms | broker CPU s/GB | runs counted |",
           "|---|---|---:|---:|---:|---:|---|"]
    for load in LOADS:
        for mode in MODES:
            s = summary(rows, load, mode)
            out.append(f"| {load} | {mode} | {_f(s['mb_per_sec'])} | {_f(s['p50'], 2)} | {_f(s['p99'], 2)} | "
                       f"{_f(s['cpu_per_gb'], 2)} | {s['ok']}/{s['runs']} |")
    out += ["", "| load | uring ÷ thread: MB/s | p50 | p99 | CPU per GB |", "|---|---:|---:|---:|---:|"]
    for load in LOADS:
        t, u = summary(rows, load, "thread"), summary(rows, load, "uring")
        out.append(f"| {load} | {_f(ratio(u['mb_per_sec'], t['mb_per_sec']), 2)}× | {_f(ratio(u['p50'], t['p50']), 2)}× | "
                   f"{_f(ratio(u['p99'], t['p99']), 2)}× | {_f(ratio(u['cpu_per_gb'], t['cpu_per_gb']), 2)}× |")
    failed = [r for r in rows if r.get("errors") or r.get("error")]
    if failed:
        out += ["", "Runs left out: " + "; ".join(
            f"{r['load']} {r['mode']} round {r['round']}: " + (r.get("error") or f"{r['errors']} delivery errors")
            for r in failed) + "."]
    if meta.get("shared"):
        out += ["", "**Shared machine** (other work was running): only the ratios mean something."]
    out += ["", "Raw results: `docs/benchmarks-local-io-results.jsonl`.", END]
    return "\n".join(out)


def write_section(text, section):
    """`text` with this script's section replaced, or inserted before "## The suite"."""
    return bench_report.place_section(text, section, BEGIN, END)


def filesystem(path):
    try:
        r = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=True)
        return r.stdout.splitlines()[-1].split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


class Bench:
    def __init__(self, a):
        from bench_suite import cpu_seconds
        self.a, self.cpu_seconds = a, cpu_seconds
        self.work = Path(tempfile.mkdtemp(prefix="kafscale-local-io-bench-"))
        self.n = 0

    def close(self):
        shutil.rmtree(self.work, ignore_errors=True)

    def run(self, mode, rate=None):
        from harness import Broker
        self.n += 1
        d = self.work / f"b{self.n}"
        d.mkdir()
        b = Broker(d, env={"KAFSCALE_LOCAL_IO": mode}, shards=2).start()
        s = self.a.seconds
        args = [self.a.bench, "produce", "--bootstrap", b.bootstrap, "--topic", f"io-{self.n}",
                "--partitions", PARTITIONS, "--message-size", SIZE, "--acks", "all", "--duration", s, "--json"]
        if rate:
            args += ["--rate", int(rate)]
        try:
            cpu0 = self.cpu_seconds(b.proc.pid)
            r = subprocess.run([str(x) for x in args], stdout=subprocess.PIPE, text=True, timeout=4 * s + 120)
            cpu = self.cpu_seconds(b.proc.pid) - cpu0
            if r.returncode != 0:
                raise RuntimeError(f"kafscale-bench produce exited with {r.returncode}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row["cpu_s"] = round(cpu, 3)
            return row
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            return {"error": " ".join(str(e).split())[:160], "mb_per_sec": None, "bytes": 0, "cpu_s": 0}
        finally:
            b.stop(timeout=120)
            scratch.empty(d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="the kafscale-bench binary")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shared", action="store_true", help="say in the page that the machine was shared")
    ap.add_argument("--json", help="append every run's row to this JSON-lines file")
    ap.add_argument("--out", help="write the section into this markdown file (default: print it)")
    a = ap.parse_args()
    meta = {"machine": bench_report.machine_line(), "date": time.strftime("%Y-%m-%d"),
            "commit": bench_report.commit(), "rounds": a.rounds, "seconds": a.seconds, "shared": a.shared,
            "load_before": f"{os.getloadavg()[0]:.2f}", "fs": filesystem(tempfile.gettempdir())}
    rows = []
    b = Bench(a)
    try:
        for rnd in range(1, a.rounds + 1):
            half = None
            for load in LOADS:
                for mode in MODES:
                    r = b.run(mode, rate=half if load != "saturation" else None)
                    r.update(round=rnd, load=load, mode=mode)
                    rows.append(r)
                    if load == "saturation" and mode == "thread" and r.get("msgs_per_sec"):
                        half = r["msgs_per_sec"] / 2
                    what = r.get("error") or (f"{r['mb_per_sec']:.1f} MB/s, p99 {r['latency']['p99_ms']:.1f} ms, "
                                              f"{r.get('errors', 0)} errors")
                    log(f"{load} {mode} #{rnd}: {what}, broker cpu {r['cpu_s']} s")
                if half is None:
                    break
    finally:
        b.close()
    meta["load_after"] = f"{os.getloadavg()[0]:.2f}"
    bench_report.append_results(a.json, meta, rows)
    bench_report.publish(render(rows, meta), a.out, write_section, log)


if __name__ == "__main__":
    main()
