"""The same guarantees on a real S3-compatible server (s3s-fs)."""
import time

import pytest

from clients import consume_all, create_topic, produce


@pytest.mark.parametrize("unsigned", [None, "true"], ids=["signed-payload", "unsigned-payload"])
def test_produce_consume_and_layout_on_s3(make_broker, s3, unsigned):
    env = s3.broker_env()
    if unsigned:
        env["KAFSCALE_S3_UNSIGNED_PAYLOAD"] = unsigned
    b = make_broker(env=env)
    create_topic(b.bootstrap, "s3topic", partitions=6)
    msgs = [(f"k{i % 20}".encode(), f"value-{i}".encode() * 10, None, None) for i in range(3000)]
    delivered, errors = produce(b.bootstrap, "s3topic", msgs)
    assert errors == [] and len(delivered) == 3000
    consumed = consume_all(b.bootstrap, "s3topic", 6, 3000)
    assert sorted((p, o, k, v) for p, o, k, v, _ in consumed) == sorted(delivered)
    kfs = sorted(s3.objects().rglob("*.kfs"))
    assert kfs and all(f.relative_to(s3.objects()).parts[:2] == ("default", "s3topic") for f in kfs)
    assert len(list(s3.objects().rglob("*.index"))) == len(kfs)
    assert not (b.data_dir / "objects").exists() or not list((b.data_dir / "objects").rglob("*.kfs"))


def test_kill9_on_s3_then_read_back_from_the_store(make_broker, s3):
    b = make_broker(env=dict(s3.broker_env(), KAFSCALE_SEGMENT_BYTES="65536"))
    create_topic(b.bootstrap, "s3crash", partitions=2)
    # Explicit partitions: the sticky partitioner may put every keyless message in one.
    delivered, errors = produce(b.bootstrap, "s3crash", [(None, (f"{i}-" * 100).encode(), None, i % 2) for i in range(3000)])
    assert errors == [] and len(delivered) == 3000
    b.kill9()
    b.start()
    # A fresh broker has an empty cache: everything is read back from S3 (with readahead).
    consumed = consume_all(b.bootstrap, "s3crash", 2, 3000)
    assert sorted((p, o, v) for p, o, _, v, _ in consumed) == sorted((p, o, v) for p, o, _, v in delivered)
    more, errors = produce(b.bootstrap, "s3crash", [(None, b"after", None, p) for p in range(2)])
    assert errors == []
    ends = {p: max(o for pp, o, *_ in delivered if pp == p) for p in range(2)}
    assert sorted((p, o) for p, o, _, _ in more) == [(p, ends[p] + 1) for p in range(2)]


def test_s3_outage_then_recovery(make_broker, s3):
    b = make_broker(env=s3.broker_env())
    create_topic(b.bootstrap, "outage")
    ok, errors = produce(b.bootstrap, "outage", [(None, b"before", None, None)])
    assert errors == [] and len(ok) == 1
    s3.stop()
    delivered, errors = produce(b.bootstrap, "outage", [(None, f"during-{i}".encode(), None, None) for i in range(10)],
                                extra={"message.timeout.ms": 3000, "request.timeout.ms": 2000})
    assert delivered == [], "acknowledged while S3 was down"
    s3.start()
    time.sleep(0.5)
    after, errors = produce(b.bootstrap, "outage", [(None, b"after", None, None)])
    assert errors == [] and len(after) == 1
    consumed = consume_all(b.bootstrap, "outage", 1, 2)
    values = [m[3] for m in consumed]
    assert b"before" in values and b"after" in values
    offs = [m[1] for m in consumed]
    assert offs == list(range(len(offs)))
