"""Two broker binaries side by side on latency, throughput, CPU and PUTs.

    .venv/bin/python scripts/ab_latency.py OLD_BIN NEW_BIN [--rounds 2] [--seconds 12]
        [--stores local,s3] [--consume]

For each store (the local directory; s3s-fs from .tools/bin), old and new run
interleaved, a fresh broker (2 shards) per run, with `kafscale-bench` (1 KiB, 6
partitions, acks=all): a saturating produce, then fixed rates at 10% and 50% of
the old binary's median saturation rate (the same absolute load for both). Every
row gives MB/s, p50/p99 of send → acknowledgement, the broker's CPU seconds per
GB (all threads, user + system) and its store PUTs per GB (from /metrics).
With --consume, each saturating run is followed by a consume of what it wrote
from the still-running broker (its cache), with the consume's rate and the
broker's CPU per GB read. Prints one Markdown table and the 1-minute load
average around every run (the machine may be shared: read ratios, not absolutes).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
from harness import Broker, S3Server  # noqa: E402
from bench_suite import cpu_seconds, parse_metrics, store_requests  # noqa: E402
import scratch  # noqa: E402


def load1():
    return float(open("/proc/loadavg").read().split()[0])


class Run:
    def __init__(self, a, work):
        self.a, self.work, self.n = a, work, 0
        self.s3 = None

    def bench(self, *args, timeout=300):
        r = subprocess.run([self.a.bench, *map(str, args), "--json"], stdout=subprocess.PIPE,
                           timeout=timeout, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"kafscale-bench {args} failed with {r.returncode}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def one(self, binary, store, rate, consume=False):
        self.n += 1
        d = Path(tempfile.mkdtemp(dir=self.work))
        env = {"KAFSCALE_FLUSH_INTERVAL_MS": "100", "KAFSCALE_LOG_LEVEL": "info"}
        if store == "s3":
            if self.s3 is None:
                self.s3 = S3Server(self.work).start()
            env.update(self.s3.broker_env())
            env["KAFSCALE_S3_UNSIGNED_PAYLOAD"] = "true"
        env.update(self.a.env)
        os.environ["KAFSCALE_BROKER_BIN"] = binary
        b = Broker(d, env=env, shards=2).start()
        topic = f"ab-{os.getpid()}-{self.n}"
        try:
            before = store_requests(parse_metrics(b.metrics_text()))
            l0, c0 = load1(), cpu_seconds(b.proc.pid)
            o = self.bench("produce", "--bootstrap", b.bootstrap, "--topic", topic, "--partitions", 6,
                           "--message-size", 1024, "--acks", "all", "--rate", int(rate),
                           "--duration", self.a.seconds)
            c1 = cpu_seconds(b.proc.pid)
            after = store_requests(parse_metrics(b.metrics_text()))
            gb = o["bytes"] / 1e9
            row = {"mb": o["mb_per_sec"], "msgs": o["msgs_per_sec"], "p50": o["latency"]["p50_ms"],
                   "p99": o["latency"]["p99_ms"], "cpu_gb": (c1 - c0) / gb if gb else float("nan"),
                   "put_gb": (after.get("put", 0) - before.get("put", 0)) / gb if gb else float("nan"),
                   "load": (l0 + load1()) / 2, "errors": o["errors"]}
            if consume:
                c0 = cpu_seconds(b.proc.pid)
                r = self.bench("consume", "--bootstrap", b.bootstrap, "--topic", topic,
                               "--messages", o["messages"], "--duration", 60)
                c1 = cpu_seconds(b.proc.pid)
                gbr = r["bytes"] / 1e9
                row["consume_mb"] = r["mb_per_sec"]
                row["consume_cpu_gb"] = (c1 - c0) / gbr if gbr else float("nan")
            return row
        finally:
            b.stop()
            # Unlinked with the work directory at the end (scratch.py says why):
            # an A/B whose B runs right after A's deletion measures the deletion.
            scratch.empty(d)
            if self.s3 is not None:
                for p in self.s3.objects().iterdir():
                    scratch.set_aside(p, self.work / "discarded")


def med(rows, k):
    vals = [r[k] for r in rows if k in r]
    return statistics.median(vals) if vals else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--stores", default="local,s3")
    ap.add_argument("--rates", default="10,50", help="percent of the old saturation rate")
    ap.add_argument("--consume", action="store_true")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for both brokers")
    ap.add_argument("--bench", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
                                           / "release" / "kafscale-bench"))
    a = ap.parse_args()
    a.env = dict(kv.split("=", 1) for kv in a.env)
    work = Path(tempfile.mkdtemp(prefix="kafscale-ab-"))
    run = Run(a, work)
    lines = ["| store | load | binary | MB/s | p50 ms | p99 ms | broker CPU s/GB | PUTs/GB | consume MB/s "
             "| consume CPU s/GB | load avg |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    try:
        for store in a.stores.split(","):
            sat = {"old": [], "new": []}
            for _ in range(a.rounds):
                for which in ("old", "new"):
                    sat[which].append(run.one(getattr(a, which), store, 0, a.consume))
                    print(which, store, "sat", sat[which][-1], file=sys.stderr, flush=True)
            loads = [("saturation", sat)]
            base = med(sat["old"], "msgs")
            for pct in map(int, a.rates.split(",")):
                rows = {"old": [], "new": []}
                for _ in range(a.rounds):
                    for which in ("old", "new"):
                        rows[which].append(run.one(getattr(a, which), store, base * pct / 100))
                        print(which, store, pct, rows[which][-1], file=sys.stderr, flush=True)
                loads.append((f"{pct}% ({base * pct / 100:,.0f} msg/s)", rows))
            for name, rows in loads:
                for which in ("old", "new"):
                    r = rows[which]
                    lines.append(
                        f"| {'s3s-fs' if store == 's3' else store} | {name} | {which} | {med(r, 'mb'):.1f} "
                        f"| {med(r, 'p50'):.1f} | {med(r, 'p99'):.1f} | {med(r, 'cpu_gb'):.2f} "
                        f"| {med(r, 'put_gb'):,.0f} | {med(r, 'consume_mb'):.1f} "
                        f"| {med(r, 'consume_cpu_gb'):.2f} | {med(r, 'load'):.1f} |")
    finally:
        if run.s3:
            run.s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
