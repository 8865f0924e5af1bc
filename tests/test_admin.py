"""Ops and admin APIs with real admin clients (confluent-kafka's AdminClient and
kafka-python's KafkaAdminClient): group visibility and cleanup, topic configs
(read, AlterConfigs, IncrementalAlterConfigs, rejections), CreatePartitions,
retention enforced in the object store, ListOffsets by timestamp,
OffsetForLeaderEpoch and the advertised API versions.

Assertions are on data (offsets, config values, error codes, object counts);
the only waits are bounded polls for a state (retention's deletion)."""
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions)
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.protocol.old import api_versions as kapi
from kafka.protocol.old import offset_for_leader_epoch as kofe
from kafka.structs import TopicPartition as KTP

from clients import consume_all, create_topic, produce
from test_groups import Raw, wait_for

RETENTION_ENV = {"KAFSCALE_RETENTION_CHECK_INTERVAL_MS": "100"}


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap})


def kp_admin(b):
    return KafkaAdminClient(bootstrap_servers=b.bootstrap)


def topic_configs(b, topic):
    a = admin(b)  # kept alive until the answer is in
    fut = a.describe_configs([ConfigResource("topic", topic)])
    return next(iter(fut.values())).result(timeout=15)


def error_code(fut):
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=15)
    return e.value.args[0].code()


def segments(b, topic, partition=0, suffix=".kfs"):
    d = b.objects / "default" / topic / str(partition)
    return sorted(p.name for p in d.glob(f"*{suffix}")) if d.exists() else []


def produce_rounds(b, topic, rounds, per_round=5, partition=0, timestamps=None):
    """Each round is flushed on its own, so it becomes (at least) one segment."""
    out = []
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0})
    for r in range(rounds):
        for i in range(per_round):
            kw = {"partition": partition}
            if timestamps is not None:
                kw["timestamp"] = timestamps[r * per_round + i]
            p.produce(topic, value=f"r{r}-{i}".encode(), **kw)
        assert p.flush(30) == 0
        out.append(r)
    return out


def earliest_latest(b, topic, partition=0):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "kafscale-tests-unused"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


# ---- configs ----

def test_describe_and_alter_topic_configs_confluent(broker):
    b = broker
    create_topic(b.bootstrap, "cfg", 1, {"retention.ms": "600000"})
    cfg = topic_configs(b, "cfg")
    # Every standard Kafka topic config (kafscale_proto::topic_config).
    assert {"retention.ms", "retention.bytes", "segment.bytes", "cleanup.policy", "max.message.bytes",
            "min.insync.replicas", "message.timestamp.type", "unclean.leader.election.enable"} <= set(cfg)
    assert len(cfg) == 33
    assert cfg["retention.ms"].value == "600000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["retention.bytes"].value == "-1"
    assert cfg["segment.bytes"].value == str(8 << 20)
    assert cfg["cleanup.policy"].value == "delete"
    a = admin(b)

    # AlterConfigs replaces the whole set: retention.ms reverts to its default.
    res = ConfigResource("topic", "cfg", set_config={"retention.bytes": "1048576"})
    next(iter(a.alter_configs([res]).values())).result(timeout=15)
    cfg = topic_configs(b, "cfg")
    assert (cfg["retention.bytes"].value, cfg["retention.ms"].value) == ("1048576", "-1")

    # IncrementalAlterConfigs: SET one key, DELETE another.
    res = ConfigResource("topic", "cfg", incremental_configs=[
        ConfigEntry("segment.bytes", "65536", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    next(iter(a.incremental_alter_configs([res]).values())).result(timeout=15)
    cfg = topic_configs(b, "cfg")
    assert (cfg["segment.bytes"].value, cfg["retention.bytes"].value) == ("65536", "-1")

    def incr(key, value, op=AlterConfigOpType.SET, rtype="topic", name="cfg"):
        res = ConfigResource(rtype, name, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=op)])
        return next(iter(a.incremental_alter_configs([res]).values()))

    assert error_code(incr("max.message.bytes", "-1")) == KafkaError.INVALID_CONFIG
    assert error_code(incr("no.such.config", "1")) == KafkaError.INVALID_CONFIG
    assert error_code(incr("retention.ms", "-2")) == KafkaError.INVALID_CONFIG
    assert error_code(incr("retention.ms", "soon")) == KafkaError.INVALID_CONFIG
    assert error_code(incr("segment.bytes", "0")) == KafkaError.INVALID_CONFIG
    assert error_code(incr("cleanup.policy", "shred")) == KafkaError.INVALID_CONFIG
    assert error_code(incr("retention.ms", "5", op=AlterConfigOpType.APPEND)) == KafkaError.INVALID_CONFIG
    assert error_code(incr("kafscale.segment.bytes", "1", rtype="broker", name="0")) == KafkaError.INVALID_CONFIG
    assert error_code(incr("retention.ms", "1", name="nope")) == KafkaError.UNKNOWN_TOPIC_OR_PART
    bad = ConfigResource("broker", "0", set_config={"kafscale.cache.bytes": "1"})
    assert error_code(next(iter(a.alter_configs([bad]).values()))) == KafkaError.INVALID_CONFIG
    # Nothing of the rejected changes stuck.
    cfg = topic_configs(b, "cfg")
    assert (cfg["segment.bytes"].value, cfg["retention.ms"].value, cfg["cleanup.policy"].value) == \
        ("65536", "-1", "delete")

    # Broker configs: read-only, under the kafscale.* names.
    fut = a.describe_configs([ConfigResource("broker", "0")])
    bcfg = next(iter(fut.values())).result(timeout=15)
    assert bcfg["broker.id"].value == "0"
    assert bcfg["kafscale.segment.bytes"].value == str(8 << 20)
    assert bcfg["kafscale.flush.interval.ms"].value == "20"
    assert bcfg["advertised.listeners"].value == f"PLAINTEXT://127.0.0.1:{b.port}"
    assert all(e.is_read_only for e in bcfg.values())

    # Configs survive a restart (they live in the metadata store).
    b.restart()
    assert topic_configs(b, "cfg")["segment.bytes"].value == "65536"


def test_describe_and_alter_topic_configs_kafka_python(broker):
    b = broker
    create_topic(b.bootstrap, "kcfg", 1)
    a = kp_admin(b)
    try:
        got = a.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "kcfg")], config_filter="all")
        flat = repr(got)
        assert "retention.ms" in flat and "segment.bytes" in flat
        a.alter_configs([KPConfigResource(ConfigResourceType.TOPIC, "kcfg", configs={"retention.ms": "120000"})],
                        incremental=False)
        assert topic_configs(b, "kcfg")["retention.ms"].value == "120000"
        a.alter_configs([KPConfigResource(ConfigResourceType.TOPIC, "kcfg",
                                          configs={"retention.bytes": "5000000"})], incremental=True)
        cfg = topic_configs(b, "kcfg")
        assert (cfg["retention.ms"].value, cfg["retention.bytes"].value) == ("120000", "5000000")
        for key, value in [("unknown.key", "1"), ("retention.bytes", "-7"), ("cleanup.policy", "shred")]:
            for incremental in (True, False):
                got = a.alter_configs([KPConfigResource(ConfigResourceType.TOPIC, "kcfg", configs={key: value})],
                                      incremental=incremental, raise_on_unknown=False)
                assert "InvalidConfig" in got["topic"]["kcfg"], (key, incremental, got)
        got = a.alter_configs([KPConfigResource(ConfigResourceType.BROKER, "0", configs={"broker.id": "7"})],
                              incremental=False, raise_on_unknown=False)
        assert "InvalidConfig" in got["broker"]["0"], got
        assert topic_configs(b, "kcfg")["retention.bytes"].value == "5000000"
    finally:
        a.close()


# ---- CreatePartitions ----

def test_create_partitions_3_to_6(broker):
    b = broker
    create_topic(b.bootstrap, "grow", 3)
    a = admin(b)
    next(iter(a.create_partitions([NewPartitions("grow", 6)]).values())).result(timeout=15)
    md = a.list_topics("grow", timeout=10)
    assert sorted(md.topics["grow"].partitions) == list(range(6))
    delivered, errors = produce(b.bootstrap, "grow", [(None, f"v{p}".encode(), None, p) for p in range(6)])
    assert not errors and sorted((p, o) for p, o, _, _ in delivered) == [(p, 0) for p in range(6)]
    got = consume_all(b.bootstrap, "grow", 6, 6)
    assert sorted((m[0], m[3]) for m in got) == [(p, f"v{p}".encode()) for p in range(6)]

    assert error_code(next(iter(a.create_partitions([NewPartitions("grow", 4)]).values()))) == \
        KafkaError.INVALID_PARTITIONS
    assert error_code(next(iter(a.create_partitions([NewPartitions("grow", 6)]).values()))) == \
        KafkaError.INVALID_PARTITIONS
    assert error_code(next(iter(a.create_partitions([NewPartitions("ghost", 6)]).values()))) == \
        KafkaError.UNKNOWN_TOPIC_OR_PART
    kp = kp_admin(b)
    try:
        resp = kp.create_partitions({"grow": 2}, raise_errors=False)
        assert [r[1] for r in resp.results] == [37]  # INVALID_PARTITIONS
        kp.create_partitions({"grow": 8})
    finally:
        kp.close()
    b.restart()
    a = admin(b)
    md = a.list_topics("grow", timeout=10)
    assert sorted(md.topics["grow"].partitions) == list(range(8))


# ---- groups ----

def test_list_describe_delete_groups(make_broker):
    b = make_broker(env={"KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS": "100"})
    create_topic(b.bootstrap, "gt", 2)
    produce(b.bootstrap, "gt", [(None, b"x", None, p) for p in (0, 1)])
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-admin", "client.id": "the-client",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000})
    c.subscribe(["gt"])
    got = []
    deadline = time.time() + 30
    while len(got) < 2 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(m)
    assert len(got) == 2
    c.commit(asynchronous=False)
    a = admin(b)
    try:
        listed = a.list_consumer_groups().result(timeout=15)
        assert {g.group_id for g in listed.valid} == {"g-admin"}
        d = a.describe_consumer_groups(["g-admin"])["g-admin"].result(timeout=15)
        assert d.state.name == "STABLE" and d.partition_assignor == "range"
        assert [m.client_id for m in d.members] == ["the-client"]
        assert d.members[0].host.startswith("/127.0.0.1")
        assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1]
        # Unknown groups describe as Dead, without an error.
        d = a.describe_consumer_groups(["g-none"])["g-none"].result(timeout=15)
        assert d.state.name == "DEAD" and d.members == []

        fut = a.delete_consumer_groups(["g-admin", "g-none"])
        assert error_code(fut["g-admin"]) == KafkaError.NON_EMPTY_GROUP
        assert error_code(fut["g-none"]) == KafkaError.GROUP_ID_NOT_FOUND

        kp = kp_admin(b)
        try:
            assert [g[0] if isinstance(g, tuple) else g["group_id"] for g in kp.list_groups()] == ["g-admin"]
            assert repr(kp.list_groups(states_filter=["Empty"])) in ("[]", "()")
            desc = kp.describe_groups(["g-admin"])
            assert "the-client" in repr(desc)
            c.close()
            wait_for(lambda: "Empty" in repr(kp.list_groups(states_filter=["Empty"])), 30, "group empty")
            assert kp.delete_groups(["g-admin", "g-none"]) == {"g-admin": "OK", "g-none": "GroupIdNotFoundError"}
        finally:
            kp.close()
        assert a.list_consumer_groups().result(timeout=15).valid == []
        # The committed offsets went with the group.
        c2 = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-admin"})
        assert [tp.offset for tp in c2.committed([TopicPartition("gt", 0)], timeout=10)] == [-1001]
        c2.close()
    finally:
        pass


# ---- retention ----

def test_retention_deletes_old_segments_and_moves_log_start(make_broker):
    b = make_broker(env=RETENTION_ENV)
    create_topic(b.bootstrap, "ret", 1)
    produce_rounds(b, "ret", 5)
    kfs = segments(b, "ret")
    assert len(kfs) >= 5
    last_base = int(kfs[-1][len("segment-"):-len(".kfs")])
    assert earliest_latest(b, "ret") == (0, 25)

    a = admin(b)
    res = ConfigResource("topic", "ret", incremental_configs=[
        ConfigEntry("retention.ms", "2000", incremental_operation=AlterConfigOpType.SET)])
    next(iter(a.incremental_alter_configs([res]).values())).result(timeout=15)
    # Retention keeps the newest segment: it records where the log continues.
    # (A segment's .kfs is deleted before its .index: wait for both.)
    wait_for(lambda: len(segments(b, "ret")) == 1 and len(segments(b, "ret", suffix=".index")) == 1, 30,
             "expired segments deleted")
    assert segments(b, "ret") == [kfs[-1]]
    assert segments(b, "ret", suffix=".index") == [kfs[-1].replace(".kfs", ".index")]
    assert earliest_latest(b, "ret") == (last_base, 25)

    # Fetching below the log start: OFFSET_OUT_OF_RANGE, so the consumer resets to it.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "kafscale-tests-unused",
                  "auto.offset.reset": "error", "enable.auto.commit": False})
    c.assign([TopicPartition("ret", 0, 0)])
    err = None
    deadline = time.time() + 20
    while err is None and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error():
            err = m.error()
    c.close()
    assert err is not None and err.code() == KafkaError._AUTO_OFFSET_RESET
    got = consume_all(b.bootstrap, "ret", 1, 25 - last_base)
    assert [m[1] for m in got] == list(range(last_base, 25))

    # The log start survives a restart: nothing deleted comes back.
    b.restart()
    assert earliest_latest(b, "ret") == (last_base, 25)
    delivered, _ = produce(b.bootstrap, "ret", [(None, b"after", None, 0)])
    assert delivered[0][1] == 25


def test_retention_bytes(make_broker):
    b = make_broker(env=RETENTION_ENV)
    create_topic(b.bootstrap, "retb", 1)
    produce_rounds(b, "retb", 6)
    kfs = segments(b, "retb")
    sizes = [(b.objects / "default" / "retb" / "0" / k).stat().st_size for k in kfs]
    limit = sum(sizes[-2:])  # room for exactly the two newest segments
    a = admin(b)
    res = ConfigResource("topic", "retb", incremental_configs=[
        ConfigEntry("retention.bytes", str(limit), incremental_operation=AlterConfigOpType.SET)])
    next(iter(a.incremental_alter_configs([res]).values())).result(timeout=15)
    wait_for(lambda: segments(b, "retb") == kfs[-2:], 30, "segments beyond retention.bytes deleted")
    base = int(kfs[-2][len("segment-"):-len(".kfs")])
    assert earliest_latest(b, "retb") == (base, 30)


def test_segment_bytes_applies_at_run_time(broker):
    b = broker
    create_topic(b.bootstrap, "segb", 1, {"segment.bytes": "1000"})
    # One flush of ~100 records of 100 bytes: without the topic's segment.bytes it
    # would be one segment; with it, several.
    delivered, errors = produce(b.bootstrap, "segb", [(None, b"x" * 100, None, 0) for _ in range(100)],
                                extra={"linger.ms": 50, "batch.size": 600})
    assert not errors and len(delivered) == 100
    assert len(segments(b, "segb")) >= 5


# ---- ListOffsets by timestamp ----

def test_offsets_for_times(make_broker):
    b = make_broker()
    create_topic(b.bootstrap, "tt", 1)
    t0 = 1_700_000_000_000
    stamps = [t0 + 1000 * i for i in range(20)]
    produce_rounds(b, "tt", 4, per_round=5, timestamps=stamps)
    assert len(segments(b, "tt")) >= 4

    def ck(ts):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "kafscale-tests-unused"})
        try:
            return c.offsets_for_times([TopicPartition("tt", 0, ts)], timeout=10)[0].offset
        finally:
            c.close()

    def kp(ts):
        a = kp_admin(b)
        try:
            r = a.list_partition_offsets({KTP("tt", 0): ts})[KTP("tt", 0)]
            return (r.offset, r.timestamp)
        finally:
            a.close()

    for _ in range(2):  # the second time after a restart: time bounds learned from the segments
        assert ck(t0 - 5000) == 0  # before the data
        assert ck(t0) == 0
        assert ck(t0 + 7000) == 7  # exactly a record's time
        assert ck(t0 + 7001) == 8  # between two records, across no boundary
        assert ck(t0 + 10_000) == 10  # first record of a later segment
        assert ck(t0 + 19_000) == 19
        assert ck(t0 + 19_001) == -1  # after the data: no offset
        assert kp(t0 + 12_500) == (13, t0 + 13_000)
        assert kp(-3) == (19, t0 + 19_000)  # MAX_TIMESTAMP (v7)
        assert kp(t0 + 99_000)[0] == -1
        b.restart()


# ---- OffsetForLeaderEpoch and ApiVersions ----

def test_offset_for_leader_epoch(broker):
    b = broker
    create_topic(b.bootstrap, "ep", 2)
    produce(b.bootstrap, "ep", [(None, b"v", None, 0)] * 7)
    raw = Raw(b.bootstrap)
    try:
        for v in (2, 3):
            kw = {"replica_id": -1} if v >= 3 else {}
            parts = [(0, -1, 0), (0, 0, 0), (1, 0, 0), (0, -1, 5), (0, 3, 0), (9, -1, 0)]
            if v >= 4:
                parts = [p + ({},) for p in parts]
                topics = [("ep", parts, {}), ("nope", [(0, -1, 0, {})], {})]
                req = kofe.OffsetForLeaderEpochRequest[v](topics=topics, tags={}, **kw)
            else:
                req = kofe.OffsetForLeaderEpochRequest[v](topics=[("ep", parts), ("nope", [(0, -1, 0)])], **kw)
            resp = raw.call(req, kofe.OffsetForLeaderEpochResponse[v])
            got = [(p[0], p[1], p[2], p[3]) for t in resp.topics for p in t[1]]
            assert got == [
                (0, 0, 0, 7),  # epoch 0 ends at the high watermark
                (0, 0, 0, 7),
                (0, 1, 0, 0),  # empty partition
                (0, 0, -1, -1),  # unknown epoch: UNDEFINED
                (74 + 1, 0, -1, -1),  # current epoch newer than ours: UNKNOWN_LEADER_EPOCH
                (3, 9, -1, -1),  # UNKNOWN_TOPIC_OR_PARTITION
                (3, 0, -1, -1),
            ], (v, got)
    finally:
        raw.close()


ADMIN_APIS = {15: (0, 5), 16: (0, 5), 42: (0, 2), 23: (0, 4), 32: (0, 4), 33: (0, 2), 44: (0, 1), 37: (0, 3),
              21: (0, 2), 35: (0, 4), 43: (0, 2), 46: (0, 0), 47: (0, 0), 60: (0, 2), 61: (0, 0), 75: (0, 0),
              29: (1, 3), 30: (1, 3), 31: (1, 3)}


def test_api_versions_advertise_the_admin_apis(broker):
    raw = Raw(broker.bootstrap)
    try:
        resp = raw.call(kapi.ApiVersionsRequest[0](), kapi.ApiVersionsResponse[0])
        ranges = {k: (lo, hi) for k, lo, hi in resp.api_versions}
    finally:
        raw.close()
    for k, r in ADMIN_APIS.items():
        assert ranges[k] == r, k
    # Deferred APIs are absent: AlterPartitionReassignments. The consumer group
    # protocol (KIP-848) is listed (test_consumer_protocol.py).
    # The ACL APIs are listed even without an authorizer, as Kafka lists them
    # (they answer SECURITY_DISABLED then: test_acls.py).
    assert 45 not in ranges
    assert (ranges[68], ranges[69], ranges[8], ranges[9]) == ((0, 1), (0, 1), (0, 9), (0, 9))
