"""Hostile and careless clients meet limits, not an unbounded broker: memory of
stalled requests, connection counts, idle and slow connections, oversized
requests and batches, and what a request may make the broker store."""
import socket
import struct

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from clients import consume_all, create_topic, produce, wait_for


def connect(bootstrap):
    host, port = bootstrap.split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def api_versions(s, correlation=1):
    header = struct.pack(">hhih", 18, 0, correlation, 1) + b"t"
    s.sendall(struct.pack(">i", len(header)) + header)
    size = struct.unpack(">i", recv_exactly(s, 4))[0]
    body = recv_exactly(s, size)
    assert struct.unpack(">i", body[:4])[0] == correlation
    return body


def recv_exactly(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise ConnectionError("closed")
        out += b
    return out


def closed_by_broker(s, timeout=20.0):
    """Whether the broker closes `s` (EOF or reset) within the bounded wait."""
    s.settimeout(timeout)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def no_connections(b):
    # The harness's own readiness probe may still be counted for a moment.
    wait_for(lambda: b.metrics().get(("kafscale_open_connections", ()), 0) == 0, what="no connections")


def closed_total(broker, reason):
    return broker.metrics().get(("kafscale_connections_closed_total", (("reason", reason),)), 0)


def test_stalled_announcements_of_100_mib_do_not_grow_memory(make_broker):
    # The measurement as a test: 40 connections each announce a 100 MiB
    # Produce, send its first 4 KiB and stall. Before, the broker zero-filled
    # every announced buffer (3.2 GiB of RSS); now it holds what arrived.
    b = make_broker(env={"KAFSCALE_MAX_REQUEST_BYTES": str(200 << 20)})
    no_connections(b)
    before = b.rss_kib()
    conns = []
    for _ in range(40):
        s = connect(b.bootstrap)
        header = struct.pack(">hhih", 0, 9, 1, 1) + b"h"
        s.sendall(struct.pack(">i", 100 << 20) + header + b"\0" * 4096)
        conns.append(s)
    wait_for(lambda: b.metrics().get(("kafscale_open_connections", ()), 0) == 40, what="40 connections")
    # Each stalled request is read into the buffer the broker would have grown
    # to: at most one chunk each.
    grown = b.rss_kib() - before
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB for 40 stalled announcements"
    assert b.metrics()[("kafscale_request_bytes_queued", ())] < 40 * (1 << 20)
    create_topic(b.bootstrap, "still-serving")
    delivered, errors = produce(b.bootstrap, "still-serving", [(None, b"x", None, None)])
    assert errors == [] and len(delivered) == 1
    for s in conns:
        s.close()


def test_a_stalled_request_is_closed_after_the_read_timeout(make_broker):
    b = make_broker(env={"KAFSCALE_REQUEST_READ_TIMEOUT_MS": "300"})
    s = connect(b.bootstrap)
    s.sendall(struct.pack(">i", 1000) + struct.pack(">hhi", 3, 1, 5))  # 8 of 1000 bytes
    assert closed_by_broker(s)
    wait_for(lambda: closed_total(b, "request_read_timeout") == 1, what="the close counted")
    # A connection between requests is not slow: it stays.
    s2 = connect(b.bootstrap)
    api_versions(s2)
    assert not closed_by_broker(s2, timeout=1.0)
    api_versions(s2, 2)


def test_idle_connections_are_closed(make_broker):
    b = make_broker(env={"KAFSCALE_CONNECTIONS_MAX_IDLE_MS": "300"})
    s = connect(b.bootstrap)
    api_versions(s)
    assert closed_by_broker(s)
    wait_for(lambda: closed_total(b, "idle") >= 1, what="the idle close counted")


def test_connection_limits_per_address_and_in_all(make_broker):
    b = make_broker(env={"KAFSCALE_MAX_CONNECTIONS_PER_IP": "3", "KAFSCALE_MAX_CONNECTIONS": "5"})
    no_connections(b)
    held = [connect(b.bootstrap) for _ in range(3)]
    for i, s in enumerate(held):
        api_versions(s, i)
    extra = connect(b.bootstrap)
    assert closed_by_broker(extra)
    assert closed_total(b, "max_connections_per_ip") == 1
    held.pop().close()
    wait_for(lambda: b.metrics().get(("kafscale_open_connections", ()), 0) == 2, what="a place freed")
    again = connect(b.bootstrap)
    api_versions(again)
    for s in held + [again]:
        s.close()


def test_broker_wide_connection_limit(make_broker):
    b = make_broker(env={"KAFSCALE_MAX_CONNECTIONS": "2"})
    no_connections(b)
    held = [connect(b.bootstrap) for _ in range(2)]
    for i, s in enumerate(held):
        api_versions(s, i)
    assert closed_by_broker(connect(b.bootstrap))
    assert closed_total(b, "max_connections") == 1
    for s in held:
        s.close()


def test_large_non_produce_request_is_refused_before_it_is_read(make_broker):
    b = make_broker(env={"KAFSCALE_MAX_NON_PRODUCE_REQUEST_BYTES": str(64 << 10)})
    s = connect(b.bootstrap)
    # A Metadata request announcing 1 MiB: refused as soon as its API key is in.
    s.sendall(struct.pack(">i", 1 << 20) + struct.pack(">hhi", 3, 1, 5))
    assert closed_by_broker(s)
    assert closed_total(b, "request_too_large") == 1
    create_topic(b.bootstrap, "after-large")


def test_batch_above_max_message_bytes_gets_message_too_large(make_broker):
    b = make_broker(env={"KAFSCALE_MAX_MESSAGE_BYTES": str(100_000)})
    create_topic(b.bootstrap, "sized")
    delivered, errors = produce(
        b.bootstrap, "sized", [(None, b"v" * 200_000, None, None)],
        extra={"message.max.bytes": 1_000_000, "compression.type": "none", "retries": 0})
    assert delivered == []
    assert [e.code() for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]
    # The connection and the topic go on: a batch below the limit is stored.
    delivered, errors = produce(b.bootstrap, "sized", [(None, b"v" * 50_000, None, None)])
    assert errors == [] and [d[1] for d in delivered] == [0]
    assert [len(m[3]) for m in consume_all(b.bootstrap, "sized", 1, 1)] == [50_000]


def test_create_topics_limits(make_broker):
    b = make_broker(env={"KAFSCALE_MAX_TOPICS": "3", "KAFSCALE_MAX_PARTITIONS_PER_TOPIC": "100",
                         "KAFSCALE_MAX_PARTITIONS": "150"})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})

    def create(name, partitions):
        f = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)[name]
        try:
            f.result(timeout=15)
            return None
        except Exception as e:  # KafkaException wrapping the topic's error
            return e.args[0].code()

    assert create("huge", 100_000) == KafkaError.INVALID_PARTITIONS  # librdkafka stops higher counts itself
    assert create("a", 100) is None
    assert create("b", 60) == KafkaError.POLICY_VIOLATION  # 160 partitions in all
    assert create("b", 50) is None
    assert create("c", 1) == KafkaError.POLICY_VIOLATION  # 151 partitions
    md = admin.list_topics(timeout=10)
    assert sorted(t for t in md.topics if not t.startswith("__")) == ["a", "b"]
    # More partitions for a topic are bounded the same way.
    [f] = admin.create_partitions([__import__("confluent_kafka").admin.NewPartitions("b", 51)]).values()
    try:
        f.result(timeout=15)
        code = None
    except Exception as e:
        code = e.args[0].code()
    assert code == KafkaError.POLICY_VIOLATION


def test_stored_topics_beyond_the_limits_still_load(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "wide", partitions=20)
    produce(b.bootstrap, "wide", [(None, b"kept", None, 7)])
    b.stop()
    b.env["KAFSCALE_MAX_PARTITIONS_PER_TOPIC"] = "10"
    b.env["KAFSCALE_MAX_PARTITIONS"] = "10"
    b.start()
    assert "stored metadata exceeds" in b.log()
    assert "more partitions than KAFSCALE_MAX_PARTITIONS_PER_TOPIC" in b.log()
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    assert len(md.topics["wide"].partitions) == 20
    got = consume_all(b.bootstrap, "wide", 20, 1)
    assert [(m[0], m[3]) for m in got] == [(7, b"kept")]
