"""Every standard Kafka topic config is accepted, stored and described, and the
ones that mean something here are applied: max.message.bytes (MESSAGE_TOO_LARGE,
the connection stays open), message.timestamp.type=LogAppendTime (the broker
stamps batches), segment.ms (the active segment rolls on the next append),
cleanup.policy (without `delete`, retention deletes nothing); list configs take
APPEND and SUBTRACT; broker configs are described under Kafka's names.

Assertions are on data (config values and sources, error codes, timestamps,
object counts); the only waits are bounded polls for a state."""
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_CREATE_TIME
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource

from clients import create_topic, produce, wait_for
from test_admin import admin, segments, topic_configs

# What Strimzi, Terraform, Kafka Streams, Connect and Schema Registry set on topics.
ECOSYSTEM = {
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "false",
    "max.message.bytes": "2000",
    "message.timestamp.type": "LogAppendTime",
    "cleanup.policy": "compact,delete",
    "compression.type": "zstd",
    "segment.ms": "3600000",
    "delete.retention.ms": "86400000",
    "min.compaction.lag.ms": "0",
    "min.cleanable.dirty.ratio": "0.1",
    "message.format.version": "3.0-IV1",
    "local.retention.ms": "-2",
    "preallocate": "false",
}


def consume(b, topic, n, partition=0):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "kafscale-tests-unused",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, partition, 0)])
    out = []
    deadline = time.time() + 30
    try:
        while len(out) < n and time.time() < deadline:
            for m in c.consume(n, 0.5):
                assert m.error() is None, m.error()
                out.append(m)
    finally:
        c.close()
    return out


def test_every_ecosystem_config_is_accepted_stored_and_described(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "eco", 1, ECOSYSTEM)
    cfg = topic_configs(b, "eco")
    for k, v in ECOSYSTEM.items():
        assert cfg[k].value == v, k
        assert cfg[k].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, k
        assert not cfg[k].is_read_only and not cfg[k].is_default, k
    # Unset ones: Kafka's defaults, or the broker setting they default to.
    assert (cfg["flush.ms"].value, cfg["flush.ms"].source) == ("9223372036854775807", ConfigSource.DEFAULT_CONFIG.value)
    assert cfg["flush.ms"].is_default
    assert (cfg["segment.bytes"].source, cfg["segment.bytes"].value) == \
        (ConfigSource.STATIC_BROKER_CONFIG.value, str(8 << 20))
    # Stored: a restart reads them back.
    b.restart()
    assert topic_configs(b, "eco")["min.insync.replicas"].value == "2"


def test_max_message_bytes_per_topic_and_the_connection_stays(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "small", 1, {"max.message.bytes": "2000"})
    create_topic(b.bootstrap, "big", 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0, "retries": 0,
                  "compression.type": "none"})
    results = []

    def cb(err, msg):
        results.append((msg.topic(), err.code() if err else 0))

    p.produce("small", value=b"x" * 5000, callback=cb)
    assert p.flush(30) == 0
    # Same producer, same connection: small batches to the topic and big ones elsewhere still go.
    p.produce("small", value=b"y" * 100, callback=cb)
    p.produce("big", value=b"z" * 5000, callback=cb)
    assert p.flush(30) == 0
    assert results == [("small", KafkaError.MSG_SIZE_TOO_LARGE), ("small", 0), ("big", 0)]
    got = consume(b, "small", 1)
    assert [m.value() for m in got] == [b"y" * 100]


def test_log_append_time_stamps_batches(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "lat", 1, {"message.timestamp.type": "LogAppendTime"})
    create_topic(b.bootstrap, "ct", 1)
    before = int(time.time() * 1000)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    for t in ("lat", "ct"):
        for i in range(3):
            p.produce(t, value=b"v%d" % i, timestamp=1_000 + i)
    assert p.flush(30) == 0
    after = int(time.time() * 1000)
    stamped = consume(b, "lat", 3)
    assert [m.value() for m in stamped] == [b"v0", b"v1", b"v2"]
    for m in stamped:
        kind, ts = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, (kind, ts)
    kept = consume(b, "ct", 3)
    assert [m.timestamp() for m in kept] == [(TIMESTAMP_CREATE_TIME, 1_000 + i) for i in range(3)]
    # ListOffsets by time uses the append time: the producer's 1000 is before every record.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "kafscale-tests-unused"})
    try:
        got = c.offsets_for_times([TopicPartition("lat", 0, 1_001)], timeout=10)
        assert got[0].offset == 0
        got = c.offsets_for_times([TopicPartition("lat", 0, after + 60_000)], timeout=10)
        assert got[0].offset == -1
    finally:
        c.close()


def test_segment_ms_rolls_on_the_next_append(make_broker):
    # A flush interval far beyond the test: only segment.ms can seal the segment.
    b = make_broker(env={"KAFSCALE_FLUSH_INTERVAL_MS": "600000"})
    create_topic(b.bootstrap, "roll", 1, {"segment.ms": "1"})
    create_topic(b.bootstrap, "noroll", 1)
    for t in ("roll", "noroll"):
        produce(b.bootstrap, t, [(None, b"a", None, 0)], acks="1")
        time.sleep(0.01)
        produce(b.bootstrap, t, [(None, b"b", None, 0)], acks="1")
    # The second append sealed the first segment, which was then uploaded.
    wait_for(lambda: len(segments(b, "roll")) == 1, timeout=20)
    assert segments(b, "roll") == ["segment-00000000000000000000.kfs"]
    assert segments(b, "noroll") == []


def test_compact_only_topics_keep_segments_past_retention(make_broker):
    # The cleaner stays away (an hour between passes): this is about retention.
    b = make_broker(env={"KAFSCALE_RETENTION_CHECK_INTERVAL_MS": "100",
                         "KAFSCALE_LOG_CLEANER_BACKOFF_MS": "3600000"})
    old = int(time.time() * 1000) - 3_600_000
    for t, policy in (("both", "compact,delete"), ("conly", "compact")):
        create_topic(b.bootstrap, t, 1, {"cleanup.policy": policy, "retention.ms": "1000"})
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0})
        for r in range(3):
            p.produce(t, key=b"k", value=b"r%d" % r, timestamp=old, partition=0)
            assert p.flush(30) == 0
    # compact,delete: retention deletes all but the newest segment.
    wait_for(lambda: len(segments(b, "both")) == 1, timeout=30)
    # compact alone: the same passes ran and deleted nothing.
    assert len(segments(b, "conly")) == 3


def test_append_and_subtract_on_list_configs(broker):
    b = broker
    create_topic(b.bootstrap, "lists", 1)
    a = admin(b)

    def incr(op, key, value):
        res = ConfigResource("topic", "lists", incremental_configs=[ConfigEntry(key, value, incremental_operation=op)])
        next(iter(a.incremental_alter_configs([res]).values())).result(timeout=15)
        return topic_configs(b, "lists")[key].value

    assert incr(AlterConfigOpType.APPEND, "cleanup.policy", "compact") == "delete,compact"
    assert incr(AlterConfigOpType.APPEND, "cleanup.policy", "compact") == "delete,compact"
    assert incr(AlterConfigOpType.SUBTRACT, "cleanup.policy", "delete") == "compact"
    assert incr(AlterConfigOpType.APPEND, "leader.replication.throttled.replicas", "0:1,1:2") == "0:1,1:2"


def test_broker_configs_under_kafka_names(broker):
    b = broker
    a = admin(b)
    fut = a.describe_configs([ConfigResource("broker", "0")])
    cfg = next(iter(fut.values())).result(timeout=15)
    assert (cfg["message.max.bytes"].value, cfg["message.max.bytes"].source) == \
        ("1048588", ConfigSource.STATIC_BROKER_CONFIG.value)
    assert cfg["log.segment.bytes"].value == str(8 << 20)
    assert (cfg["default.replication.factor"].value, cfg["default.replication.factor"].source) == \
        ("1", ConfigSource.DEFAULT_CONFIG.value)
    assert cfg["log.retention.ms"].value == "-1"
    assert cfg["group.min.session.timeout.ms"].value == "6000"
    assert all(e.is_read_only for e in cfg.values())
    # A topic's max.message.bytes names the broker setting it defaults to.
    t = ConfigResource("topic", "synonyms")
    create_topic(b.bootstrap, "synonyms", 1)
    tcfg = next(iter(a.describe_configs([t]).values())).result(timeout=15)
    e = tcfg["max.message.bytes"]
    assert (e.value, e.source) == ("1048588", ConfigSource.STATIC_BROKER_CONFIG.value)
