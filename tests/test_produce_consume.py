"""Produce and consume with real clients: every message once, byte-identical,
contiguous offsets from 0 per partition, per-key order kept."""
import subprocess
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTopicPartition

from clients import consume_all, create_topic, produce
from harness import stored_batches


def check_log(delivered, consumed, partitions):
    # Every acknowledged message consumed exactly once, byte-identical.
    want = sorted((p, o, k, v) for p, o, k, v in delivered)
    got = sorted((p, o, k, v) for p, o, k, v, _ in consumed)
    assert got == want
    for p in range(partitions):
        offs = [o for pp, o, *_ in consumed if pp == p]
        assert sorted(offs) == list(range(len(offs))), f"partition {p} offsets not contiguous from 0"


def test_keyed_multi_partition_confluent(broker):
    topic = "keyed"
    create_topic(broker.bootstrap, topic, partitions=6)
    msgs = []
    for i in range(3000):
        key = f"key-{i % 50}".encode()
        msgs.append((key, f"value-{i}-".encode() * (1 + i % 7), None, None))
    delivered, errors = produce(broker.bootstrap, topic, msgs)
    assert errors == []
    assert len(delivered) == 3000
    consumed = consume_all(broker.bootstrap, topic, 6, 3000)
    check_log(delivered, consumed, 6)
    # Same key → same partition, in production order.
    by_key = {}
    for p, o, k, v, _ in sorted(consumed, key=lambda m: (m[0], m[1])):
        by_key.setdefault(k, []).append((p, int(v.split(b"-")[1])))
    for k, seq in by_key.items():
        assert len({p for p, _ in seq}) == 1, f"{k} spread over partitions"
        assert [i for _, i in seq] == sorted(i for _, i in seq), f"{k} out of order"
    assert len(by_key) == 50


def test_headers_null_keys_empty_values_and_a_large_message(broker):
    topic = "shapes"
    create_topic(broker.bootstrap, topic, partitions=2)
    big = bytes(range(256)) * 3900  # ~1 MB
    msgs = [
        (None, b"no key", None, 0),
        (b"k", b"", None, 0),
        (b"h", b"with headers", [("trace", b"abc"), ("empty", b""), ("dup", b"1"), ("dup", b"2")], 1),
        (b"big", big, None, 1),
        (None, None, None, 0),
    ]
    delivered, errors = produce(broker.bootstrap, topic, msgs, extra={"message.max.bytes": 2_000_000})
    assert errors == [] and len(delivered) == 5
    consumed = consume_all(broker.bootstrap, topic, 2, 5, extra={"fetch.max.bytes": 4_000_000})
    check_log(delivered, consumed, 2)
    by_key = {m[2]: m for m in consumed}
    assert by_key[b"big"][3] == big
    assert by_key[b"k"][3] == b""
    assert by_key[b"h"][4] == [("trace", b"abc"), ("empty", b""), ("dup", b"1"), ("dup", b"2")]
    assert sorted(m[3] for m in consumed if m[2] is None and m[3] is not None) == [b"no key"]
    assert any(m[2] is None and m[3] is None for m in consumed), "null value lost"


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_pass_through(broker, codec):
    topic = f"comp-{codec}"
    create_topic(broker.bootstrap, topic, partitions=3)
    values = [(f"{codec}-{i}-" * 40).encode() for i in range(2000)]
    # kafka-python compresses with every codec.
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec,
                       linger_ms=5)
    metas = [f.get(timeout=30) for f in [kp.send(topic, key=b"kp", value=v) for v in values[:1000]]]
    kp.close()
    delivered = [(m.partition, m.offset, b"kp", v) for m, v in zip(metas, values[:1000])]
    # librdkafka enables lz4 only when the broker advertises FindCoordinator (its
    # probe for Kafka 0.8.2); until consumer groups land it sends lz4 uncompressed.
    if codec != "lz4":
        more, errors = produce(broker.bootstrap, topic, [(b"rd", v, None, None) for v in values[1000:]],
                               extra={"compression.type": codec})
        assert errors == []
        delivered += more
    consumed = consume_all(broker.bootstrap, topic, 3, len(delivered))
    check_log(delivered, consumed, 3)
    # The stored batches are the producers' compressed ones, not re-encoded.
    kfs = list(broker.objects.rglob(f"{topic}/*/*.kfs"))
    batches = [b for f in kfs for b in stored_batches(f)]
    assert sum(n for _, _, n in batches) == len(delivered)
    codec_id = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}[codec]
    assert {a & 7 for _, a, _ in batches} == {codec_id}


def test_kafka_python_round_trip(broker):
    topic = "kpy"
    create_topic(broker.bootstrap, topic, partitions=3)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    futures = [p.send(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode()) for i in range(600)]
    metas = [f.get(timeout=30) for f in futures]
    p.close()
    assert len(metas) == 600
    delivered = {(m.partition, m.offset) for m in metas}
    assert len(delivered) == 600
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=5000)
    c.assign([KTopicPartition(topic, i) for i in range(3)])
    for i in range(3):
        c.seek(KTopicPartition(topic, i), 0)
    got = []
    for m in c:
        got.append((m.partition, m.offset, m.key, m.value))
        if len(got) == 600:
            break
    c.close()
    assert {(p, o) for p, o, _, _ in got} == delivered
    assert sorted(int(v[1:]) for *_, v in got) == list(range(600))
    for part in range(3):
        offs = sorted(o for p, o, _, _ in got if p == part)
        assert offs == list(range(len(offs)))


def test_kafka_python_reads_what_confluent_wrote(broker):
    topic = "mixed"
    create_topic(broker.bootstrap, topic, partitions=1)
    delivered, errors = produce(broker.bootstrap, topic, [(b"a", b"x" * i, None, None) for i in range(1, 200)],
                                extra={"compression.type": "zstd"})
    assert errors == []
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset="earliest",
                      consumer_timeout_ms=5000)
    c.assign([KTopicPartition(topic, 0)])
    c.seek_to_beginning()
    got = [m.value for m, _ in zip(c, range(199))]
    c.close()
    assert got == [b"x" * i for i in range(1, 200)]


def test_kcat_round_trip(broker):
    topic = f"kcat-{uuid.uuid4().hex[:6]}"
    lines = "".join(f"key{i}:value number {i}\n" for i in range(100))
    r = subprocess.run(["kcat", "-P", "-b", broker.bootstrap, "-t", topic, "-K:"], input=lines.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["kcat", "-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e",
                        "-f", "%k:%s:%o\n"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().splitlines()
    assert out == [f"key{i}:value number {i}:{i}" for i in range(100)]
    r = subprocess.run(["kcat", "-L", "-b", broker.bootstrap, "-t", topic], capture_output=True, timeout=30)
    assert f'topic "{topic}" with 1 partitions' in r.stdout.decode()
