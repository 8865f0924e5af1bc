"""Kafka error codes clients rely on, and topic administration."""
import time

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition as KTopicPartition
from kafka.errors import OffsetOutOfRangeError

from clients import create_topic, produce


def test_unknown_topic_with_auto_create_off(make_broker):
    b = make_broker(env={"KAFSCALE_AUTO_CREATE_TOPICS": "false"})
    delivered, errors = produce(b.bootstrap, "nope", [(b"k", b"v", None, None)], extra={"message.timeout.ms": 3000})
    assert delivered == []
    assert [e.code() for e in errors] in ([KafkaError.UNKNOWN_TOPIC_OR_PART], [KafkaError._UNKNOWN_TOPIC], [KafkaError._MSG_TIMED_OUT])
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(topic="nope", timeout=10)
    assert md.topics["nope"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert not list(b.data_dir.rglob("nope"))


def test_auto_create_on_produce(broker):
    delivered, errors = produce(broker.bootstrap, "auto", [(b"k", b"v", None, None)])
    assert errors == [] and [(p, o) for p, o, _, _ in delivered] == [(0, 0)]


def test_fetch_past_the_end_is_out_of_range(broker):
    create_topic(broker.bootstrap, "short")
    produce(broker.bootstrap, "short", [(None, b"only", None, None)])
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset="none",
                      consumer_timeout_ms=3000)
    tp = KTopicPartition("short", 0)
    c.assign([tp])
    c.seek(tp, 50)
    with pytest.raises(OffsetOutOfRangeError):
        for _ in range(5):
            c.poll(timeout_ms=1000)
    c.close()
    # librdkafka reports it as an offset-reset error when no reset policy applies.
    cc = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "auto.offset.reset": "error",
                   "enable.auto.commit": False})
    cc.assign([TopicPartition("short", 0, 50)])
    err = None
    deadline = time.time() + 15
    while err is None and time.time() < deadline:
        m = cc.poll(0.5)
        if m is not None and m.error():
            err = m.error()
    cc.close()
    assert err is not None and err.code() == KafkaError._AUTO_OFFSET_RESET, err


def test_create_and_delete_topics(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = admin.create_topics([NewTopic("t1", 3, 1), NewTopic("t2", 1, 1, config={"retention.ms": "60000"})])
    for f in fs.values():
        f.result(timeout=15)
    dup = admin.create_topics([NewTopic("t1", 3, 1)])["t1"]
    with pytest.raises(Exception) as e:
        dup.result(timeout=15)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    # Every standard topic config is accepted (docs/protocol.md); an unknown name or a
    # value outside a config's range is not.
    bad = admin.create_topics([NewTopic("t3", 1, 1, config={"compression.type": "lz5"})])["t3"]
    with pytest.raises(Exception) as e:
        bad.result(timeout=15)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG
    invalid = admin.create_topics([NewTopic("bad/name", 1, 1)])["bad/name"]
    with pytest.raises(Exception) as e:
        invalid.result(timeout=15)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION

    delivered, errors = produce(broker.bootstrap, "t1", [(None, b"x", None, p) for p in range(3)])
    assert errors == []
    assert len(list(broker.objects.rglob("t1/*/*.kfs"))) == 3
    admin.delete_topics(["t1"], operation_timeout=10)["t1"].result(timeout=15)
    md = admin.list_topics(timeout=10)
    assert "t1" not in md.topics and "t2" in md.topics
    assert not list(broker.objects.rglob("t1/*/*")), "deleted topic's objects remain"
    gone = admin.delete_topics(["t1"], operation_timeout=10)["t1"]
    with pytest.raises(Exception) as e:
        gone.result(timeout=15)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # Re-created under the same name, it starts empty at offset 0.
    create_topic(broker.bootstrap, "t1", partitions=1)
    delivered, errors = produce(broker.bootstrap, "t1", [(None, b"fresh", None, 0)])
    assert errors == [] and delivered[0][1] == 0
