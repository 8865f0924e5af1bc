"""Message formats v0 and v1 (magic 0/1), which Produce v0-2 and Fetch v0-3 carry:
the broker stores v2 batches, converting produced message sets up and stored
batches down for old fetchers (codec/src/legacy.rs, docs/protocol.md).

Raw frames: the message sets are built and parsed byte by byte here (rawkafka.py,
CRC-32 from zlib), the request envelopes by kafka-python's classes for those
versions. Real clients: kafka-python speaking as a 0.8.2 / 0.9 / 0.10 client,
confluent-kafka (librdkafka, v2 batches) as the modern side. Assertions are on
bytes, keys, values, offsets, timestamps and error codes."""
import gzip
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition as KTP
from kafka.protocol.old import fetch as kfetch
from kafka.protocol.old import produce as kproduce

from clients import create_topic
from rawkafka import legacy_message, message_set, parse_message_set
from test_groups import Raw

CORRUPT_MESSAGE = 2
UNSUPPORTED_COMPRESSION_TYPE = 76
TS = 1_700_000_000_000


def raw_produce(raw, version, topic, records, partition=0):
    r = raw.call(kproduce.ProduceRequest[version](acks=-1, timeout_ms=30000,
                                                  topic_data=[(topic, [(partition, records)])]),
                 kproduce.ProduceResponse[version])
    (_name, ((_index, err, base, *_),)), = r.topics
    return err, base


def raw_fetch(raw, version, topic, offset, partition=0, max_bytes=1 << 20):
    args = dict(replica_id=-1, max_wait_ms=200, min_bytes=1,
                topics=[(topic, [(partition, offset, max_bytes)])])
    if version >= 3:
        args["max_bytes"] = 8 << 20
    r = raw.call(kfetch.FetchRequest[version](**args), kfetch.FetchResponse[version])
    (_name, ((_index, err, hw, records),)), = r.topics
    return err, hw, records


def fetch_all(raw, version, topic, start, end):
    """The messages from `start` to `end`, fetched as a client does: again from
    after the last message, until there."""
    got, offset = [], start
    while offset < end:
        err, hw, records = raw_fetch(raw, version, topic, offset)
        assert (err, hw) == (0, end), f"v{version} at {offset}"
        msgs = parse_message_set(records)
        assert msgs, f"v{version}: nothing at {offset}"
        got += msgs
        offset = msgs[-1][0] + 1
    return got


def librdkafka_read(bootstrap, topic, n, partition=0):
    """(offset, key, value, (timestamp type, timestamp), headers) of the first n messages."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fmt-reader", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, partition, 0)])
    out, deadline = [], time.time() + 30
    try:
        while len(out) < n and time.time() < deadline:
            for m in c.consume(100, 0.5):
                assert not m.error(), m.error()
                out.append((m.offset(), m.key(), m.value(), m.timestamp(), m.headers()))
    finally:
        c.close()
    return out


def librdkafka_write(bootstrap, topic, msgs, compression="none"):
    """msgs: (key, value, timestamp, headers); one batch per call (linger), acks=all."""
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": compression, "linger.ms": 50,
                  "enable.idempotence": False})
    errs = []
    for k, v, ts, h in msgs:
        p.produce(topic, key=k, value=v, timestamp=ts, headers=h, partition=0,
                  on_delivery=lambda e, _m: e and errs.append(e))
    assert p.flush(30) == 0 and errs == []


# (key, value) of the messages the raw producers send: a null key, a null value
# and an empty value among them.
KV = [(b"k0", b"v0"), (None, b"no key"), (b"k2", None), (b"k3", b""), (b"k4", b"\x00\xff" * 300)]


@pytest.mark.parametrize("version,magic,codec", [
    (0, 0, "none"), (0, 0, "gzip"), (1, 0, "none"), (1, 0, "gzip"), (2, 1, "none"), (2, 1, "gzip"),
    # Produce v2 may carry magic 0 too (a 0.10 client writing to a topic of format 0.9).
    (2, 0, "none"),
])
def test_raw_produce_reaches_a_modern_client(broker, version, magic, codec):
    topic = f"p{version}-m{magic}-{codec}"
    create_topic(broker.bootstrap, topic, 1)
    msgs = [legacy_message(magic, v, key=k, timestamp=TS + i) for i, (k, v) in enumerate(KV)]
    if codec == "gzip":
        # A wrapper whose value is the gzipped inner message set, with relative
        # offsets as a 0.10 producer writes them (0.9 producers' offsets are ignored too).
        inner = message_set(msgs)
        wrapper = legacy_message(magic, gzip.compress(inner), timestamp=TS + 4, attributes=1)
        records = message_set([wrapper], first_offset=len(msgs) - 1)
    else:
        records = message_set(msgs, first_offset=100)  # producers' offsets are not kept
    raw = Raw(broker.bootstrap)
    try:
        assert raw_produce(raw, version, topic, records) == (0, 0)
        assert raw_produce(raw, version, topic, records) == (0, len(KV))
    finally:
        raw.close()
    got = librdkafka_read(broker.bootstrap, topic, 2 * len(KV))
    assert [(o, k, v) for o, k, v, _, _ in got] == [(o, *KV[o % len(KV)]) for o in range(2 * len(KV))]
    if magic == 1:
        assert [t for *_, t, _ in got] == [(1, TS + i) for i in range(len(KV))] * 2
    else:
        # Magic 0 has no timestamps: -1, as Kafka stores them.
        assert [t[1] for *_, t, _ in got] == [-1] * (2 * len(KV))
    assert all(h is None for *_, h in got)


@pytest.mark.parametrize("compression", ["none", "gzip", "lz4", "snappy"])
def test_raw_fetch_v0_to_v3_reads_what_librdkafka_wrote(broker, compression):
    topic = f"f-{compression}"
    create_topic(broker.bootstrap, topic, 1)
    first = [(b"a", b"1", TS, [("h", b"dropped")]), (None, b"2", TS + 1, None), (b"c", None, TS + 2, None)]
    second = [(b"d", b"x" * 2000, TS + 10, None), (b"e", b"", TS + 11, None)]
    librdkafka_write(broker.bootstrap, topic, first, compression)
    librdkafka_write(broker.bootstrap, topic, second, compression)
    rows = [(k, v, ts) for k, v, ts, _ in first + second]
    raw = Raw(broker.bootstrap)
    try:
        for version in range(4):
            magic = 0 if version < 2 else 1
            for start in (0, 1, 4):
                got = fetch_all(raw, version, topic, start, 5)
                # Only records at or after the fetch offset, uncompressed, each its own message.
                assert [(o, m, a) for o, m, a, *_ in got] == [(o, magic, 0) for o in range(start, 5)], f"v{version}"
                assert [(k, v) for *_, k, v in got] == [(k, v) for k, v, _ in rows[start:]]
                assert [ts for _, _, _, ts, _, _ in got] == [ts if magic else None for _, _, ts in rows[start:]]
            # At the high watermark: no messages, no error.
            assert raw_fetch(raw, version, topic, 5)[:2] == (0, 5)
            assert raw_fetch(raw, version, topic, 5)[2] in (b"", None)
    finally:
        raw.close()


def test_down_converted_messages_go_back_up_unchanged(broker):
    """Fetch v2 gives magic 1 messages; produced again with Produce v2 they store the
    same keys, values and timestamps: the two conversions are inverse."""
    create_topic(broker.bootstrap, "rt-a", 1)
    create_topic(broker.bootstrap, "rt-b", 1)
    librdkafka_write(broker.bootstrap, "rt-a", [(b"k", b"v", TS, None), (None, None, TS + 7, None)])
    raw = Raw(broker.bootstrap)
    try:
        _, _, records = raw_fetch(raw, 2, "rt-a", 0)
        assert raw_produce(raw, 2, "rt-b", records) == (0, 0)
        _, _, again = raw_fetch(raw, 2, "rt-b", 0)
        assert again == records
    finally:
        raw.close()
    assert [(o, k, v, t) for o, k, v, t, _ in librdkafka_read(broker.bootstrap, "rt-b", 2)] == \
        [(0, b"k", b"v", (1, TS)), (1, None, None, (1, TS + 7))]


def test_bad_messages_are_refused_and_nothing_is_stored(broker):
    create_topic(broker.bootstrap, "bad", 1)
    good = message_set([legacy_message(1, b"v", timestamp=TS)])
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    # A gzip wrapper whose value is not gzip, and one whose inner message has a bad CRC.
    not_gzip = message_set([legacy_message(1, b"not gzip at all", timestamp=TS, attributes=1)])
    inner_bad = message_set([legacy_message(1, gzip.compress(flipped), timestamp=TS, attributes=1)])
    raw = Raw(broker.bootstrap)
    try:
        for version in (0, 1, 2):
            for records in (flipped, good[:-3], not_gzip, inner_bad):
                assert raw_produce(raw, version, "bad", records)[0] == CORRUPT_MESSAGE, (version, records)
        assert raw_fetch(raw, 2, "bad", 0)[:2] == (0, 0)
        # The connection is still usable, and a good set is taken.
        assert raw_produce(raw, 2, "bad", good) == (0, 0)
    finally:
        raw.close()


def test_zstd_batches_are_refused_to_old_fetchers(broker):
    """As in Kafka: zstd needs Fetch v10, older fetchers get UNSUPPORTED_COMPRESSION_TYPE."""
    create_topic(broker.bootstrap, "zs", 1)
    librdkafka_write(broker.bootstrap, "zs", [(b"k", b"v" * 100, TS, None)], "zstd")
    raw = Raw(broker.bootstrap)
    try:
        for version in range(4):
            err, hw, records = raw_fetch(raw, version, "zs", 0)
            assert (err, hw, records or b"") == (UNSUPPORTED_COMPRESSION_TYPE, 1, b"")
    finally:
        raw.close()
    assert [(o, k) for o, k, *_ in librdkafka_read(broker.bootstrap, "zs", 1)] == [(0, b"k")]


# kafka-python as a client of an old broker: (0, 8, 2) speaks Produce v0 / Fetch v0
# with magic 0, (0, 9) Produce v1 / Fetch v1 with magic 0, (0, 10, 0) Produce v2 /
# Fetch v2 with magic 1. lz4 from a magic 0 client uses Kafka 0.8's broken frame
# checksum, so it is tried with magic 1 only.
OLD = [((0, 8, 2), None), ((0, 8, 2), "gzip"), ((0, 9), None), ((0, 9), "gzip"),
       ((0, 10, 0), None), ((0, 10, 0), "gzip"), ((0, 10, 0), "lz4")]


@pytest.mark.parametrize("api,compression", OLD, ids=[f"{'.'.join(map(str, a))}-{c}" for a, c in OLD])
def test_kafka_python_old_protocols_round_trip(broker, api, compression):
    topic = f"kp-{'-'.join(map(str, api))}-{compression}"
    create_topic(broker.bootstrap, topic, 1)
    magic1 = api >= (0, 10, 0)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, api_version=api, compression_type=compression,
                      linger_ms=20, acks="all")
    futures = [p.send(topic, key=k, value=v, partition=0, timestamp_ms=TS + i if magic1 else None)
               for i, (k, v) in enumerate(KV)]
    p.flush(30)
    assert [f.get(timeout=30).offset for f in futures] == list(range(len(KV)))
    p.close()
    got = librdkafka_read(broker.bootstrap, topic, len(KV))
    assert [(o, k, v) for o, k, v, *_ in got] == [(i, k, v) for i, (k, v) in enumerate(KV)]
    if magic1:
        assert [t for *_, t, _ in got] == [(1, TS + i) for i in range(len(KV))]
    # librdkafka writes with headers and lz4; the old client reads them (no headers).
    librdkafka_write(broker.bootstrap, topic, [(b"new", b"from v2", TS + 50, [("h", b"x")])], "lz4")
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, api_version=api, group_id=None,
                      enable_auto_commit=False, consumer_timeout_ms=10000)
    c.assign([KTP(topic, 0)])
    c.seek(KTP(topic, 0), 0)
    read = []
    for m in c:
        read.append(m)
        if len(read) == len(KV) + 1:
            break
    c.close()
    assert [(m.offset, m.key, m.value) for m in read] == \
        [(i, k, v) for i, (k, v) in enumerate(KV)] + [(len(KV), b"new", b"from v2")]
    if magic1:
        assert [m.timestamp for m in read] == [TS + i for i in range(len(KV))] + [TS + 50]


@pytest.mark.parametrize("api", [(0, 9), (0, 10, 0)])
def test_kafka_python_old_group_commits_and_resumes(make_broker, api):
    """A 0.9 / 0.10 group consumer: GroupCoordinator v0, JoinGroup v0, SyncGroup v0,
    OffsetCommit v2, OffsetFetch v1, Fetch v1 / v2; it resumes from its commit."""
    from test_groups import GROUP_ENV
    b = make_broker(env=GROUP_ENV)
    topic = f"kpg-{'-'.join(map(str, api))}"
    create_topic(b.bootstrap, topic, 1)
    librdkafka_write(b.bootstrap, topic, [(None, f"m-{i}".encode(), TS, None) for i in range(6)])

    def read(n):
        c = KafkaConsumer(topic, bootstrap_servers=b.bootstrap, api_version=api, group_id="kpg",
                          auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=20000)
        got = []
        for m in c:
            got.append(m.value)
            if len(got) == n:
                break
        c.commit()
        c.close()
        return got

    assert read(4) == [f"m-{i}".encode() for i in range(4)]
    assert read(2) == [b"m-4", b"m-5"]


def test_record_size_limits_apply_after_conversion(make_broker):
    """MESSAGE_TOO_LARGE is judged on the stored v2 batch, as for v3+ produces."""
    b = make_broker(env={"KAFSCALE_MAX_MESSAGE_BYTES": "2000"})
    create_topic(b.bootstrap, "big", 1)
    raw = Raw(b.bootstrap)
    try:
        big = message_set([legacy_message(1, b"x" * 3000, timestamp=TS)])
        assert raw_produce(raw, 2, "big", big)[0] == 10  # MESSAGE_TOO_LARGE
        small = message_set([legacy_message(1, b"x" * 100, timestamp=TS)])
        assert raw_produce(raw, 2, "big", small) == (0, 0)
    finally:
        raw.close()
