"""The benchmark harness end to end: kafscale-bench against a real broker and
against its own sink, and the suite's report and metrics parsing on known input."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from harness import ROOT, broker_bin, free_port, wait_port

sys.path.insert(0, str(ROOT / "scripts"))
import bench_report  # noqa: E402
import bench_suite  # noqa: E402


def bench_bin():
    b = os.environ.get("KAFSCALE_BENCH_BIN")
    return b or str(Path(broker_bin()).with_name("kafscale-bench"))


def bench(*args, timeout=120):
    r = subprocess.run([bench_bin(), *map(str, args), "--json"], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_produce_consume_and_e2e_against_the_broker(broker):
    p = bench("produce", "--bootstrap", broker.bootstrap, "--topic", "b1", "--partitions", 3,
              "--messages", 300, "--message-size", 1000, "--keys", "sequential")
    assert (p["messages"], p["errors"], p["bytes"]) == (300, 0, 300_000)
    assert 0 < p["latency"]["p50_ms"] <= p["latency"]["p99_ms"] <= p["latency"]["max_ms"]

    c = bench("consume", "--bootstrap", broker.bootstrap, "--topic", "b1", "--from", "earliest",
              "--messages", 300, "--duration", 60)
    assert (c["messages"], c["bytes"]) == (300, 300_000)
    # The broker saw the same bytes: every message value once (plus batch overhead).
    m = broker.metrics()
    assert m[("kafscale_produce_bytes_total", (("topic", "b1"),))] >= 300_000

    e = bench("e2e", "--bootstrap", broker.bootstrap, "--topic", "b2", "--partitions", 2,
              "--messages", 200, "--rate", 2000, "--message-size", 64)
    assert (e["produced"]["messages"], e["received"]) == (200, 200)
    assert e["e2e_latency"]["max_ms"] > 0


def test_consume_as_a_group_member(broker):
    bench("produce", "--bootstrap", broker.bootstrap, "--topic", "g1", "--partitions", 2,
          "--messages", 250, "--message-size", 100)
    c = bench("consume", "--bootstrap", broker.bootstrap, "--topic", "g1", "--group", "bench-g",
              "--messages", 250, "--duration", 60)
    assert (c["messages"], c["bytes"]) == (250, 25_000)


def test_produce_against_the_sink():
    port = free_port()
    sink = subprocess.Popen([bench_bin(), "sink", "--listen", f"127.0.0.1:{port}", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, sink)
        p = bench("produce", "--bootstrap", f"127.0.0.1:{port}", "--topic", "s", "--partitions", 64,
                  "--messages", 400, "--message-size", 512)
        a = bench("produce", "--bootstrap", f"127.0.0.1:{port}", "--topic", "s", "--messages", 100,
                  "--acks", "0")
    finally:
        sink.send_signal(signal.SIGTERM)
        out, err = sink.communicate(timeout=30)
    assert sink.returncode == 0, err
    assert (p["messages"], p["errors"], a["messages"]) == (400, 0, 100)
    s = json.loads(out.strip().splitlines()[-1])
    # The sink counted every record it acknowledged (acks=0 ones too), and their bytes.
    assert s["records"] == 500
    assert s["bytes"] >= 400 * 512 + 100 * 1024
    assert s["produce_requests"] >= 2 and s["connections"] >= 2


def test_metrics_parsing_tolerates_both_exposition_formats():
    prometheus = """# HELP kafscale_object_store_requests_total Object-store requests.
# TYPE kafscale_object_store_requests_total counter
kafscale_object_store_requests_total{operation="put"} 384
kafscale_object_store_requests_total{operation="get"} 7
kafscale_open_connections 3
"""
    openmetrics = """# TYPE kafscale_object_store_requests counter
kafscale_object_store_requests_total{op="put",shard="0"} 10
kafscale_object_store_requests_total{op="put",shard="1"} 5
kafscale_object_store_requests_created{op="put",shard="0"} 1.7e9
kafscale_object_store_requests_total{op="list"} 2.0 1700000000
garbage line
# EOF
"""
    assert bench_suite.store_requests(bench_suite.parse_metrics(prometheus)) == {"put": 384, "get": 7}
    assert bench_suite.store_requests(bench_suite.parse_metrics(openmetrics)) == {"put": 15, "list": 2}


def _lat(p99):
    return {"p50_ms": p99 / 2, "p90_ms": p99 * 0.9, "p99_ms": p99, "p999_ms": p99 * 1.1, "max_ms": p99 * 1.2}


def test_report_tables_ratios_and_costs():
    base = dict(size=1024, partitions=6, acks="all", errors=0)
    rows = [
        dict(base, kind="produce", storage="local", shards=2, rate=0, label="local sat", messages=1000,
             bytes=2_000_000_000, seconds=10, msgs_per_sec=100.0, mb_per_sec=400.0, latency=_lat(500),
             broker_cpu_s=4.0, store_requests={"put": 1000, "get": 0}),
        dict(base, kind="produce", storage="local", shards=2, rate=10, label="local, 10% rate (10/s)",
             messages=1, bytes=1, seconds=1, msgs_per_sec=10.0, mb_per_sec=40.0, latency=_lat(104)),
        dict(base, kind="produce", storage="local", shards=2, rate=50, label="local, 50% rate (50/s)",
             messages=1, bytes=1, seconds=1, msgs_per_sec=50.0, mb_per_sec=200.0, latency=_lat(120)),
        dict(base, kind="produce", storage="s3", shards=2, rate=0, label="s3 sat", topic="t1", messages=1,
             bytes=1_000_000_000, seconds=5, msgs_per_sec=1.0, mb_per_sec=200.0, latency=_lat(900),
             store_requests={"put": 200, "get": 0, "list": 10}),
        dict(kind="consume", storage="s3", shards=2, label="s3 fetch", topic="t1", messages=5,
             bytes=1_000_000_000, seconds=2, msgs_per_sec=2.5, mb_per_sec=500.0,
             store_requests={"put": 0, "get": 110, "list": 2}),
        dict(base, kind="sink", storage="sink", rate=0, label="sink 1 KiB", messages=1, bytes=1, seconds=1,
             msgs_per_sec=1.0, mb_per_sec=800.0, latency=_lat(300), sink={"records": 12345}),
        dict(kind="memory", label="1", partitions=1, rss_empty_kib=10240, rss_created_kib=10240,
             rss_written_kib=11264, create_seconds=0.01),
        dict(kind="memory", label="1000", partitions=1000, rss_empty_kib=10240, rss_created_kib=12288,
             rss_written_kib=11264 + 999 * 20, create_seconds=0.5),
        dict(kind="connections", label="c", connections=100, open_connections_gauge=100,
             rss_before_kib=1000, rss_after_kib=6000, kib_per_connection=50.0),
    ]
    meta = dict(when="2026-01-01 00:00 UTC", cpu="Test CPU", cores="2", memory_gib=4.0, kernel="6.0",
                seconds=15, suite_seconds=600, commands=["kafscale-bench produce --json"],
                svg="benchmarks-latency.svg", shared=True)
    md = bench_report.render(rows, meta)
    lines = md.splitlines()

    def row(prefix, nth=0):
        hit = [l for l in lines if l.startswith(f"| {prefix} |")]
        assert hit, f"no row {prefix!r} in\n{md}"
        return [c.strip() for c in hit[nth].strip("|").split("|")]

    assert "measured while the machine was shared" in md
    assert "took 10.0 minutes" in md and "Test CPU" in md
    # Targets: 400 < 478 MB/s; the 10% p99 is within 105 ms, the 50% one is not.
    assert row("produce, acks=all, 1 KiB, 6 partitions, local storage")[1:] == ["400.0 MB/s", ">= 478 MB/s", "no"]
    assert row("produce, acks=all, 1 KiB, 6 partitions, s3s-fs")[3] == "no"
    assert row("p99 produce latency at 10% of saturation")[3] == "yes"
    assert row("p99 produce latency at 50% of saturation")[3] == "no"
    # Produce: PUT per GB, CPU s per GB, and the ratio to the sink with the same load.
    r = row("local sat")
    assert (r[1], r[2], r[5], r[9], r[10], r[11]) == ("100", "400.0", "500.00", "500.0", "2.00", "0.50")
    assert row("local, 10% rate (10/s)")[11] == ""  # no ratio below saturation
    assert row("sink 1 KiB")[5] == "12,345"
    # Store requests per GB and per second.
    assert row("s3 sat", -1)[6:] == ["200.0", "0.0", "2.00"]  # the store-requests table
    assert row("s3 fetch")[4] == "110.0"
    # Cost at 1 GiB/s: 6 partitions seal by size (128 segments/s), 64 by age (640/s);
    # 2 PUTs per segment, 1.1 GETs per segment (110 GETs for the 100 segments written).
    month = 30 * 24 * 3600
    c6 = row("6 partitions")
    assert c6[1] == "128" and c6[2] == f"{256 * month:,}"
    assert c6[3] == f"{round(1.1 * 128 * month):,}"
    usd = (256 * month + 2 * month) * 0.005 / 1000 + 1.1 * 128 * month * 0.0004 / 1000
    assert c6[5] == f"{usd:,.0f}"
    assert row("64 partitions")[1] == "640"
    # Memory: growth per partition over the 1-partition broker.
    assert row("1,000")[4] == "20.0"
    assert "**50.0 KiB per connection**" in md
    assert "![Produce latency versus throughput](benchmarks-latency.svg)" in md
    assert "kafscale-bench produce --json" in md


def test_segment_and_cost_arithmetic():
    gib = 1 << 30
    assert bench_report.segments_per_s(gib, 6) == gib / (8 << 20)
    assert bench_report.segments_per_s(gib, 1000) == 10_000
    c = bench_report.monthly_cost(1, 0, 0)
    assert c["put"] == 2_592_000 and abs(c["usd"] - 12.96) < 1e-9
    assert abs(bench_report.monthly_cost(0, 1000, 0)["usd"] - 1036.8) < 1e-6
