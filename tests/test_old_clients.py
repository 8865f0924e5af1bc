"""Clients written against Kafka 3.x brokers: the request versions Kafka 4.0 removed
(KIP-896) are accepted, and Debian's Sarama 1.22 (protocol 2.2, which commits with
OffsetCommit v1) produces, joins a group, commits and resumes from its commit.

The old-version requests are encoded by kafka-python's own classes for those
versions (kafka.protocol.old), not by the broker's codec. Assertions are on data:
offsets, values, error codes, config flags."""
import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient
from kafka.protocol.old import admin as kadmin
from kafka.protocol.old import commit as kcommit
from kafka.protocol.old import list_offsets as klist
from kafka.protocol.old import offset_for_leader_epoch as kofe

from clients import consume_all, create_topic, go_build, produce
from test_groups import GROUP_ENV, Raw

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sarama_bin(tmp_path_factory):
    """The Sarama test client, built from Debian's Go packages
    (scripts/install-test-tools.sh installs golang-go and golang-github-shopify-sarama-dev)."""
    return go_build(ROOT / "tests" / "go" / "sarama", tmp_path_factory.mktemp("sarama") / "sarama")


def sarama(binary, *args, env=None):
    r = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **(env or {})))
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\n")[:-1]


def committed(b, group, topic, partitions):
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    res = a.list_consumer_group_offsets([req])[group].result(timeout=15)
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def test_sarama_produces_joins_commits_and_resumes(make_broker, sarama_bin):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "sar", 1)
    sent = sarama(sarama_bin, "produce", b.bootstrap, "sar", 6)
    assert sent == [f"0 {i}" for i in range(6)]
    assert sarama(sarama_bin, "consume", b.bootstrap, "sar", "sg", 6) == [f"m-{i}" for i in range(6)]
    # Sarama commits with OffsetCommit v1 on Close: the group now stores offset 6.
    assert committed(b, "sg", "sar", 1) == {0: 6}
    sarama(sarama_bin, "produce", b.bootstrap, "sar", 3)
    # A new member of the group resumes at the commit (OffsetFetch v1): only the new messages.
    assert sarama(sarama_bin, "consume", b.bootstrap, "sar", "sg", 3) == [f"m-{i}" for i in range(3)]
    assert committed(b, "sg", "sar", 1) == {0: 9}


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4"])
def test_sarama_0_10_2_message_format_v1(make_broker, sarama_bin, codec):
    """Sarama at protocol 0.10.2 (the oldest its consumer groups speak): Produce v2 and
    Fetch v3 with message sets of magic 1, compressed in wrappers; OffsetCommit v2."""
    b = make_broker(env=GROUP_ENV)
    topic = f"s10-{codec}"
    create_topic(b.bootstrap, topic, 1)
    env = {"SARAMA_VERSION": "0.10.2.0", "SARAMA_CODEC": codec}
    assert sarama(sarama_bin, "produce", b.bootstrap, topic, 5, env=env) == [f"0 {i}" for i in range(5)]
    # A modern client reads what it wrote, at the same offsets.
    got = [(p, o, v) for p, o, _k, v, _h in consume_all(b.bootstrap, topic, 1, 5)]
    assert sorted(got) == [(0, i, f"m-{i}".encode()) for i in range(5)]
    assert sarama(sarama_bin, "consume", b.bootstrap, topic, "s10", 5, env=env) == [f"m-{i}" for i in range(5)]
    assert committed(b, "s10", topic, 1) == {0: 5}
    sarama(sarama_bin, "produce", b.bootstrap, topic, 2, env=env)
    assert sarama(sarama_bin, "consume", b.bootstrap, topic, "s10", 2, env=env) == ["m-0", "m-1"]
    assert committed(b, "s10", topic, 1) == {0: 7}


def test_offset_commit_v0_v1_and_offset_fetch_v0(make_broker):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "oc", 2)
    raw = Raw(b.bootstrap)
    try:
        r = raw.call(kcommit.OffsetCommitRequest[0](group_id="g0", topics=[("oc", [(0, 5, "zk-era"), (7, 1, "")])]),
                     kcommit.OffsetCommitResponse[0])
        assert [(p[0], p[1]) for t in r.topics for p in t[1]] == [(0, 0), (7, 3)]  # 3: UNKNOWN_TOPIC_OR_PARTITION
        # v1 outside a group: generation -1 and no member id, with a commit timestamp (ignored).
        r = raw.call(kcommit.OffsetCommitRequest[1](group_id="g0", generation_id_or_member_epoch=-1, member_id="",
                                                   topics=[("oc", [(1, 9, 1_700_000_000_000, "m1")])]),
                     kcommit.OffsetCommitResponse[1])
        assert [(p[0], p[1]) for t in r.topics for p in t[1]] == [(1, 0)]
        # v1 from a member the group does not know: fenced as in v2+.
        r = raw.call(kcommit.OffsetCommitRequest[1](group_id="g0", generation_id_or_member_epoch=4, member_id="x",
                                                   topics=[("oc", [(1, 10, -1, "")])]),
                     kcommit.OffsetCommitResponse[1])
        assert r.topics[0][1][0][1] == 25  # UNKNOWN_MEMBER_ID
        for v in (0, 1):
            f = raw.call(kcommit.OffsetFetchRequest[v](group_id="g0", topics=[("oc", [0, 1])]),
                         kcommit.OffsetFetchResponse[v])
            assert [(p[0], p[1], p[2], p[3]) for t in f.topics for p in t[1]] == [(0, 5, "zk-era", 0), (1, 9, "m1", 0)]
    finally:
        raw.close()
    assert committed(b, "g0", "oc", 2) == {0: 5, 1: 9}


def test_list_offsets_v0(broker):
    b = broker
    create_topic(b.bootstrap, "lo", 1)
    produce(b.bootstrap, "lo", [(None, b"v", None, 0)] * 4)
    raw = Raw(b.bootstrap)
    try:
        req = klist.ListOffsetsRequest[0](replica_id=-1, topics=[("lo", [(0, -1, 1), (0, -2, 5), (0, -1, 0), (3, -1, 1)])])
        r = raw.call(req, klist.ListOffsetsResponse[0])
        got = [(p[0], p[1], list(p[2])) for t in r.topics for p in t[1]]
        assert got == [(0, 0, [4]), (0, 0, [0]), (0, 0, []), (3, 3, [])]
    finally:
        raw.close()


def test_create_delete_topics_v0_and_describe_configs_v0(broker):
    b = broker
    raw = Raw(b.bootstrap)
    try:
        r = raw.call(kadmin.CreateTopicsRequest[0](topics=[("c0", 2, 1, [], [("retention.ms", "60000")]),
                                                           ("bad name!", 1, 1, [], [])], timeout_ms=10000),
                     kadmin.CreateTopicsResponse[0])
        assert [(t[0], t[1]) for t in r.topics] == [("c0", 0), ("bad name!", 17)]  # INVALID_TOPIC_EXCEPTION
        r = raw.call(kadmin.CreateTopicsRequest[1](topics=[("c1", 1, 1, [], [])], timeout_ms=10000, validate_only=True),
                     kadmin.CreateTopicsResponse[1])
        assert [(t[0], t[1]) for t in r.topics] == [("c1", 0)]
        r = raw.call(kadmin.DescribeConfigsRequest[0](resources=[(2, "c0", ["retention.ms", "retention.bytes"])]),
                     kadmin.DescribeConfigsResponse[0])
        (err, _msg, rtype, name, configs), = r.results
        assert (err, rtype, name) == (0, 2, "c0")
        # (name, value, read_only, is_default, is_sensitive)
        assert sorted(tuple(c) for c in configs) == [("retention.bytes", "-1", False, True, False),
                                                     ("retention.ms", "60000", False, False, False)]
        r = raw.call(kadmin.DeleteTopicsRequest[0](topic_names=["c0", "c1"], timeout_ms=10000),
                     kadmin.DeleteTopicsResponse[0])
        # c1 was only validated, never created.
        assert sorted((t[0], t[1]) for t in r.topic_error_codes) == [("c0", 0), ("c1", 3)]
    finally:
        raw.close()
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    assert "c0" not in md.topics and "c1" not in md.topics


def test_offset_for_leader_epoch_v0_v1(broker):
    b = broker
    create_topic(b.bootstrap, "ep0", 1)
    produce(b.bootstrap, "ep0", [(None, b"v", None, 0)] * 3)
    raw = Raw(b.bootstrap)
    try:
        r = raw.call(kofe.OffsetForLeaderEpochRequest[0](topics=[("ep0", [(0, 0), (4, 0)])]),
                     kofe.OffsetForLeaderEpochResponse[0])
        assert [tuple(p) for t in r.topics for p in t[1]] == [(0, 0, 3), (3, 4, -1)]
        r = raw.call(kofe.OffsetForLeaderEpochRequest[1](topics=[("ep0", [(0, 0), (0, 7)])]),
                     kofe.OffsetForLeaderEpochResponse[1])
        assert [tuple(p) for t in r.topics for p in t[1]] == [(0, 0, 0, 3), (0, 0, -1, -1)]
    finally:
        raw.close()
