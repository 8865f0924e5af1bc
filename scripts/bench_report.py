"""Renders the bench suite's JSON lines as docs/benchmarks.md."""
import datetime
import json
import platform
import subprocess
import sys

rows = [json.loads(l) for l in open(sys.argv[1])]
secs = sys.argv[2]


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
mem = sh("free -g | awk '/Mem:/ {print $2}'")
print(f"""# Benchmarks

Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with `make bench`
(`scripts/bench.sh`) on {sh('nproc')} cores ({cpu}), {mem} GiB memory, Linux {platform.release()}.
Broker and load generator share the machine. The load generator is `kafscale-bench`
(librdkafka via the `rdkafka` crate): one producer, `linger.ms=5`, `batch.size=1000000`,
1 KiB messages with random 8-byte keys, 6 partitions, {secs} s per produce run.
MB = 10^6 bytes. Latency is send → delivery report, as the producer sees it.

## Produce

| run | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | .kfs objects | objects per GB | broker CPU s per GB |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|""")
for r in rows:
    if "latency" not in r:
        continue
    l = r["latency"]
    print(f"| {r['label']} | {r['msgs_per_sec']:.0f} | {r['mb_per_sec']:.1f} | {l['p50_ms']:.2f} | {l['p99_ms']:.2f} | "
          f"{l['p999_ms']:.2f} | {l['max_ms']:.2f} | {r['errors']} | {r.get('kfs_objects', '')} | {r.get('objects_per_gb', '')} | {r.get('broker_cpu_s_per_gb', '')} |")
print("""
## Fetch

| run | messages | msg/s | MB/s |
|---|---:|---:|---:|""")
for r in rows:
    if "latency" in r:
        continue
    print(f"| {r['label']} | {r['messages']} | {r['msgs_per_sec']:.0f} | {r['mb_per_sec']:.1f} |")


def best(prefix):
    """The best saturation MB/s of the acks=all produce runs whose label starts with prefix."""
    xs = [r["mb_per_sec"] for r in rows if "latency" in r and r["label"].startswith(prefix)
          and "acks=all" in r["label"] and "fixed rate" not in r["label"] and "1 GB" not in r["label"]]
    return max(xs) if xs else None


def p99_at(pct):
    xs = [r["latency"]["p99_ms"] for r in rows if "latency" in r and f"({pct})" in r["label"]]
    return xs[0] if xs else None


checks = [
    ("produce, acks=all, local storage", best("local"), 478.0, "MB/s", True),
    ("produce, acks=all, s3s-fs", best("s3s-fs"), 260.0, "MB/s", True),
    ("p99 produce latency at 10% of saturation", p99_at("10%"), 105.0, "ms", False),
    ("p99 produce latency at 50% of saturation", p99_at("50%"), 105.0, "ms", False),
]
print("""
## Against the targets

| measure | measured | target | met |
|---|---:|---:|---|""")
for name, got, target, unit, higher in checks:
    if got is None:
        continue
    met = got >= target if higher else got <= target
    sign = ">=" if higher else "<="
    print(f"| {name} | {got:.1f} {unit} | {sign} {target:.0f} {unit} | {'yes' if met else 'no'} |")
print("""
## How to read these numbers

- **Targets** (issue 2): at least 478 MB/s produce with `acks=all` on local storage
  (what the same kind of librdkafka producer pushes into Tansu's in-memory engine on
  this machine), at least 260 MB/s on s3s-fs, and a p99 produce latency within the
  flush interval (100 ms by default) plus 5 ms at a fixed rate below saturation.
- **What limits saturation here**: broker and load generator share two cores, and the
  CPU is saturated in every saturation run. The producer's own thread (librdkafka's
  `produce()` and delivery reports, 1 KiB messages) runs at 100% of one core and
  librdkafka's broker thread at about half of the other, so the broker gets what is
  left. The "broker CPU s per GB" column is the broker's own cost (all its threads,
  user + system): about half of it is the kernel copying segments into the page cache
  and creating files (local storage) or the HTTP upload (S3); the rest is receiving
  the socket data, CRC32C validation, the one copy into the segment buffer, and
  answering. Runs vary by ±10% from scheduling alone, so compare the CPU column, not
  single throughput figures, when judging a change.
- **Latency at a fixed rate** is dominated by the flush interval: a message waits for
  the next flush tick (uniform over the interval), then for its segment's PUT; the
  producer's own `linger.ms=5` comes on top, so the p99 is about 99 ms of tick wait
  + 5 ms of linger + the PUT (1–3 ms locally), just above the 105 ms target. At
  saturation the latency is the producer's own queue (`queue.buffering.max.kbytes`
  128 MiB) filling up, not the broker.
- **S3 rows** run against s3s-fs on the same machine, over plain HTTP with
  `KAFSCALE_S3_UNSIGNED_PAYLOAD=true` (what the broker does by default over HTTPS,
  i.e. against AWS). s3s-fs itself needs several CPU seconds per GB (it hashes and
  writes every object), which it takes from the same two cores.
- **Objects per GB**: each `.kfs` comes with one `.index`, so object PUTs per GB are
  twice the column. At saturation segments are sealed by the flush tick before they
  reach `KAFSCALE_SEGMENT_BYTES`.

Re-run with `make bench` (`BENCH_SECONDS=30 make bench` for longer runs). The suite
needs `.tools/bin/s3s-fs` (installed by `make tools`) for the S3 rows.""")

