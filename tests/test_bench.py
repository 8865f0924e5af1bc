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


def _peer_run(peer, load, mb, p99, cpu, gb=1.0, rnd=0, **extra):
    return dict(dict(peer=peer, load=load, round=rnd, mb_per_sec=mb, messages=int(gb * 1e9 / 1024),
                     bytes=int(gb * 1e9), errors=0, cpu_s=cpu, s3_cpu_s=None, load_before=[2.0, 1.5, 1.0],
                     load_after=[3.25, 1.75, 1.0], latency=_lat(p99)), **extra)


def test_peers_report_ratios_to_tansu_and_sink():
    import bench_peers as bp
    sat, cons, rate10 = bp.SAT_ALL, bp.CONSUME, bp.rate_load(10)
    rows = [
        _peer_run(bp.KAFSCALE_LOCAL, sat, 300.0, 400.0, 3.0, gb=2.0),  # 1.5 CPU s per GB
        _peer_run(bp.KAFSCALE_S3, sat, 100.0, 800.0, 1.0, s3_cpu_s=4.0),
        _peer_run(bp.TANSU_MEMORY, sat, 400.0, 200.0, 6.0, gb=2.0),  # 3 CPU s per GB
        dict(peer=bp.TANSU_S3, load=sat, round=0, error="tansu, s3s-fs did not start: boom"),
        _peer_run(bp.SINK, sat, 600.0, 100.0, 0.5),
        _peer_run(bp.KAFSCALE_LOCAL, cons, 500.0, 0, 1.0, expected=1000, latency=None),
        _peer_run(bp.TANSU_MEMORY, cons, 250.0, 0, 2.0, expected=1000, latency=None),
        _peer_run(bp.KAFSCALE_LOCAL, rate10, 30.0, 50.0, 1.0, rate=29297.0),
        _peer_run(bp.TANSU_MEMORY, rate10, 40.0, 25.0, 1.0, rate=39062.0),
        _peer_run(bp.SINK, rate10, 60.0, 10.0, 0.1, rate=58594.0),
    ]
    meta = dict(when="2026-01-01 00:00 UTC", end="2026-01-01 00:09 UTC", commit="abc1234", tansu="0.6.0",
                cores="2", cpu="Test CPU", memory_gib=4.0, kernel="6.0", seconds=8, rounds=1, minutes=9.0,
                load_start=[1.0, 2.0, 3.0], load_end=[4.0, 5.0, 6.0], shared=True, nice=19)
    md = bp.render(rows, meta)
    assert md.startswith(bench_report.PEERS_BEGIN) and md.endswith(bench_report.PEERS_END)
    assert "Measured on a shared machine" in md and "1.00 / 2.00 / 3.00 at the start" in md
    assert "ran at nice 19" in md and "Tansu 0.6.0, on 2 cores" in md and "Not in this run" not in md
    left = bp.render(rows, dict(meta, peers=[bp.KAFSCALE_LOCAL, bp.SINK], left_out_why="no time", aborted="boom"))
    assert "**The run stopped early** (boom)" in left and "stopped early" not in md
    assert f"**Not in this run:** {bp.KAFSCALE_S3}; {bp.TANSU_MEMORY}; {bp.TANSU_S3} (no time)." in left
    tables = {}
    current = None
    for line in md.splitlines():
        if line.startswith("### "):
            current = tables.setdefault(line[4:], {})
        elif current is not None and line.startswith("| ") and not line.startswith("| peer"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            current[cells[0]] = cells[1:]
    # MB/s, p50, p99, errors, CPU s/GB, s3s-fs CPU s/GB, load, ÷ Tansu (MB/s, p99, CPU), ÷ sink (MB/s, p99)
    t = tables["Produce, acks=all, saturation"]
    assert t[bp.KAFSCALE_LOCAL] == ["300.0", "200.00", "400.00", "0", "1.50", "", "2.0 → 3.2",
                                    "0.75", "2.00", "0.50", "0.50", "4.00"]
    assert t[bp.TANSU_MEMORY][7:] == ["", "", "", "0.67", "2.00"]  # no Tansu ratio for Tansu itself
    assert t[bp.KAFSCALE_S3][4:6] == ["1.00", "4.00"]
    assert t[bp.KAFSCALE_S3][7:10] == ["", "", ""]  # its pair failed
    assert t[bp.TANSU_S3][0] == "failed: tansu, s3s-fs did not start: boom"
    assert len(t[bp.TANSU_S3]) == len(t[bp.KAFSCALE_S3])
    assert t[bp.SINK][10:] == ["", ""]
    # Consume: messages read / written, MB/s, CPU s per GB, ÷ Tansu.
    c = tables["Consume what the acks=all run wrote"]
    assert c[bp.KAFSCALE_LOCAL][0] == f"{int(1e9 / 1024):,} / 1,000"
    assert c[bp.KAFSCALE_LOCAL][-2:] == ["2.00", "0.50"]
    # Fixed rate: the rate column comes first.
    r = tables[f"Produce, acks=all, 10% of the peer's own saturation"]
    assert r[bp.KAFSCALE_LOCAL][:2] == ["29,297", "30.0"] and r[bp.KAFSCALE_LOCAL][-5:-3] == ["0.75", "2.00"]
    assert r[bp.KAFSCALE_LOCAL][-2:] == ["0.50", "5.00"]
    assert "Produce, acks=1, saturation" not in tables  # no rows, no table


def test_peers_median_over_rounds():
    import bench_peers as bp
    runs = [_peer_run(bp.SINK, bp.SAT_ALL, mb, mb, 1.0, rnd=i) for i, mb in enumerate((500.0, 300.0, 400.0))]
    best = bp.pick(runs + [dict(peer=bp.SINK, load=bp.SAT_ALL, round=3, error="x"),
                           dict(peer=bp.TANSU_S3, load=bp.SAT_ALL, round=0, error="only failures")])
    assert best[(bp.SINK, bp.SAT_ALL)]["mb_per_sec"] == 400.0
    assert best[(bp.SINK, bp.SAT_ALL)]["runs"] == [500.0, 300.0, 400.0]
    assert best[(bp.TANSU_S3, bp.SAT_ALL)]["error"] == "only failures"
    # An even count takes the lower middle.
    assert bp.pick(runs[:2])[(bp.SINK, bp.SAT_ALL)]["mb_per_sec"] == 300.0


def test_peers_section_replaces_only_itself_and_survives_make_bench():
    import bench_peers as bp
    cluster = f"{bench_report.CLUSTER_BEGIN} x -->\n## Cluster\nfailover\n{bench_report.CLUSTER_END}"
    page = f"# Benchmarks\n\n## Produce\n| a |\n\n{cluster}\n\n## The suite\nhow\n"
    one = f"{bench_report.PEERS_BEGIN}\n## Peers, same run\nfirst\n{bench_report.PEERS_END}"
    two = one.replace("first", "second")
    # Inserted before the cluster section, then replaced in place; the rest is untouched.
    p1 = bp.write_section(page, one)
    assert p1 == page.replace(cluster, one + "\n\n" + cluster)
    p2 = bp.write_section(p1, two)
    assert p2 == p1.replace("first", "second") and bp.write_section(p2, two) == p2
    # Without a cluster section: before "## The suite"; without that either: at the end.
    assert bp.write_section("# B\n\n## The suite\n", one) == f"# B\n\n{one}\n\n## The suite\n"
    assert bp.write_section("# B\n", one) == f"# B\n\n{one}\n"
    # `make bench` re-renders the page: both marked sections come back, in order, before the suite.
    fresh = "# Benchmarks\n\n## Produce\n| b |\n\n## The suite\nhow\n"
    kept = bench_report.keep_marked_sections(fresh, p2)
    assert kept == fresh.replace("## The suite", two + "\n\n" + cluster + "\n\n## The suite")
    assert bench_report.keep_marked_sections(fresh, fresh) == fresh


def test_produce_and_consume_over_tls_with_librdkafka_settings(make_broker, tmp_path):
    # kafscale-bench's -X settings reach every client: here librdkafka (with
    # OpenSSL) talks to the broker's SSL listener only.
    from pki import Pki
    pki = Pki(tmp_path / "pki")
    b = make_broker(start=False)
    ssl_port = free_port()
    b.env.update({"KAFSCALE_LISTENERS": f"PLAINTEXT://127.0.0.1:{b.port},SSL://127.0.0.1:{ssl_port}",
                  "KAFSCALE_TLS_CERT_FILE": pki.server_cert, "KAFSCALE_TLS_KEY_FILE": pki.server_key})
    b.start()
    tls = ["--bootstrap", f"127.0.0.1:{ssl_port}", "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={pki.ca}"]
    p = bench("produce", *tls, "--topic", "t1", "--partitions", 2, "--messages", 200, "--message-size", 500)
    assert (p["messages"], p["errors"], p["bytes"]) == (200, 0, 100_000)
    c = bench("consume", *tls, "--topic", "t1", "--from", "earliest", "--messages", 200, "--duration", 60)
    assert (c["messages"], c["bytes"]) == (200, 100_000)
    # Hundreds of megabytes read over TLS by librdkafka's large fetches: every
    # answer must leave rustls in full (it used to keep the tail of an answer
    # written while the socket was full, until the next one, which the client
    # waited for: the read stopped after a few hundred thousand messages).
    n = 400_000
    p = bench("produce", "--bootstrap", b.bootstrap, "--topic", "t3", "--partitions", 6, "--messages", n,
              "--message-size", 1024, "--acks", 1, timeout=300)
    assert (p["messages"], p["errors"]) == (n, 0)
    c = bench("consume", *tls, "--topic", "t3", "--from", "earliest", "--messages", n, "--duration", 120,
              timeout=300)
    assert (c["messages"], c["bytes"]) == (n, n * 1024)
    # Without the TLS settings the SSL listener cannot be spoken to: nothing is produced.
    r = subprocess.run([bench_bin(), "produce", "--bootstrap", f"127.0.0.1:{ssl_port}", "--topic", "t2",
                        "--messages", "1", "--json", "-X", "message.timeout.ms=3000", "-X", "socket.timeout.ms=3000"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 or json.loads(r.stdout.strip().splitlines()[-1])["messages"] == 0


def test_tls_section_ratios_and_left_out_runs():
    import tls_bench as tb

    def row(load, size, listener, rnd, mb, cpu, nbytes, **kw):
        return {"load": load, "size": size, "listener": listener, "round": rnd, "mb_per_sec": mb,
                "cpu_s": cpu, "bytes": nbytes, "errors": 0, **kw}
    gb = 1_000_000_000
    rows = [row("produce", 1024, "PLAINTEXT", 1, 200.0, 2.0, gb), row("produce", 1024, "SSL", 1, 100.0, 3.0, gb),
            row("produce", 1024, "PLAINTEXT", 2, 220.0, 2.2, gb), row("produce", 1024, "SSL", 2, 120.0, 3.3, gb),
            row("produce", 1024, "SSL", 3, 5.0, 9.0, gb, errors=8192),
            row("consume", 1024, "PLAINTEXT", 1, 600.0, 0.4, 2 * gb), row("consume", 1024, "SSL", 1, 300.0, 1.2, 2 * gb)]
    meta = {"machine": "m", "date": "d", "commit": "c", "rounds": 3, "seconds": 15, "sizes": [1024],
            "shared": True, "load_before": "1.00", "load_after": "2.00"}
    md = tb.render(rows, meta)
    assert md.startswith(bench_report.TLS_BEGIN) and md.endswith(bench_report.TLS_END)
    # Medians (210 vs 110 MB/s; 2.1 vs 3.15 s/GB); the run with errors is left out and named.
    assert "| produce | 1 KiB | 210.0 | 110.0 | 0.52× | 2.10 | 3.15 | 1.50× | 2/2, 2/3 |" in md
    assert "| consume | 1 KiB | 600.0 | 300.0 | 0.50× | 0.20 | 0.60 | 3.00× | 1/1, 1/1 |" in md
    assert "produce 1 KiB SSL run 3: 8192 delivery errors" in md
    assert "Shared machine" in md
    # Its own section, kept by `make bench` beside the others.
    page = tb.write_section("# B\n\n## The suite\n", md)
    assert page == f"# B\n\n{md}\n\n## The suite\n" and tb.write_section(page, md) == page
    fresh = "# Benchmarks\n\n## The suite\nhow\n"
    assert bench_report.keep_marked_sections(fresh, page) == fresh.replace("## The suite", md + "\n\n## The suite")


def test_publish_writes_a_section_into_the_page_or_prints_it(tmp_path, capsys):
    import tls_bench as tb
    page = tmp_path / "b.md"
    section = f"{bench_report.TLS_BEGIN}\nx\n{bench_report.TLS_END}"
    logged = []
    bench_report.publish(section, str(page), tb.write_section, logged.append)
    bench_report.publish(section, str(page), tb.write_section, logged.append)
    assert page.read_text() == f"# Benchmarks\n\n{section}\n" and len(logged) == 2
    bench_report.publish(section, None, tb.write_section, logged.append)
    assert capsys.readouterr().out == section + "\n"


def test_local_io_section_medians_and_ratios():
    import local_io_bench as lb

    def row(load, mode, rnd, mb, p99, cpu, **kw):
        return {"load": load, "mode": mode, "round": rnd, "mb_per_sec": mb, "cpu_s": cpu, "bytes": 1_000_000_000,
                "errors": 0, "latency": {"p50_ms": p99 / 2, "p99_ms": p99}, **kw}
    rows = [row("saturation", "thread", 1, 300.0, 40.0, 2.0), row("saturation", "uring", 1, 330.0, 30.0, 1.8),
            row("saturation", "thread", 2, 320.0, 60.0, 2.2), row("saturation", "uring", 2, 350.0, 50.0, 2.0),
            row("50% rate", "thread", 1, 150.0, 8.0, 3.0), row("50% rate", "uring", 1, 150.0, 4.0, 2.4),
            row("50% rate", "uring", 2, 1.0, 900.0, 9.0, errors=12)]
    meta = {"machine": "m", "date": "d", "commit": "c", "rounds": 2, "seconds": 15, "shared": False,
            "load_before": "0.10", "load_after": "0.20", "fs": "ext4"}
    md = lb.render(rows, meta)
    assert md.startswith(bench_report.LOCAL_IO_BEGIN) and md.endswith(bench_report.LOCAL_IO_END)
    assert "| saturation | thread | 310.0 | 25.00 | 50.00 | 2.10 | 2/2 |" in md
    assert "| saturation | uring | 340.0 | 20.00 | 40.00 | 1.90 | 2/2 |" in md
    # The run with errors is left out of the medians and named.
    assert "| 50% rate | uring | 150.0 | 2.00 | 4.00 | 2.40 | 1/2 |" in md
    assert "| 50% rate | 1.00× | 0.50× | 0.50× | 0.80× |" in md
    assert "50% rate uring round 2: 12 delivery errors" in md
    page = lb.write_section("# B\n\n## The suite\n", md)
    assert page == f"# B\n\n{md}\n\n## The suite\n" and lb.write_section(page, md) == page
    fresh = "# Benchmarks\n\n## The suite\nhow\n"
    assert bench_report.keep_marked_sections(fresh, page) == fresh.replace("## The suite", md + "\n\n## The suite")


def test_append_results_writes_meta_then_rows(tmp_path):
    path = tmp_path / "r.jsonl"
    bench_report.append_results(None, {"a": 1}, [{"x": 1}])
    bench_report.append_results(str(path), {"a": 1}, [{"x": 1}, {"x": 2}])
    bench_report.append_results(str(path), {"a": 2}, [])
    assert [json.loads(ln) for ln in path.read_text().splitlines()] == [
        {"kind": "meta", "a": 1}, {"x": 1}, {"x": 2}, {"kind": "meta", "a": 2}]
