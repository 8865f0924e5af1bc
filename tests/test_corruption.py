"""A segment corrupted in the store is detected on read and never served."""
import time

from confluent_kafka import Consumer, TopicPartition

from clients import consume_all, create_topic, produce


def test_corrupt_segment_is_not_served(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "fragile")
    create_topic(b.bootstrap, "healthy")
    produce(b.bootstrap, "fragile", [(None, f"secret-{i}".encode(), None, None) for i in range(100)])
    produce(b.bootstrap, "healthy", [(None, b"fine", None, None)])
    assert b.stop() == 0
    [seg] = list(b.objects.rglob("fragile/0/*.kfs"))
    raw = bytearray(seg.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    seg.write_bytes(bytes(raw))
    b.start()
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "x", "enable.auto.commit": False})
    c.assign([TopicPartition("fragile", 0, 0)])
    values, errors = [], []
    deadline = time.time() + 10
    while time.time() < deadline and not errors:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(m.error())
        else:
            values.append(m.value())
    c.close()
    assert values == [], "corrupt data was served"
    assert errors, "the consumer was not told"
    assert "corrupt segment" in b.log()
    assert "segment-00000000000000000000.kfs" in b.log()
    assert [m[3] for m in consume_all(b.bootstrap, "healthy", 1, 1)] == [b"fine"]
