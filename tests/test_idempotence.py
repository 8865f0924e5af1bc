"""Idempotent producers (the default of Kafka 3+ clients): retries are not
written twice and sequence gaps are refused."""
from kafka import KafkaProducer

from clients import consume_all, create_topic, produce
from rawkafka import Conn, parse_produce_v3, produce_v3, record_batch

OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def test_a_retried_batch_is_not_written_twice(broker):
    create_topic(broker.bootstrap, "idem")
    c = Conn(broker.bootstrap)
    first = record_batch([b"a", b"b", b"c"], producer_id=4242, epoch=0, base_sequence=0)
    assert parse_produce_v3(c.call(produce_v3("idem", 0, first, correlation=1))) == (0, 0)
    # The same batch again, as a client retries after a lost response.
    assert parse_produce_v3(c.call(produce_v3("idem", 0, first, correlation=2))) == (0, 0)
    second = record_batch([b"d"], producer_id=4242, epoch=0, base_sequence=3)
    assert parse_produce_v3(c.call(produce_v3("idem", 0, second, correlation=3))) == (0, 3)
    gap = record_batch([b"x"], producer_id=4242, epoch=0, base_sequence=10)
    assert parse_produce_v3(c.call(produce_v3("idem", 0, gap, correlation=4)))[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
    c.close()
    consumed = consume_all(broker.bootstrap, "idem", 1, 4)
    assert [(o, v) for _, o, _, v, _ in consumed] == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]


def test_default_kafka_python_and_idempotent_librdkafka_producers(broker):
    create_topic(broker.bootstrap, "idem2", partitions=2)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)  # kafka-python 3: idempotent by default
    metas = [f.get(timeout=30) for f in [p.send("idem2", key=b"kp", value=f"kp{i}".encode()) for i in range(300)]]
    p.close()
    delivered, errors = produce(broker.bootstrap, "idem2", [(b"rd", f"rd{i}".encode(), None, None) for i in range(300)],
                                extra={"enable.idempotence": True})
    assert errors == [] and len(delivered) == 300 and len(metas) == 300
    consumed = consume_all(broker.bootstrap, "idem2", 2, 600)
    values = sorted(m[3] for m in consumed)
    assert values == sorted([f"kp{i}".encode() for i in range(300)] + [f"rd{i}".encode() for i in range(300)])
