"""Per-partition order under load (issue 12): one librdkafka producer with its
defaults (acks=all, linger.ms=5, several requests in flight, not idempotent)
writes keyed messages while the machine is busy and partitions load slowly; every
key's messages must be stored in the order they were produced, and no produce
partition may be answered with an error (a retried batch lands behind later ones)."""
import json
import multiprocessing
import re
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

import clients
from clients import consume_all, wait_for

MESSAGES = 20_000
KEYS = 50


def _spin():
    while True:
        pass


class CpuLoad:
    """One busy process per core, so the broker's shards are preempted."""

    def __enter__(self):
        self.procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(multiprocessing.cpu_count())]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.join()


def produce_errors_in_trace(b):
    """Every (topic/partition, code) a produce answer carried that was not 0, from
    the KAFSCALE_TRACE_KAFKA lines; also how many produce lines were seen."""
    bad, seen = [], 0
    for line in b.log().splitlines():
        if not line.startswith("{"):
            continue
        f = json.loads(line).get("fields", {})
        if f.get("message") != "kafka request" or f.get("api") != "Produce":
            continue
        seen += 1
        for part, code in re.findall(r"(\S+)=(-?\d+)@", f.get("partitions", "")):
            if code != "0":
                bad.append((part, int(code)))
    return bad, seen


@pytest.mark.parametrize("store", ["local", "s3"])
def test_keyed_order_survives_a_busy_machine_and_slow_loads(make_broker, request, tmp_path, store):
    faults = tmp_path / "faults"
    env = {"KAFSCALE_FAULTS_FILE": str(faults), "KAFSCALE_LOG_FORMAT": "json", "KAFSCALE_TRACE_KAFKA": "true"}
    if store == "s3":
        env.update(request.getfixturevalue("s3").broker_env())
    b = make_broker(env=env)
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("ordered", num_partitions=3, replication_factor=1)])["ordered"].result(30)

    def listed():
        md = admin.list_topics("ordered", timeout=5)
        t = md.topics.get("ordered")
        return t is not None and t.error is None and len(t.partitions) == 3 and all(p.leader >= 0 for p in t.partitions.values())

    wait_for(listed, timeout=30, what="the topic in Metadata with leaders")

    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5, "message.timeout.ms": 60000})
    d = clients.Deliveries()
    delivered, errors = d.delivered, d.errors

    def send(key, value, partition=None):
        clients.send(p, "ordered", key, value, d.cb, partition=partition)

    # Phase 1, the overtaking case: partition 2 is loaded, partition 0 loads slowly.
    # The first request carries both; the next ones carry only partition 2 and must
    # not be appended before the first one.
    send(b"warm", b"-1", partition=2)
    assert p.flush(30) == 0 and errors == []
    faults.write_text("list=slow:400 get=slow:100")
    time.sleep(0.2)  # the broker re-reads the faults file every 50 ms
    send(b"cold", b"0", partition=0)
    send(b"p2", b"0", partition=2)
    for i in range(1, 40):
        time.sleep(0.01)
        send(b"p2", str(i).encode(), partition=2)
    assert p.flush(30) == 0 and errors == []

    # Phase 2: keyed messages from the same producer while every core is busy;
    # partition 1's first load is slow too.
    msgs = [(f"key-{i % KEYS}".encode(), f"{i}".encode()) for i in range(MESSAGES)]
    with CpuLoad():
        for k, v in msgs:
            send(k, v)
        assert p.flush(60) == 0
    assert errors == []
    faults.write_text("none")
    total = 1 + 1 + 40 + MESSAGES
    assert len(delivered) == total

    consumed = consume_all(b.bootstrap, "ordered", 3, total)
    assert len(consumed) == total
    # The producer's own order per key is the order of the values; stored order is by offset.
    by_key = {}
    for part, o, k, v, _ in sorted(consumed, key=lambda m: (m[0], m[1])):
        by_key.setdefault(k, []).append(int(v))
    assert by_key[b"p2"] == list(range(40)), "partition 2's batches were appended out of order"
    assert len(by_key) == KEYS + 3
    for k, seq in by_key.items():
        assert seq == sorted(seq), f"{k!r} stored out of order: first inversion at {next(i for i in range(1, len(seq)) if seq[i] < seq[i - 1])}"
    # Delivery reports and stored offsets agree.
    assert sorted((part, o, v) for part, o, _, v in delivered) == sorted((part, o, v) for part, o, _, v, _ in consumed)
    bad, seen = produce_errors_in_trace(b)
    assert seen > 0 and bad == []
