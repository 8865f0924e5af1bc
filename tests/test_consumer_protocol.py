"""The consumer group protocol of KIP-848 (`group.protocol=consumer`) with
librdkafka (confluent-kafka): server-side assignment, members joining, leaving and
dying, committed offsets with member epochs, regex subscriptions, the range
assignor, describe/list through the AdminClient, coexistence with classic groups,
the errors for mixing protocols, a broker restart and a coordinator failover.

Assertions are on data (partition sets, messages, offsets, error codes); waits are
bounded polls for a state, never sleeps that a result depends on."""
import json
import struct
import subprocess
import sys
import threading
from pathlib import Path

import confluent_kafka
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupType, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from clients import create_topic, produce, wait_for, wait_until
from test_groups import Raw, join

HERE = Path(__file__).resolve().parent
ALL6 = set(range(6))
# Short sessions and heartbeats so that fencing and reassignment happen within a test.
ENV = {"KAFSCALE_GROUP_CONSUMER_SESSION_TIMEOUT_MS": "6000",
       "KAFSCALE_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
       "KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS": "300"}
# With group.protocol=consumer the session timeout, heartbeat interval and assignor
# are the broker's business: librdkafka refuses the classic settings.
CONF = {"group.protocol": "consumer", "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100}


def test_librdkafka_speaks_the_consumer_protocol():
    # KIP-848 is GA in librdkafka from 2.10 (preview from 2.4).
    major, minor = (int(x) for x in confluent_kafka.libversion()[0].split(".")[:2])
    assert (major, minor) >= (2, 10), confluent_kafka.libversion()


class Member(threading.Thread):
    """A confluent-kafka consumer of the consumer protocol on a thread; records
    assignment callbacks and messages, commits after each message when asked."""

    def __init__(self, bootstrap, group, topics, extra=None, commit=True):
        super().__init__(daemon=True)
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group, **CONF, **(extra or {})}
        self.topics, self.commit = topics, commit
        self.lock = threading.Lock()
        self.owned, self.assigns, self.revokes, self.records = set(), [], [], []
        self.stopping = threading.Event()
        self.error = None
        self.commit_errors = []

    def run(self):
        try:
            c = Consumer(self.conf)

            def on_assign(consumer, parts):
                with self.lock:
                    got = {(p.topic, p.partition) for p in parts}
                    self.assigns.append(got)
                    self.owned |= got

            def on_revoke(consumer, parts):
                with self.lock:
                    lost = {(p.topic, p.partition) for p in parts}
                    self.revokes.append(lost)
                    self.owned -= lost

            c.subscribe(self.topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
            while not self.stopping.is_set():
                m = c.poll(0.1)
                if m is None or m.error():
                    continue
                with self.lock:
                    self.records.append((m.topic(), m.partition(), m.offset(), m.value()))
                if self.commit:
                    self.commit_one(c, m)
            c.close()
        except Exception as e:  # surfaced by the test through .error
            self.error = e

    def commit_one(self, c, m):
        # A commit can fail while the coordinator moves (NOT_COORDINATOR, a
        # stale epoch until the next heartbeat): it is tried again.
        for _ in range(100):
            try:
                c.commit(message=m, asynchronous=False)
                return
            except KafkaException as e:
                self.commit_errors.append(e.args[0].name())
                if self.stopping.wait(0.1):
                    return
        raise AssertionError(f"commit failed 100 times: {self.commit_errors[-3:]}")

    def parts(self):
        with self.lock:
            return {p for _, p in self.owned}

    def seen(self):
        with self.lock:
            return list(self.records)

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)
        assert self.error is None, self.error


def split(members, partitions=ALL6):
    """Whether `members` own disjoint, non-empty shares covering `partitions`."""
    sets = [m.parts() for m in members]
    if any(not s for s in sets):
        return False
    return set().union(*sets) == partitions and sum(len(s) for s in sets) == len(partitions)


def produce_round(bootstrap, topic, tag, per_partition=20, partitions=6):
    msgs = [(None, f"{tag}-{p}-{i}".encode(), None, p) for p in range(partitions) for i in range(per_partition)]
    delivered, errors = produce(bootstrap, topic, msgs)
    assert not errors
    return {(topic, p, off, v) for p, off, _k, v in delivered}


def committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def describe(bootstrap, group):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group])[group].result(timeout=15)


def test_members_share_partitions_join_and_leave_reading_each_message_once(make_broker):
    b = make_broker(env=ENV)
    create_topic(b.bootstrap, "cp", 6)
    a, bb = Member(b.bootstrap, "g-cp", ["cp"]), Member(b.bootstrap, "g-cp", ["cp"])
    a.start()
    bb.start()
    c = Member(b.bootstrap, "g-cp", ["cp"])
    try:
        wait_for(lambda: split([a, bb]), what="two members splitting 6 partitions")
        assert sorted(len(m.parts()) for m in (a, bb)) == [3, 3], "uniform: 3 and 3"
        sent = produce_round(b.bootstrap, "cp", "one")
        wait_for(lambda: len(a.seen()) + len(bb.seen()) >= len(sent), what="every message of round one")
        assert sorted(a.seen() + bb.seen()) == sorted(sent), "round one exactly once"
        # The group as the AdminClient describes it (ConsumerGroupDescribe).
        d = describe(b.bootstrap, "g-cp")
        assert d.type == ConsumerGroupType.CONSUMER
        assert d.state == ConsumerGroupState.STABLE
        assert d.partition_assignor == "uniform"
        assert len(d.members) == 2
        described = sorted(sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members)
        assert described == sorted(sorted(m.parts()) for m in (a, bb))

        # A third member: partitions move only after their owners revoked them
        # (with their offsets committed), so nothing is read twice.
        c.start()
        wait_for(lambda: split([a, bb, c]) and all(len(m.parts()) == 2 for m in (a, bb, c)),
                 timeout=60, what="three members with two partitions each")
        two = produce_round(b.bootstrap, "cp", "two")
        sent |= two
        wait_for(lambda: sum(len(m.seen()) for m in (a, bb, c)) >= len(sent), what="every message of round two")
        everything = a.seen() + bb.seen() + c.seen()
        assert sorted(everything) == sorted(sent), "rounds one and two exactly once across three members"
        assert {p for _, p, _, _ in c.seen()} == c.parts()

        # A member leaves (close: heartbeat with epoch -1); the others take its share.
        a.stop()
        wait_for(lambda: split([bb, c]), timeout=60, what="two members covering everything again")
        three = produce_round(b.bootstrap, "cp", "three")
        sent |= three
        wait_for(lambda: sum(len(m.seen()) for m in (a, bb, c)) >= len(sent), what="every message of round three")
        everything = a.seen() + bb.seen() + c.seen()
        assert sorted(everything) == sorted(sent), "all rounds exactly once"
        assert committed(b.bootstrap, "g-cp", "cp", 6) == {p: 60 for p in range(6)}
    finally:
        for m in (a, bb, c):
            m.stopping.set()
        for m in (bb, c):
            if m.is_alive():
                m.stop()


def test_crashed_member_is_fenced_and_its_partitions_resume_from_commits(make_broker):
    b = make_broker(env=ENV)
    create_topic(b.bootstrap, "crash", 6)
    # Its own process, so that it dies without leaving (SIGKILL). The classic
    # settings group_consumer.py sets are removed (KEY= drops a setting).
    proc = subprocess.Popen([sys.executable, str(HERE / "group_consumer.py"), b.bootstrap, "g-crash", "crash",
                             "group.protocol=consumer", "session.timeout.ms=", "heartbeat.interval.ms="],
                            stdout=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: [lines.append(json.loads(x)) for x in proc.stdout], daemon=True)
    reader.start()
    survivor = Member(b.bootstrap, "g-crash", ["crash"])
    survivor.start()
    try:
        def victim_parts():
            got = [x["assigned"] for x in list(lines) if "assigned" in x]
            return set(got[-1]) if got else set()

        wait_for(lambda: victim_parts() and survivor.parts()
                 and victim_parts() | survivor.parts() == ALL6
                 and not victim_parts() & survivor.parts(), timeout=60, what="a split with the victim")
        theirs = victim_parts()
        sent = produce_round(b.bootstrap, "crash", "one")
        victim_seen = lambda: {(p, o) for x in list(lines) if "msg" in x for p, o, _ in [x["msg"]]}
        wait_for(lambda: len(victim_seen()) + len(survivor.seen()) >= len(sent), what="round one read")
        # Every offset the victim read is committed before it dies.
        wait_for(lambda: all(committed(b.bootstrap, "g-crash", "crash", 6)[p] == 20 for p in theirs),
                 what="the victim's commits")
        proc.kill()
        proc.wait()
        wait_for(lambda: survivor.parts() == ALL6, timeout=60, what="the survivor taking the dead member's share")
        two = produce_round(b.bootstrap, "crash", "two")
        wait_for(lambda: len(survivor.seen()) + len(victim_seen()) >= len(sent) + len(two), what="round two read")
        after = [r for r in survivor.seen() if r[1] in theirs]
        assert sorted(after) == sorted(r for r in two if r[1] in theirs), \
            "the dead member's partitions resume at its commits: round two only, once"
        assert committed(b.bootstrap, "g-crash", "crash", 6) == {p: 40 for p in range(6)}
    finally:
        if proc.poll() is None:
            proc.kill()
        survivor.stop()


def test_regex_subscription_and_range_assignor(make_broker):
    b = make_broker(env=ENV)
    create_topic(b.bootstrap, "rx-a", 2)
    create_topic(b.bootstrap, "other", 2)
    extra = {"group.remote.assignor": "range"}
    m1 = Member(b.bootstrap, "g-rx", ["^rx-.*"], extra=extra)
    m1.start()
    try:
        wait_for(lambda: m1.owned == {("rx-a", 0), ("rx-a", 1)}, timeout=60, what="the regex's topic")
        # A new matching topic bumps the group epoch and is assigned.
        create_topic(b.bootstrap, "rx-b", 2)
        want = {("rx-a", 0), ("rx-a", 1), ("rx-b", 0), ("rx-b", 1)}
        wait_for(lambda: m1.owned == want, timeout=60, what="the new topic matching the regex")
        m2 = Member(b.bootstrap, "g-rx", ["^rx-.*"], extra=extra)
        m2.start()
        try:
            # range: per topic, the first member by id takes partition 0, the other 1.
            wait_for(lambda: len(m1.owned) == 2 and len(m2.owned) == 2 and not (m1.owned & m2.owned),
                     timeout=60, what="two members splitting both topics")
            for m in (m1, m2):
                assert {p for _, p in m.owned} in ({0}, {1}), m.owned
            d = describe(b.bootstrap, "g-rx")
            assert d.partition_assignor == "range"
            assert d.type == ConsumerGroupType.CONSUMER
            sent = produce_round(b.bootstrap, "rx-b", "x", per_partition=5, partitions=2)
            sent |= produce_round(b.bootstrap, "other", "y", per_partition=5, partitions=2)
            want = {r for r in sent if r[0] == "rx-b"}
            wait_for(lambda: {r for m in (m1, m2) for r in m.seen()} >= want, what="rx-b's messages")
            assert not any(r[0] == "other" for m in (m1, m2) for r in m.seen())
        finally:
            m2.stop()
    finally:
        m1.stop()


# ---- raw requests: the errors for mixing protocols ----

def consumer_heartbeat(conn, group, member_id, epoch, topics, correlation=7, version=0):
    """ConsumerGroupHeartbeat (flexible versions) built by hand: kafka-python has no
    class for it. Returns (error_code, member_id, member_epoch)."""
    def cstr(s):
        if s is None:
            return b"\x00"
        raw = s.encode()
        return bytes([len(raw) + 1]) + raw  # short strings: one-byte varint

    body = cstr(group) + cstr(member_id) + struct.pack(">i", epoch) + cstr(None) + cstr(None)
    body += struct.pack(">i", 30000)
    body += bytes([len(topics) + 1]) + b"".join(cstr(t) for t in topics)
    if version >= 1:
        body += cstr(None)  # regex
    body += cstr(None)  # server assignor
    body += b"\x01"  # owned topic partitions: empty array
    body += b"\x00"  # tagged fields
    header = struct.pack(">hhi", 68, version, correlation) + struct.pack(">h", 3) + b"raw" + b"\x00"
    frame = header + body
    resp = conn.call(struct.pack(">i", len(frame)) + frame)
    pos = 4 + 4 + 1  # size, correlation id, header tags
    _throttle, err = struct.unpack_from(">ih", resp, pos)
    pos += 6
    n = resp[pos]  # error message (compact nullable string, short)
    pos += 1 + (n - 1 if n else 0)
    n = resp[pos]
    mid = resp[pos + 1:pos + n].decode() if n else None
    pos += 1 + (n - 1 if n else 0)
    (mepoch,) = struct.unpack_from(">i", resp, pos)
    return err, mid, mepoch


def test_classic_and_consumer_groups_coexist_and_refuse_each_others_members(make_broker):
    b = make_broker(env=ENV)
    create_topic(b.bootstrap, "both", 6)
    new = Member(b.bootstrap, "g-new", ["both"])
    old = Member(b.bootstrap, "g-old", ["both"],
                 extra={"group.protocol": "classic", "session.timeout.ms": 6000,
                        "heartbeat.interval.ms": 500, "partition.assignment.strategy": "range"})
    new.start()
    old.start()
    raw = Raw(b.bootstrap)
    try:
        wait_for(lambda: new.parts() == ALL6 and old.parts() == ALL6, timeout=60, what="both groups assigned")
        sent = produce_round(b.bootstrap, "both", "x", per_partition=10)
        wait_for(lambda: len(new.seen()) >= len(sent) and len(old.seen()) >= len(sent), what="both groups reading")
        assert sorted(new.seen()) == sorted(sent) and sorted(old.seen()) == sorted(sent)

        # A classic JoinGroup to a consumer-protocol group with members, and a
        # ConsumerGroupHeartbeat to a classic group with members, are refused.
        assert join(raw, "g-new").error_code == 23  # INCONSISTENT_GROUP_PROTOCOL
        err, _, _ = consumer_heartbeat(raw.conn, "g-old", "m-raw", 0, ["both"])
        assert err == 69  # GROUP_ID_NOT_FOUND: not a consumer group (Kafka without migration)
        # An unknown assignor and a bad epoch.
        err, mid, epoch = consumer_heartbeat(raw.conn, "g-raw", "m-raw", 0, ["both"], version=1)
        assert (err, mid, epoch) == (0, "m-raw", 1)
        err, _, _ = consumer_heartbeat(raw.conn, "g-raw", "m-raw", 5, ["both"], version=1)
        assert err == 110  # FENCED_MEMBER_EPOCH
        err, _, _ = consumer_heartbeat(raw.conn, "g-raw", "nobody", 3, ["both"], version=1)
        assert err == 25  # UNKNOWN_MEMBER_ID
        err, _, _ = consumer_heartbeat(raw.conn, "g-raw", "", 0, ["both"], version=1)
        assert err == 42  # INVALID_REQUEST: v1 members bring their own id
        err, mid, epoch = consumer_heartbeat(raw.conn, "g-raw", "m-raw", -1, [], version=1)
        assert (err, epoch) == (0, -1)
        # Once empty, the consumer group takes a classic member (it becomes classic).
        first = join(raw, "g-raw")
        assert first.error_code == 79  # MEMBER_ID_REQUIRED: the classic join goes ahead

        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        listed = admin.list_consumer_groups().result(timeout=15)
        types = {g.group_id: g.type for g in listed.valid}
        assert types["g-new"] == ConsumerGroupType.CONSUMER
        assert types["g-old"] == ConsumerGroupType.CLASSIC
        only = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(timeout=15)
        assert "g-new" in {g.group_id for g in only.valid}
        assert "g-old" not in {g.group_id for g in only.valid}
        # Describing the classic group still works (ConsumerGroupDescribe answers
        # GROUP_ID_NOT_FOUND for it and librdkafka falls back to DescribeGroups).
        d = describe(b.bootstrap, "g-old")
        assert d.type == ConsumerGroupType.CLASSIC and len(d.members) == 1
    finally:
        raw.close()
        new.stop()
        old.stop()


def test_restart_keeps_the_group_and_members_carry_on(make_broker):
    b = make_broker(env=ENV)
    create_topic(b.bootstrap, "rs", 6)
    a, bb = Member(b.bootstrap, "g-rs", ["rs"]), Member(b.bootstrap, "g-rs", ["rs"])
    a.start()
    bb.start()
    try:
        wait_for(lambda: split([a, bb]), what="a split")
        before = describe(b.bootstrap, "g-rs")
        sent = produce_round(b.bootstrap, "rs", "one", per_partition=10)
        wait_for(lambda: len(a.seen()) + len(bb.seen()) >= len(sent), what="round one")
        owned = (a.parts(), bb.parts())
        # A's revocation when B joined is the last one there may be.
        revokes = (len(a.revokes), len(bb.revokes))
        b.restart()
        # The restored group knows the members and their epochs: their next
        # heartbeats are accepted, nobody is fenced, nothing moves.
        after = wait_until("the group described after the restart", lambda: describe(b.bootstrap, "g-rs"))
        assert {m.member_id for m in after.members} == {m.member_id for m in before.members}
        sent |= produce_round(b.bootstrap, "rs", "two", per_partition=10)
        wait_for(lambda: len(a.seen()) + len(bb.seen()) >= len(sent), timeout=60, what="round two")
        assert sorted(a.seen() + bb.seen()) == sorted(sent), "exactly once across the restart"
        assert (a.parts(), bb.parts()) == owned
        assert (len(a.revokes), len(bb.revokes)) == revokes, "no member lost its partitions"
    finally:
        a.stop()
        bb.stop()


def test_coordinator_failover_in_a_cluster(cluster):
    from test_cluster import agreed_coordinator, wait_view
    c = cluster(3, env=ENV)
    create_topic(c[1].bootstrap, "cf", 6)
    wait_view(c, {"cf": 6}, what="balance over 3")
    a, bb = Member(c.bootstrap(), "g-cf", ["cf"]), Member(c.bootstrap(), "g-cf", ["cf"])
    a.start()
    bb.start()
    try:
        wait_for(lambda: split([a, bb]), timeout=60, what="a split")
        sent = produce_round(c.bootstrap(), "cf", "one", per_partition=10)
        wait_for(lambda: len(a.seen()) + len(bb.seen()) >= len(sent), timeout=60, what="round one")
        owned = (a.parts(), bb.parts())
        revokes = (len(a.revokes), len(bb.revokes))
        coordinator = agreed_coordinator(c, "g-cf")
        c.kill9(coordinator)
        new = agreed_coordinator(c, "g-cf")
        assert new != coordinator
        # The new coordinator loaded the group from etcd: the members' next
        # heartbeats are accepted at their epochs, nobody is fenced.
        d = wait_until("the group on the new coordinator", lambda: describe(c.bootstrap(), "g-cf"), timeout=60)
        assert d.type == ConsumerGroupType.CONSUMER and len(d.members) == 2
        sent |= produce_round(c.bootstrap(), "cf", "two", per_partition=10)
        wait_for(lambda: {r for m in (a, bb) for r in m.seen()} >= sent, timeout=90, what="round two")
        assert sorted(a.seen() + bb.seen()) == sorted(sent), "exactly once across the failover"
        assert (a.parts(), bb.parts()) == owned
        assert (len(a.revokes), len(bb.revokes)) == revokes, "the group carried on without a rebalance"
        wait_until("every offset committed on the new coordinator",
                   lambda: committed(c.bootstrap(), "g-cf", "cf", 6) == {p: 20 for p in range(6)}, timeout=60)
    finally:
        a.stop()
        bb.stop()


def test_static_member_restart_keeps_its_partitions(make_broker):
    # A long session, so that the restarted process is back well within it.
    b = make_broker(env={**ENV, "KAFSCALE_GROUP_CONSUMER_SESSION_TIMEOUT_MS": "30000"})
    create_topic(b.bootstrap, "st", 6)
    static = {"group.instance.id": "worker-1"}
    a = Member(b.bootstrap, "g-st", ["st"], extra=static)
    other = Member(b.bootstrap, "g-st", ["st"])
    a.start()
    other.start()
    again = Member(b.bootstrap, "g-st", ["st"], extra=static)
    try:
        wait_for(lambda: split([a, other]), timeout=60, what="a split")
        d = describe(b.bootstrap, "g-st")
        assert sorted(m.group_instance_id or "" for m in d.members) == ["", "worker-1"]
        mine = a.parts()
        sent = produce_round(b.bootstrap, "st", "one", per_partition=5)
        wait_for(lambda: len(a.seen()) + len(other.seen()) >= len(sent), what="round one")
        # close() of a static member leaves with epoch -2: its partitions wait for it.
        seen_assigns = len(other.assigns)
        a.stop()
        again.start()
        wait_for(lambda: again.parts() == mine, timeout=60, what="the new process getting the same partitions")
        assert all(not (got & {("st", p) for p in mine}) for got in other.assigns[seen_assigns:]), \
            "the other member never got the static member's partitions"
        two = produce_round(b.bootstrap, "st", "two", per_partition=5)
        wait_for(lambda: {r for m in (again, other) for r in m.seen()} >= two, what="round two read")
        assert sorted(r for r in again.seen()) == sorted(r for r in two if r[1] in mine), \
            "the new process resumes at the old one's commits"
    finally:
        for m in (a, other, again):
            m.stopping.set()
        other.stop()
        if again.is_alive():
            again.stop()
