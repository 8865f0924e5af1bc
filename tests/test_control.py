"""BrokerControl gRPC through `kafscale-broker ctl`: status, flush, drain and
resume against a live broker, with their effects checked through real Kafka
clients and the object store; and the broker's log formats (JSON lines, one
trace line per Kafka request)."""
import json

from confluent_kafka import Consumer, TopicPartition

from clients import consume_all, create_topic, produce

# Flush only when told to. The flush tick fires at wall-clock multiples of the
# interval, so a 10-minute interval could still tick during a test; 10^12 ms
# (about 31 years) puts the next multiple in 2033.
NO_TIMER = {"KAFSCALE_FLUSH_INTERVAL_MS": "1000000000000"}
NOT_LEADER_OR_FOLLOWER = 6


def by_partition(parts, topic):
    return {p["partition"]: p for p in parts if p["topic"] == topic}


def watermarks(bootstrap, topic, partition):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafscale-tests-unused"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def produce_one(bootstrap, topic, partition, value, client_id="kafscale-tests"):
    """Produces one message with kafka-python, acks=1 (the tests flush by hand) and no
    retries (librdkafka retries NOT_LEADER_OR_FOLLOWER whatever its settings).
    Returns (error code, offset)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as PyKafkaError
    p = KafkaProducer(bootstrap_servers=bootstrap, acks=1, retries=0, client_id=client_id,
                      request_timeout_ms=10000)
    try:
        md = p.send(topic, value=value, partition=partition).get(timeout=20)
        return 0, md.offset
    except PyKafkaError as e:
        assert e.retriable, e
        return e.errno, None
    finally:
        p.close()


def test_status_shows_partitions_with_produced_offsets(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "st", partitions=3)
    counts = {0: 10, 1: 25, 2: 40}
    msgs = [(None, f"v{p}-{i}".encode(), None, p) for p, n in counts.items() for i in range(n)]
    delivered, errors = produce(b.bootstrap, "st", msgs)
    assert errors == [] and len(delivered) == 75

    s = b.ctl_json("status", "st")
    assert s["broker_id"] == 0 and s["cluster_id"]
    assert [sh["shard"] for sh in s["shards"]] == [0, 1]
    parts = by_partition(s["partitions"], "st")
    assert sorted(parts) == [0, 1, 2]
    for p, n in counts.items():
        got = parts[p]
        assert got["loaded"] and not got["draining"]
        assert (got["log_start_offset"], got["high_watermark"], got["log_end_offset"]) == (0, n, n)
        assert got["unflushed_bytes"] == 0 and got["upload_queue_segments"] == 0

    # Without a selection every topic is listed; the text form shows the same numbers.
    everything = b.ctl_json("status")
    assert by_partition(everything["partitions"], "st") == parts
    text = b.ctl("status")
    assert text.returncode == 0, text.stderr
    rows = [line.split() for line in text.stdout.splitlines() if line.startswith("st ")]
    assert [(r[1], r[3], r[4], r[5]) for r in rows] == [("0", "0", "10", "10"), ("1", "0", "25", "25"),
                                                          ("2", "0", "40", "40")]

    # Unknown topics and partitions are refused with a reason.
    bad = b.ctl("status", "nope")
    assert bad.returncode == 1 and "unknown topic" in bad.stderr
    bad = b.ctl("flush", "st:7")
    assert bad.returncode == 1 and "no partition 7" in bad.stderr
    # A malformed selection is a usage error, found before calling the broker.
    bad = b.ctl("drain", "st:x")
    assert bad.returncode == 2 and '"x" is not a partition number' in bad.stderr


def test_flush_makes_buffered_data_durable_and_visible(make_broker):
    b = make_broker(env=NO_TIMER)
    create_topic(b.bootstrap, "fl", partitions=2)
    msgs = [(None, f"m{i}".encode(), None, i % 2) for i in range(300)]
    delivered, errors = produce(b.bootstrap, "fl", msgs, acks="1")
    assert errors == [] and len(delivered) == 300

    # Appended and acknowledged, but nothing durable: consumers see nothing yet.
    parts = by_partition(b.ctl_json("status", "fl")["partitions"], "fl")
    for p in (0, 1):
        assert (parts[p]["high_watermark"], parts[p]["log_end_offset"]) == (0, 150)
        assert parts[p]["unflushed_bytes"] > 0
    assert watermarks(b.bootstrap, "fl", 0) == (0, 0)
    assert not list(b.objects.rglob("fl/*/*.kfs"))

    flushed = by_partition(b.ctl_json("flush", "fl")["partitions"], "fl")
    for p in (0, 1):
        assert flushed[p]["error"] == ""
        assert (flushed[p]["high_watermark"], flushed[p]["log_end_offset"]) == (150, 150)
    assert len(list(b.objects.rglob("fl/*/*.kfs"))) == 2
    assert watermarks(b.bootstrap, "fl", 1) == (0, 150)
    parts = by_partition(b.ctl_json("status", "fl")["partitions"], "fl")
    assert all(parts[p]["unflushed_bytes"] == 0 for p in (0, 1))

    # Durable means it survives a crash: what the flush wrote is there after kill -9.
    more, errors = produce(b.bootstrap, "fl", [(None, b"lost", None, 0)], acks="1")
    assert errors == [] and len(more) == 1
    b.kill9()
    b.start()
    consumed = consume_all(b.bootstrap, "fl", 2, 300)
    assert sorted(v for *_, v, _ in consumed) == sorted(v for _, v, _, _ in msgs)
    assert watermarks(b.bootstrap, "fl", 0) == (0, 150)

    # A flush without a selection covers every loaded partition; with nothing
    # buffered it answers at once with the durable offsets.
    delivered, errors = produce(b.bootstrap, "fl", [(None, b"x", None, 1)] * 5, acks="1")
    assert errors == []
    r = b.ctl("flush")
    assert r.returncode == 0, r.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in r.stdout.splitlines()[1:]}
    assert rows[("fl", "1")][3:] == ["155", "155", "ok"]


def test_drain_stops_writes_until_resume(make_broker):
    b = make_broker(env=NO_TIMER)
    create_topic(b.bootstrap, "dr", partitions=2)
    delivered, errors = produce(b.bootstrap, "dr", [(None, f"a{i}".encode(), None, i % 2) for i in range(40)],
                                acks="1")
    assert errors == [] and len(delivered) == 40

    drained = b.ctl_json("drain", "dr:0")["partitions"]
    assert [(p["topic"], p["partition"], p["high_watermark"], p["log_end_offset"], p["error"])
            for p in drained] == [("dr", 0, 20, 20, "")]
    parts = by_partition(b.ctl_json("status", "dr")["partitions"], "dr")
    assert parts[0]["draining"] and not parts[1]["draining"]
    # Drained data is durable: consumers read all of it.
    assert watermarks(b.bootstrap, "dr", 0) == (0, 20)

    # The drained partition refuses writes with a retriable error; the other takes them.
    assert produce_one(b.bootstrap, "dr", 0, b"refused") == (NOT_LEADER_OR_FOLLOWER, None)
    assert produce_one(b.bootstrap, "dr", 1, b"taken") == (0, 20)
    assert watermarks(b.bootstrap, "dr", 0) == (0, 20)

    resumed = b.ctl_json("resume", "dr:0")
    assert [(p["topic"], p["partition"]) for p in resumed["partitions"]] == [("dr", 0)]
    assert not resumed["resumed_all"]
    assert produce_one(b.bootstrap, "dr", 0, b"after-resume") == (0, 20)

    # The whole broker: every partition refuses writes until a resume without a selection.
    r = b.ctl("drain")
    assert r.returncode == 0, r.stderr
    status = b.ctl_json("status")
    assert all(sh["draining_all"] for sh in status["shards"])
    assert all(p["draining"] for p in status["partitions"])
    for p in (0, 1):
        assert produce_one(b.bootstrap, "dr", p, b"refused") == (NOT_LEADER_OR_FOLLOWER, None)
    partial = b.ctl("resume", "dr:1")
    assert partial.returncode == 1 and "whole broker is drained" in partial.stderr
    assert b.ctl_json("resume")["resumed_all"]
    assert produce_one(b.bootstrap, "dr", 1, b"back") == (0, 21)
    assert by_partition(b.ctl_json("flush", "dr")["partitions"], "dr")[1]["high_watermark"] == 22

    consumed = consume_all(b.bootstrap, "dr", 2, 43)
    values = sorted(v for *_, v, _ in consumed)
    assert b"refused" not in values and len(values) == 43
    assert {b"taken", b"after-resume", b"back"} <= set(values)


def log_records(b):
    """The broker's log lines as parsed JSON objects (every line must parse)."""
    out = []
    for line in b.log().splitlines():
        if not line.strip() or line.startswith("===== start"):
            continue
        out.append(json.loads(line))
    return out


def test_json_log_format_emits_json_lines(make_broker):
    b = make_broker(env={"KAFSCALE_LOG_FORMAT": "json"})
    create_topic(b.bootstrap, "jl", partitions=1)
    produce(b.bootstrap, "jl", [(None, b"x", None, None)])
    records = log_records(b)
    assert records
    for r in records:
        assert r["level"] in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR") and r["timestamp"]
    listening = [r for r in records if r["fields"].get("message") == "listening"]
    assert len(listening) == 1
    assert listening[0]["fields"]["control"] == f"127.0.0.1:{b.control_port}"
    # Request tracing is off unless asked for.
    assert not [r for r in records if r["fields"].get("message") == "kafka request"]


def test_trace_kafka_logs_one_line_per_request(make_broker):
    b = make_broker(env={"KAFSCALE_LOG_FORMAT": "json", "KAFSCALE_TRACE_KAFKA": "true"})
    create_topic(b.bootstrap, "tr", partitions=2)
    delivered, errors = produce(b.bootstrap, "tr", [(None, b"x", None, 0)] * 3, extra={"client.id": "trace-me"})
    assert errors == [] and len(delivered) == 3
    consume_all(b.bootstrap, "tr", 2, 3, extra={"client.id": "trace-reader"})
    b.ctl_json("drain", "tr:1")
    assert produce_one(b.bootstrap, "tr", 1, b"refused", client_id="trace-drained")[0] == NOT_LEADER_OR_FOLLOWER

    traces = [r["fields"] for r in log_records(b) if r["fields"].get("message") == "kafka request"]
    apis = {t["api"] for t in traces}
    assert {"ApiVersions", "Metadata", "CreateTopics", "Produce", "Fetch"} <= apis
    for t in traces:
        assert isinstance(t["version"], int) and isinstance(t["correlation_id"], int)
        assert isinstance(t["micros"], int) and "error_code" in t
    mine = [t for t in traces if t["client_id"] == "trace-me" and t["api"] == "Produce"]
    assert mine and all(t["error_code"] == 0 for t in mine)
    assert any(t["client_id"] == "trace-reader" and t["api"] == "Fetch" for t in traces)
    refused = [t for t in traces if t["client_id"] == "trace-drained" and t["api"] == "Produce"]
    assert refused and all(t["error_code"] == NOT_LEADER_OR_FOLLOWER for t in refused)
    # Every partition of a produce answer is in its trace line: topic/partition=code@base_offset.
    assert all(t["partitions"] == f"tr/1={NOT_LEADER_OR_FOLLOWER}@-1" for t in refused)
    assert all(t["partitions"] == "tr/0=0@" + t["partitions"].split("@")[1] for t in mine)
    # One line per request: a connection's correlation ids never repeat.
    keys = [(t["peer"], t["correlation_id"]) for t in traces]
    assert len(keys) == len(set(keys))


def test_control_port_in_use_is_reported(make_broker, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        b = make_broker(env={"KAFSCALE_CONTROL_ADDR": f"127.0.0.1:{port}"}, start=False)
        try:
            b.start()
            raise AssertionError("the broker started on a taken control port")
        except RuntimeError:
            pass
        assert f"binding the control endpoint 127.0.0.1:{port}" in b.log()
    # ctl against nothing says where it tried.
    import subprocess
    from harness import broker_bin
    r = subprocess.run([broker_bin(), "ctl", "--addr", f"127.0.0.1:{port}", "status"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and f"cannot reach the control endpoint at http://127.0.0.1:{port}" in r.stderr
