#!/usr/bin/env python3
"""TLS against plaintext, same broker, same run (`make bench-tls`): the section
"TLS against plaintext" of docs/benchmarks.md.

One broker (2 shards, local directory store) with a PLAINTEXT and an SSL listener
(certificates made on the spot, tests/pki.py). For each message size, runs
alternate between the listeners (PLAINTEXT, SSL, PLAINTEXT, SSL, ...), so drift
in what else the machine does falls on both alike:

  produce   kafscale-bench produce, acks=all, 6 partitions, saturation, --seconds
  consume   kafscale-bench consume of what that run wrote, from the broker's cache

Each run records MB/s and the broker's CPU seconds (utime + stime from /proc)
per GB moved. A run with delivery errors is kept in the results with its error
count and left out of the medians (the table says how many runs count).
The client is librdkafka (kafscale-bench, built with OpenSSL: rdkafka's `ssl`
feature) on the same machine; its own TLS work is not in the broker's CPU.

`render(rows, meta)` and `write_section` are pure, for tests/test_bench.py.
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
from bench_report import TLS_BEGIN as BEGIN, TLS_END as END  # noqa: E402
PARTITIONS = 6
SIZES = (1024, 16384)
LISTENERS = ("PLAINTEXT", "SSL")


def log(msg):
    print(f"[tls-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def per_gb(cpu_s, nbytes):
    return cpu_s / (nbytes / 1e9) if nbytes else None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _f(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


def summary(rows, load, size, listener):
    ok = [r for r in rows if (r["load"], r["size"], r["listener"]) == (load, size, listener)
          and not r.get("errors") and not r.get("error")]
    n = len([r for r in rows if (r["load"], r["size"], r["listener"]) == (load, size, listener)])
    return {"runs": n, "ok": len(ok), "mb_per_sec": median([r["mb_per_sec"] for r in ok]),
            "cpu_per_gb": median([per_gb(r["cpu_s"], r["bytes"]) for r in ok])}


def render(rows, meta):
    """The section between its markers."""
    out = [BEGIN, "## TLS against plaintext", "",
           f"`make bench-tls` on {meta['machine']}, {meta['date']} (commit `{meta['commit']}`): one broker "
           f"(2 shards, local directory store) with a PLAINTEXT and an SSL listener (rustls, ECDSA P-256 "
           f"certificate, TLS 1.3), `kafscale-bench` (librdkafka with OpenSSL) on the same machine; "
           f"{meta['rounds']} runs per cell, alternating between the listeners, {meta['seconds']} s each, "
           f"{PARTITIONS} partitions, `acks=all` at saturation; consume reads back what the run wrote. "
           f"Medians; broker CPU is its user + system time per GB moved. Load average "
           f"{meta['load_before']} before, {meta['load_after']} after.", "",
           "| load | message | PLAINTEXT MB/s | SSL MB/s | SSL / PLAINTEXT | PLAINTEXT CPU s/GB | "
           "SSL CPU s/GB | SSL / PLAINTEXT | runs counted |",
           "|---|---|---|---|---|---|---|---|---|"]
    for load in ("produce", "consume"):
        for size in meta["sizes"]:
            p, s = (summary(rows, load, size, li) for li in LISTENERS)
            tput = s["mb_per_sec"] / p["mb_per_sec"] if p["mb_per_sec"] and s["mb_per_sec"] else None
            cpu = s["cpu_per_gb"] / p["cpu_per_gb"] if p["cpu_per_gb"] and s["cpu_per_gb"] else None
            out.append(f"| {load} | {size // 1024} KiB | {_f(p['mb_per_sec'])} | {_f(s['mb_per_sec'])} | "
                       f"{_f(tput, 2)}× | {_f(p['cpu_per_gb'], 2)} | {_f(s['cpu_per_gb'], 2)} | {_f(cpu, 2)}× | "
                       f"{p['ok']}/{p['runs']}, {s['ok']}/{s['runs']} |")
    failed = [r for r in rows if r.get("errors") or r.get("error")]
    if failed:
        out += ["", "Runs left out: " + "; ".join(
            f"{r['load']} {r['size'] // 1024} KiB {r['listener']} run {r['round']}: "
            + (r.get("error") or f"{r['errors']} delivery errors") for r in failed) + "."]
    if meta.get("shared"):
        out += ["", "**Shared machine** (other work was running): the ratios are the result, not the "
                "absolute numbers."]
    out += ["", "What it shows: the price of TLS is paid by the broker's CPU (rustls encrypting and "
            "decrypting every byte; the zero-copy Fetch path writes each chunk through rustls instead of "
            "`sendmsg`). Raw results: `docs/benchmarks-tls-results.jsonl`.", END]
    return "\n".join(out)


def write_section(text, section):
    """`text` with this script's section replaced, or inserted before "## The suite"."""
    return bench_report.place_section(text, section, BEGIN, END)


def loadavg():
    return os.getloadavg()[0]


class Bench:
    def __init__(self, a):
        from bench_suite import cpu_seconds
        from harness import Broker, free_port
        from pki import Pki
        self.a, self.cpu_seconds = a, cpu_seconds
        self.work = Path(tempfile.mkdtemp(prefix="kafscale-tls-bench-"))
        self.pki = Pki(self.work / "pki")
        b = Broker(self.work, shards=2)
        self.ports = {"PLAINTEXT": b.port, "SSL": free_port()}
        b.env.update({
            "KAFSCALE_LISTENERS": ",".join(f"{n}://127.0.0.1:{p}" for n, p in self.ports.items()),
            "KAFSCALE_TLS_CERT_FILE": self.pki.server_cert,
            "KAFSCALE_TLS_KEY_FILE": self.pki.server_key,
            "KAFSCALE_FLUSH_INTERVAL_MS": "100",
        })
        self.broker = b.start()
        self.runs = 0

    def close(self):
        try:
            self.broker.stop(timeout=120)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def client(self, listener):
        args = ["--bootstrap", f"127.0.0.1:{self.ports[listener]}"]
        if listener == "SSL":
            args += ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={self.pki.ca}"]
        return args

    def cli(self, *args, timeout):
        r = subprocess.run([self.a.bench, *map(str, args), "--json"], stdout=subprocess.PIPE, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"kafscale-bench {args[0]} exited with {r.returncode}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def measured(self, fn):
        cpu0 = self.cpu_seconds(self.broker.proc.pid)
        r = fn()
        r["cpu_s"] = round(self.cpu_seconds(self.broker.proc.pid) - cpu0, 3)
        return r

    def run(self, rnd, size, listener):
        self.runs += 1
        topic = f"tls-{os.getpid()}-{self.runs}"
        s = self.a.seconds
        rows = []
        try:
            p = self.measured(lambda: self.cli(
                "produce", *self.client(listener), "--topic", topic, "--partitions", PARTITIONS,
                "--message-size", size, "--acks", "all", "--duration", s, timeout=4 * s + 120))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            return [{"load": "produce", "error": " ".join(str(e).split())[:160], "mb_per_sec": None,
                     "bytes": 0, "cpu_s": 0}]
        p["load"] = "produce"
        rows.append(p)
        try:
            c = self.measured(lambda: self.cli(
                "consume", *self.client(listener), "--topic", topic, "--messages", p["messages"],
                "--duration", max(30, 2 * s), timeout=max(30, 2 * s) + 120))
            c["load"] = "consume"
            if c["messages"] < p["messages"]:
                c["error"] = f"read {c['messages']} of {p['messages']} messages"
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            c = {"load": "consume", "error": " ".join(str(e).split())[:160], "mb_per_sec": None, "bytes": 0,
                 "cpu_s": 0}
        rows.append(c)
        return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="the kafscale-bench binary")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="runs per listener and message size")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--shared", action="store_true", help="say in the page that the machine was shared")
    ap.add_argument("--json", help="append every run's row to this JSON-lines file")
    ap.add_argument("--out", help="write the section into this markdown file (default: print it)")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    meta = {"machine": bench_report.machine_line(), "date": time.strftime("%Y-%m-%d"),
            "commit": bench_report.commit(), "rounds": a.rounds,
            "seconds": a.seconds, "sizes": sizes, "shared": a.shared, "load_before": f"{loadavg():.2f}"}
    rows = []
    b = Bench(a)
    try:
        for size in sizes:
            for rnd in range(1, a.rounds + 1):
                for listener in LISTENERS:
                    for r in b.run(rnd, size, listener):
                        r.update(round=rnd, size=size, listener=listener)
                        rows.append(r)
                        what = r.get("error") or (f"{r['mb_per_sec']:.1f} MB/s, {r['errors']} errors"
                                                  if "errors" in r else f"{r['mb_per_sec']:.1f} MB/s")
                        log(f"{r['load']} {size} B {listener} #{rnd}: {what}, broker cpu {r['cpu_s']} s")
    finally:
        b.close()
    meta["load_after"] = f"{loadavg():.2f}"
    bench_report.append_results(a.json, meta, rows)
    bench_report.publish(render(rows, meta), a.out, write_section, log)


if __name__ == "__main__":
    main()
