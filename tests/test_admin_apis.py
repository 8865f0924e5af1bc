"""The admin APIs that kafka-ui, AKHQ and the Kafka CLI tools use, with real admin
clients (confluent-kafka's AdminClient, kafka-python's KafkaAdminClient):
DescribeCluster, DescribeLogDirs (bytes per partition from the store),
DeleteRecords (log start moved durably, owner-only and surviving a failover in a
cluster), DescribeProducers, DescribeTopicPartitions (paged), ElectLeaders and
ListPartitionReassignments.

Assertions are on data (offsets, byte counts, broker ids, error codes); the only
waits are bounded polls for a state."""
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import ElectionType
from confluent_kafka.admin import AdminClient
import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import GroupIdNotFoundError
from kafka.protocol.admin import DeleteRecordsRequest, DeleteRecordsResponse
from kafka.structs import TopicPartition as KTP

from clients import create_topic, produce, wait_for
from rawkafka import Conn
from test_admin import admin, earliest_latest, produce_rounds, segments
from test_cluster import metadata


def kp_admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap)


def values_from(b, topic, partition=0):
    """Every value a consumer reads from the log start on."""
    c = Consumer({"bootstrap.servers": b, "group.id": "kafscale-tests-unused", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    c.assign([TopicPartition(topic, partition, lo)])
    out = []
    try:
        while len(out) < hi - lo:
            for m in c.consume(100, 1.0):
                assert m.error() is None, m.error()
                out.append((m.offset(), m.value()))
    finally:
        c.close()
    return out


def test_describe_cluster(broker):
    b = broker
    a = admin(b)  # kept alive until the answer is in
    d = a.describe_cluster(include_authorized_operations=False).result(timeout=15)
    assert d.cluster_id and d.controller.id == 0
    assert [(n.id, n.host, n.port) for n in d.nodes] == [(0, "127.0.0.1", b.port)]
    k = kp_admin(b.bootstrap)
    try:
        got = k.describe_cluster()
    finally:
        k.close()
    assert got["cluster_id"] == d.cluster_id and got["controller_id"] == 0
    assert [(x["broker_id"], x["port"]) for x in got["brokers"]] == [(0, b.port)]


def test_delete_records_moves_the_log_start_durably(broker):
    b = broker
    create_topic(b.bootstrap, "dr", 2)
    produce_rounds(b, "dr", 2, per_round=5)  # at least two segments: 0-4 and 5-9
    produce(b.bootstrap, "dr", [(None, b"p1", None, 1)])
    before = segments(b, "dr")
    bases = [int(n.split("-")[1].split(".")[0]) for n in before]
    assert len(before) >= 2 and bases[0] == 0 and 5 in bases
    # Group commit may cut a round into several segments; the ones wholly below
    # offset 6 (the next one starts at or below it) go, the others stay.
    kept = [n for i, n in enumerate(before) if i + 1 == len(before) or bases[i + 1] > 6]
    assert kept and len(kept) < len(before)
    a = admin(b)
    res = a.delete_records([TopicPartition("dr", 0, 6)])
    got = next(iter(res.values())).result(timeout=15)
    assert got.low_watermark == 6
    assert earliest_latest(b, "dr") == (6, 10)
    assert [o for o, _ in values_from(b.bootstrap, "dr")] == [6, 7, 8, 9]
    # The segment wholly below the new start is gone from the store; the other stays.
    wait_for(lambda: segments(b, "dr") == kept, timeout=20)
    assert earliest_latest(b, "dr", 1) == (0, 1)  # the other partition is untouched
    # Beyond the high watermark: OFFSET_OUT_OF_RANGE; below the start: nothing moves.
    res = a.delete_records([TopicPartition("dr", 0, 11)])
    try:
        next(iter(res.values())).result(timeout=15)
        raise AssertionError("deleting past the high watermark succeeded")
    except KafkaException as e:
        assert e.args[0].code() == 1  # OFFSET_OUT_OF_RANGE
    k = kp_admin(b.bootstrap)
    try:
        out = k.delete_records({KTP("dr", 0): 3})
        assert out[KTP("dr", 0)]["low_watermark"] == 6
    finally:
        k.close()
    # Durable: a restart keeps the start inside the segment.
    b.restart()
    assert earliest_latest(b, "dr") == (6, 10)
    assert [o for o, _ in values_from(b.bootstrap, "dr")] == [6, 7, 8, 9]
    # -1: up to the high watermark.
    a = admin(b)
    res = a.delete_records([TopicPartition("dr", 0, -1)])
    assert next(iter(res.values())).result(timeout=15).low_watermark == 10
    assert earliest_latest(b, "dr") == (10, 10)


def test_delete_records_in_a_cluster_is_owner_only_and_survives_failover(cluster):
    c = cluster(2)
    create_topic(c[1].bootstrap, "cdr", 1)
    wait_for(lambda: all(metadata(x)["topics"].get("cdr", {}).get(0, (-1,))[0] in c.ids() for x in c.live()),
             what="a leader for cdr/0")
    p = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "linger.ms": 0})
    for i in range(8):
        p.produce("cdr", value=b"v%d" % i, partition=0)
    assert p.flush(30) == 0
    owner = metadata(c[1])["topics"]["cdr"][0][0]
    other = next(i for i in c.ids() if i != owner)
    # The broker that does not own the partition refuses: NOT_LEADER_OR_FOLLOWER.
    conn = Conn(c[other].bootstrap)
    try:
        req = DeleteRecordsRequest[1](topics=[("cdr", [(0, 5)])], timeout_ms=5000)
        req.with_header(correlation_id=1, client_id="t")
        r = DeleteRecordsResponse[1].decode(conn.call(req.encode(header=True, framed=True)), header=True,
                                            framed=True)
        assert [(x[0], x[2]) for x in r.topics[0][1]] == [(0, 6)]
    finally:
        conn.close()
    a = AdminClient({"bootstrap.servers": c.bootstrap()})
    got = next(iter(a.delete_records([TopicPartition("cdr", 0, 5)]).values())).result(timeout=15)
    assert got.low_watermark == 5
    # The owner goes; the other broker takes the partition over from the store and etcd.
    c.kill9(owner)
    survivor = c[other].bootstrap
    wait_for(lambda: metadata(c[other])["topics"].get("cdr", {}).get(0, (-1,))[0] == other, timeout=60,
             what="the survivor leads cdr/0")
    wait_for(lambda: earliest_latest_at(survivor, "cdr") == (5, 8), timeout=30, what="log start 5 after failover")
    assert [o for o, _ in values_from(survivor, "cdr")] == [5, 6, 7]


def earliest_latest_at(bootstrap, topic, partition=0):
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafscale-tests-unused"})
    try:
        return cons.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    except KafkaException:
        return None
    finally:
        cons.close()


def test_describe_log_dirs_reports_bytes_from_the_store(broker):
    b = broker
    create_topic(b.bootstrap, "ld", 2)
    produce_rounds(b, "ld", 2, per_round=20, partition=1)
    k = kp_admin(b.bootstrap)
    try:
        got = k.describe_log_dirs()
    finally:
        k.close()
    dirs = got[0] if isinstance(got, dict) and 0 in got else got
    text = repr(dirs)
    assert "ld" in text
    store = sum((b.objects / "default" / "ld" / "1" / s).stat().st_size for s in segments(b, "ld", 1))
    assert store > 0
    sizes = log_dir_sizes(dirs)
    assert sizes[("ld", 1)] == store
    assert sizes[("ld", 0)] == 0


def log_dir_sizes(dirs):
    """{(topic, partition): size} from kafka-python's describe_log_dirs answer."""
    out = {}

    def walk(x):
        if isinstance(x, dict):
            if "topics" in x:
                for t in x["topics"]:
                    for p in t["partitions"]:
                        out[(t["name"], p["partition_index"])] = p["partition_size"]
            else:
                for v in x.values():
                    walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
    walk(dirs)
    return out


def test_describe_producers(broker):
    b = broker
    create_topic(b.bootstrap, "idem", 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True, "linger.ms": 0})
    for i in range(5):
        p.produce("idem", value=b"v%d" % i, partition=0)
        assert p.flush(30) == 0
    k = kp_admin(b.bootstrap)
    try:
        got = k.describe_producers([KTP("idem", 0)])
    finally:
        k.close()
    state = got[KTP("idem", 0)]
    producers = state.active_producers if hasattr(state, "active_producers") else state["active_producers"]
    assert len(producers) == 1
    ps = producers[0]
    get = (lambda k: getattr(ps, k)) if hasattr(ps, "producer_id") else (lambda k: ps[k])
    assert get("producer_id") >= 0 and get("producer_epoch") == 0 and get("last_sequence") == 4
    assert get("coordinator_epoch") == -1 and get("current_transaction_start_offset") == -1


def test_describe_topic_partitions_pages(broker):
    b = broker
    create_topic(b.bootstrap, "pa", 3)
    create_topic(b.bootstrap, "pb", 2)
    k = kp_admin(b.bootstrap)
    try:
        first = k.describe_topic_partitions(["pb", "pa", "nope"], response_partition_limit=4)
        text = repr(first)
    finally:
        k.close()
    assert "pa" in text and "pb" in text


def test_elect_leaders_and_reassignments(broker):
    b = broker
    create_topic(b.bootstrap, "el", 2)
    a = admin(b)
    fut = a.elect_leaders(ElectionType.PREFERRED, [TopicPartition("el", 0), TopicPartition("el", 1)])
    res = fut.result(timeout=15)
    # The only replica already leads: ELECTION_NOT_NEEDED (84) for each.
    assert {tp.partition: (err.code() if err else 0) for tp, err in res.items()} == {0: 84, 1: 84}
    k = kp_admin(b.bootstrap)
    try:
        assert not k.list_partition_reassignments()
    finally:
        k.close()


def test_offset_delete(broker):
    b = broker
    create_topic(b.bootstrap, "od", 2)
    create_topic(b.bootstrap, "od2", 1)
    produce(b.bootstrap, "od", [(None, b"v", None, p) for p in (0, 1)])
    a = admin(b)
    from confluent_kafka import ConsumerGroupTopicPartitions
    a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions("odg", [
        TopicPartition("od", 0, 1), TopicPartition("od", 1, 1), TopicPartition("od2", 0, 0)])])["odg"].result(timeout=15)
    k = kp_admin(b.bootstrap)
    try:
        got = k.delete_group_offsets("odg", [KTP("od", 0), KTP("od", 5)])
        codes = {tp: (e.errno if e else 0) for tp, e in got.items()} if isinstance(got, dict) else got
        assert codes[KTP("od", 0)] == 0 and codes[KTP("od", 5)] == 3, codes
        left = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("odg")])["odg"].result(timeout=15)
        assert sorted((tp.topic, tp.partition, tp.offset) for tp in left.topic_partitions if tp.offset >= 0) == \
            [("od", 1, 1), ("od2", 0, 0)]
        # A live consumer-protocol member subscribed to od: its partitions stay.
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "odg", "enable.auto.commit": False})
        c.subscribe(["od"])
        try:
            wait_for(lambda: c.poll(0.2) is None and bool(c.assignment()) or bool(c.assignment()), timeout=30,
                     what="odg member assigned")
            got = k.delete_group_offsets("odg", [KTP("od", 1), KTP("od2", 0)])
            codes = {tp: (e.errno if e else 0) for tp, e in got.items()}
            assert codes == {KTP("od", 1): 86, KTP("od2", 0): 0}, codes
        finally:
            c.close()
        with pytest.raises(GroupIdNotFoundError):
            k.delete_group_offsets("no-such-group", [KTP("od", 0)])
    finally:
        k.close()
