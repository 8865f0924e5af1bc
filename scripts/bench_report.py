"""Renders the benchmark suite's results (scripts/bench_suite.py) as docs/benchmarks.md.

`render(results, meta)` is a pure function of the result rows, so that
tests/test_bench.py checks the tables, ratios and cost arithmetic on known input.
"""
import datetime
import pathlib
import platform
import subprocess

# S3 Standard request prices, us-east-1 (USD per request).
PRICE_PUT = 0.005 / 1000  # PUT, COPY, POST, LIST
PRICE_GET = 0.0004 / 1000  # GET, SELECT and all other requests
MONTH_SECONDS = 30 * 24 * 3600
GIB = 1 << 30
# The broker's defaults, which the suite runs with (docs/configuration.md).
SEGMENT_BYTES = 8 << 20
FLUSH_MS = 100

# Issue 2's targets (see "How to read these numbers").
TARGET_LOCAL_MBS = 478.0
TARGET_S3_MBS = 260.0
TARGET_P99_MS = 105.0


def _sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def commit():
    """The checkout's commit, and whether tracked files differ from it."""
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    try:
        c = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return c + (" + uncommitted changes" if dirty else "")


def machine_line():
    """`machine()` in one line, for a page's introduction."""
    m = machine()
    return f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}"


def machine():
    """What the numbers were measured on."""
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "when": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "cpu": _sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor(),
        "cores": _sh("nproc"),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
    }


def per_gb(count, nbytes):
    return count / (nbytes / 1e9) if nbytes else 0.0


def monthly_cost(put_per_s, get_per_s, list_per_s):
    """Requests per month at these rates and their price."""
    puts, gets, lists = put_per_s * MONTH_SECONDS, get_per_s * MONTH_SECONDS, list_per_s * MONTH_SECONDS
    return {"put": puts, "get": gets, "list": lists,
            "usd": (puts + lists) * PRICE_PUT + gets * PRICE_GET}


def segments_per_s(bytes_per_s, partitions, segment_bytes=SEGMENT_BYTES, flush_ms=FLUSH_MS):
    """Segments sealed per second when `bytes_per_s` is spread evenly over `partitions`:
    each partition seals a segment when it is full or when its oldest byte is `flush_ms`
    old, whichever comes first."""
    return max(partitions * 1000 / flush_ms, bytes_per_s / segment_bytes)


def _f(x, nd=1):
    return "" if x is None else f"{x:,.{nd}f}"


def _sat(r):
    return r.get("kind") in ("produce", "sink") and not r.get("rate")


def sink_ratio(row, results):
    """Broker MB/s over the sink's for the same message size, partitions and acks."""
    if not _sat(row) or row.get("kind") != "produce":
        return None
    for s in results:
        if s.get("kind") == "sink" and (s["size"], s["partitions"], s["acks"]) == (
                row["size"], row["partitions"], row["acks"]) and s["mb_per_sec"]:
            return row["mb_per_sec"] / s["mb_per_sec"]
    return None


def targets(results):
    """(measure, measured, target, unit, higher is better) for the issue's targets."""
    def best(storage):
        xs = [r["mb_per_sec"] for r in results if r.get("kind") == "produce" and r.get("storage") == storage
              and _sat(r) and r["acks"] == "all" and r["size"] == 1024 and r["partitions"] == 6]
        return max(xs) if xs else None

    def p99_at(pct):
        xs = [r["latency"]["p99_ms"] for r in results if r.get("kind") == "produce" and r.get("storage") == "local"
              and r["acks"] == "all" and r["size"] == 1024 and f"{pct}% rate" in r["label"]]
        return xs[0] if xs else None

    return [
        ("produce, acks=all, 1 KiB, 6 partitions, local storage", best("local"), TARGET_LOCAL_MBS, "MB/s", True),
        ("produce, acks=all, 1 KiB, 6 partitions, s3s-fs", best("s3"), TARGET_S3_MBS, "MB/s", True),
        ("p99 produce latency at 10% of saturation", p99_at(10), TARGET_P99_MS, "ms", False),
        ("p99 produce latency at 50% of saturation", p99_at(50), TARGET_P99_MS, "ms", False),
    ]


def cost_section(s3w, s3r):
    """Monthly request cost at 1 GiB/s, from the measured requests per segment."""
    wr = max(s3w, key=lambda r: r["mb_per_sec"])
    q = wr["store_requests"]
    segs = q.get("put", 0) / 2  # a .kfs and an .index per segment
    list_per_s = q.get("list", 0) / (wr["seconds"] or 1)
    # GETs per segment when reading back what a saturation run wrote (cold cache).
    gets_per_seg = None
    for rd in s3r:
        src = next((r for r in s3w if r.get("topic") and r["topic"] == rd.get("topic")), None)
        if src and src["store_requests"].get("put"):
            gets_per_seg = rd["store_requests"].get("get", 0) / (src["store_requests"]["put"] / 2)
    out = []
    w = out.append
    w("Monthly request cost at a sustained 1 GiB/s written (and, for GET, read back once from the "
      "store), over a 30-day month at S3 Standard us-east-1 list prices (PUT/LIST $0.005 per 1,000, "
      "GET $0.0004 per 1,000; DELETE is free). PUTs follow from segments: every partition seals a "
      f"segment when it reaches {SEGMENT_BYTES >> 20} MiB or its oldest byte is {FLUSH_MS} ms old, "
      "whichever comes first, so segments per second = max(partitions × 10, bytes per second / 8 MiB); "
      f"each costs 2 PUTs (`.kfs` and `.index`, as measured: {q.get('put', 0):,.0f} PUTs for "
      f"{segs:,.0f} segments in \"{wr['label']}\")"
      + (f" and {gets_per_seg:.2f} GETs when read back with a cold cache (measured)." if gets_per_seg is not None
         else "."))
    w("")
    w("| at 1 GiB/s | segments per s | PUT per month | GET per month | LIST per month | USD per month |")
    w("|---|---:|---:|---:|---:|---:|")
    for parts in (6, 64, 1000):
        sps = segments_per_s(GIB, parts)
        c = monthly_cost(2 * sps, (gets_per_seg or 0) * sps, list_per_s)
        w(f"| {parts:,} partitions | {sps:,.0f} | {c['put']:,.0f} | {c['get']:,.0f} | {c['list']:,.0f} | "
          f"{c['usd']:,.0f} |")
    mb = wr["mb_per_sec"] * 1e6
    w("")
    w(f"Per GB the measured runs come out higher than at 1 GiB/s: at {wr['mb_per_sec']:.0f} MB/s over "
      f"{wr['partitions']} partitions a segment is sealed by age at "
      f"{mb / segments_per_s(mb, wr['partitions']) / 1e6:.2f} MB, not at 8 MiB. A longer "
      f"`KAFSCALE_FLUSH_INTERVAL_MS` trades latency for fewer PUTs when many partitions share the "
      f"throughput. LIST is mostly the broker's store probe (measured {list_per_s:.1f}/s), whatever the "
      f"throughput.")
    return "\n".join(out)


def render(results, meta):
    out = []
    w = out.append
    ext = meta.get("external")
    title = f"# Benchmarks: {ext}" if ext else "# Benchmarks"
    w(title)
    w("")
    w(f"Measured {meta['when']} with `make bench` (`scripts/bench.sh`, suite in `scripts/bench_suite.py`) "
      f"on {meta['cores']} cores ({meta['cpu']}), {meta['memory_gib']} GiB memory, Linux {meta['kernel']}; "
      f"the whole suite took {meta['suite_seconds'] / 60:.1f} minutes.")
    if ext:
        w(f"The broker under test was already running at `{meta['bootstrap']}` (not started by the suite).")
    if meta.get("shared"):
        w("")
        w("**These numbers were measured while the machine was shared with other work (compilers of other "
          "jobs were running), so they are noisy and low; re-run `make bench` on a quiet machine for the "
          "real figures.** Runs at different moments got different shares of the CPU: a sink ratio above 1 or a "
          "fixed-rate row with a higher p99 than its neighbours says so, not that the broker beat the sink.")
    w("")
    w(f"Broker and load generator share the machine. The load generator is `kafscale-bench` (librdkafka "
      f"via the `rdkafka` crate): one producer, `linger.ms=5`, `batch.size=1000000`, random 8-byte keys, "
      f"{meta['seconds']:g} s per produce run, a new broker (and topic) for every run. MB = 10^6 bytes of "
      f"message values. Latency is send → delivery report as the producer sees it; end-to-end latency is "
      f"the timestamp written into the message → the consumer receiving it.")
    w("")

    checks = [c for c in targets(results) if c[1] is not None]
    if checks:
        w("## Against the targets")
        w("")
        w("| measure | measured | target | met |")
        w("|---|---:|---:|---|")
        for name, got, target, unit, higher in checks:
            met = got >= target if higher else got <= target
            w(f"| {name} | {got:.1f} {unit} | {'>=' if higher else '<='} {target:.0f} {unit} | "
              f"{'yes' if met else 'no'} |")
        w("")

    produce = [r for r in results if r.get("kind") == "produce"]
    if produce:
        w("## Produce")
        w("")
        w("Saturation rows send as fast as the client can; rate rows send at a fixed share of the matching "
          "saturation rate. *sink ratio* is the broker's MB/s over the sink's for the same load (below).")
        w("")
        w("| run | msg/s | MB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | store PUTs per GB "
          "| broker CPU s per GB | sink ratio |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in produce:
            lat = r["latency"]
            puts = r.get("store_requests", {}).get("put")
            cpu = r.get("broker_cpu_s")
            ratio = sink_ratio(r, results)
            w(f"| {r['label']} | {r['msgs_per_sec']:,.0f} | {r['mb_per_sec']:.1f} | {lat['p50_ms']:.2f} | "
              f"{lat['p90_ms']:.2f} | {lat['p99_ms']:.2f} | {lat['p999_ms']:.2f} | {lat['max_ms']:.2f} | "
              f"{r['errors']} | {_f(per_gb(puts, r['bytes']) if puts is not None else None)} | "
              f"{_f(per_gb(cpu, r['bytes']) if cpu is not None else None, 2)} | "
              f"{'' if ratio is None else f'{ratio:.2f}'} |")
        w("")
        if meta.get("svg"):
            w(f"![Produce latency versus throughput]({meta['svg']})")
            w("")
            w("Latency versus throughput: each line is one configuration at 10/25/50/75% of its saturation "
              "rate and at saturation (log scale; bold p99, thin p50).")
            w("")

    e2e = [r for r in results if r.get("kind") == "e2e"]
    if e2e:
        w("## End to end")
        w("")
        w("| run | sent | received | MB/s | e2e p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | produce p99 ms |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in e2e:
            p, l = r["produced"], r["e2e_latency"]
            w(f"| {r['label']} | {p['messages']:,} | {r['received']:,} | {p['mb_per_sec']:.1f} | "
              f"{l['p50_ms']:.2f} | {l['p90_ms']:.2f} | {l['p99_ms']:.2f} | {l['p999_ms']:.2f} | "
              f"{l['max_ms']:.2f} | {p['latency']['p99_ms']:.2f} |")
        w("")

    fetch = [r for r in results if r.get("kind") == "consume"]
    if fetch:
        w("## Fetch")
        w("")
        w("One consumer assigned every partition, reading what the saturation run above it wrote; "
          "timed from its first message to its last.")
        w("")
        w("| run | messages | msg/s | MB/s | store GETs per GB |")
        w("|---|---:|---:|---:|---:|")
        for r in fetch:
            gets = r.get("store_requests", {}).get("get")
            w(f"| {r['label']} | {r['messages']:,} | {r['msgs_per_sec']:,.0f} | {r['mb_per_sec']:.1f} | "
              f"{_f(per_gb(gets, r['bytes']) if gets is not None else None)} |")
        w("")

    sinks = [r for r in results if r.get("kind") == "sink"]
    if sinks:
        w("## Sink ceiling")
        w("")
        w("`kafscale-bench sink` answers ApiVersions, Metadata, CreateTopics and Produce with success and "
          "discards the data (it reads only the record-batch headers, to count records). The same producer "
          "against it shows what the client and this machine can do at most; a broker's *sink ratio* is "
          "its share of that.")
        w("")
        w("| load | msg/s | MB/s | p50 ms | p99 ms | records the sink received |")
        w("|---|---:|---:|---:|---:|---:|")
        for r in sinks:
            w(f"| {r['label']} | {r['msgs_per_sec']:,.0f} | {r['mb_per_sec']:.1f} | {r['latency']['p50_ms']:.2f} | "
              f"{r['latency']['p99_ms']:.2f} | {r['sink']['records']:,} |")
        w("")

    s3w = [r for r in results if r.get("storage") == "s3" and r.get("kind") == "produce" and _sat(r)
           and "store_requests" in r]
    s3r = [r for r in results if r.get("storage") == "s3" and r.get("kind") == "consume" and "store_requests" in r]
    if s3w:
        w("## Object-store requests and their cost")
        w("")
        w("Counted by the broker itself (`kafscale_object_store_requests_total` by operation, scraped from "
          "`/metrics` before and after each run). Per GB means per 10^9 bytes of message values written "
          "or read. LIST is mostly the broker's store probe, which runs on a timer, so it is given per second.")
        w("")
        w("| run | GB | PUT | GET | LIST | DELETE | PUT per GB | GET per GB | LIST per s |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in s3w + s3r:
            q = r["store_requests"]
            gb = r["bytes"] / 1e9
            secs = r["seconds"] or 1
            w(f"| {r['label']} | {gb:.2f} | {q.get('put', 0):,.0f} | {q.get('get', 0):,.0f} | "
              f"{q.get('list', 0):,.0f} | {q.get('delete', 0):,.0f} | {per_gb(q.get('put', 0), r['bytes']):.1f} | "
              f"{per_gb(q.get('get', 0), r['bytes']):.1f} | {q.get('list', 0) / secs:.2f} |")
        w("")
        w(cost_section(s3w, s3r))
        w("")

    mem = [r for r in results if r.get("kind") == "memory"]
    conns = [r for r in results if r.get("kind") == "connections"]
    if mem:
        w("## Memory")
        w("")
        w("Resident memory (VmRSS) of an idle broker (2 shards, local storage) a few seconds after start, "
          "after creating the partitions (CreateTopics), and after one 1 KiB message was written to every "
          "partition and flushed.")
        w("")
        w("| partitions | RSS at start MiB | RSS after create MiB | RSS after one message each MiB | "
          "per partition KiB (over 1 partition, written) | CreateTopics took s |")
        w("|---:|---:|---:|---:|---:|---:|")
        one = next((r for r in mem if r["partitions"] == 1), None)
        for r in mem:
            # Per partition: the growth over the 1-partition broker, after writing.
            per = ((r["rss_written_kib"] - one["rss_written_kib"]) / (r["partitions"] - 1)
                   if one and r["partitions"] > 1 else None)
            w(f"| {r['partitions']:,} | {r['rss_empty_kib'] / 1024:.1f} | {r['rss_created_kib'] / 1024:.1f} | "
              f"{r['rss_written_kib'] / 1024:.1f} | {_f(per)} | {r['create_seconds']:.2f} |")
        w("")
    for r in conns:
        w(f"Connections: {r['connections']:,} idle client connections (each after an ApiVersions exchange; "
          f"the broker's `kafscale_open_connections` showed {r['open_connections_gauge']:.0f}) raised RSS "
          f"from {r['rss_before_kib'] / 1024:.1f} MiB to {r['rss_after_kib'] / 1024:.1f} MiB: "
          f"**{r['kib_per_connection']:.1f} KiB per connection**.")
        w("")

    w(HOW_TO_READ)
    if meta.get("commands"):
        w("")
        w("<details><summary>Every command the suite ran</summary>")
        w("")
        w("```")
        for c in meta["commands"]:
            w(c)
        w("```")
        w("</details>")
    return "\n".join(out) + "\n"


HOW_TO_READ = """## The suite

Changes to the hot path are also measured side by side (the binary before and after,
interleaved on one machine): [benchmarks-ab.md](benchmarks-ab.md).

`make bench` builds the release broker and `kafscale-bench`, then runs `scripts/bench_suite.py`
(`BENCH_SECONDS`, default 15, sets the length of each produce run). The matrix covers every
dimension by changing one thing at a time from a base case (1 KiB, 6 partitions, `acks=all`,
2 shards, local storage, saturation):

- message size 1 KiB and 16 KiB; 1, 6 and 64 partitions; `acks=all` and `acks=1`; 1 and 2
  shards; local directory storage and S3 (s3s-fs on this machine);
- saturation (as fast as the client can send) and fixed rates below it: 10, 25, 50 and 75%
  of the base case's saturation rate, 50% for `acks=1`, 16 KiB and S3;
- one end-to-end run at 50%; fetch runs reading what a saturation run wrote, with the broker
  still running and after a restart (cold cache), locally and from S3;
- the sink (see above) with the loads of the saturation rows, for the ceiling and ratios;
- object-store request counts around the S3 runs; idle memory with 1, 1,000 and 10,000
  partitions, and 1,000 idle connections.

`make bench-peers` (`scripts/bench_peers.py`) runs the base loads (1 KiB, 6 partitions:
saturation with `acks=all` and `acks=1`, 10% and 50% of each peer's own saturation, the
consume of what was written) against this broker on local storage and on s3s-fs, Tansu on
its memory engine and on s3s-fs, and the sink, back to back for each load, and rewrites
only its section "Peers, same run" with ratios to Tansu and to the sink (`BENCH_SECONDS`,
`BENCH_ROUNDS` for the median of several runs, `BENCH_SHARED=1` on a busy machine). `make
bench` keeps that section and the cluster one when it rewrites the page.

## How to read these numbers

- **Targets** (issue 2): at least 478 MB/s produce with `acks=all` on local storage
  (what the same kind of librdkafka producer pushes into Tansu's in-memory engine on
  this machine), at least 260 MB/s on s3s-fs, and a p99 produce latency within the
  flush interval (100 ms by default) plus 5 ms at a fixed rate below saturation.
- **What limits saturation here**: broker and load generator share two cores, and the
  CPU is saturated in every saturation run. The producer's own thread (librdkafka's
  `produce()` and delivery reports) runs at up to 100% of one core and librdkafka's
  broker thread at about half of the other, so the broker gets what is left; the sink
  rows show how much the client alone can push. The "broker CPU s per GB" column is the
  broker's own cost (all its threads, user + system); compare it, not single throughput
  figures, when judging a change: runs vary by ±10% from scheduling alone.
- **Latency at a fixed rate** is set by group commit ([configuration.md](configuration.md#group-commit)):
  an `acks=all` batch waits for its partition's upload in progress, if any, then for
  its own segment's PUT (on S3 also for the partition's minimum interval, 50 ms by
  default; the S3 rows here run with the default); the producer's own `linger.ms=5`
  comes on top. Runs made before group commit (issue 17) waited for a flush tick
  (uniform over the 100 ms interval) instead. At saturation the latency is the
  producer's own queue (`queue.buffering.max.kbytes` 128 MiB) filling up, not the
  broker. `acks=1` is answered after the in-memory append, so its latency is not
  bound to either.
- **S3 rows** run against s3s-fs on the same machine, over plain HTTP with
  `KAFSCALE_S3_UNSIGNED_PAYLOAD=true` (what the broker does by default over HTTPS,
  i.e. against AWS). s3s-fs itself needs several CPU seconds per GB (it hashes and
  writes every object), which it takes from the same two cores.

## Against another broker

Every `kafscale-bench` command takes `--bootstrap` (or `KAFSCALE_BENCH_BOOTSTRAP`), so the
same loads run against any Kafka-compatible broker. `BENCH_BOOTSTRAP=host:port make bench`
runs the client side of the suite against a broker that is already running: it starts no
broker, creates a new topic per run through CreateTopics (so brokers that do not auto-create
topics work), skips the shard, S3, cost and memory rows, and writes
`docs/benchmarks-$BENCH_NAME.md` (`BENCH_NAME` defaults to `external`) instead of this page.
`make bench-peers` does this for Tansu 0.6.0 (a Rust Kafka-compatible broker) without
any hand work, side by side with this broker and the sink in one run: see "Peers, same
run" above (`scripts/bench_peers.py`; it installs Tansu into `.tools/bin` when missing,
starts it on the `memory://` engine and on s3s-fs, and writes only its own section). By hand:

```bash
cargo install tansu@0.6.0 --locked --features dynostore --root .tools   # ~11 min
.tools/bin/tansu broker --listener-url tcp://127.0.0.1:19092 \\
    --advertised-listener-url tcp://127.0.0.1:19092 --storage-engine memory://tansu/ &
BENCH_BOOTSTRAP=127.0.0.1:19092 BENCH_NAME=tansu make bench
```

(`--storage-engine s3://bucket/` with `AWS_ENDPOINT`, `AWS_ALLOW_HTTP=true` and credentials
runs it on s3s-fs.) The sink rows are measured on the machine running the suite, so the ratios
only mean something when the other broker runs on that machine too. Single commands work the
same way, e.g. `kafscale-bench produce --bootstrap host:9092 --topic t --partitions 6
--message-size 1024 --acks all --duration 15`, `kafscale-bench consume --bootstrap host:9092
--topic t --from earliest`, `kafscale-bench e2e --bootstrap host:9092 --rate 50000`."""


CLUSTER_BEGIN = "<!-- cluster-bench:begin"
CLUSTER_END = "<!-- cluster-bench:end -->"
PEERS_BEGIN = "<!-- bench-peers:begin (scripts/bench_peers.py rewrites this section) -->"
PEERS_END = "<!-- bench-peers:end -->"
TLS_BEGIN = "<!-- bench-tls:begin (scripts/tls_bench.py rewrites this section) -->"
TLS_END = "<!-- bench-tls:end -->"
LOCAL_IO_BEGIN = "<!-- bench-local-io:begin (scripts/local_io_bench.py rewrites this section) -->"
LOCAL_IO_END = "<!-- bench-local-io:end -->"
# Sections other scripts write into the page, in page order.
MARKED = (("<!-- bench-peers:begin", PEERS_END), ("<!-- bench-local-io:begin", LOCAL_IO_END),
          ("<!-- bench-tls:begin", TLS_END), (CLUSTER_BEGIN, CLUSTER_END))


def place_section(text, section, begin, end):
    """`text` with the section between `begin` and `end` replaced by `section`, or
    `section` inserted before "## The suite", or at the end."""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + section + rest.split(end, 1)[1]
    at = text.find("## The suite")
    if at >= 0:
        return text[:at] + section + "\n\n" + text[at:]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def append_results(path, meta, rows):
    """Appends a run's details and then each of its rows to the JSON-lines file
    `path` (nothing without one)."""
    if not path:
        return
    import json
    with open(path, "a") as f:
        f.write(json.dumps({"kind": "meta", **meta}) + "\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")


def publish(section, out, write_section, log):
    """Writes `section` into the markdown page `out` with `write_section(page,
    section)` (each script places its own section), or prints it without `out`."""
    if not out:
        print(section)
        return
    from pathlib import Path
    path = Path(out)
    path.write_text(write_section(path.read_text() if path.exists() else "# Benchmarks\n", section))
    log(f"wrote the section into {path}")


def keep_marked_sections(page, old_page):
    """The rendered page with the sections scripts/bench_peers.py, scripts/tls_bench.py
    and scripts/cluster_bench.py wrote into the old page (between their markers) put
    back before "## The suite", so that rewriting the suite's results does not drop
    the peer and cluster measurements."""
    blocks = ""
    for begin, end in MARKED:
        start, stop = old_page.find(begin), old_page.find(end)
        if start < 0 or stop < start or begin in page:
            continue
        blocks += old_page[start:stop + len(end)] + "\n\n"
    if not blocks:
        return page
    at = page.find("## The suite")
    return page + "\n" + blocks if at < 0 else page[:at] + blocks + page[at:]


def main(argv):
    """Renders a results file written by the suite (its first line holds the details of the run)."""
    import json
    rows = [json.loads(line) for line in open(argv[1]) if line.strip()]
    meta = next((r for r in rows if r.get("kind") == "meta"), None)
    if meta is None:
        raise SystemExit(f"{argv[1]}: no meta line (written by scripts/bench_suite.py)")
    print(render([r for r in rows if r.get("kind") != "meta"], meta), end="")


if __name__ == "__main__":
    import sys
    main(sys.argv)
