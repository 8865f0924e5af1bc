"""The HTTP endpoint: /metrics counts what the clients did, /healthz and /readyz
follow the process and the object store."""
import time

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
            assert m[("kafscale_request_duration_seconds_bucket", labels + (("le", "+Inf"),))] == v
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

    def levels():
        m = b.metrics()
        return [m[(name, (("shard", str(s)),))] for s in range(2)
                for name in ("kafscale_buffered_bytes", "kafscale_upload_queue_depth", "kafscale_uploads_in_flight")]
    assert poll(levels, [0.0] * 6) == [0.0] * 6

    # Counters only grow, and a second scrape sees the same topics.
    m2 = b.metrics()
    assert m2[("kafscale_requests_total", (("api", "Produce"),))] >= produce_reqs
    assert m2[("kafscale_produce_bytes_total", (("topic", "mtopic"),))] == m[("kafscale_produce_bytes_total", (("topic", "mtopic"),))]


def test_health_and_readiness_follow_the_object_store(make_broker, s3):
    b = make_broker(env=s3.broker_env())
    assert b.http_get("/healthz") == (200, "ok\n")
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
