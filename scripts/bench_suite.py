"""The benchmark suite behind `make bench` (scripts/bench.sh).

Starts the broker itself for every run (local directory storage, and S3 mode
against s3s-fs), drives it with `kafscale-bench`, runs the same loads against
`kafscale-bench sink` for the ceiling, scrapes the broker's object-store request
counters around the S3 runs, measures idle memory, and writes the report
(scripts/bench_report.py) and the latency plot (`kafscale-bench plot`).

With --bootstrap (BENCH_BOOTSTRAP in bench.sh) it runs the client-side part of the
suite against an already running Kafka-compatible broker instead: no broker is
started, so there are no shard, S3, cost or memory rows.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
from harness import Broker, S3Server, free_port, wait_port  # noqa: E402
import bench_report  # noqa: E402
import scratch  # noqa: E402

KIB = 1024


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def parse_metrics(text):
    """{(name, frozenset(labels)): value} from Prometheus or OpenMetrics text.
    Tolerant: comments (# HELP/# TYPE/# EOF) and lines it cannot read are skipped."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = value
    return out


def store_requests(metrics):
    """Object-store requests by operation: the `kafscale_object_store_requests*`
    counter family (any suffix), keyed by its `operation` (or `op`) label."""
    ops = {}
    for (name, labels), v in metrics.items():
        if not name.startswith("kafscale_object_store_requests") or name.endswith(("_created", "_bucket")):
            continue
        d = dict(labels)
        op = d.get("operation") or d.get("op")
        if op:
            ops[op] = ops.get(op, 0) + v
    return ops


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all threads) so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Suite:
    def __init__(self, a):
        self.a = a
        self.bench = a.bench
        self.work = Path(tempfile.mkdtemp(prefix="kafscale-bench-"))
        self.results = []
        self.commands = []
        self.runs = 0
        self.s3 = None

    # ---- running kafscale-bench ------------------------------------------------
    def cli(self, *args, timeout=300):
        """Runs one kafscale-bench command with --json; its progress goes to our stderr."""
        cmd = [self.bench, *map(str, args), "--json"]
        shown = "kafscale-bench " + " ".join(map(str, args)) + " --json"
        self.commands.append(shown)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, timeout=timeout, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{shown} failed with {r.returncode}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def load_args(self, bootstrap, topic, size, partitions, acks, rate, seconds=None):
        return ["--bootstrap", bootstrap, "--topic", topic, "--partitions", partitions,
                "--message-size", size, "--acks", acks, "--rate", int(rate),
                "--duration", seconds or self.a.seconds]

    def produce(self, bootstrap, topic, size, partitions, acks, rate):
        return self.cli("produce", *self.load_args(bootstrap, topic, size, partitions, acks, rate))

    def topic(self):
        # A fresh topic per run: against an external broker nothing is reset between runs.
        self.runs += 1
        return f"bench-{os.getpid()}-{self.runs}"

    # ---- brokers ---------------------------------------------------------------
    def broker(self, shards, storage, env=None):
        d = Path(tempfile.mkdtemp(dir=self.work))
        e = {"KAFSCALE_FLUSH_INTERVAL_MS": "100", "KAFSCALE_LOG_LEVEL": "warn"}
        if storage == "s3":
            e.update(self.s3.broker_env())
            # As over HTTPS (the default against AWS): no SHA-256 of every body.
            e["KAFSCALE_S3_UNSIGNED_PAYLOAD"] = "true"
        e.update(env or {})
        # harness.Broker waits for the "listening" line, which is logged at info.
        e["KAFSCALE_LOG_LEVEL"] = "info"
        return Broker(d, env=e, shards=shards).start()

    def stop(self, b, keep=False):
        b.stop()
        if not keep:
            # Unlinked with the work directory at the end (scratch.py says why).
            scratch.empty(b.data_dir.parent)

    def clear_s3(self):
        for p in self.s3.objects().iterdir():
            scratch.set_aside(p, self.work / "discarded")

    def record(self, row):
        self.results.append(row)
        short = {k: row[k] for k in ("label", "mb_per_sec") if k in row}
        if "latency" in row:
            short["p99_ms"] = row["latency"]["p99_ms"]
        log(f"result: {json.dumps(short)}")

    # ---- the suite ---------------------------------------------------------------
    def produce_on_broker(self, label, storage, shards, size, partitions, acks, rate=0, series=None,
                          keep=False, env=None):
        b = self.broker(shards, storage, env)
        before = store_requests(parse_metrics(b.http_get("/metrics")[1]))
        cpu0 = cpu_seconds(b.proc.pid)
        topic = self.topic()
        r = self.produce(b.bootstrap, topic, size, partitions, acks, rate)
        r["broker_cpu_s"] = round(cpu_seconds(b.proc.pid) - cpu0, 2)
        after = store_requests(parse_metrics(b.http_get("/metrics")[1]))
        r["store_requests"] = {op: after.get(op, 0) - before.get(op, 0) for op in after}
        r.update(label=label, kind="produce", storage=storage, shards=shards, size=size,
                 partitions=partitions, acks=acks, rate=rate, topic=topic)
        if series:
            r["series"] = series
        self.record(r)
        if keep:
            return r, b
        self.stop(b)
        return r, None

    def consume(self, label, bootstrap, topic, messages, storage, shards, broker=None):
        before = store_requests(parse_metrics(broker.http_get("/metrics")[1])) if broker else {}
        r = self.cli("consume", "--bootstrap", bootstrap, "--topic", topic, "--messages", messages,
                     "--duration", max(30, 2 * self.a.seconds))
        if broker:
            after = store_requests(parse_metrics(broker.http_get("/metrics")[1]))
            r["store_requests"] = {op: after.get(op, 0) - before.get(op, 0) for op in after}
        r.update(label=label, kind="consume", storage=storage, shards=shards, topic=topic)
        self.record(r)
        return r

    def sink(self, size, partitions, acks, rate=0):
        port = free_port()
        p = subprocess.Popen([self.bench, "sink", "--listen", f"127.0.0.1:{port}", "--partitions",
                              str(partitions), "--json"], stdout=subprocess.PIPE, text=True)
        try:
            wait_port(port, p)
            r = self.produce(f"127.0.0.1:{port}", self.topic(), size, partitions, acks, rate)
        finally:
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=30)
        r["sink"] = json.loads(out.strip().splitlines()[-1])
        r.update(label=f"sink, {size // KIB} KiB, {partitions} partitions, acks={acks}", kind="sink",
                 storage="sink", size=size, partitions=partitions, acks=acks, rate=rate)
        self.record(r)
        return r

    def own_broker(self):
        S = KIB
        base = dict(size=S, partitions=6, acks="all")
        # Saturation: the base case, then one dimension changed at a time.
        sat, b = self.produce_on_broker("local, 2 shards, 1 KiB, 6 partitions, acks=all", "local", 2,
                                        series="local, 1 KiB, 6 partitions, acks=all", keep=True, **base)
        self.consume("fetch, local, 2 shards, broker still running (cache, then store)", b.bootstrap,
                     sat["topic"], sat["messages"], "local", 2)
        b.stop()
        b.start()
        self.consume("fetch, local, 2 shards, restarted (cold cache)", b.bootstrap, sat["topic"],
                     sat["messages"], "local", 2)
        self.stop(b)
        self.produce_on_broker("local, 1 shard, 1 KiB, 6 partitions, acks=all", "local", 1, **base)
        acks1, _ = self.produce_on_broker("local, 2 shards, 1 KiB, 6 partitions, acks=1", "local", 2,
                                          size=S, partitions=6, acks="1",
                                          series="local, 1 KiB, 6 partitions, acks=1")
        self.produce_on_broker("local, 2 shards, 1 KiB, 1 partition, acks=all", "local", 2,
                               size=S, partitions=1, acks="all")
        self.produce_on_broker("local, 2 shards, 1 KiB, 64 partitions, acks=all", "local", 2,
                               size=S, partitions=64, acks="all")
        big, _ = self.produce_on_broker("local, 2 shards, 16 KiB, 6 partitions, acks=all", "local", 2,
                                        size=16 * S, partitions=6, acks="all",
                                        series="local, 16 KiB, 6 partitions, acks=all")
        # Fixed rates below saturation, for latency.
        for pct in (10, 25, 50, 75):
            rate = sat["msgs_per_sec"] * pct / 100
            self.produce_on_broker(f"local, 2 shards, 1 KiB, 6 partitions, acks=all, {pct}% rate ({rate:.0f}/s)",
                                   "local", 2, rate=rate, series="local, 1 KiB, 6 partitions, acks=all",
                                   **base)
        rate = acks1["msgs_per_sec"] / 2
        self.produce_on_broker(f"local, 2 shards, 1 KiB, 6 partitions, acks=1, 50% rate ({rate:.0f}/s)",
                               "local", 2, size=S, partitions=6, acks="1", rate=rate,
                               series="local, 1 KiB, 6 partitions, acks=1")
        rate = big["msgs_per_sec"] / 2
        self.produce_on_broker(f"local, 2 shards, 16 KiB, 6 partitions, acks=all, 50% rate ({rate:.0f}/s)",
                               "local", 2, size=16 * S, partitions=6, acks="all", rate=rate,
                               series="local, 16 KiB, 6 partitions, acks=all")
        # End to end (message timestamp → consumer) at half the saturation rate.
        b = self.broker(2, "local")
        rate = sat["msgs_per_sec"] / 2
        r = self.cli("e2e", *self.load_args(b.bootstrap, self.topic(), S, 6, "all", rate))
        r.update(label=f"e2e, local, 2 shards, 1 KiB, 6 partitions, acks=all, 50% rate ({rate:.0f}/s)",
                 kind="e2e", storage="local", shards=2, size=S, partitions=6, acks="all", rate=rate)
        self.record(r)
        self.stop(b)

        if not (ROOT / ".tools" / "bin" / "s3s-fs").exists():
            log("no .tools/bin/s3s-fs (make tools): skipping the S3 runs")
            return
        self.s3 = S3Server(self.work).start()
        try:
            s3sat, b = self.produce_on_broker("s3s-fs, 2 shards, 1 KiB, 6 partitions, acks=all", "s3", 2,
                                              series="s3s-fs, 1 KiB, 6 partitions, acks=all", keep=True,
                                              **base)
            b.stop()
            b.start()
            self.consume("fetch, s3s-fs, 2 shards, restarted (cold cache)", b.bootstrap, s3sat["topic"],
                         s3sat["messages"], "s3", 2, broker=b)
            self.stop(b)
            self.clear_s3()
            self.produce_on_broker("s3s-fs, 1 shard, 1 KiB, 6 partitions, acks=all", "s3", 1, **base)
            self.clear_s3()
            rate = s3sat["msgs_per_sec"] / 2
            self.produce_on_broker(f"s3s-fs, 2 shards, 1 KiB, 6 partitions, acks=all, 50% rate ({rate:.0f}/s)",
                                   "s3", 2, rate=rate, series="s3s-fs, 1 KiB, 6 partitions, acks=all", **base)
            self.clear_s3()
        finally:
            self.s3.stop()

    def memory(self):
        """RSS of an idle broker with 1, 1,000 and 10,000 partitions, and per connection."""
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        for total, topics in ((1, 1), (1000, 10), (10000, 100)):
            b = self.broker(2, "local")
            time.sleep(2)
            empty = rss_kib(b.proc.pid)
            per = total // topics
            admin = AdminClient({"bootstrap.servers": b.bootstrap})
            names = [f"mem-{i}" for i in range(topics)]
            t0 = time.time()
            for f in admin.create_topics([NewTopic(n, per, 1) for n in names], operation_timeout=120).values():
                f.result(timeout=180)
            created_s = time.time() - t0
            time.sleep(3)
            created = rss_kib(b.proc.pid)
            # One 1 KiB message in every partition, so each has a log that has been written.
            p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20, "acks": "all"})
            for n in names:
                for part in range(per):
                    p.produce(n, b"x" * KIB, partition=part)
                    p.poll(0)
            assert p.flush(120) == 0
            # Closed now, or librdkafka keeps reconnecting to the stopped broker.
            p = admin = None
            time.sleep(3)
            written = rss_kib(b.proc.pid)
            self.record(dict(kind="memory", label=f"{total} partitions", partitions=total,
                             rss_empty_kib=empty, rss_created_kib=created, rss_written_kib=written,
                             create_seconds=round(created_s, 2)))
            if total == 1:
                self.connections(b)
            self.stop(b)

    def connections(self, b, n=1000):
        # ApiVersions v0, correlation id 1, client id "m".
        req = bytes.fromhex("0012" "0000" "00000001" "0001") + b"m"
        frame = len(req).to_bytes(4, "big") + req
        before = rss_kib(b.proc.pid)
        socks = []
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", b.port))
                s.sendall(frame)
                size = int.from_bytes(s.recv(4, socket.MSG_WAITALL), "big")
                assert size > 0 and len(s.recv(size, socket.MSG_WAITALL)) == size
                socks.append(s)
            time.sleep(3)
            after = rss_kib(b.proc.pid)
            gauge = parse_metrics(b.http_get("/metrics")[1])
            open_now = sum(v for (name, _), v in gauge.items() if name.startswith("kafscale_open_connections"))
        finally:
            for s in socks:
                s.close()
        self.record(dict(kind="connections", label=f"{n} idle connections", connections=n,
                         open_connections_gauge=open_now, rss_before_kib=before, rss_after_kib=after,
                         kib_per_connection=round((after - before) / n, 2)))

    def external(self):
        bs = self.a.bootstrap
        S = KIB
        series = f"{self.a.name}, 1 KiB, 6 partitions, acks=all"
        cases = [(S, 6, "all"), (S, 6, "1"), (S, 1, "all"), (S, 64, "all"), (16 * S, 6, "all")]
        sat = None
        for size, parts, acks in cases:
            t = self.topic()
            r = self.produce(bs, t, size, parts, acks, 0)
            r.update(label=f"{self.a.name}, {size // KIB} KiB, {parts} partitions, acks={acks}", kind="produce",
                     storage=self.a.name, size=size, partitions=parts, acks=acks, rate=0, topic=t)
            if (size, parts, acks) == (S, 6, "all"):
                r["series"] = series
                sat = r
            self.record(r)
        self.consume(f"fetch, {self.a.name}", bs, sat["topic"], sat["messages"], self.a.name, None)
        for pct in (10, 25, 50, 75):
            rate = sat["msgs_per_sec"] * pct / 100
            r = self.produce(bs, self.topic(), S, 6, "all", rate)
            r.update(label=f"{self.a.name}, 1 KiB, 6 partitions, acks=all, {pct}% rate ({rate:.0f}/s)",
                     kind="produce", storage=self.a.name, size=S, partitions=6, acks="all", rate=rate,
                     series=series)
            self.record(r)
        rate = sat["msgs_per_sec"] / 2
        r = self.cli("e2e", *self.load_args(bs, self.topic(), S, 6, "all", rate))
        r.update(label=f"e2e, {self.a.name}, 1 KiB, 6 partitions, acks=all, 50% rate ({rate:.0f}/s)",
                 kind="e2e", storage=self.a.name, size=S, partitions=6, acks="all", rate=rate)
        self.record(r)

    def sinks(self):
        for size, parts, acks in ((KIB, 6, "all"), (KIB, 6, "1"), (KIB, 1, "all"), (KIB, 64, "all"),
                                  (16 * KIB, 6, "all")):
            self.sink(size, parts, acks)

    def run(self):
        t0 = time.time()
        try:
            if self.a.bootstrap:
                self.external()
            else:
                self.own_broker()
                self.memory()
            self.sinks()
        finally:
            (self.work / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.results))
            log(f"results kept in {self.work / 'results.jsonl'}")
        elapsed = time.time() - t0
        results = self.work / "results.jsonl"
        out = Path(self.a.out)
        svg = out.with_name(out.stem + "-latency.svg")
        subprocess.run([self.bench, "plot", "--results", results, "--out", svg,
                        "--title", "Produce latency (p50 thin, p99 bold) versus throughput"], check=True)
        meta = bench_report.machine()
        meta.update(seconds=self.a.seconds, suite_seconds=round(elapsed), commands=self.commands,
                    svg=svg.name, external=self.a.name if self.a.bootstrap else None,
                    shared=self.a.shared, bootstrap=self.a.bootstrap)
        out.write_text(bench_report.keep_marked_sections(
            bench_report.render(self.results, meta), out.read_text() if out.exists() else ""))
        # The raw results with the run's details first: `scripts/bench_report.py FILE`
        # renders the page again from them.
        raw = out.with_name(out.stem + "-results.jsonl")
        raw.write_text(json.dumps(dict(meta, kind="meta")) + "\n" + results.read_text())
        log(f"wrote {out}, {svg} in {elapsed / 60:.1f} min")
        shutil.rmtree(self.work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bench", required=True, help="kafscale-bench binary")
    ap.add_argument("--seconds", type=float, default=15, help="length of each produce run")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--bootstrap", help="an already running Kafka-compatible broker (no broker is started)")
    ap.add_argument("--name", default="external", help="what to call that broker in the report")
    ap.add_argument("--shared", action="store_true", help="note that the machine was busy with other work")
    Suite(ap.parse_args()).run()


if __name__ == "__main__":
    main()
