"""Object-store faults, injected through the broker's own store wrapper
(KAFSCALE_FAULTS_FILE): nothing is acknowledged before it is durable, uploads
are retried, memory stays bounded, and the broker recovers by itself."""
import threading
import time

from confluent_kafka import Producer

from clients import consume_all, create_topic, produce


def faulty_broker(make_broker, tmp_path, fault, env=None):
    ctl = tmp_path / "faults"
    ctl.write_text(fault)
    e = {"KAFSCALE_FAULTS_FILE": str(ctl)}
    e.update(env or {})
    return make_broker(env=e), ctl


def check_recovery(b, ctl, topic, partitions, lost):
    """Clears the fault; new writes succeed and every acknowledged write is readable."""
    ctl.write_text("none")
    delivered, errors = produce(b.bootstrap, topic, [(None, f"after-{i}".encode(), None, None) for i in range(100)])
    assert errors == [] and len(delivered) == 100
    # The un-acknowledged writes were retried by the broker and may be there too.
    consumed = consume_all(b.bootstrap, topic, partitions, 100 + lost, timeout=30)
    values = {m[3] for m in consumed}
    assert {v for *_, v in delivered} <= values
    for p in range(partitions):
        offs = sorted(o for pp, o, *_ in consumed if pp == p)
        assert offs == list(range(len(offs)))


def test_failing_puts_are_never_acknowledged(make_broker, tmp_path):
    b, ctl = faulty_broker(make_broker, tmp_path, "put=fail")
    create_topic(b.bootstrap, "f1", partitions=2)
    delivered, errors = produce(b.bootstrap, "f1", [(None, f"during-{i}".encode(), None, None) for i in range(50)],
                                extra={"message.timeout.ms": 3000, "request.timeout.ms": 2000})
    assert delivered == [], "acknowledged while the store was failing"
    assert len(errors) == 50
    assert "segment upload failed; retrying" in b.log()
    check_recovery(b, ctl, "f1", 2, 50)


def test_hanging_puts_are_never_acknowledged(make_broker, tmp_path):
    b, ctl = faulty_broker(make_broker, tmp_path, "put=hang")
    create_topic(b.bootstrap, "f2")
    delivered, errors = produce(b.bootstrap, "f2", [(None, f"during-{i}".encode(), None, None) for i in range(20)],
                                extra={"message.timeout.ms": 3000, "request.timeout.ms": 2000})
    assert delivered == [] and len(errors) == 20
    check_recovery(b, ctl, "f2", 1, 20)


def test_slow_puts_still_succeed(make_broker, tmp_path):
    b, ctl = faulty_broker(make_broker, tmp_path, "put=slow:200")
    create_topic(b.bootstrap, "f3", partitions=3)
    delivered, errors = produce(b.bootstrap, "f3", [(None, f"slow-{i}".encode(), None, None) for i in range(300)])
    assert errors == [] and len(delivered) == 300
    consumed = consume_all(b.bootstrap, "f3", 3, 300)
    assert sorted(m[3] for m in consumed) == sorted(v for *_, v in delivered)


def test_memory_stays_bounded_while_the_store_fails(make_broker, tmp_path):
    b, ctl = faulty_broker(make_broker, tmp_path, "put=fail", env={
        "KAFSCALE_SEGMENT_BYTES": str(1 << 20),
        "KAFSCALE_MAX_BUFFERED_BYTES": str(16 << 20),
    })
    create_topic(b.bootstrap, "f4", partitions=4)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "1", "linger.ms": 5, "message.timeout.ms": 15000,
                  "request.timeout.ms": 2000, "queue.buffering.max.kbytes": 1 << 20})
    results = {"ok": 0, "err": 0}

    def cb(err, msg):
        results["err" if err else "ok"] += 1

    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], b.rss_kib())
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    value = b"m" * 1024
    sent = 0
    deadline = time.time() + 12
    while sent < 200_000 and time.time() < deadline:  # up to ~200 MB offered
        try:
            p.produce("f4", value=value, on_delivery=cb)
            sent += 1
        except BufferError:
            p.poll(0.05)
        if sent % 1000 == 0:
            p.poll(0)
    p.flush(30)
    stop.set()
    t.join()
    assert b.alive()
    # Far less was accepted than offered: the broker refused once its buffers were full.
    assert results["ok"] * 1024 < 40 << 20, results
    assert results["err"] > 0
    assert peak[0] < 512 * 1024, f"broker RSS peaked at {peak[0]} KiB"
    check_recovery(b, ctl, "f4", 4, results["ok"] + sent)
