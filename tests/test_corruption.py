"""Damaged segments in the store: an older one is detected on read and never
served; the newest one (a truncated upload, a bad footer, a corrupt body) is
moved under _quarantine/ and the partition recovers from the segments before
it, without ever handing out its offsets again; a missing .index is rebuilt."""
import time

from confluent_kafka import Consumer, TopicPartition

from clients import consume_all, create_topic, produce, wait_for


def segments(b, topic):
    return sorted(b.objects.rglob(f"{topic}/0/*.kfs"))


def produce_in_segments(b, topic, groups):
    """One produce (and so one segment: the flush interval is 20 ms) per group."""
    for values in groups:
        delivered, errors = produce(b.bootstrap, topic, [(None, v, None, None) for v in values])
        assert errors == [] and len(delivered) == len(values)
        n = len(segments(b, topic))
        wait_for(lambda: len(segments(b, topic)) > n - 1, what="the segment uploaded")


def test_corrupt_older_segment_is_not_served(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "fragile")
    create_topic(b.bootstrap, "healthy")
    produce_in_segments(b, "fragile", [[f"secret-{i}".encode() for i in range(100)], [b"newer"]])
    produce(b.bootstrap, "healthy", [(None, b"fine", None, None)])
    assert b.stop() == 0
    first = segments(b, "fragile")[0]
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    first.write_bytes(bytes(raw))
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
    assert not [v for v in values if v.startswith(b"secret")], "corrupt data was served"
    assert errors, "the consumer was not told"
    assert "corrupt segment" in b.log()
    assert "segment-00000000000000000000.kfs" in b.log()
    assert [m[3] for m in consume_all(b.bootstrap, "healthy", 1, 1)] == [b"fine"]


def test_truncated_newest_segment_is_quarantined_and_its_offsets_skipped(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "trunc")
    produce_in_segments(b, "trunc", [[f"a{i}".encode() for i in range(50)], [f"b{i}".encode() for i in range(50)]])
    assert b.stop() == 0
    older, newest = segments(b, "trunc")
    assert newest.name == "segment-00000000000000000050.kfs"
    # An upload cut short: footer and the end of the last batch missing.
    newest.write_bytes(newest.read_bytes()[:-30])
    # And the older segment lost its index.
    older.with_suffix(".index").unlink()
    b.start()
    delivered, errors = produce(b.bootstrap, "trunc", [(None, f"c{i}".encode(), None, None) for i in range(10)])
    assert errors == []
    # Offsets 50..99 may have been acknowledged: never handed out again.
    assert sorted(d[1] for d in delivered) == list(range(100, 110))
    got = consume_all(b.bootstrap, "trunc", 1, 60)
    assert [(m[1], m[3]) for m in got] == (
        [(i, f"a{i}".encode()) for i in range(50)] + [(100 + i, f"c{i}".encode()) for i in range(10)])
    quarantined = b.data_dir / "objects" / "_quarantine" / "default" / "trunc" / "0" / newest.name
    assert quarantined.exists()
    assert not newest.exists()
    assert "moved under _quarantine/" in b.log()
    wait_for(lambda: older.with_suffix(".index").exists(), what="the missing index rebuilt")
    # After a restart the partition loads cleanly from what is left.
    b.restart()
    got = consume_all(b.bootstrap, "trunc", 1, 60)
    assert [m[1] for m in got] == list(range(50)) + list(range(100, 110))
