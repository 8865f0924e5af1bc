"""KAFSCALE_LOCAL_COMMIT=log: acks=all commits made durable by the shard's commit
log, segments written out to the store's files later (docs/configuration.md,
"Local commit log"). What was acknowledged survives kill -9 before anything was
written out, a torn log tail, and never comes back for a deleted topic."""
import os
import signal

import pytest

from confluent_kafka.admin import AdminClient

from clients import consume_all, create_topic, produce, wait_for

# The flush tick, which writes logged segments out, never comes during a test:
# only the log holds what is acknowledged, until shutdown.
LOG = {"KAFSCALE_LOCAL_COMMIT": "log", "KAFSCALE_FLUSH_INTERVAL_MS": "600000"}


def kfs(b, topic):
    return sorted(b.objects.rglob(f"{topic}/*/*.kfs"))


def logs(b):
    return sorted((b.data_dir / "commitlog").glob("*.log"))


def check(consumed, delivered, partitions):
    got = sorted((p, o, k, v) for p, o, k, v, _ in consumed)
    assert got == sorted(delivered)
    for p in range(partitions):
        offs = sorted(o for pp, o, *_ in consumed if pp == p)
        assert offs == list(range(len(offs))), f"gap or reuse in partition {p}"


# After the crash the broker may start with the log or without it: the logs
# are replayed either way.
@pytest.mark.parametrize("after", ["log", "files"])
def test_kill9_loses_nothing_that_only_the_log_held(make_broker, after):
    b = make_broker(env=LOG)
    assert "commit log" in b.log()
    create_topic(b.bootstrap, "logged", partitions=4)
    msgs = [(f"k{i % 13}".encode(), f"before-{i}".encode(), None, None) for i in range(4000)]
    delivered, errors = produce(b.bootstrap, "logged", msgs)
    assert errors == [] and len(delivered) == 4000
    # Acknowledged with no segment file written: the log has it, and reads
    # are served from memory.
    assert kfs(b, "logged") == []
    assert sum(f.stat().st_size for f in logs(b)) > sum(len(v) for _, v, _, _ in msgs)
    check(consume_all(b.bootstrap, "logged", 4, 4000), delivered, 4)
    b.kill9()
    b.env["KAFSCALE_LOCAL_COMMIT"] = after
    b.start()
    assert "commit log replayed" in b.log().split("===== start #2")[-1]
    files = kfs(b, "logged")
    assert files, "the replay wrote the logged segments out"
    more, errors = produce(b.bootstrap, "logged", [(None, f"after-{i}".encode(), None, i % 4) for i in range(400)])
    assert errors == [] and len(more) == 400
    consumed = consume_all(b.bootstrap, "logged", 4, 4400)
    check(consumed, delivered + more, 4)
    for p in range(4):
        befores = [o for pp, o, _, v, _ in consumed if pp == p and v.startswith(b"before")]
        afters = [o for pp, o, _, v, _ in consumed if pp == p and v.startswith(b"after")]
        assert min(afters) > max(befores), "offsets continue after the replayed ones"


def test_a_torn_log_tail_is_not_read(make_broker):
    b = make_broker(env=LOG)
    create_topic(b.bootstrap, "torn", partitions=2)
    delivered, errors = produce(b.bootstrap, "torn", [(None, f"m{i}".encode(), None, i % 2) for i in range(1000)])
    assert errors == [] and len(delivered) == 1000
    b.kill9()
    # What a crash in the middle of an append leaves: a record cut short, then
    # garbage, then zeroes (space the file system allocated, never written).
    for f in logs(b):
        data = f.read_bytes()
        if data:
            with open(f, "ab") as out:
                out.write(data[: min(len(data), 700)][:-1])
                out.write(os.urandom(333))
                out.write(b"\0" * 4096)
    b.start()
    check(consume_all(b.bootstrap, "torn", 2, 1000, timeout=30), delivered, 2)
    # Nothing beyond what was acknowledged appeared.
    extra = consume_all(b.bootstrap, "torn", 2, 1001, timeout=3)
    assert len(extra) == 1000


def test_small_commits_are_written_out_as_one_object_per_partition(make_broker):
    b = make_broker(env=LOG)
    create_topic(b.bootstrap, "coalesced", partitions=3)
    delivered = []
    # Forty acknowledged commits per partition, one after another.
    for round_ in range(40):
        d, errors = produce(b.bootstrap, "coalesced", [(None, f"r{round_}-{p}".encode(), None, p) for p in range(3)])
        assert errors == []
        delivered += d
    assert kfs(b, "coalesced") == []
    # Shutdown writes every logged segment out; a partition's forty become one.
    assert b.stop(signal.SIGTERM) == 0
    files = kfs(b, "coalesced")
    assert [f.parent.name for f in files] == ["0", "1", "2"], files
    assert all(f.name == "segment-00000000000000000000.kfs" for f in files)
    b.start()
    # Nothing was left for a replay.
    assert "commit log replayed" not in b.log().split("===== start #2")[-1]
    check(consume_all(b.bootstrap, "coalesced", 3, 120), delivered, 3)


def test_the_flush_tick_writes_logged_segments_out_and_old_logs_go(make_broker):
    b = make_broker(env={"KAFSCALE_LOCAL_COMMIT": "log", "KAFSCALE_FLUSH_INTERVAL_MS": "20"})
    create_topic(b.bootstrap, "ticked", partitions=2)
    delivered, errors = produce(b.bootstrap, "ticked", [(None, os.urandom(1000), None, i % 2) for i in range(3000)])
    assert errors == [] and len(delivered) == 3000
    wait_for(lambda: len(kfs(b, "ticked")) >= 2, what="segments written out")
    check(consume_all(b.bootstrap, "ticked", 2, 3000), delivered, 2)
    b.kill9()
    b.start()
    check(consume_all(b.bootstrap, "ticked", 2, 3000), delivered, 2)


def test_a_deleted_topic_is_not_brought_back_by_the_log(make_broker):
    b = make_broker(env=LOG)
    create_topic(b.bootstrap, "gone", partitions=1)
    old, errors = produce(b.bootstrap, "gone", [(None, f"old-{i}".encode(), None, None) for i in range(50)])
    assert errors == [] and len(old) == 50
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.delete_topics(["gone"], operation_timeout=10)["gone"].result(timeout=15)
    # The same name again: a new topic id, while the old one's segments are
    # still in the log.
    wait_for(lambda: "gone" not in admin.list_topics(timeout=5).topics, what="topic deleted")
    create_topic(b.bootstrap, "gone", partitions=1)
    new, errors = produce(b.bootstrap, "gone", [(None, f"new-{i}".encode(), None, None) for i in range(5)])
    assert errors == [] and [o for _, o, _, _ in new] == list(range(5))
    b.kill9()
    b.start()
    consumed = consume_all(b.bootstrap, "gone", 1, 5)
    assert [(o, v) for _, o, _, v, _ in consumed] == [(i, f"new-{i}".encode()) for i in range(5)]
    assert len(consume_all(b.bootstrap, "gone", 1, 6, timeout=3)) == 5


def test_a_time_lookup_finds_records_only_the_log_holds(make_broker):
    from confluent_kafka import Consumer, Producer, TopicPartition
    b = make_broker(env=LOG)
    create_topic(b.bootstrap, "timed", partitions=1)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0})
    base = 1_700_000_000_000
    for i in range(30):
        p.produce("timed", value=f"t{i}".encode(), timestamp=base + i * 1000)
        p.flush(10)
    assert kfs(b, "timed") == []
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "timed"})
    try:
        got = c.offsets_for_times([TopicPartition("timed", 0, base + 12_500)], timeout=10)
        assert got[0].offset == 13
        # After the last record: no offset (the log end).
        got = c.offsets_for_times([TopicPartition("timed", 0, base + 99_000)], timeout=10)
        assert got[0].offset == -1
    finally:
        c.close()
