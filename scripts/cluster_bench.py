"""`make bench-cluster`: failover time and produce throughput of a cluster of
brokers (docs/cluster.md), written as the section "Cluster: failover and
scale-out" of docs/benchmarks.md (or printed).

Every run starts its own etcd (tests/harness.py EtcdServer), s3s-fs (S3Server)
and brokers (Cluster) on free ports of 127.0.0.1 under a temporary directory.

Failover. 3 brokers, a topic of 12 partitions. A prober thread per partition
first writes one record (Produce v3, acks=all, one 5-byte record, built by
tests/rawkafka.py) to the partition's leader, then waits. The broker is sent
SIGKILL or SIGTERM at t0 and every thread at once starts again: Metadata
(v7, asked of a surviving broker, in turn) for the partition's leader, then the
Produce to that leader, again every 20 ms until one is acknowledged (error 0).
The time of that answer minus t0 is the partition's time to writable. A raw
prober measures the broker side: a librdkafka producer adds its own metadata
refresh back-off (retry.backoff.ms, topic.metadata.refresh.fast.interval.ms)
on top. After each repetition the victim is started again (same id, port and
data directory) and the next one waits for balanced leaders (4 per broker, all
brokers agreeing) and a write to every partition. The victims rotate over the
brokers, so some repetitions kill the controller.

Throughput. One confluent-kafka (librdkafka) producer bootstrapped at every
broker of the cluster, acks=all, linger.ms=5, batch.size=1000000, 1 KiB
values, partitions round-robin; it keeps its queue full for the whole run.
Acknowledged = produced - still queued or in flight - failed, sampled after a
warm-up and at the end; the CPU time of the brokers, etcd and s3s-fs is read
from /proc over the same window.

Usage: .venv/bin/python scripts/cluster_bench.py [--out docs/benchmarks.md]
Without --out the section is printed. --out replaces the section between the
markers below if the file has them, or inserts it before "## The suite" (or at
the end).
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
from harness import Cluster, EtcdServer, S3Server, broker_bin  # noqa: E402
import scratch  # noqa: E402
from rawkafka import Conn, parse_produce_v3, produce_v3, record_batch  # noqa: E402

BEGIN = "<!-- cluster-bench:begin (scripts/cluster_bench.py rewrites this section) -->"
END = "<!-- cluster-bench:end -->"
TOPIC = "fo"
PARTITIONS = 12
PROBE_EVERY = 0.02  # s between a partition's failed attempts
FAILOVER_TIMEOUT = 60.0
ERRORS = {0: "NONE", 3: "UNKNOWN_TOPIC_OR_PARTITION", 5: "LEADER_NOT_AVAILABLE", 6: "NOT_LEADER_OR_FOLLOWER",
          7: "REQUEST_TIMED_OUT", 15: "COORDINATOR_NOT_AVAILABLE", 74: "FENCED_LEADER_EPOCH",
          75: "UNKNOWN_LEADER_EPOCH"}


NOTES = """### Reading the cluster numbers

- **kill -9**: nothing tells etcd that the broker died, so its registration, its controller claim (if it
  held it) and its partition owner keys stay until its lease expires, between TTL − ⌊TTL/3⌋ and TTL
  seconds after the kill (the broker keeps the lease alive every ⌊TTL/3⌋ s and etcd counts the TTL from
  the last keep-alive). Until then the survivors' Metadata still names the dead broker as leader and the prober's
  connections to it are refused. Then the controller (a newly elected one if the victim held it)
  reassigns the orphaned partitions, the new owners claim them (claim transaction, recovery: one LIST,
  one footer GET) and the first write is acknowledged after one flush tick and segment PUT. So the time
  is about the TTL plus one write: a shorter `KAFSCALE_ETCD_LEASE_TTL_SEC` buys faster failover with
  more keep-alive traffic and less tolerance for a slow etcd.
- **SIGTERM**: the broker releases its partitions (seal and publish what is buffered, delete the owner
  keys) and revokes its lease before it exits, so the controller reassigns at once and the lease TTL
  plays no part: a moved partition costs about two writes (one NOT_LEADER_OR_FOLLOWER answer, then the
  write at the new leader).
- Partitions of the surviving brokers stay writable throughout: their time is that of one ordinary
  `acks=all` write (the *median over 12* column, close to the baseline).
- **Throughput**: this machine has 2 cores for everything (brokers, etcd, s3s-fs, the client), and every
  row is bound by that CPU (MB/s × *all CPU s/GB* is how many cores the run's processes used), so 3
  brokers cannot go faster here by bringing more CPU, and the client and s3s-fs take most of it. What the rows show is the cost of the cluster path: etcd's publish
  transactions (the *etcd CPU* column), three processes instead of one and leaders spread over three
  connections. On separate machines each broker brings its own cores and its own share of the load.
  Segments are sealed per partition when their oldest byte is 100 ms old (or at 8 MiB), so at these
  rates the PUTs per second are set by the partitions (up to 12 × 10 segments × 2 PUTs) and PUTs per GB
  grow as the throughput falls; a broker whose flush ticks run late (one saturated shard doing all the
  work) seals fewer, larger segments. s3s-fs's CPU follows the PUT count. Runs on a busy machine vary a
  lot (compare the runs column): read the CPU s/GB columns rather than single MB/s figures.
- `make bench` keeps this section when it rewrites the page (`bench_report.keep_marked_sections`);
  `make bench-cluster` refreshes it (between the `cluster-bench` markers, before "The suite").
"""


def log(msg):
    print(f"== {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# ---- raw requests on kept connections ---------------------------------------------------

class Conns:
    """One kept connection per broker address for one thread; a failed call drops it."""

    def __init__(self):
        self.conns = {}

    def call(self, addr, frame, timeout=5.0):
        c = self.conns.get(addr)
        try:
            if c is None:
                c = self.conns[addr] = Conn(addr)
                c.s.settimeout(timeout)
            return c.call(frame)
        except Exception:
            self.drop(addr)
            raise

    def drop(self, addr):
        c = self.conns.pop(addr, None)
        if c is not None:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        for a in list(self.conns):
            self.drop(a)


def metadata(conns, addr):
    """(controller id, {broker id: "host:port"}, {partition: (leader, error)} of TOPIC)."""
    from kafka.protocol.metadata import MetadataRequest, MetadataResponse
    req = MetadataRequest[7](topics=None, allow_auto_topic_creation=False)
    req.with_header(correlation_id=1, client_id="cluster-bench")
    r = MetadataResponse[7].decode(conns.call(addr, req.encode(header=True, framed=True)), header=True, framed=True)
    parts = {}
    for t in r.topics:
        if t.name == TOPIC:
            parts = {p.partition_index: (p.leader_id, p.error_code) for p in t.partitions}
    return r.controller_id, {b.node_id: f"{b.host}:{b.port}" for b in r.brokers}, parts


def produce_one(conns, addr, partition):
    """Error code of one acks=all Produce of one small record."""
    frame = produce_v3(TOPIC, partition, record_batch([b"probe"]), acks=-1, timeout_ms=5000)
    err, _base = parse_produce_v3(conns.call(addr, frame))
    return err


def write_once(conns, ask, partition, timeout=30.0):
    """Writes one record to the partition's leader (Metadata asked of `ask`), retrying;
    returns (leader, seconds the acknowledged Produce took)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            _c, brokers, parts = metadata(conns, ask[partition % len(ask)])
            leader, err = parts.get(partition, (-1, -1))
            if err == 0 and leader in brokers:
                t = time.monotonic()
                e = produce_one(conns, brokers[leader], partition)
                if e == 0:
                    return leader, time.monotonic() - t
                last = ERRORS.get(e, str(e))
            else:
                last = f"metadata leader {leader} error {err}"
        except Exception as ex:  # connection refused or reset: retry
            last = repr(ex)
        time.sleep(0.1)
    raise TimeoutError(f"partition {partition} not writable within {timeout} s: {last}")


def balanced_view(c, timeout=60.0):
    """Waits until every live broker's Metadata lists the live brokers, names a live
    controller and gives every partition a live leader, the same on every broker, 4
    partitions per broker with 3; returns (controller, {partition: leader})."""
    deadline = time.monotonic() + timeout
    conns = Conns()
    last = None
    try:
        while time.monotonic() < deadline:
            ids = sorted(c.live_ids())
            views = []
            try:
                for b in c.live():
                    ctrl, brokers, parts = metadata(conns, b.bootstrap)
                    views.append((ctrl, tuple(sorted(brokers)), tuple(sorted(parts.items()))))
            except Exception as ex:
                last = repr(ex)
                time.sleep(0.2)
                continue
            ctrl, brokers, parts = views[0]
            leaders = {p: lead for p, (lead, _e) in parts}
            counts = Counter(leaders.values())
            lo, hi = PARTITIONS // len(ids), -(-PARTITIONS // len(ids))
            if (len(set(views)) == 1 and list(brokers) == ids and ctrl in ids and len(leaders) == PARTITIONS
                    and all(e == 0 and lead in ids for _p, (lead, e) in parts)
                    and all(lo <= counts.get(i, 0) <= hi for i in ids)):
                return ctrl, leaders
            last = views
            time.sleep(0.2)
    finally:
        conns.close()
    raise TimeoutError(f"no balanced view within {timeout} s; last {last}")


# ---- failover ---------------------------------------------------------------------------

def one_failover(c, victim, sig):
    """Signals `victim` and measures every partition's time to its first acknowledged
    write after the signal; returns a result dict."""
    ctrl, leaders = balanced_view(c)
    survivors = [c[i].bootstrap for i in c.ids() if i != victim]
    everyone = [c[i].bootstrap for i in c.ids()]
    go = threading.Event()
    ready = threading.Barrier(PARTITIONS + 1)
    results, baseline, errs = {}, {}, {}
    t0_box = [0.0]

    def prober(p):
        conns = Conns()
        errors = Counter()
        try:
            _lead, baseline[p] = write_once(conns, everyone, p)
            ready.wait(60)
            go.wait(60)
            t0 = t0_box[0]
            deadline = t0 + FAILOVER_TIMEOUT
            k = p
            while time.monotonic() < deadline:
                try:
                    _ctrl, brokers, parts = metadata(conns, survivors[k % len(survivors)])
                    k += 1
                    leader, err = parts.get(p, (-1, -1))
                    if err != 0 or leader not in brokers:
                        errors[f"metadata: {ERRORS.get(err, err)}"] += 1
                    else:
                        e = produce_one(conns, brokers[leader], p)
                        if e == 0:
                            results[p] = (time.monotonic() - t0, leader)
                            return
                        errors[f"produce to {leader}: {ERRORS.get(e, e)}"] += 1
                except Exception as ex:
                    errors[f"{type(ex).__name__}"] += 1
                time.sleep(PROBE_EVERY)
        except Exception as ex:
            errors[f"prober failed: {ex!r}"] += 1
        finally:
            errs[p] = errors
            conns.close()

    threads = [threading.Thread(target=prober, args=(p,), daemon=True) for p in range(PARTITIONS)]
    for t in threads:
        t.start()
    ready.wait(90)
    proc = c[victim].proc
    t0_box[0] = time.monotonic()
    proc.send_signal(sig)
    go.set()
    exit_s = None
    try:
        proc.wait(timeout=FAILOVER_TIMEOUT)
        exit_s = time.monotonic() - t0_box[0]
    except subprocess.TimeoutExpired:
        pass
    for t in threads:
        t.join(FAILOVER_TIMEOUT + 10)
    moved = sorted(p for p, lead in leaders.items() if lead == victim)
    times = {p: results[p][0] if p in results else None for p in range(PARTITIONS)}
    missing = [p for p, v in times.items() if v is None]
    all_t = [v if v is not None else float("inf") for v in times.values()]
    moved_t = [all_t[p] for p in moved]
    return {"victim": victim, "victim_was_controller": victim == ctrl, "signal": sig.name,
            "exit_code": proc.returncode, "exit_s": exit_s, "moved": moved,
            "times": {str(p): v for p, v in times.items()}, "missing": missing,
            "max_s": max(all_t), "median_s": statistics.median(all_t),
            "moved_median_s": statistics.median(moved_t) if moved_t else None,
            "new_leaders": {str(p): results[p][1] for p in moved if p in results},
            "baseline_median_s": statistics.median(baseline.values()) if baseline else None,
            "errors": {str(p): dict(e) for p, e in errs.items() if e}}


def failover_config(work, sig, ttl, reps):
    name = f"{'kill -9' if sig == signal.SIGKILL else 'SIGTERM'}, TTL {ttl if ttl else '10 (default)'}"
    log(f"failover: {name}")
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=f"fo-{sig.name}-{ttl or 'def'}-"))
    etcd, s3 = EtcdServer(tmp).start(), S3Server(tmp).start()
    c = Cluster(tmp, etcd, s3, env=broker_env(), shards=1, lease_ttl=ttl or 10)
    if not ttl:
        del c.env["KAFSCALE_ETCD_LEASE_TTL_SEC"]  # the broker's own default
    runs = []
    try:
        c.start(3)
        create_topic(c.bootstrap(), TOPIC, PARTITIONS)
        balanced_view(c)
        for r in range(reps):
            victim = c.ids()[r % 3]
            res = one_failover(c, victim, sig)
            runs.append(res)
            log(f"  rep {r + 1}: victim {victim}{' (controller)' if res['victim_was_controller'] else ''}: "
                f"max {res['max_s']:.2f} s, median {res['median_s']:.2f} s, moved partitions' median "
                f"{res['moved_median_s']:.2f} s, exit after {res['exit_s']} s; missing {res['missing']}")
            c.brokers[victim].start()
            balanced_view(c)
            conns = Conns()
            for p in range(PARTITIONS):
                write_once(conns, [b.bootstrap for b in c.live()], p)
            conns.close()
            time.sleep(1.0)
        logs = log_findings(c)
    finally:
        c.shutdown()
        etcd.stop()
        s3.stop()
        clean(tmp)
    return {"kind": "failover", "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "name": name, "signal": sig.name, "ttl": ttl or 10, "ttl_default": not ttl,
            "runs": runs, "log_findings": logs, "dir": str(tmp)}


KEEP_LOGS = False  # --keep: leave the logs of every run (never the data) in the working directory


def clean(tmp):
    """Removes a finished run's data (the bucket's objects, the brokers' data
    directories, etcd's data: a throughput run leaves gigabytes) and, unless --keep,
    the rest of its directory (logs)."""
    # Emptied now and unlinked with the work directory at the end (scratch.py says
    # why: the next run would pay for the deletion).
    if not KEEP_LOGS:
        scratch.empty(tmp)
        return
    for d in [tmp / "s3", tmp / "etcd", *tmp.glob("broker-*/data")]:
        scratch.empty(d)


def check_disk(path, need_gib=6):
    free = shutil.disk_usage(path).free / 2**30
    if free < need_gib:
        raise SystemExit(f"only {free:.1f} GiB free under {path}; a throughput run needs about {need_gib} GiB")


def log_findings(c):
    """WARN and ERROR lines of the brokers' logs, grouped by their message (numbers removed)."""
    import re
    found = Counter()
    examples = {}
    for i, b in c.brokers.items():
        for line in b.log().splitlines():
            if " WARN " in line or " ERROR " in line or '"level":"WARN"' in line or '"level":"ERROR"' in line:
                key = re.sub(r"\d+", "N", line.split(" ", 1)[-1])[:160]
                found[key] += 1
                examples.setdefault(key, f"broker {i}: {line[:300]}")
    return [{"count": n, "example": examples[k]} for k, n in found.most_common(12)]


# ---- throughput -------------------------------------------------------------------------

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_topic(bootstrap, name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer
    fut = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)
    fut[name].result(timeout=30)


def store_puts(brokers):
    """PUT requests to the object store so far, summed over the brokers' /metrics."""
    from harness import parse_metrics
    n = 0
    for b in brokers:
        for (name, labels), v in parse_metrics(b.metrics_text()).items():
            if name.startswith("kafscale_object_store_requests") and not name.endswith(("_created", "_bucket")):
                d = dict(labels)
                if (d.get("operation") or d.get("op") or "").lower() == "put":
                    n += v
    return n


def broker_env():
    # As over HTTPS (the default against AWS): no SHA-256 of every body (as `make bench`).
    return {"KAFSCALE_FLUSH_INTERVAL_MS": "100", "KAFSCALE_S3_UNSIGNED_PAYLOAD": "true"}


def throughput_run(work, n, shards, seconds, warmup, cluster=True):
    from confluent_kafka import Producer
    name = (f"{n} broker{'s' if n > 1 else ''}, {'etcd' if cluster else 'no etcd (embedded metadata)'}, "
            f"{shards} shard{'s' if shards > 1 else ''}{' each' if n > 1 else ''}")
    log(f"throughput: {name}")
    check_disk(work)
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=f"tp-{n}-"))
    s3 = S3Server(tmp).start()
    etcd = EtcdServer(tmp).start() if cluster else None
    if cluster:
        c = Cluster(tmp, etcd, s3, env=broker_env(), shards=shards)
        del c.env["KAFSCALE_ETCD_LEASE_TTL_SEC"]
    else:
        # The same wrapper without etcd: one broker whose metadata is embedded.
        class _NoEtcd:
            @staticmethod
            def broker_env():
                return {}
        c = Cluster(tmp, _NoEtcd(), s3, env=broker_env(), shards=shards)
        del c.env["KAFSCALE_ETCD_LEASE_TTL_SEC"]
    try:
        c.start(n)
        create_topic(c.bootstrap(), TOPIC, PARTITIONS)
        if n > 1:
            balanced_view(c)
        conns = Conns()
        for p in range(PARTITIONS):
            write_once(conns, [b.bootstrap for b in c.live()], p)
        conns.close()
        failed = Counter()

        def on_error(err, msg):
            failed[err.name()] += 1

        p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 5, "batch.size": 1000000,
                      "queue.buffering.max.kbytes": 131072, "message.timeout.ms": 60000,
                      "delivery.report.only.error": True, "on_delivery": on_error})
        value = os.urandom(1024)
        pids = {"brokers": [b.proc.pid for b in c.live()], "s3s-fs": [s3.proc.pid],
                "etcd": [etcd.proc.pid] if etcd else []}
        sent = 0
        start = time.monotonic()
        mark = None
        i = 0
        while True:
            now = time.monotonic()
            if mark is None and now - start >= warmup:
                cpu0 = {k: sum(cpu_seconds(x) for x in v) for k, v in pids.items()}
                client0 = time.process_time()
                puts0 = store_puts(c.live())
                mark = (now, sent - len(p) - sum(failed.values()))
            if now - start >= warmup + seconds:
                break
            for _ in range(2000):
                try:
                    p.produce(TOPIC, value, partition=i % PARTITIONS)
                    sent += 1
                    i += 1
                except BufferError:
                    p.poll(0.002)
            p.poll(0)
        end = time.monotonic()
        acked_end = sent - len(p) - sum(failed.values())
        cpu1 = {k: sum(cpu_seconds(x) for x in v) for k, v in pids.items()}
        client_cpu = time.process_time() - client0
        puts = store_puts(c.live()) - puts0
        left = p.flush(60)
        del p  # closed before the brokers stop
        acked = acked_end - mark[1]
        span = end - mark[0]
        gb = acked * 1024 / 1e9
        res = {"kind": "throughput", "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "name": name, "brokers": n, "shards": shards, "etcd": cluster,
               "seconds": round(span, 2), "acked": acked, "msg_per_s": acked / span,
               "mb_per_s": acked * 1024 / span / 1e6, "failed": dict(failed), "unflushed": left,
               "cpu_s_per_gb": {k: (cpu1[k] - cpu0[k]) / gb for k in cpu1 if pids[k]},
               "client_cpu_s_per_gb": client_cpu / gb, "puts_per_gb": puts / gb, "log_findings": log_findings(c)}
        log(f"  {res['mb_per_s']:.1f} MB/s, broker CPU {res['cpu_s_per_gb'].get('brokers', 0):.2f} s/GB, "
            f"failed {dict(failed)}")
        return res
    finally:
        c.shutdown()
        if etcd:
            etcd.stop()
        s3.stop()
        clean(tmp)


# ---- the report -------------------------------------------------------------------------

def mmm(xs, fmt="{:.2f}"):
    xs = sorted(xs)
    return " / ".join(fmt.format(x) for x in (xs[0], statistics.median(xs), xs[-1]))


def render(results, meta):
    out = []
    w = out.append
    w(BEGIN)
    w("## Cluster: failover and scale-out")
    w("")
    whens = sorted({r["when"] for r in results if r.get("when")})
    when = f"{whens[0]} to {whens[-1]}" if len(whens) > 1 else meta["when"]
    w(f"Measured {when} with `make bench-cluster` (`scripts/cluster_bench.py`), the release broker "
      f"built from commit `{meta['commit']}`, on {meta['cores']} cores ({meta['cpu']}), {meta['memory_gib']} GiB memory, "
      f"Linux {meta['kernel']}. Everything (brokers, one etcd, "
      f"s3s-fs, the clients) shares these {meta['cores']} cores.")
    w("")
    if meta.get("busy"):
        w(f"**The machine was not quiet:** {meta['busy']}")
        w("")
    fo = [r for r in results if r["kind"] == "failover"]
    if fo:
        w("### Failover: time until every partition is writable again")
        w("")
        w("3 brokers (1 shard each, `KAFSCALE_FLUSH_INTERVAL_MS=100`, the default), one etcd, one s3s-fs, a "
          "topic of 12 partitions (4 per broker). A prober thread per partition writes one record with "
          "`acks=all` (raw Produce v3, so the client adds no back-off of its own), then, from the moment the "
          "signal is sent, asks a surviving broker for Metadata and produces one `acks=all` record to the "
          "leader it names, every 20 ms until one is acknowledged. A partition's time is from the signal to "
          "that acknowledgement (so it includes the write itself: the flush tick and the segment PUT, the "
          "*baseline* column). Per repetition: the maximum over all 12 partitions (when the whole topic is "
          "writable again), the median over all 12 (8 of them never moved) and the median over the 4 that "
          "moved off the victim. Cells are min / median / max over the repetitions. The victim rotates over "
          "brokers 1, 2, 3, 1, 2 and is started again between repetitions.")
        w("")
        w("| signal, lease TTL | reps | all writable (max over 12) s | median over 12 s | median over the 4 moved s "
          "| baseline acks=all write s | victim exited after s | aim | met |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in fo:
            runs = r["runs"]
            kill = r["signal"] == "SIGKILL"
            aim = r["ttl"] + 2 if kill else 1.0
            worst = max(x["max_s"] for x in runs)
            exits = [x["exit_s"] for x in runs if x["exit_s"] is not None]
            w(f"| {'kill -9' if kill else 'SIGTERM'}, {r['ttl']} s{' (default)' if r['ttl_default'] else ''} "
              f"| {len(runs)} | {mmm([x['max_s'] for x in runs])} | {mmm([x['median_s'] for x in runs])} "
              f"| {mmm([x['moved_median_s'] for x in runs])} | {mmm([x['baseline_median_s'] for x in runs], '{:.3f}')} "
              f"| {mmm(exits, '{:.3f}') if exits and not kill else '(killed)'} "
              f"| ≤ {aim:g} s | {'yes' if worst <= aim else 'no'} (worst {worst:.2f} s) |")
        w("")
        w("Every repetition (all-writable time, victim, whether it was the controller):")
        w("")
        w("| signal, lease TTL | repetitions: max s (victim) |")
        w("|---|---|")
        for r in fo:
            cells = ", ".join(f"{x['max_s']:.2f} ({x['victim']}{', controller' if x['victim_was_controller'] else ''})"
                              for x in r["runs"])
            w(f"| {'kill -9' if r['signal'] == 'SIGKILL' else 'SIGTERM'}, {r['ttl']} s | {cells} |")
        w("")
    tp = [r for r in results if r["kind"] == "throughput"]
    if tp:
        w("### Produce throughput: 3 brokers against 1")
        w("")
        w(f"One confluent-kafka {meta.get('librdkafka', '')} producer process (librdkafka) bootstrapped at every "
          "broker of the cluster, so it sends each partition's batches to that partition's leader: "
          f"`acks=all`, `linger.ms=5`, `batch.size=1000000`, 1 KiB values, 12 partitions round-robin, the "
          f"queue kept full; {meta['seconds']:g} s measured after {meta['warmup']:g} s of warm-up. Brokers on "
          "s3s-fs with `KAFSCALE_FLUSH_INTERVAL_MS=100`. Runs are interleaved "
          f"({meta['tp_reps']} rounds over the configurations) and each starts fresh processes. CPU columns: "
          "CPU seconds (user + system) per GB (10^9 bytes) of acknowledged values, of all brokers together, of "
          "etcd, of s3s-fs, of the client process and of all of them (each a median over the runs); store PUTs from the brokers' "
          "`kafscale_object_store_requests_total`. MB = 10^6 bytes of values.")
        w("")
        w("| configuration | runs MB/s | median MB/s | brokers CPU s/GB | etcd CPU s/GB | s3s-fs CPU s/GB "
          "| client CPU s/GB | all CPU s/GB | store PUTs per GB | failed |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        names = list(dict.fromkeys(r["name"] for r in tp))
        med = {}
        for nm in names:
            rs = [r for r in tp if r["name"] == nm]
            med[nm] = statistics.median(r["mb_per_s"] for r in rs)

            def cpu(k):
                v = [r["cpu_s_per_gb"].get(k) for r in rs if r["cpu_s_per_gb"].get(k) is not None]
                return f"{statistics.median(v):.2f}" if v else ""
            total = statistics.median(sum(r["cpu_s_per_gb"].values()) + r["client_cpu_s_per_gb"] for r in rs)
            fails = sum(sum(r["failed"].values()) for r in rs)
            runs_mb = ", ".join(f"{r['mb_per_s']:.1f}" for r in rs)
            w(f"| {nm} | {runs_mb} | {med[nm]:.1f} | {cpu('brokers')} "
              f"| {cpu('etcd')} | {cpu('s3s-fs')} | {statistics.median(r['client_cpu_s_per_gb'] for r in rs):.2f} "
              f"| {total:.2f} | {statistics.median(r['puts_per_gb'] for r in rs):,.0f} | {fails} |")
        w("")
        three = next((nm for nm in names if nm.startswith("3 brokers")), None)
        ones = [nm for nm in names if nm.startswith("1 broker")]
        if three and ones:
            w("Ratios of the median MB/s, 3 brokers over: " + "; ".join(
                f"{nm}: **{med[three] / med[nm]:.2f}**" for nm in ones) + ".")
            w("")
    w(meta.get("notes", ""))
    w(END)
    return "\n".join(out)


def write_section(path, section):
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    elif "\n## The suite\n" in text:
        head, tail = text.split("\n## The suite\n", 1)
        text = head + "\n" + section + "\n\n## The suite\n" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def machine_meta():
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) / 1024 / 1024
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        commit += " + uncommitted changes"
    import confluent_kafka
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem, 1), "kernel": os.uname().release,
            "commit": commit, "librdkafka": confluent_kafka.libversion()[0],
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the section into this markdown file (default: print it)")
    ap.add_argument("--json", help="also write every result as JSON lines here")
    ap.add_argument("--reps", type=int, default=5, help="failover repetitions per configuration")
    ap.add_argument("--tp-reps", type=int, default=3, help="rounds of the throughput configurations")
    ap.add_argument("--seconds", type=float, default=15, help="measured seconds per throughput run")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of warm-up before each throughput window")
    ap.add_argument("--only", choices=["failover", "throughput"])
    ap.add_argument("--failover", default="kill9:10,kill9:4,term:10,term:4",
                    help="failover configurations, signal:TTL (10 is the default TTL: not set)")
    ap.add_argument("--busy", help="a sentence for the page saying the machine was not quiet")
    ap.add_argument("--keep", action="store_true", help="keep the working directory with every run's logs "
                    "(the data is removed after each run)")
    ap.add_argument("--reuse", help="JSON lines of earlier runs (--json): with --only, their results of the "
                    "other part go into the page too; without --only nothing is measured and the page is "
                    "rendered from them alone")
    ap.add_argument("--commit", help="the commit the broker binary was built from (default: git rev-parse "
                    "--short HEAD, marked when the working tree has uncommitted changes)")
    a = ap.parse_args()
    os.environ.setdefault("KAFSCALE_BROKER_BIN", broker_bin())
    if (a.only or not a.reuse) and not Path(os.environ["KAFSCALE_BROKER_BIN"]).exists():
        sys.exit(f"no broker binary at {os.environ['KAFSCALE_BROKER_BIN']}: `make build` or set KAFSCALE_BROKER_BIN")
    t_start = time.monotonic()
    meta = machine_meta()
    meta.update(seconds=a.seconds, warmup=a.warmup, tp_reps=a.tp_reps, busy=a.busy, notes=NOTES)
    if a.commit:
        meta["commit"] = a.commit
    global KEEP_LOGS
    KEEP_LOGS = a.keep
    work = Path(tempfile.mkdtemp(prefix="kafscale-cluster-bench-"))
    log(f"working directory {work}, broker {os.environ['KAFSCALE_BROKER_BIN']}")
    results = []
    jsonl = open(a.json, "w") if a.json else None

    def keep(r):
        results.append(r)
        if jsonl:
            jsonl.write(json.dumps(r) + "\n")
            jsonl.flush()
    measure = a.only or (None if a.reuse else "all")
    if a.reuse:
        for line in open(a.reuse):
            r = json.loads(line)
            if r.get("kind") != a.only:
                keep(r)
    try:
        if measure in ("all", "failover"):
            for item in a.failover.split(","):
                sig, ttl = item.split(":")
                sig = {"kill9": signal.SIGKILL, "term": signal.SIGTERM}[sig]
                keep(failover_config(work, sig, None if int(ttl) == 10 else int(ttl), a.reps))
        if measure in ("all", "throughput"):
            for _ in range(a.tp_reps):
                for n, shards, cluster in ((1, 1, False), (1, 1, True), (1, 2, True), (3, 1, True)):
                    keep(throughput_run(work, n, shards, a.seconds, a.warmup, cluster))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"logs kept in {work}")
    meta["minutes"] = (time.monotonic() - t_start) / 60
    section = render(results, meta)
    if a.out:
        write_section(a.out, section)
        log(f"wrote the section into {a.out}")
    else:
        print(section)
    for r in results:
        for f in r.get("log_findings", []):
            log(f"{r['name']}: {f['count']}x {f['example']}")


if __name__ == "__main__":
    main()
