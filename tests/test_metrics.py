"""The HTTP endpoint: /metrics counts what the clients did, /healthz (every shard) and /readyz
follow the process and the object store; the object store's health state and what
the broker does while the store is unavailable; consumer-group lag."""
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from clients import consume_all, create_topic, produce


def poll(fn, want, timeout=30):
    """Calls fn() until it returns something equal to want; returns the last value."""
    deadline = time.time() + timeout
    got = fn()
    while got != want and time.time() < deadline:
        time.sleep(0.1)
        got = fn()
    return got


def test_metrics_count_produce_fetch_and_uploads(make_broker):
    b = make_broker()
    n, size = 500, 200
    create_topic(b.bootstrap, "mtopic", partitions=4)
    msgs = [(None, bytes([65 + i % 26]) * size, None, i % 4) for i in range(n)]
    delivered, errors = produce(b.bootstrap, "mtopic", msgs)
    assert errors == [] and len(delivered) == n
    consumed = consume_all(b.bootstrap, "mtopic", 4, n)
    assert len(consumed) == n

    m = b.metrics()
    payload = n * size
    assert m[("kafscale_produce_bytes_total", (("topic", "mtopic"),))] >= payload
    assert m[("kafscale_fetch_bytes_total", (("topic", "mtopic"),))] >= payload
    produce_reqs = m[("kafscale_requests_total", (("api", "Produce"),))]
    assert produce_reqs > 0
    assert m[("kafscale_requests_total", (("api", "Fetch"),))] > 0
    assert m[("kafscale_requests_total", (("api", "CreateTopics"),))] == 1
    # Every request lands in exactly one histogram bucket.
    for (name, labels), v in m.items():
        if name == "kafscale_requests_total":
            assert m[("kafscale_request_duration_seconds_count", labels)] == v
            assert m[("kafscale_request_duration_seconds_bucket", tuple(sorted(labels + (("le", "+Inf"),))))] == v
    # CreateTopics is an admin request, and it succeeded.
    assert m[("kafscale_admin_requests_total", (("api", "CreateTopics"),))] == 1
    assert m[("kafscale_admin_request_errors_total", (("api", "CreateTopics"),))] == 0
    assert m[("kafscale_produce_rps", ())] > 0
    assert m[("kafscale_shards", ())] == 2
    assert m[("kafscale_open_connections", ())] >= 0

    # acks=all: every acknowledged batch is in the store, so the PUTs so far are
    # exactly one .kfs and one .index per segment, none failed.
    kfs = list(b.objects.rglob("*.kfs"))
    assert kfs
    assert m[("kafscale_object_store_requests_total", (("operation", "put"),))] == 2 * len(kfs)
    assert m[("kafscale_object_store_errors_total", (("operation", "put"),))] == 0
    assert m[("kafscale_object_store_requests_total", (("operation", "list"),))] >= 1
    # Every finished PUT is in the latency histogram.
    put = (("operation", "put"),)
    assert m[("kafscale_object_store_request_duration_seconds_count", put)] == 2 * len(kfs)
    assert m[("kafscale_object_store_request_duration_seconds_bucket", (("le", "+Inf"),) + put)] == 2 * len(kfs)
    assert m[("kafscale_s3_health_state", (("state", "healthy"),))] == 1
    assert m[("kafscale_s3_health_state", (("state", "unavailable"),))] == 0
    # acks=all: everything appended is durable, per partition.
    for p in range(4):
        part = (("partition", str(p)), ("topic", "mtopic"))
        assert m[("kafscale_partition_high_watermark", part)] == n // 4
        assert m[("kafscale_partition_log_end_offset", part)] == n // 4
        assert m[("kafscale_high_watermark_lag", part)] == 0
    assert m[("kafscale_connections_accepted_total", ())] >= 2

    def levels():
        m = b.metrics()
        return [m[(name, (("shard", str(s)),))] for s in range(2)
                for name in ("kafscale_buffered_bytes", "kafscale_upload_queue_depth", "kafscale_uploads_in_flight",
                             "kafscale_upload_queue_segments", "kafscale_upload_queue_bytes")]
    assert poll(levels, [0.0] * 10) == [0.0] * 10

    # Counters only grow, and a second scrape sees the same topics.
    m2 = b.metrics()
    assert m2[("kafscale_requests_total", (("api", "Produce"),))] >= produce_reqs
    assert m2[("kafscale_produce_bytes_total", (("topic", "mtopic"),))] == m[("kafscale_produce_bytes_total", (("topic", "mtopic"),))]


def test_health_and_readiness_follow_the_object_store(make_broker, s3):
    b = make_broker(env=s3.broker_env())
    # Liveness asks every shard and lists their answers.
    assert b.http_get("/healthz") == (200, "ok\nshard 0: ok\nshard 1: ok\n")
    assert poll(lambda: b.http_get("/readyz")[0], 200) == 200
    assert b.http_get("/nope")[0] == 404

    s3.stop()
    status, reason = poll(lambda: b.http_get("/readyz")[0], 503), b.http_get("/readyz")[1]
    assert status == 503
    assert "object store unreachable" in reason
    # Still alive, and the failed probes show up as LIST errors.
    assert b.http_get("/healthz")[0] == 200
    assert b.metrics()[("kafscale_object_store_errors_total", (("operation", "list"),))] > 0

    s3.start()
    assert poll(lambda: b.http_get("/readyz"), (200, "ready\n")) == (200, "ready\n")


def test_metrics_content_type_is_openmetrics(make_broker):
    import urllib.request
    b = make_broker()
    with urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        body = r.read().decode()
    assert body.endswith("# EOF\n")
    assert "# TYPE kafscale_requests counter" in body


def health(b):
    m = b.metrics()
    return [s for s in ("healthy", "degraded", "unavailable") if m[("kafscale_s3_health_state", (("state", s),))] == 1]


def produce_once(bootstrap, topic, value):
    """One message with no client retries: the broker's own error code, or None."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0,
                  "message.timeout.ms": 5000, "request.timeout.ms": 3000})
    errs = []
    p.produce(topic, value=value, on_delivery=lambda err, msg: errs.append(err))
    assert p.flush(15) == 0
    return errs[0]


def test_unavailable_store_refuses_produce_with_a_retriable_error_and_recovers(make_broker, s3):
    from kafka.errors import for_code
    b = make_broker(env=s3.broker_env())
    create_topic(b.bootstrap, "s3h", partitions=2)
    before = [(None, f"before-{i}".encode() * 10, None, i % 2) for i in range(40)]
    ok, errors = produce(b.bootstrap, "s3h", before)
    assert errors == [] and len(ok) == 40
    assert health(b) == ["healthy"]

    s3.stop()
    # The health probe and the upload retries fail; within a few attempts (the
    # first ones may still be appended and time out waiting for durability) the
    # broker refuses produce requests outright.
    codes = []
    for i in range(20):
        err = produce_once(b.bootstrap, "s3h", f"during-{i}".encode())
        assert err is not None, "acknowledged while S3 was down"
        codes.append(err.code())
        if err.code() == KafkaError.KAFKA_STORAGE_ERROR:
            break
    assert codes[-1] == KafkaError.KAFKA_STORAGE_ERROR, codes
    assert set(codes) <= {KafkaError.REQUEST_TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError.KAFKA_STORAGE_ERROR}
    # The code every Kafka client treats as retriable.
    assert for_code(KafkaError.KAFKA_STORAGE_ERROR).retriable
    assert health(b) == ["unavailable"]
    status, reason = b.http_get("/readyz")
    assert status == 503 and "object store" in reason
    # Refused, not buffered: nothing else is appended while the store is away.
    m = b.metrics()
    ends = [m[("kafscale_partition_log_end_offset", (("partition", str(p)), ("topic", "s3h")))] for p in range(2)]
    assert produce_once(b.bootstrap, "s3h", b"refused").code() == KafkaError.KAFKA_STORAGE_ERROR
    m = b.metrics()
    assert [m[("kafscale_partition_log_end_offset", (("partition", str(p)), ("topic", "s3h")))]
            for p in range(2)] == ends

    # Same port, same directory: the broker notices by itself.
    s3.start()
    after, errors = produce(b.bootstrap, "s3h", [(None, b"after", None, 0)])
    assert errors == [] and len(after) == 1
    assert poll(lambda: health(b), ["healthy"]) == ["healthy"]
    assert poll(lambda: b.http_get("/readyz"), (200, "ready\n")) == (200, "ready\n")
    # Everything acknowledged before the outage is intact, byte for byte. Attempts
    # appended before the broker started refusing were uploaded by its retries.
    def durable():
        m = b.metrics()
        return sum(m[("kafscale_high_watermark_lag", (("partition", str(p)), ("topic", "s3h")))] for p in range(2))
    assert poll(durable, 0) == 0
    m = b.metrics()
    total = int(sum(m[("kafscale_partition_high_watermark", (("partition", str(p)), ("topic", "s3h")))]
                    for p in range(2)))
    assert 41 <= total <= 41 + len(codes)
    consumed = consume_all(b.bootstrap, "s3h", 2, total, timeout=30)
    assert len(consumed) == total
    got = {(m[0], m[1]): m[3] for m in consumed}
    for p, off, _, value in ok:
        assert got[(p, off)] == value
    assert b"after" in got.values()
    assert b"refused" not in got.values()
    for p in range(2):
        offs = sorted(o for pp, o in got if pp == p)
        assert offs == list(range(len(offs)))


def test_consumer_group_lag_is_high_watermark_minus_committed_offset(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "lagged", partitions=3)
    counts = {0: 10, 1: 6, 2: 3}
    msgs = [(None, f"{p}-{i}".encode(), None, p) for p, n in counts.items() for i in range(n)]
    delivered, errors = produce(b.bootstrap, "lagged", msgs)
    assert errors == [] and len(delivered) == sum(counts.values())

    # A consumer that assigns partitions itself commits behind the high watermark
    # (partition 2 is never committed).
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "lag-group", "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("lagged", 0, 4), TopicPartition("lagged", 1, 6)], asynchronous=False)
    finally:
        c.close()

    m = b.metrics()

    def key(p, group="lag-group"):
        return (("group", group), ("partition", str(p)), ("topic", "lagged"))

    for p, n in counts.items():
        assert m[("kafscale_partition_high_watermark", (("partition", str(p)), ("topic", "lagged")))] == n
    assert m[("kafscale_consumer_group_committed_offset", key(0))] == 4
    assert m[("kafscale_consumer_group_committed_offset", key(1))] == 6
    assert m[("kafscale_consumer_group_lag", key(0))] == 6
    assert m[("kafscale_consumer_group_lag", key(1))] == 0
    assert ("kafscale_consumer_group_lag", key(2)) not in m
    assert m[("kafscale_consumer_group_members", (("group", "lag-group"),))] == 0
    assert m[("kafscale_consumer_lag_max", ())] == 6

    # More data raises the lag by exactly what was appended; a new commit lowers it.
    more, errors = produce(b.bootstrap, "lagged", [(None, b"x", None, 1)] * 5)
    assert errors == [] and len(more) == 5
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "lag-group", "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("lagged", 0, 10)], asynchronous=False)
    finally:
        c.close()
    m = b.metrics()
    assert m[("kafscale_consumer_group_lag", key(0))] == 0
    assert m[("kafscale_consumer_group_lag", key(1))] == 5
    assert m[("kafscale_consumer_lag_max", ())] == 5
