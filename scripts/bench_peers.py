"""`make bench-peers`: this broker, Tansu and the sink ceiling measured in one run
with the same loads, written as the section "Peers, same run" of docs/benchmarks.md.

Peers, each a fresh process for every run, on 127.0.0.1 of this machine:
  kafscale, local   our broker (2 shards), local directory storage: every segment
                    is fsynced with its directory before an acks=all answer
  kafscale, s3s-fs  our broker (2 shards) on s3s-fs
  tansu, memory     Tansu 0.6.0, `memory://` engine (the data is written nowhere)
  tansu, s3s-fs     Tansu 0.6.0, `s3://` engine on the same s3s-fs
  sink              `kafscale-bench sink`: acknowledges and discards, the ceiling of
                    the client on this machine

Loads (kafscale-bench, 1 KiB values, 6 partitions, a new topic each): saturation with
acks=all and acks=1, acks=all at a fixed 10% and 50% of the peer's own acks=all
saturation rate, and one consumer reading back what the acks=all saturation run
wrote (the broker still running; not the sink). Loads are the outer loop and peers
the inner one, so the peers of one load run back to back on the same machine state.
Each process's CPU (user + system, all threads, from /proc, like bench_suite.py's
broker CPU) and s3s-fs's are read around every run, and the load average before
and after it. With --rounds N every (peer, load) runs N times and the page shows
the run with the median MB/s.

Tansu is installed into .tools/bin (cargo install, under nice) when it is missing.

Usage: .venv/bin/python scripts/bench_peers.py --bench BIN [--out docs/benchmarks.md]
       [--seconds 15] [--rounds 1] [--shared]
Without --out the section is printed. --out replaces the section between its markers,
or inserts it before the cluster section (or "## The suite", or at the end).
`render(rows, meta)` and `write_section` are pure, for tests/test_bench.py.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
import bench_report  # noqa: E402
import scratch  # noqa: E402
from bench_report import PEERS_BEGIN, PEERS_END, _f  # noqa: E402

TANSU_VERSION = "0.6.0"
# dynostore is Tansu's object_store engine: both `memory://` and `s3://` need it.
TANSU_INSTALL = ["cargo", "install", f"tansu@{TANSU_VERSION}", "--locked", "--features", "dynostore",
                 "--root", str(ROOT / ".tools")]
KIB = 1024
SIZE, PARTITIONS = KIB, 6

KAFSCALE_LOCAL, KAFSCALE_S3 = "kafscale, local", "kafscale, s3s-fs"
TANSU_MEMORY, TANSU_S3 = "tansu, memory", "tansu, s3s-fs"
SINK = "sink"
PEERS = (KAFSCALE_LOCAL, KAFSCALE_S3, TANSU_MEMORY, TANSU_S3, SINK)
# Their names on the command line (--peers).
IDS = {KAFSCALE_LOCAL: "kafscale-local", KAFSCALE_S3: "kafscale-s3", TANSU_MEMORY: "tansu-memory",
       TANSU_S3: "tansu-s3", SINK: "sink"}
# Which Tansu row a kafscale row is compared with.
PAIRS = {KAFSCALE_LOCAL: TANSU_MEMORY, KAFSCALE_S3: TANSU_S3}

SAT_ALL, CONSUME, SAT_1 = "produce, acks=all, saturation", "consume what the acks=all run wrote", \
    "produce, acks=1, saturation"
RATE_PCTS = (10, 50)


def rate_load(pct):
    return f"produce, acks=all, {pct}% of the peer's own saturation"


LOADS = (SAT_ALL, CONSUME, SAT_1, *map(rate_load, RATE_PCTS))


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def loadavg():
    """The 1, 5 and 15-minute load averages."""
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


# ---- the report (pure) ------------------------------------------------------------

def pick(rows):
    """{(peer, load): row}: for each pair the run with the median MB/s over the rounds
    (the lower middle of an even count), with every run's MB/s in `runs`. Failed runs
    count only when no run of the pair succeeded."""
    groups = {}
    for r in rows:
        groups.setdefault((r["peer"], r["load"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = sorted((r for r in rs if not r.get("error")), key=lambda r: r["mb_per_sec"])
        if not ok:
            out[key] = rs[-1]
            continue
        out[key] = dict(ok[(len(ok) - 1) // 2], runs=[r["mb_per_sec"] for r in rs if not r.get("error")])
    return out


def per_gb(seconds, nbytes):
    return None if seconds is None or not nbytes else seconds / (nbytes / 1e9)


def ratio(a, b):
    return None if a is None or b is None or not b else a / b


def measures(r):
    """MB/s, p50 ms, p99 ms, broker CPU s per GB of a run (None where it has none)."""
    if r is None or r.get("error"):
        return None, None, None, None
    lat = r.get("latency") or {}
    return r["mb_per_sec"], lat.get("p50_ms"), lat.get("p99_ms"), per_gb(r.get("cpu_s"), r.get("bytes"))


def _load(r):
    b, a = r.get("load_before"), r.get("load_after")
    return "" if not b or not a else f"{b[0]:.1f} → {a[0]:.1f}"


def render(rows, meta):
    """The section between its markers, from every run's row and the run's details."""
    best = pick(rows)
    out = []
    w = out.append
    w(PEERS_BEGIN)
    w("## Peers, same run")
    w("")
    w(f"Measured {meta['when']} to {meta['end']} with `make bench-peers` (`scripts/bench_peers.py`), "
      f"the release broker built from commit `{meta['commit']}`"
      + (f", Tansu {meta['tansu']}" if meta.get("tansu") else "") + f", on "
      f"{meta['cores']} cores ({meta['cpu']}), {meta['memory_gib']} GiB memory, Linux {meta['kernel']}; "
      f"{meta['seconds']:g} s per produce run, {meta['rounds']} round(s), {meta['minutes']:.1f} minutes in all. "
      f"Load average (1, 5, 15 min) {' / '.join(f'{x:.2f}' for x in meta['load_start'])} at the start, "
      f"{' / '.join(f'{x:.2f}' for x in meta['load_end'])} at the end."
      + (f" Every process of the run (peers, s3s-fs, load generator) ran at nice {meta['nice']}, below the "
         "machine's other work." if meta.get("nice") else ""))
    w("")
    if meta.get("shared"):
        w("**Measured on a shared machine** (other jobs were compiling and testing while this ran: "
          "see the load average of each run), so the figures are noisy and low and a ratio between "
          "two rows can be off by whatever the machine did between them. The quiet-machine rerun "
          "(`make bench-peers` with nothing else running) replaces this section.")
        w("")
    if meta.get("aborted"):
        w(f"**The run stopped early** ({meta['aborted']}): the loads after that are missing.")
        w("")
    left_out = [p for p in PEERS if p not in meta.get("peers", PEERS)]
    if left_out:
        w(f"**Not in this run:** {'; '.join(left_out)}" + (f" ({meta['left_out_why']})" if meta.get("left_out_why")
                                                           else "") + ".")
        w("")
    w("Every peer runs on this machine next to the load generator (`kafscale-bench`, librdkafka, as in "
      "the suite above: `linger.ms=5`, `batch.size=1000000`, 1 KiB values with random keys, 6 partitions, "
      "a new topic and a fresh broker process per run). For each load the peers run back to back. "
      "*kafscale, local* fsyncs every segment to local disk before answering `acks=all`; *tansu, memory* "
      "writes nothing anywhere, so that pair compares our durable path with Tansu's fastest engine; "
      "the two s3s-fs rows write to the same s3s-fs (started by the harness). *CPU s per GB* is the "
      "broker process's own CPU (user + system, all threads, from `/proc/PID/stat`) per 10^9 bytes of "
      "values; for the sink it is the sink's. *÷ Tansu* divides a kafscale row by its Tansu pair "
      "(local by memory, s3s-fs by s3s-fs): above 1 is better for MB/s, below 1 for p99 and CPU. "
      "*÷ sink* divides by the sink row of the same load. *load* is the 1-minute load average before → "
      "after the run. Fixed-rate loads run at each peer's own share of its saturation, so their MB/s "
      "differ by design; compare their latency and CPU.")
    w("")
    for load in LOADS:
        present = [p for p in PEERS if (p, load) in best]
        if not present:
            continue
        rate = load.startswith("produce, acks=all, ") and "%" in load
        w(f"### {load[0].upper()}{load[1:]}")
        w("")
        head = "| peer |" + (" rate msg/s |" if rate else "") + (
            " MB/s | p50 ms | p99 ms | errors | CPU s per GB | s3s-fs CPU s per GB | load | "
            "MB/s ÷ Tansu | p99 ÷ Tansu | CPU ÷ Tansu | MB/s ÷ sink | p99 ÷ sink |")
        if load == CONSUME:
            head = ("| peer | messages read / written | MB/s | CPU s per GB | s3s-fs CPU s per GB | load | "
                    "MB/s ÷ Tansu | CPU ÷ Tansu |")
        w(head)
        w("|---|" + "---:|" * (head.count("|") - 2))
        sink = measures(best.get((SINK, load)))
        for p in present:
            r = best[(p, load)]
            if r.get("error"):
                cells = head.count("|") - 2
                w(f"| {p} | failed: {r['error']} |" + " |" * (cells - 1))
                continue
            mb, p50, p99, cpu = measures(r)
            pair = measures(best.get((PAIRS[p], load))) if p in PAIRS else (None,) * 4
            s3cpu = per_gb(r.get("s3_cpu_s"), r.get("bytes"))
            if load == CONSUME:
                w(f"| {p} | {r['messages']:,} / {r.get('expected', 0):,} | {mb:.1f} | {_f(cpu, 2)} | "
                  f"{_f(s3cpu, 2)} | {_load(r)} | {_f(ratio(mb, pair[0]), 2)} | {_f(ratio(cpu, pair[3]), 2)} |")
                continue
            runs = r.get("runs") or []
            mbs = f"{mb:.1f}" + (f" ({', '.join(f'{x:.1f}' for x in runs)})" if len(runs) > 1 else "")
            not_sink = p != SINK
            w(f"| {p} |" + (f" {r.get('rate', 0):,.0f} |" if rate else "")
              + f" {mbs} | {p50:.2f} | {p99:.2f} | {r.get('errors', 0)} | {_f(cpu, 2)} | {_f(s3cpu, 2)} | "
              f"{_load(r)} | {_f(ratio(mb, pair[0]), 2)} | {_f(ratio(p99, pair[2]), 2)} | "
              f"{_f(ratio(cpu, pair[3]), 2)} | {_f(ratio(mb, sink[0]) if not_sink else None, 2)} | "
              f"{_f(ratio(p99, sink[2]) if not_sink else None, 2)} |")
        w("")
    if meta.get("rounds", 1) > 1:
        w("With more than one round, MB/s shows the median run and, in brackets, every run.")
        w("")
    w("How to run it: `make bench-peers` (`BENCH_SECONDS`, default 15; `BENCH_ROUNDS`, default 1; "
      "`BENCH_SHARED=1` marks the page as measured on a busy machine). It installs Tansu "
      f"{TANSU_VERSION} into `.tools/bin` the first time (`{' '.join(TANSU_INSTALL[:6])} --root .tools`, "
      "under `nice`, about 11 minutes on a quiet machine; `dynostore` is the feature behind both the "
      "`memory://` and the `s3://` engine) and rewrites only this section; `make bench` keeps it.")
    w(PEERS_END)
    return "\n".join(out)


def write_section(text, section):
    """`text` (a whole page) with the section replaced, or inserted before the
    cluster section, or before "## The suite", or at the end."""
    if PEERS_BEGIN in text and PEERS_END in text:
        head, rest = text.split(PEERS_BEGIN, 1)
        return head + section + rest.split(PEERS_END, 1)[1]
    for anchor in (bench_report.CLUSTER_BEGIN, "## The suite"):
        at = text.find(anchor)
        if at >= 0:
            return text[:at] + section + "\n\n" + text[at:]
    return text.rstrip("\n") + "\n\n" + section + "\n"


# ---- running the peers --------------------------------------------------------------

def ensure_tansu(exe):
    if os.access(exe, os.X_OK):
        return
    log(f"no {exe}: installing Tansu {TANSU_VERSION} (cargo install, about 11 minutes)")
    env = dict(os.environ)
    # Not into the workspace's target directory: cargo install then builds in a
    # temporary directory it removes afterwards.
    env.pop("CARGO_TARGET_DIR", None)
    subprocess.run(["nice", *TANSU_INSTALL], env=env, check=True)


class Proc:
    """A running peer: where to connect, which process's CPU to read, how to stop it."""

    def __init__(self, bootstrap, pid, stop):
        self.bootstrap, self.pid, self.stop = bootstrap, pid, stop


class Peers:
    def __init__(self, a):
        import bench_suite
        from harness import S3Server, free_port, wait_port
        self.free_port, self.wait_port, self.cpu_seconds = free_port, wait_port, bench_suite.cpu_seconds
        self.a = a
        self.suite = bench_suite.Suite(argparse.Namespace(bench=a.bench, seconds=a.seconds, shared=a.shared,
                                                          bootstrap=None, name=None, out=None))
        self.work = self.suite.work
        self.s3 = S3Server(self.work).start()
        self.suite.s3 = self.s3
        (self.s3.root / "tansu").mkdir(exist_ok=True)
        self.rows = []
        self.sat = {}  # (round, peer) -> acks=all saturation msg/s

    def close(self):
        self.s3.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def clear_s3(self):
        # The buckets are directories; s3s-fs keeps its per-object metadata files next to them.
        for p in self.s3.root.iterdir():
            if p.is_dir():
                for q in p.iterdir():
                    scratch.set_aside(q, self.work / "discarded")
            else:
                scratch.set_aside(p, self.work / "discarded")

    def start(self, peer):
        if peer in (KAFSCALE_LOCAL, KAFSCALE_S3):
            b = self.suite.broker(2, "s3" if peer == KAFSCALE_S3 else "local")

            def stop_broker():
                # On shutdown the broker seals and uploads what it buffered, which on a
                # busy machine can take a while; harness.Broker kills it after the timeout.
                try:
                    b.stop(timeout=120)
                finally:
                    scratch.empty(b.data_dir.parent)
            return Proc(b.bootstrap, b.proc.pid, stop_broker)
        port = self.free_port()
        logf = open(self.work / f"{IDS[peer]}.log", "a")
        if peer == SINK:
            p = subprocess.Popen([self.a.bench, "sink", "--listen", f"127.0.0.1:{port}", "--partitions",
                                  str(PARTITIONS), "--json"], stdout=subprocess.DEVNULL, stderr=logf)
        else:
            env = dict(os.environ)
            storage = "memory://tansu/"
            if peer == TANSU_S3:
                storage = "s3://tansu/"
                env.update(AWS_ACCESS_KEY_ID=self.s3.ACCESS, AWS_SECRET_ACCESS_KEY=self.s3.SECRET,
                           AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT=f"http://127.0.0.1:{self.s3.port}",
                           AWS_ALLOW_HTTP="true")
            url = f"tcp://127.0.0.1:{port}"
            p = subprocess.Popen([self.a.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                  "--storage-engine", storage], env=env, stdout=logf, stderr=subprocess.STDOUT,
                                 # Tansu reads a .env file from its working directory.
                                 cwd=self.work)

        def stop():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            logf.close()
        try:
            self.wait_port(port, p, timeout=30)
        except Exception:
            stop()
            raise RuntimeError(f"{peer} did not start: {tail(logf.name)}")
        return Proc(f"127.0.0.1:{port}", p.pid, stop)

    def measured(self, proc, fn):
        """fn()'s report with the peer's and s3s-fs's CPU seconds and the load average around it."""
        before, cpu0, s3cpu0 = loadavg(), self.cpu_seconds(proc.pid), self.cpu_seconds(self.s3.proc.pid)
        r = fn()
        r["cpu_s"] = round(self.cpu_seconds(proc.pid) - cpu0, 3)
        s3cpu = self.cpu_seconds(self.s3.proc.pid) - s3cpu0
        # s3s-fs idles at a few milliseconds; only runs that wrote to it get the column.
        r["s3_cpu_s"] = round(s3cpu, 3) if s3cpu > 0.05 else None
        r.update(load_before=before, load_after=loadavg())
        return r

    def produce(self, proc, acks, rate):
        topic = self.suite.topic()
        args = self.suite.load_args(proc.bootstrap, topic, SIZE, PARTITIONS, acks, rate)
        r = self.measured(proc, lambda: self.suite.cli("produce", *args, timeout=4 * self.a.seconds + 120))
        r.update(topic=topic, acks=acks, rate=rate)
        return r

    def consume(self, proc, sat):
        if sat is None:
            raise RuntimeError("the acks=all saturation run had errors: nothing to read back")
        r = self.measured(proc, lambda: self.suite.cli(
            "consume", "--bootstrap", proc.bootstrap, "--topic", sat["topic"], "--messages", sat["messages"],
            "--duration", max(30, 2 * self.a.seconds), timeout=max(30, 2 * self.a.seconds) + 120))
        r["expected"] = sat["messages"]
        return r

    def record(self, rnd, peer, load, r):
        r.update(round=rnd, peer=peer, load=load)
        self.rows.append(r)
        if r.get("error"):
            log(f"{peer} / {load}: FAILED {r['error']}")
        else:
            log(f"{peer} / {load}: {r['mb_per_sec']:.1f} MB/s, cpu {r['cpu_s']} s, "
                f"load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}")

    def one(self, rnd, peer, steps):
        """Starts the peer, runs steps [(load, fn(proc) -> report)] on it, stops it; a
        failure is recorded as that load's row and skips the peer's later steps."""
        self.clear_s3()
        try:
            proc = self.start(peer)
        except Exception as e:  # noqa: BLE001 - recorded in the page
            for load, _ in steps:
                self.record(rnd, peer, load, {"error": short(e)})
            return
        try:
            for i, (load, fn) in enumerate(steps):
                try:
                    self.record(rnd, peer, load, fn(proc))
                except Exception as e:  # noqa: BLE001 - recorded in the page
                    for later, _ in steps[i:]:
                        self.record(rnd, peer, later, {"error": short(e)})
                    return
        finally:
            try:
                proc.stop()
            except Exception as e:  # noqa: BLE001 - the runs are recorded; the process is gone
                log(f"{peer}: did not stop cleanly: {short(e)}")

    def round(self, rnd):
        peers = [p for p in PEERS if p in self.a.peers]
        for peer in peers:
            def sat_all(proc, peer=peer):
                r = self.produce(proc, "all", 0)
                if r["messages"] and not r["errors"]:
                    self.sat[(rnd, peer)] = r
                return r
            steps = [(SAT_ALL, sat_all)]
            if peer != SINK:
                steps.append((CONSUME, lambda proc, peer=peer: self.consume(proc, self.sat.get((rnd, peer)))))
            self.one(rnd, peer, steps)
        for peer in peers:
            self.one(rnd, peer, [(SAT_1, lambda proc: self.produce(proc, "1", 0))])
        for pct in RATE_PCTS:
            for peer in peers:
                sat = self.sat.get((rnd, peer))
                if sat is None:
                    self.record(rnd, peer, rate_load(pct), {"error": "no acks=all saturation rate"})
                    continue
                rate = sat["msgs_per_sec"] * pct / 100
                self.one(rnd, peer, [(rate_load(pct), lambda proc, rate=rate: self.produce(proc, "all", rate))])


def short(e):
    return " ".join(str(e).split())[:160]


def tail(path, n=3):
    try:
        lines = [l for l in Path(path).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return " / ".join(lines[-n:])[-300:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", help="kafscale-bench binary (needed unless --reuse)")
    ap.add_argument("--tansu", default=str(ROOT / ".tools" / "bin" / "tansu"),
                    help="tansu binary (installed there with cargo install when missing)")
    ap.add_argument("--seconds", type=float, default=15, help="length of each produce run")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every (peer, load); the page shows the median")
    ap.add_argument("--peers", default=",".join(IDS.values()),
                    help=f"which peers, comma-separated (default: all of {','.join(IDS.values())})")
    ap.add_argument("--out", help="write the section into this markdown file (default: print it)")
    ap.add_argument("--json", help="also write every run's row as JSON lines here")
    ap.add_argument("--reuse", help="render from these JSON lines (--json of an earlier run) without measuring")
    ap.add_argument("--shared", action="store_true", help="note that the machine was busy with other work")
    ap.add_argument("--left-out-why", help="a sentence for the page saying why some peers were not run")
    ap.add_argument("--commit", help="the commit the broker was built from (default: git rev-parse HEAD)")
    a = ap.parse_args()
    wanted = {p.strip() for p in a.peers.split(",") if p.strip()}
    if wanted - set(IDS.values()):
        ap.error(f"unknown peers {sorted(wanted - set(IDS.values()))}; known: {','.join(IDS.values())}")
    a.peers = [p for p in PEERS if IDS[p] in wanted]
    if a.reuse:
        lines = [json.loads(line) for line in open(a.reuse) if line.strip()]
        meta = next(r for r in lines if r.get("kind") == "meta")
        rows = [r for r in lines if r.get("kind") != "meta"]
    else:
        if not a.bench:
            ap.error("--bench is needed to measure")
        if not (ROOT / ".tools" / "bin" / "s3s-fs").exists():
            sys.exit("no .tools/bin/s3s-fs: run `make tools` first")
        version = ""
        if {TANSU_MEMORY, TANSU_S3} & set(a.peers):
            ensure_tansu(a.tansu)
            version = subprocess.run([a.tansu, "--version"], capture_output=True, text=True).stdout.strip()
        meta = bench_report.machine()
        meta.update(seconds=a.seconds, rounds=a.rounds, shared=a.shared, commit=a.commit or bench_report.commit(),
                    tansu=version.split()[-1] if version else None, load_start=loadavg(), nice=os.nice(0),
                    peers=list(a.peers), left_out_why=a.left_out_why)
        t0 = time.monotonic()
        peers = Peers(a)
        try:
            for rnd in range(a.rounds):
                peers.round(rnd)
        except Exception as e:  # noqa: BLE001 - what was measured still goes into the page
            log(f"the run stopped early: {e!r}")
            meta["aborted"] = short(e)
        finally:
            peers.close()
        rows = peers.rows
        meta.update(minutes=(time.monotonic() - t0) / 60, load_end=loadavg(),
                    end=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), commands=peers.suite.commands)
        if a.json:
            with open(a.json, "w") as f:
                for r in [dict(meta, kind="meta"), *rows]:
                    f.write(json.dumps(r) + "\n")
    bench_report.publish(render(rows, meta), a.out, write_section, log)


if __name__ == "__main__":
    main()
