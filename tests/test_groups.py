"""Consumer groups with real clients: partition splits, members joining, leaving
and dying, cooperative-sticky, static membership, committed offsets across broker
restarts, and the error codes clients hide (raw requests).

Assertions are on data (partition sets, offsets, values, error codes); waits are
bounded polls for a state, never sleeps that a result depends on."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaConsumer
from kafka.protocol.old import commit as kcommit
from kafka.protocol.old import find_coordinator as kfind
from kafka.protocol.old import group as kgroup

from clients import create_topic, produce, wait_for
from rawkafka import Conn

HERE = Path(__file__).resolve().parent
ALL6 = set(range(6))
# Tests use Kafka's default session-timeout bounds and a short initial rebalance delay.
GROUP_ENV = {"KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS": "300"}
CK_CONF = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
           "enable.auto.commit": False, "auto.offset.reset": "earliest", "partition.assignment.strategy": "range"}


class CK(threading.Thread):
    """A confluent-kafka group consumer on a thread; records callbacks and messages."""

    def __init__(self, bootstrap, group, topic, extra=None, commit=False):
        super().__init__(daemon=True)
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group, **CK_CONF, **(extra or {})}
        self.topic, self.commit = topic, commit
        self.lock = threading.Lock()
        self.owned, self.assigns, self.revokes, self.records = set(), [], [], []
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        try:
            c = Consumer(self.conf)

            def on_assign(consumer, parts):
                with self.lock:
                    got = {p.partition for p in parts}
                    self.assigns.append(got)
                    self.owned |= got

            def on_revoke(consumer, parts):
                with self.lock:
                    lost = {p.partition for p in parts}
                    self.revokes.append(lost)
                    self.owned -= lost

            c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
            while not self.stopping.is_set():
                m = c.poll(0.1)
                if m is None or m.error():
                    continue
                with self.lock:
                    self.records.append((m.partition(), m.offset(), m.value()))
                if self.commit:
                    c.commit(message=m, asynchronous=False)
            c.close()
        except Exception as e:  # surfaced by the test through .error
            self.error = e

    def snapshot(self):
        with self.lock:
            return set(self.owned)

    def stop(self):
        self.stopping.set()
        self.join(30)
        assert self.error is None, self.error


class KP(threading.Thread):
    """A kafka-python group consumer on a thread."""

    def __init__(self, bootstrap, group, topic):
        super().__init__(daemon=True)
        self.args = dict(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                         enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500,
                         fetch_max_wait_ms=100)
        self.topic = topic
        self.lock = threading.Lock()
        self.owned, self.records = set(), []
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        try:
            c = KafkaConsumer(self.topic, **self.args)
            while not self.stopping.is_set():
                batches = c.poll(timeout_ms=100)
                with self.lock:
                    for recs in batches.values():
                        for r in recs:
                            self.records.append((r.partition, r.offset, r.value))
                    self.owned = {tp.partition for tp in c.assignment()}
            c.close()
        except Exception as e:
            self.error = e

    def snapshot(self):
        with self.lock:
            return set(self.owned)

    def stop(self):
        self.stopping.set()
        self.join(30)
        assert self.error is None, self.error


def split_complete(members, partitions=ALL6):
    sets = [m.snapshot() for m in members]
    if any(not s for s in sets):
        return False
    union = set().union(*sets)
    return union == partitions and sum(len(s) for s in sets) == len(partitions)


def produce_round(bootstrap, topic, tag, per_partition=20, partitions=6):
    msgs = [(None, f"{tag}-{p}-{i}".encode(), None, p) for p in range(partitions) for i in range(per_partition)]
    delivered, errors = produce(bootstrap, topic, msgs)
    assert not errors
    return {(p, off, v) for p, off, _k, v in delivered}


@pytest.mark.parametrize("kinds", [["ck", "ck"], ["kp", "kp"], ["ck", "kp", "ck"]])
def test_members_split_partitions_and_read_each_message_once(make_broker, kinds):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "split", 6)
    members = [CK(b.bootstrap, "g-split", "split") if k == "ck" else KP(b.bootstrap, "g-split", "split")
               for k in kinds]
    for m in members:
        m.start()
    try:
        wait_for(lambda: split_complete(members), what="a disjoint split of 6 partitions")
        owned = [m.snapshot() for m in members]
        sent = produce_round(b.bootstrap, "split", "m", per_partition=50)
        wait_for(lambda: sum(len(m.records) for m in members) >= len(sent), what="every message")
        time.sleep(0.5)  # a duplicate delivery, if any, would arrive now
        records = [r for m in members for r in m.records]
        assert sorted(records) == sorted(sent), "every message exactly once"
        for m, parts in zip(members, owned):
            assert {p for p, _, _ in m.records} <= parts
            assert m.snapshot() == parts, "no rebalance while reading"
    finally:
        for m in members:
            m.stop()


def test_member_joins_and_leaves_without_unread_partitions(make_broker):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "jl", 6)
    a = CK(b.bootstrap, "g-jl", "jl", commit=True)
    a.start()
    bb = CK(b.bootstrap, "g-jl", "jl", commit=True)
    try:
        wait_for(lambda: a.snapshot() == ALL6, what="the only member owning everything")
        sent = produce_round(b.bootstrap, "jl", "one")
        wait_for(lambda: len(a.records) >= len(sent))
        bb.start()
        wait_for(lambda: split_complete([a, bb]), what="a split after the join")
        sent |= produce_round(b.bootstrap, "jl", "two")
        wait_for(lambda: {(p, o, v) for m in (a, bb) for p, o, v in m.records} >= sent)
        a.stop()  # close(): LeaveGroup
        wait_for(lambda: bb.snapshot() == ALL6, what="the remaining member taking everything")
        third = produce_round(b.bootstrap, "jl", "three")
        sent |= third
        wait_for(lambda: set(bb.records) >= third)
        seen = set(a.records) | set(bb.records)
        assert seen == sent, "no message left unread"
        assert {p for p, _, _ in third} == ALL6
    finally:
        a.stopping.set()
        bb.stop()


def test_killed_member_is_expired_and_its_partitions_reassigned(make_broker):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "kill", 6)
    proc = subprocess.Popen([sys.executable, str(HERE / "group_consumer.py"), b.bootstrap, "g-kill", "kill",
                             "partition.assignment.strategy=range"],
                            stdout=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: [lines.append(json.loads(l)) for l in proc.stdout], daemon=True)
    reader.start()
    survivor = CK(b.bootstrap, "g-kill", "kill")
    survivor.start()
    try:
        def proc_owned():
            assigned = [l["assigned"] for l in list(lines) if "assigned" in l]
            return set(assigned[-1]) if assigned else set()

        wait_for(lambda: proc_owned() and survivor.snapshot() and proc_owned() | survivor.snapshot() == ALL6
                 and not proc_owned() & survivor.snapshot(), what="a split between the two processes")
        victim = proc_owned()

        def victim_read():
            return {(m["msg"][0], m["msg"][1], m["msg"][2].encode()) for m in list(lines) if "msg" in m}

        before = produce_round(b.bootstrap, "kill", "before")
        wait_for(lambda: victim_read() | set(survivor.records) >= before, what="both members reading")
        last_victim = {}
        for p, off, _ in victim_read():
            last_victim[p] = max(off, last_victim.get(p, -1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = produce_round(b.bootstrap, "kill", "after")
        wait_for(lambda: survivor.snapshot() == ALL6, what="the session timeout to hand over the partitions")
        wait_for(lambda: set(survivor.records) >= after, what="the survivor reading everything")
        assert {p for p, _, _ in victim_read()} == victim
        assert victim_read() | set(survivor.records) == before | after, "no message left unread"
        # The new owner resumed from the victim's commits: of the victim's messages it
        # re-read at most the last one per partition (read, but killed before its commit).
        reread = {(p, off) for p, off, v in survivor.records if p in victim and v.startswith(b"before")}
        assert reread <= {(p, last_victim[p]) for p in victim}
    finally:
        if proc.poll() is None:
            proc.kill()
        survivor.stop()


def test_cooperative_sticky_keeps_unmoved_partitions(make_broker):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "coop", 6)
    coop = {"partition.assignment.strategy": "cooperative-sticky"}
    a = CK(b.bootstrap, "g-coop", "coop", extra=coop)
    a.start()
    bb = CK(b.bootstrap, "g-coop", "coop", extra=coop)
    try:
        wait_for(lambda: a.snapshot() == ALL6)
        bb.start()
        wait_for(lambda: split_complete([a, bb]), what="an incremental split")
        with a.lock:
            a_assigns, a_revokes = list(a.assigns), list(a.revokes)
        # librdkafka also reports empty incremental steps; only non-empty ones matter.
        a_assigns = [s for s in a_assigns if s]
        revoked = set().union(*a_revokes) if a_revokes else set()
        assert a_assigns == [ALL6], "the first member was never re-assigned what it kept"
        assert len(revoked) == 3 and revoked == bb.snapshot()
        assert a.snapshot() == ALL6 - revoked
        sent = produce_round(b.bootstrap, "coop", "c")
        wait_for(lambda: len(a.records) + len(bb.records) >= len(sent))
        assert set(a.records) | set(bb.records) == sent
    finally:
        a.stop()
        bb.stop()


def test_static_member_restart_gets_same_partitions_without_rebalance(make_broker):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "static", 6)
    a = CK(b.bootstrap, "g-static", "static", extra={"group.instance.id": "inst-a"})
    b1 = CK(b.bootstrap, "g-static", "static", extra={"group.instance.id": "inst-b"})
    a.start()
    b1.start()
    b2 = None
    try:
        wait_for(lambda: split_complete([a, b1]))
        with a.lock:
            a_events = (len(a.assigns), len(a.revokes))
        a_owned, b_owned = a.snapshot(), b1.snapshot()
        b1.stop()  # a static member does not send LeaveGroup on close
        b2 = CK(b.bootstrap, "g-static", "static", extra={"group.instance.id": "inst-b"})
        b2.start()
        wait_for(lambda: b2.snapshot(), what="the restarted static member's assignment")
        assert b2.snapshot() == b_owned
        sent = produce_round(b.bootstrap, "static", "s")
        wait_for(lambda: len(a.records) + len(b2.records) >= len(sent))
        with a.lock:
            assert (len(a.assigns), len(a.revokes)) == a_events, "the other member saw no rebalance"
        assert a.snapshot() == a_owned
        assert {p for p, _, _ in b2.records} == b_owned
        assert set(a.records) | set(b2.records) == sent
    finally:
        a.stop()
        if b2:
            b2.stop()


def committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: (tp.offset, tp.metadata) for tp in got}
    finally:
        c.close()


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_committed_offsets_with_metadata_survive_restart(make_broker, how):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "resume", 3)
    produce(b.bootstrap, "resume", [(None, f"p{p}-{i}".encode(), None, p) for p in range(3) for i in range(30)])
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-resume", **CK_CONF})
    c.subscribe(["resume"])
    wait_for(lambda: c.poll(0.1) is not None and len(c.assignment()) == 3, what="the consumer's assignment")
    want = {p: 10 + p for p in range(3)}
    c.commit(offsets=[TopicPartition("resume", p, o, metadata=f"meta-{p}") for p, o in want.items()],
             asynchronous=False)
    if how == "kill9":
        b.kill9()  # right after the commit was acknowledged
        c.close()
    else:
        c.close()
        assert b.stop() == 0
    b.start()
    assert committed(b.bootstrap, "g-resume", "resume", 3) == {p: (o, f"meta-{p}") for p, o in want.items()}
    r = CK(b.bootstrap, "g-resume", "resume")
    r.start()
    try:
        expected = {(p, i, f"p{p}-{i}".encode()) for p in range(3) for i in range(want[p], 30)}
        wait_for(lambda: len(r.records) >= len(expected), what="the resumed consumer reading the rest")
        assert set(r.records) == expected
        assert len(r.records) == len(expected)
    finally:
        r.stop()


def test_kafka_python_commits_and_fetches_offsets(make_broker):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "kpo", 2)
    produce(b.bootstrap, "kpo", [(None, f"v{i}".encode(), None, i % 2) for i in range(20)])
    c = KafkaConsumer("kpo", bootstrap_servers=b.bootstrap, group_id="g-kpo", auto_offset_reset="earliest",
                      enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500)
    got = []
    deadline = time.time() + 60
    while len(got) < 20 and time.time() < deadline:
        for recs in c.poll(timeout_ms=200).values():
            got.extend(recs)
    assert len(got) == 20
    c.commit()
    from kafka.structs import TopicPartition as KTP
    assert {p: c.committed(KTP("kpo", p)) for p in range(2)} == {0: 10, 1: 10}
    c.close()
    # No metadata was sent: librdkafka reports the stored empty string as None.
    assert committed(b.bootstrap, "g-kpo", "kpo", 2) == {0: (10, None), 1: (10, None)}


# ---- raw requests: the error codes clients handle silently ----

class Raw:
    def __init__(self, bootstrap):
        self.conn = Conn(bootstrap)
        self.cid = 0

    def call(self, req, resp_cls):
        self.cid += 1
        req.with_header(correlation_id=self.cid, client_id="raw")
        frame = self.conn.call(req.encode(header=True, framed=True))
        return resp_cls.decode(frame, header=True, framed=True)

    def close(self):
        self.conn.close()


def join(raw, group, member_id="", protocol_type="consumer", session=6000, version=4):
    req = kgroup.JoinGroupRequest[version](group_id=group, session_timeout_ms=session, rebalance_timeout_ms=10000,
                                           member_id=member_id, protocol_type=protocol_type,
                                           protocols=[("range", b"subscription")])
    return raw.call(req, kgroup.JoinGroupResponse[version])


def test_raw_error_codes(make_broker):
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "t", 1)
    raw = Raw(b.bootstrap)
    try:
        fc = raw.call(kfind.FindCoordinatorRequest[1](key="g-raw", key_type=0), kfind.FindCoordinatorResponse[1])
        assert (fc.error_code, fc.port) == (0, b.port)
        fc = raw.call(kfind.FindCoordinatorRequest[1](key="tx", key_type=1), kfind.FindCoordinatorResponse[1])
        assert fc.error_code == 53  # TRANSACTIONAL_ID_AUTHORIZATION_FAILED: no transactions

        first = join(raw, "g-raw")
        assert first.error_code == 79 and first.member_id  # MEMBER_ID_REQUIRED, with the id to use
        assert join(raw, "g-raw", session=100).error_code == 26  # INVALID_SESSION_TIMEOUT
        assert join(raw, "", version=1).error_code == 24  # INVALID_GROUP_ID
        assert join(raw, "g-raw", member_id="made-up").error_code == 25  # UNKNOWN_MEMBER_ID
        joined = join(raw, "g-raw", member_id=first.member_id)
        assert joined.error_code == 0
        me, gen = joined.member_id, joined.generation_id
        assert me == first.member_id and joined.leader == me and gen >= 1
        assert [m[0] for m in joined.members] == [me] and joined.members[0][1] == b"subscription"
        # Another member may not change the protocol type of a running group.
        assert join(raw, "g-raw", protocol_type="connect", version=1).error_code == 23  # INCONSISTENT

        sync = lambda g, m: raw.call(
            kgroup.SyncGroupRequest[1](group_id="g-raw", generation_id=g, member_id=m,
                                       assignments=[(me, b"\x00assignment bytes\xff")]),
            kgroup.SyncGroupResponse[1])
        assert sync(gen + 1, me).error_code == 22  # ILLEGAL_GENERATION
        assert sync(gen, "nobody").error_code == 25
        s = sync(gen, me)
        assert (s.error_code, s.assignment) == (0, b"\x00assignment bytes\xff")  # verbatim

        hb = lambda g, m: raw.call(kgroup.HeartbeatRequest[1](group_id="g-raw", generation_id=g, member_id=m),
                                   kgroup.HeartbeatResponse[1]).error_code
        assert (hb(gen, me), hb(gen - 1, me), hb(gen, "nobody")) == (0, 22, 25)
        assert raw.call(kgroup.HeartbeatRequest[1](group_id="nogroup", generation_id=1, member_id="x"),
                        kgroup.HeartbeatResponse[1]).error_code == 25

        def commit(g, m, group="g-raw", partition=0, metadata="m"):
            r = raw.call(kcommit.OffsetCommitRequest[2](
                group_id=group, generation_id_or_member_epoch=g, member_id=m, retention_time_ms=-1,
                topics=[("t", [(partition, 5, metadata)])]), kcommit.OffsetCommitResponse[2])
            return r.topics[0][1][0][1]

        assert commit(gen - 1, me) == 22
        assert commit(gen, "nobody") == 25
        assert commit(-1, "") == 25  # a non-member's commit while the group has members
        assert commit(gen, me, partition=7) == 3  # UNKNOWN_TOPIC_OR_PARTITION
        assert commit(gen, me, metadata="x" * 5000) == 12  # OFFSET_METADATA_TOO_LARGE
        assert commit(gen, me) == 0
        assert commit(-1, "", group="g-simple") == 0  # simple commit to an unused group
        assert commit(3, "someone", group="g-unknown") == 22

        fetch = raw.call(kcommit.OffsetFetchRequest[2](group_id="g-raw", topics=None),
                         kcommit.OffsetFetchResponse[2])
        assert fetch.error_code == 0
        assert [(t, [tuple(p) for p in ps]) for t, ps in fetch.topics] == [("t", [(0, 5, "m", 0)])]

        leave = raw.call(kgroup.LeaveGroupRequest[3](group_id="g-raw", members=[(me, None), ("ghost", None)]),
                         kgroup.LeaveGroupResponse[3])
        assert leave.error_code == 0
        assert [(m[0], m[2]) for m in leave.members] == [(me, 0), ("ghost", 25)]
        # Gone from the group: its heartbeat is refused, and a non-member may commit again.
        assert hb(gen, me) == 25
        assert commit(-1, "") == 0

        # Static membership: a second process with the same group.instance.id takes
        # over, and the first one is fenced.
        def join_static(member_id):
            return raw.call(kgroup.JoinGroupRequest[5](
                group_id="g-static-raw", session_timeout_ms=6000, rebalance_timeout_ms=10000,
                member_id=member_id, group_instance_id="inst-1", protocol_type="consumer",
                protocols=[("range", b"sub")]), kgroup.JoinGroupResponse[5])

        s1 = join_static("")
        assert s1.error_code == 0  # no MEMBER_ID_REQUIRED round for static members
        sg = raw.call(kgroup.SyncGroupRequest[3](
            group_id="g-static-raw", generation_id=s1.generation_id, member_id=s1.member_id,
            group_instance_id="inst-1", assignments=[(s1.member_id, b"mine")]), kgroup.SyncGroupResponse[3])
        assert (sg.error_code, sg.assignment) == (0, b"mine")
        s2 = join_static("")
        assert s2.error_code == 0 and s2.member_id != s1.member_id
        assert s2.generation_id == s1.generation_id  # no rebalance
        sg = raw.call(kgroup.SyncGroupRequest[3](
            group_id="g-static-raw", generation_id=s2.generation_id, member_id=s2.member_id,
            group_instance_id="inst-1", assignments=[]), kgroup.SyncGroupResponse[3])
        assert (sg.error_code, sg.assignment) == (0, b"mine")  # the assignment it had
        hb3 = lambda m: raw.call(kgroup.HeartbeatRequest[3](
            group_id="g-static-raw", generation_id=s1.generation_id, member_id=m, group_instance_id="inst-1"),
            kgroup.HeartbeatResponse[3]).error_code
        assert hb3(s1.member_id) == 82  # FENCED_INSTANCE_ID
        assert join_static(s1.member_id).error_code == 82
    finally:
        raw.close()


def call(raw, api, version, **fields):
    """A request of any version through kafka-python's schema-driven messages."""
    req = api[0][version](**fields)
    raw.cid += 1
    req.with_header(correlation_id=raw.cid, client_id="raw")
    frame = raw.conn.call(req.encode(header=True, framed=True))
    return api[1][version].decode(frame, header=True, framed=True)


def test_raw_newest_versions_and_static_member_across_restart(make_broker):
    from kafka.protocol.consumer import group as g
    from kafka.protocol.metadata import find_coordinator as f
    FIND = (f.FindCoordinatorRequest, f.FindCoordinatorResponse)
    JOIN = (g.JoinGroupRequest, g.JoinGroupResponse)
    SYNC = (g.SyncGroupRequest, g.SyncGroupResponse)
    HB = (g.HeartbeatRequest, g.HeartbeatResponse)
    LEAVE = (g.LeaveGroupRequest, g.LeaveGroupResponse)
    COMMIT = (g.OffsetCommitRequest, g.OffsetCommitResponse)
    FETCH = (g.OffsetFetchRequest, g.OffsetFetchResponse)
    JP = g.JoinGroupRequest.JoinGroupRequestProtocol
    SA = g.SyncGroupRequest.SyncGroupRequestAssignment
    MI = g.LeaveGroupRequest.MemberIdentity
    CT = g.OffsetCommitRequest.OffsetCommitRequestTopic
    CP = CT.OffsetCommitRequestPartition
    FG = g.OffsetFetchRequest.OffsetFetchRequestGroup
    FT = FG.OffsetFetchRequestTopics

    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "nv", 2)
    raw = Raw(b.bootstrap)
    try:
        r = call(raw, FIND, 4, key_type=0, coordinator_keys=["g1", "g2", ""])
        assert [(c.key, c.error_code, c.port) for c in r.coordinators] == [
            ("g1", 0, b.port), ("g2", 0, b.port), ("", 42, -1)]  # INVALID_REQUEST for an empty key

        def join(member_id, instance, version=9, protocols=(("range", b"sub-v9"),)):
            return call(raw, JOIN, version, group_id="g-v9", session_timeout_ms=6000, rebalance_timeout_ms=10000,
                        member_id=member_id, group_instance_id=instance, protocol_type="consumer",
                        protocols=[JP(name=n, metadata=m) for n, m in protocols], reason=None)

        j = join("", "static-1")
        assert (j.error_code, j.protocol_type, j.protocol_name, j.leader) == (0, "consumer", "range", j.member_id)
        assert j.skip_assignment is False
        me, gen = j.member_id, j.generation_id

        def sync(member, instance, assignments, ptype="consumer", pname="range"):
            return call(raw, SYNC, 5, group_id="g-v9", generation_id=gen, member_id=member, group_instance_id=instance,
                        protocol_type=ptype, protocol_name=pname,
                        assignments=[SA(member_id=m, assignment=a) for m, a in assignments])

        assert sync(me, "static-1", [], pname="roundrobin").error_code == 23  # INCONSISTENT_GROUP_PROTOCOL
        s = sync(me, "static-1", [(me, b"assigned-v5")])
        assert (s.error_code, s.protocol_type, s.protocol_name, s.assignment) == (0, "consumer", "range",
                                                                                  b"assigned-v5")

        def commit(group, member, generation, offset, metadata):
            r = call(raw, COMMIT, 8, group_id=group, generation_id_or_member_epoch=generation, member_id=member,
                     group_instance_id=None, topics=[CT(name="nv", partitions=[
                         CP(partition_index=1, committed_offset=offset, committed_leader_epoch=0,
                              committed_metadata=metadata)])])
            return r.topics[0].partitions[0].error_code

        assert commit("g-v9", me, gen, 42, "v8 meta") == 0
        assert commit("g-other", "", -1, 7, None) == 0

        def fetch_v8():
            r = call(raw, FETCH, 8, require_stable=False, groups=[
                FG(group_id="g-v9", topics=None),
                FG(group_id="g-other", topics=[FT(name="nv", partition_indexes=[0, 1])]),
                FG(group_id="g-none", topics=[FT(name="nv", partition_indexes=[0])])])
            return [(grp.group_id, grp.error_code,
                     [(t.name, [(p.partition_index, p.committed_offset, p.committed_leader_epoch, p.metadata,
                                 p.error_code) for p in t.partitions]) for t in grp.topics]) for grp in r.groups]

        expected = [
            ("g-v9", 0, [("nv", [(1, 42, -1, "v8 meta", 0)])]),
            ("g-other", 0, [("nv", [(0, -1, -1, "", 0), (1, 7, -1, "", 0)])]),
            ("g-none", 0, [("nv", [(0, -1, -1, "", 0)])]),
        ]
        assert fetch_v8() == expected

        # The static leader restarts its process: same generation, the current
        # assignment, and skip_assignment so that it does not compute a new one.
        j2 = join("", "static-1")
        assert j2.error_code == 0 and j2.member_id != me and j2.generation_id == gen
        assert j2.leader == j2.member_id and j2.skip_assignment is True
        assert [m.member_id for m in j2.members] == [j2.member_id]
        assert sync(j2.member_id, "static-1", []).assignment == b"assigned-v5"
        hb = lambda m, i: call(raw, HB, 4, group_id="g-v9", generation_id=gen, member_id=m,
                               group_instance_id=i).error_code
        assert hb(me, "static-1") == 82  # the old process is fenced

        # The broker restarts: offsets are back, and so is the static member, which
        # carries on with its member id, generation and assignment.
        raw.close()
        assert b.stop() == 0
        b.start()
        raw = Raw(b.bootstrap)
        assert fetch_v8() == expected
        assert hb(j2.member_id, "static-1") == 0
        j3 = join("", "static-1")
        assert (j3.error_code, j3.generation_id) == (0, gen)
        assert sync(j3.member_id, "static-1", []).assignment == b"assigned-v5"

        # LeaveGroup v5 by instance id alone.
        lv = call(raw, LEAVE, 5, group_id="g-v9",
                  members=[MI(member_id="", group_instance_id="static-1", reason="test"),
                           MI(member_id="", group_instance_id="nobody", reason=None)])
        assert lv.error_code == 0
        assert [(m.group_instance_id, m.error_code) for m in lv.members] == [("static-1", 0), ("nobody", 25)]
        assert hb(j3.member_id, "static-1") == 25
    finally:
        raw.close()


def test_deleting_a_topic_drops_its_committed_offsets(make_broker):
    from confluent_kafka.admin import AdminClient
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "dt", 2)
    create_topic(b.bootstrap, "kept", 1)
    produce(b.bootstrap, "dt", [(None, b"x", None, p) for p in range(2) for _ in range(5)])
    produce(b.bootstrap, "kept", [(None, b"y", None, 0)] * 5)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-dt"})
    c.commit(offsets=[TopicPartition("dt", 0, 3), TopicPartition("dt", 1, 4), TopicPartition("kept", 0, 2)],
             asynchronous=False)
    c.close()
    assert committed(b.bootstrap, "g-dt", "dt", 2) == {0: (3, None), 1: (4, None)}
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.delete_topics(["dt"], operation_timeout=10)["dt"].result(timeout=15)
    create_topic(b.bootstrap, "dt", 2)
    no_offset = -1001  # librdkafka's OFFSET_INVALID: nothing committed
    assert committed(b.bootstrap, "g-dt", "dt", 2) == {0: (no_offset, None), 1: (no_offset, None)}
    assert b.stop() == 0
    b.start()
    assert committed(b.bootstrap, "g-dt", "dt", 2) == {0: (no_offset, None), 1: (no_offset, None)}
    assert committed(b.bootstrap, "g-dt", "kept", 1) == {0: (2, None)}


def test_running_consumers_rejoin_after_broker_restart(make_broker):
    """Dynamic members are forgotten by a restart: they rejoin on their own and go on
    from their committed offsets."""
    b = make_broker(env=GROUP_ENV)
    create_topic(b.bootstrap, "rr", 6)
    members = [CK(b.bootstrap, "g-rr", "rr", commit=True) for _ in range(2)]
    for m in members:
        m.start()
    try:
        wait_for(lambda: split_complete(members))
        before = produce_round(b.bootstrap, "rr", "before")
        wait_for(lambda: {r for m in members for r in m.records} >= before)
        wait_for(lambda: committed(b.bootstrap, "g-rr", "rr", 6) == {p: (20, None) for p in range(6)},
                 what="the last commits")
        assert b.stop() == 0
        b.start()
        after = produce_round(b.bootstrap, "rr", "after")
        wait_for(lambda: {r for m in members for r in m.records} >= after, what="reading after the restart")
        wait_for(lambda: split_complete(members), what="the group formed again")
        records = [r for m in members for r in m.records]
        assert set(records) == before | after
        # Everything read before the restart was committed: nothing is read twice.
        assert len(records) == len(before | after)
    finally:
        for m in members:
            m.stop()
