"""A cluster of broker processes on one etcd and one S3 bucket (docs/cluster.md):
Metadata from any broker, balanced leadership, producers bootstrapped at
different brokers, kill -9 / SIGSTOP past the lease / SIGTERM of a leader while
producing, scaling 3 -> 4 -> 2, consumer-group coordinator failover, topic admin
on any broker, a duplicate broker id refused.

Every data check is the same: each acknowledged record (delivery report:
partition, offset, value) is read back at its acknowledged offset, no offset
holds two values, offsets have no gaps and (for idempotent producers) no
acknowledged record is stored twice. Metadata is asked of each broker alone (raw
requests through kafka-python's protocol classes), so one broker's answer is not
hidden behind another's. Waits are bounded polls for a state (WAIT seconds) that
fail with what they saw last; nothing asserts on timings.

Every test starts its own etcd, s3s-fs and brokers on free ports under tmp_path
(the `cluster` fixture), so the module can run in parallel with other files."""
import signal
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.protocol.metadata import (FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest,
                                     MetadataResponse)

from clients import Deliveries, create_topic, send
from harness import Broker, pb_fields
from rawkafka import Conn

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

WAIT = 60  # seconds: the bound of every wait for a state
P = 6  # partitions of the main topic
LEASE_TTL = 4
GROUP_ENV = {"KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS": "300"}
PRODUCER_CONF = {"acks": "all", "linger.ms": 5, "message.timeout.ms": 120000, "retries": 1_000_000,
                 "retry.backoff.ms": 100, "request.timeout.ms": 10000}


# ---- Metadata and FindCoordinator asked of one broker ----

def raw_call(broker, req_cls, resp_cls, version, **fields):
    conn = Conn(broker.bootstrap)
    conn.s.settimeout(5)
    try:
        req = req_cls[version](**fields)
        req.with_header(correlation_id=1, client_id="cluster-test")
        return resp_cls[version].decode(conn.call(req.encode(header=True, framed=True)), header=True, framed=True)
    finally:
        conn.close()


def metadata(broker):
    """This broker's own Metadata (v7, all topics): {"brokers": {id: "host:port"},
    "controller": id, "topics": {name: {partition: (leader, leader epoch, error)}},
    "topic_errors": {name: code}}."""
    r = raw_call(broker, MetadataRequest, MetadataResponse, 7, topics=None, allow_auto_topic_creation=False)
    return {"brokers": {b.node_id: f"{b.host}:{b.port}" for b in r.brokers},
            "controller": r.controller_id,
            "topics": {t.name: {p.partition_index: (p.leader_id, p.leader_epoch, p.error_code) for p in t.partitions}
                       for t in r.topics if t.error_code == 0},
            "topic_errors": {t.name: t.error_code for t in r.topics if t.error_code != 0}}


def find_coordinator(broker, group):
    """(error code, node id, "host:port") of FindCoordinator v1 asked of this broker."""
    r = raw_call(broker, FindCoordinatorRequest, FindCoordinatorResponse, 1, key=group, key_type=0)
    return r.error_code, r.node_id, f"{r.host}:{r.port}"


def view_problems(c, topics, ids=None, asked=None, balanced=True):
    """What is wrong with the cluster's Metadata, asked of every broker in `asked`
    (default: the live ones): every partition of each topic in `topics` ({name:
    partitions}) led by one of the brokers `ids` (default: the live ones); with
    `balanced` (the default) also: exactly those brokers listed with their host:port, a
    controller among them, all asked brokers agreeing on the leaders, and each
    broker leading floor(P/B) or ceil(P/B) partitions of each topic.
    Returns (problems, views)."""
    ids = sorted(ids if ids is not None else c.live_ids())
    asked = asked if asked is not None else c.live_ids()
    want = {i: c[i].bootstrap for i in ids}
    problems, views = [], {}
    for a in asked:
        try:
            md = metadata(c[a])
        except Exception as e:
            problems.append(f"broker {a}: Metadata failed: {e!r}")
            continue
        views[a] = md
        if balanced and md["brokers"] != want:
            problems.append(f"broker {a} lists brokers {md['brokers']}, want {want}")
        if balanced and md["controller"] not in ids:
            problems.append(f"broker {a} names controller {md['controller']}, not a live broker")
        for t, n in topics.items():
            parts = md["topics"].get(t)
            if parts is None:
                problems.append(f"broker {a}: topic {t} not listed (error {md['topic_errors'].get(t)})")
                continue
            if sorted(parts) != list(range(n)):
                problems.append(f"broker {a}: topic {t} has partitions {sorted(parts)}, want 0..{n - 1}")
            bad = {p: (leader, err) for p, (leader, _e, err) in parts.items() if leader not in ids or err}
            if bad:
                problems.append(f"broker {a}: {t} partitions without a live leader {{p: (leader, error)}}: {bad}")
            if balanced:
                counts = {i: sum(1 for leader, _e, _err in parts.values() if leader == i) for i in ids}
                lo, hi = n // len(ids), -(-n // len(ids))
                if any(not lo <= k <= hi for k in counts.values()):
                    problems.append(f"broker {a}: {t} leaders per broker {counts}, want each {lo}..{hi}")
    for t in topics if balanced else ():
        seen = {a: {p: v[0] for p, v in md["topics"].get(t, {}).items()} for a, md in views.items()}
        if len({tuple(sorted(s.items())) for s in seen.values()}) > 1:
            problems.append(f"brokers disagree on the leaders of {t}: {seen}")
    return problems, views


def wait_view(c, topics, ids=None, asked=None, balanced=True, what="", timeout=WAIT):
    """Polls view_problems until there are none; returns the views ({asked id:
    metadata}). Fails with the last problems seen."""
    deadline = time.time() + timeout
    while True:
        problems, views = view_problems(c, topics, ids=ids, asked=asked, balanced=balanced)
        if not problems:
            return views
        if time.time() > deadline:
            raise AssertionError(f"{what or 'cluster metadata'}: still wrong after {timeout} s:\n  "
                                 + "\n  ".join(problems))
        time.sleep(0.25)


def leaders(views, topic):
    """{partition: (leader, epoch)} of the (agreeing) views."""
    md = next(iter(views.values()))
    return {p: (leader, epoch) for p, (leader, epoch, _err) in md["topics"][topic].items()}


def wait_until(cond, what, timeout=WAIT, last=lambda: ""):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{'; last seen: ' + last() if last() else ''}")
        time.sleep(0.1)


# ---- producing and checking what was acknowledged ----

class Producing(threading.Thread):
    """One confluent-kafka producer on a thread, sending unique values `name-i`
    round-robin over the partitions: `count` of them, or continuously until stop().
    Then flushes (bounded by its message timeout). delivered: (partition, offset,
    value) of every successful delivery report; errors: the failed ones. Every
    instance is aborted (queue purged) at the end of its test, so that a failed
    test leaves no producer running into the next one."""

    running = []

    def __init__(self, bootstrap, topic, partitions, name, conf=None, count=None, pace=0.002):
        super().__init__(daemon=True)
        self.conf = {"bootstrap.servers": bootstrap, **PRODUCER_CONF, **(conf or {})}
        self.topic, self.partitions, self.name, self.count, self.pace = topic, partitions, name, count, pace
        self.idempotent = str(self.conf.get("enable.idempotence", "false")).lower() == "true"
        self.d = Deliveries()
        self.failed = []  # (error name, partition) of every failed delivery report
        self.sent = 0
        self.unflushed = None
        self.error = None
        self.stopping, self.aborting = threading.Event(), threading.Event()
        Producing.running.append(self)

    def run(self):
        try:
            p = Producer(self.conf)
            while not self.stopping.is_set() and (self.count is None or self.sent < self.count):
                send(p, self.topic, None, f"{self.name}-{self.sent}".encode(), self.cb,
                     partition=self.sent % self.partitions)
                self.sent += 1
                if self.pace:
                    time.sleep(self.pace)
            deadline = time.time() + self.conf["message.timeout.ms"] / 1000 + 15
            remaining = p.flush(0.5)
            while remaining and time.time() < deadline and not self.aborting.is_set():
                remaining = p.flush(0.5)
            if self.aborting.is_set():
                p.purge()
                p.flush(0)
            self.unflushed = remaining
        except Exception as e:
            self.error = e

    def cb(self, err, msg):
        self.d.cb(err, msg)
        if err is not None:
            self.failed.append((err.name(), msg.partition()))

    def abort(self):
        self.stopping.set()
        self.aborting.set()
        self.join(30)

    @property
    def delivered(self):
        return [(p, o, v) for p, o, _k, v in self.d.delivered]

    def finish(self):
        self.join(self.conf["message.timeout.ms"] / 1000 + 30)
        assert not self.is_alive(), f"producer {self.name} did not finish flushing"
        return self

    def failures(self):
        """{error name: {partition: count}} of the failed delivery reports."""
        out = {}
        for name, p in self.failed:
            out.setdefault(name, {}).setdefault(p, 0)
            out[name][p] += 1
        return out

    def acked_count(self):
        return len(self.d.delivered)

    def check_all_acked(self):
        if self.error is not None:
            raise AssertionError(f"producer {self.name} failed: {self.error!r}")
        if self.d.errors or self.unflushed or len(self.d.delivered) != self.sent:
            raise AssertionError(
                f"producer {self.name}: {len(self.d.delivered)} of {self.sent} acknowledged, "
                f"{len(self.d.errors)} delivery reports failed ({self.failures()}), "
                f"{self.unflushed} never answered")


def wait_more_acks(producers, n, what):
    """Waits until each producer has n more successful delivery reports than now:
    producing goes on (after a failover, say)."""
    start = {pr.name: pr.acked_count() for pr in producers}
    wait_until(lambda: all(pr.acked_count() >= start[pr.name] + n for pr in producers),
               f"{n} more acknowledged records per producer {what}",
               last=lambda: f"acked since: {({pr.name: pr.acked_count() - start[pr.name] for pr in producers})}, "
                            f"failed delivery reports: {({pr.name: pr.failures() for pr in producers})}")


def high_watermarks(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cluster-test-unused"})
    out, last = {}, {}
    try:
        deadline = time.time() + WAIT
        while len(out) < partitions:
            for p in range(partitions):
                if p in out:
                    continue
                try:
                    out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                except KafkaException as e:
                    last[p] = e.args[0].name()
            if len(out) < partitions:
                assert time.time() < deadline, f"no high watermark of {topic} after {WAIT} s: {last}"
                time.sleep(0.2)
    finally:
        c.close()
    return out


def read_back(bootstrap, topic, partitions):
    """Every record of the topic from the beginning to the high watermarks:
    {partition: [(offset, value), ...]} as fetched (a refetch of the same offset is
    kept, so that a changed value shows)."""
    hw = high_watermarks(bootstrap, topic, partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cluster-test-unused", "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    pos = {p: 0 for p in range(partitions)}
    errors = []
    deadline = time.time() + WAIT
    try:
        while any(pos[p] < hw[p] for p in hw):
            if time.time() > deadline:
                raise AssertionError(f"reading {topic} back: stuck after {WAIT} s at positions {pos}, "
                                     f"high watermarks {hw}; errors {errors[-5:]}")
            for m in c.consume(1000, 0.5):
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        pos[m.partition()] = max(pos[m.partition()], m.offset())
                    else:
                        errors.append(m.error().name())
                    continue
                got[m.partition()].append((m.offset(), m.value()))
                pos[m.partition()] = max(pos[m.partition()], m.offset() + 1)
    finally:
        c.close()
    return got


def exactly_once_problems(producers, got):
    """What breaks "every acknowledged record is read back exactly once at its
    acknowledged offset" (lists of examples, empty when it holds)."""
    at = {}
    problems = []
    two_values = []
    for p, recs in got.items():
        for o, v in recs:
            prev = at.setdefault((p, o), v)
            if prev != v:
                two_values.append((p, o, prev, v))
        offs = sorted({o for o, _v in recs})
        if offs != list(range(len(offs))):
            holes = sorted(set(range(offs[-1] + 1)) - set(offs)) if offs else []
            problems.append(f"partition {p}: offsets not contiguous from 0 ({len(holes)} missing, e.g. {holes[:5]})")
    if two_values:
        problems.append(f"{len(two_values)} offsets hold two different values, e.g. {two_values[:3]}")
    where = {}
    for (p, o), v in at.items():
        where.setdefault(v, []).append((p, o))
    for pr in producers:
        # A delivery report without an offset (librdkafka's -1001, None here): the
        # broker answered the produce without a base offset (or as a duplicate).
        no_offset = [(p, v) for p, o, v in pr.delivered if o is None or o < 0]
        if no_offset:
            absent = [(p, v) for p, v in no_offset if v not in where]
            problems.append(f"producer {pr.name}: {len(no_offset)} records acknowledged without an offset, "
                            f"e.g. {no_offset[:3]}; {len(absent)} of them are nowhere in the log"
                            + (f", e.g. {absent[:3]}" if absent else ""))
        acked = [(p, o, v) for p, o, v in pr.delivered if o is not None and o >= 0]
        missing = [(p, o, v) for p, o, v in acked if (p, o) not in at]
        wrong = [(p, o, v, at[(p, o)]) for p, o, v in acked if (p, o) in at and at[(p, o)] != v]
        if missing:
            problems.append(f"producer {pr.name}: {len(missing)} of {len(acked)} acknowledged records "
                            f"not read back (partition, offset, value), e.g. {missing[:3]}")
        if wrong:
            problems.append(f"producer {pr.name}: {len(wrong)} acknowledged offsets hold another value "
                            f"(partition, offset, acked, read), e.g. {wrong[:3]}")
        acked_at = {}
        for p, o, v in acked:
            acked_at.setdefault(v, set()).add((p, o))
        twice = [(v, sorted(s)) for v, s in acked_at.items() if len(s) > 1]
        if twice:
            problems.append(f"producer {pr.name}: {len(twice)} values acknowledged at two offsets, e.g. {twice[:3]}")
        if pr.idempotent:
            # Without idempotence a retried request may be stored twice (Kafka's
            # semantics); an idempotent producer's record never is.
            dup = [(v, (p, o), sorted(set(where[v]) - {(p, o)})) for p, o, v in pr.delivered
                   if len(where.get(v, [])) > 1]
            if dup:
                problems.append(f"producer {pr.name} (idempotent): {len(dup)} acknowledged records stored at "
                                f"more than one offset (value, acknowledged at, also at), e.g. {dup[:3]}")
    return problems


def check_exactly_once(c, topic, partitions, producers):
    """Reads the topic back through every live broker and checks every producer's
    acknowledged records; returns the records read."""
    got = read_back(c.bootstrap(), topic, partitions)
    problems = exactly_once_problems(producers, got)
    if problems:
        raise AssertionError(f"{topic}: acknowledged records not read back exactly once at their offsets "
                             f"(read {({p: len(r) for p, r in got.items()})} records per partition):\n  "
                             + "\n  ".join(problems))
    return got


def failover_producers(c, topic, partitions=P):
    """Two continuous producers bootstrapped at every live broker: one idempotent
    (checked strictly: no record stored twice), one plain acks=all."""
    prs = [Producing(c.bootstrap(), topic, partitions, "idem", conf={"enable.idempotence": True}),
           Producing(c.bootstrap(), topic, partitions, "plain")]
    for pr in prs:
        pr.start()
    wait_more_acks(prs, 200, "at the start")
    return prs


def stop_all(prs):
    for pr in prs:
        pr.stopping.set()
    for pr in prs:
        pr.finish()
    for pr in prs:
        pr.check_all_acked()


def registered(c, broker_id):
    """(id, host, port) of /kafscale/brokers/{id} in etcd, or None."""
    v = c.etcd.get(f"/kafscale/brokers/{broker_id}")
    if v is None:
        return None
    f = pb_fields(v)
    return f[1][0], f[2][0].decode(), f[3][0]


@pytest.fixture(autouse=True)
def _no_producer_outlives_its_test():
    yield
    while Producing.running:
        Producing.running.pop().abort()


# ---- the tests ----

def test_metadata_from_any_broker_lists_every_broker_and_balanced_leaders(cluster):
    c = cluster(3)
    topics = {"six": 6, "seven": 7, "two": 2, "one": 1}
    for i, (t, n) in enumerate(topics.items()):
        create_topic(c[c.ids()[i % 3]].bootstrap, t, n)
    wait_view(c, topics, what="3 brokers, balanced leaders per topic")
    # A client bootstrapped at one broker sees all three (confluent-kafka's view).
    for b in c.live():
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
        assert {i: f"{x.host}:{x.port}" for i, x in md.brokers.items()} == {i: c[i].bootstrap for i in c.ids()}
        assert {t: len(md.topics[t].partitions) for t in topics if t in md.topics} == topics
        assert all(pm.leader in c.ids() for t in topics for pm in md.topics[t].partitions.values())


def test_producers_at_different_brokers_every_ack_read_back_once(cluster):
    c = cluster(3)
    create_topic(c[1].bootstrap, "multi", P)
    wait_view(c, {"multi": P}, balanced=False, what="every partition led by a live broker")
    prs = [Producing(c[1].bootstrap, "multi", P, "at-1", count=1000, pace=0),
           Producing(c[2].bootstrap, "multi", P, "at-2-idem", count=1000, pace=0, conf={"enable.idempotence": True}),
           Producing(c[3].bootstrap, "multi", P, "at-3", count=1000, pace=0)]
    for pr in prs:
        pr.start()
    for pr in prs:
        pr.finish()
    for pr in prs:
        pr.check_all_acked()
    got = check_exactly_once(c, "multi", P, prs)
    assert sum(len(r) for r in got.values()) >= 3000


def test_kill9_of_a_leader_while_producing(cluster):
    c = cluster(3)
    create_topic(c[1].bootstrap, "k9", P)
    before = leaders(wait_view(c, {"k9": P}, what="balance over 3 before the kill"), "k9")
    prs = failover_producers(c, "k9")
    victim = before[0][0]
    moved = sorted(p for p, (leader, _e) in before.items() if leader == victim)
    assert c.kill9(victim) == -signal.SIGKILL
    survivors = c.live_ids()
    after = leaders(wait_view(c, {"k9": P}, ids=survivors, what=f"balance over {survivors} after kill -9 of {victim}"),
                    "k9")
    wait_more_acks(prs, 300, f"after broker {victim} died")

    c.restart(victim)
    wait_view(c, {"k9": P}, what=f"balance over 3 after broker {victim} rejoined")
    wait_more_acks(prs, 300, f"after broker {victim} rejoined")
    stop_all(prs)
    check_exactly_once(c, "k9", P, prs)
    # Metadata carries leader epochs (cluster.md): a partition's grows when it moves.
    grown = {p: (before[p][1], after[p][1]) for p in moved}
    assert all(b < a for b, a in grown.values()), \
        f"leader epochs of the partitions moved off broker {victim} did not grow {{p: (before, after)}}: {grown}"


def test_sigstop_past_the_lease_then_sigcont(cluster):
    c = cluster(3)
    create_topic(c[1].bootstrap, "paused", P)
    before = leaders(wait_view(c, {"paused": P}, what="balance over 3 before the pause"), "paused")
    prs = failover_producers(c, "paused")
    victim = before[0][0]
    survivors = [i for i in c.ids() if i != victim]
    paused_at = time.time()
    c.pause(victim)
    try:
        wait_view(c, {"paused": P}, ids=survivors, asked=survivors,
                  what=f"balance over {survivors} while broker {victim} is stopped past its lease")
        wait_more_acks(prs, 200, f"while broker {victim} is stopped")
        time.sleep(max(0.0, paused_at + 2.5 * LEASE_TTL - time.time()))  # the scenario: paused ~10 s
    finally:
        c.resume(victim)
    wait_view(c, {"paused": P}, what=f"broker {victim} a live member again after SIGCONT, balance over 3")
    assert c[victim].alive(), f"broker {victim} exited after SIGCONT with {c[victim].proc.returncode}"
    assert registered(c, victim) == (victim, "127.0.0.1", c[victim].port)
    wait_more_acks(prs, 300, f"after broker {victim} came back")
    stop_all(prs)
    check_exactly_once(c, "paused", P, prs)


def test_rolling_restart_while_producing(cluster):
    c = cluster(3)
    create_topic(c[1].bootstrap, "rolling", P)
    wait_view(c, {"rolling": P}, what="balance over 3 before the rolling restart")
    prs = failover_producers(c, "rolling")
    for i in c.ids():
        code, _b = c.restart(i)
        assert code == 0, f"broker {i} exited with {code} on SIGTERM"
        wait_view(c, {"rolling": P}, what=f"balance over 3 after restarting broker {i}")
        wait_more_acks(prs, 200, f"after restarting broker {i}")
    stop_all(prs)
    check_exactly_once(c, "rolling", P, prs)


def test_scaling_3_to_4_to_2_while_producing(cluster):
    c = cluster(3)
    create_topic(c[1].bootstrap, "scale", P)
    wait_view(c, {"scale": P}, what="balance over 3")
    prs = failover_producers(c, "scale")
    c.add()
    views = wait_view(c, {"scale": P}, what="balance over 4 after adding broker 4")
    assert len({leader for leader, _e in leaders(views, "scale").values()}) == 4
    wait_more_acks(prs, 200, "with 4 brokers")
    for i in (1, 2):
        code = c.stop(i)
        assert code == 0, f"broker {i} exited with {code} on SIGTERM"
    wait_view(c, {"scale": P}, what="balance over 2 after stopping brokers 1 and 2")
    wait_more_acks(prs, 200, "with 2 brokers")
    stop_all(prs)
    check_exactly_once(c, "scale", P, prs)


class GroupReader(threading.Thread):
    """A confluent-kafka group member (subscribe, auto commit off) that commits
    each record's next offset after processing it. A failed commit is kept and
    tried again before the next poll, while polling goes on (a member the new
    coordinator does not know has to rejoin, which happens in poll; records may
    then come again: at least once). When every record was read it commits every
    partition's end. `hold` makes it stop polling (it stays in the group);
    `holding` says it does."""

    def __init__(self, bootstrap, group, topic, ends):
        super().__init__(daemon=True)
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 6000,
                     "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest"}
        self.topic, self.ends = topic, ends
        self.records, self.committed, self.commit_errors = set(), {}, []
        self.pending = {}
        self.hold, self.holding, self.stopping = threading.Event(), threading.Event(), threading.Event()
        self.error = None

    def commit_pending(self, c):
        if not self.pending:
            return
        offsets = dict(self.pending)
        try:
            c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()], asynchronous=False)
            self.committed.update(offsets)
            for p, o in offsets.items():
                if self.pending.get(p) == o:
                    del self.pending[p]
        except KafkaException as e:
            self.commit_errors.append(e.args[0].name())
            time.sleep(0.1)

    def done(self):
        return all(self.committed.get(p) == end for p, end in self.ends.items())

    def run(self):
        try:
            c = Consumer(self.conf)
            c.subscribe([self.topic])
            want = sum(self.ends.values())
            while not self.stopping.is_set() and not self.done():
                if self.hold.is_set():
                    self.holding.set()
                    time.sleep(0.05)
                    continue
                self.holding.clear()
                self.commit_pending(c)
                if len({(p, o) for p, o, _v in self.records}) >= want and not self.pending:
                    self.pending.update(self.ends)
                    continue
                m = c.poll(0.1)
                if m is None or m.error():
                    continue
                self.records.add((m.partition(), m.offset(), m.value()))
                time.sleep(0.005)
                self.pending[m.partition()] = m.offset() + 1
            c.close()
        except Exception as e:
            self.error = e


def committed_offsets(bootstrap, group, topic, partitions):
    """The group's committed offsets {partition: offset} (absent: not committed),
    read with OffsetFetch by a consumer that does not join; retried while the
    coordinator moves."""
    last = None
    deadline = time.time() + WAIT
    while time.time() < deadline:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
        except KafkaException as e:
            last = e.args[0].name()
        finally:
            c.close()
        time.sleep(0.2)
    raise AssertionError(f"committed offsets of {group} unreadable for {WAIT} s: {last}")


def agreed_coordinator(c, group):
    """The coordinator every live broker names for the group (waits until they
    agree on a live one)."""
    seen = {}

    def ok():
        seen.clear()
        for b in c.live():
            try:
                seen[b.broker_id] = find_coordinator(b, group)
            except Exception as e:
                seen[b.broker_id] = repr(e)
        answers = set(seen.values())
        if len(answers) != 1:
            return False
        a = answers.pop()
        return isinstance(a, tuple) and a[0] == 0 and a[1] in c.live_ids() and a[2] == c[a[1]].bootstrap
    wait_until(ok, f"every live broker naming one live coordinator for {group}",
               last=lambda: f"{{asked broker: (error, node id, address)}} {seen}")
    return next(iter(seen.values()))[1]


def test_group_coordinator_failover(cluster):
    c = cluster(3, env=GROUP_ENV)
    create_topic(c[1].bootstrap, "grp", P)
    wait_view(c, {"grp": P}, what="balance over 3")
    pr = Producing(c.bootstrap(), "grp", P, "g", conf={"enable.idempotence": True}, count=1200, pace=0)
    pr.start()
    pr.finish()
    pr.check_all_acked()
    ends = {p: 1 + max(o for pp, o, _v in pr.delivered if pp == p) for p in range(P)}

    reader = GroupReader(c.bootstrap(), "g-failover", "grp", ends)
    reader.start()
    try:
        wait_until(lambda: len(reader.records) >= 300 or reader.error, "the group member under way",
                   last=lambda: f"{len(reader.records)} records, commit errors {reader.commit_errors[-3:]}")
        reader.hold.set()
        wait_until(reader.holding.is_set, "the member to pause between records")
        before = dict(reader.committed)
        assert committed_offsets(c.bootstrap(), "g-failover", "grp", P) == before

        coordinator = agreed_coordinator(c, "g-failover")
        c.kill9(coordinator)
        new = agreed_coordinator(c, "g-failover")
        assert new != coordinator
        got = committed_offsets(c.bootstrap(), "g-failover", "grp", P)
        assert got == before, f"committed offsets changed across the coordinator's kill -9: {before} -> {got}"

        reader.hold.clear()
        reader.join(WAIT)
        assert not reader.is_alive(), (
            f"the group did not finish on the new coordinator {new} within {WAIT} s: committed {reader.committed}, "
            f"want {ends}; {len(reader.records)} records read; last commit errors {reader.commit_errors[-5:]}")
    finally:
        reader.stopping.set()
        reader.hold.clear()
        reader.join(30)
    assert reader.error is None, repr(reader.error)
    missing = set(pr.delivered) - reader.records
    assert not missing, f"{len(missing)} produced records never consumed, e.g. {sorted(missing)[:3]}"
    assert committed_offsets(c.bootstrap(), "g-failover", "grp", P) == ends


def test_topic_admin_on_any_broker(cluster):
    c = cluster(3)
    create_topic(c[1].bootstrap, "admin", 3)
    wait_view(c, {"admin": 3}, balanced=False, what="the topic created through broker 1 on every broker")
    pr = Producing(c[3].bootstrap, "admin", 3, "via-3", count=300, pace=0)
    pr.start()
    pr.finish()
    pr.check_all_acked()
    check_exactly_once(c, "admin", 3, [pr])

    admin = AdminClient({"bootstrap.servers": c[2].bootstrap})
    admin.delete_topics(["admin"], operation_timeout=10)["admin"].result(timeout=30)
    listed = {}

    def gone():
        for b in c.live():
            md = metadata(b)
            listed[b.broker_id] = "admin" in md["topics"] or "admin" in md["topic_errors"]
        return not any(listed.values())
    wait_until(gone, "no broker listing the deleted topic", last=lambda: f"{{broker: still listed}} {listed}")
    # The deletion is answered only once its objects are gone (every owner let go first).
    left = [str(f.relative_to(c.s3.root)) for f in c.s3.root.rglob("*")
            if f.is_file() and "admin" in f.relative_to(c.s3.root).parts]
    assert not left, f"objects of the deleted topic left in the bucket: {left[:5]}"

    # The name is free again, for a new topic that starts empty at offset 0.
    create_topic(c[3].bootstrap, "admin", 3)
    wait_view(c, {"admin": 3}, balanced=False, what="the re-created topic on every broker")
    again = Producing(c[1].bootstrap, "admin", 3, "again", count=90, pace=0)
    again.start()
    again.finish()
    again.check_all_acked()
    got = check_exactly_once(c, "admin", 3, [again])
    assert sum(len(r) for r in got.values()) == 90, "the re-created topic holds only its own records"
    assert {p: min(o for (pp, o, _, _) in again.d.delivered if pp == p) for p in range(3)} == {0: 0, 1: 0, 2: 0}


def test_clients_are_told_of_a_live_controller_while_the_elected_one_is_gone(cluster):
    """Between a controller's exit and the next election the controller key can name a
    broker that is no longer live. librdkafka sends admin requests to the controller
    and, told of one it has no address for, waits for it until its next full metadata
    refresh (minutes), so Metadata must name a listed broker; every broker serves what
    clients send to the controller."""
    c = cluster(2)
    wait_view(c, {}, what="2 brokers")
    # The key names broker 99 and, written without a lease, stays: no broker runs an
    # election while the key exists. (ControllerClaim{broker_id: 99}.)
    c.etcd.put("/kafscale/controller", b"\x08\x63")
    views = {}

    def each_names_itself():
        for b in c.live():
            views[b.broker_id] = metadata(b)
        return all(v["controller"] == i and sorted(v["brokers"]) == [1, 2] for i, v in views.items())
    wait_until(each_names_itself, "each broker naming itself the controller",
               last=lambda: f"{{broker: (controller, brokers)}} "
                            f"{ {i: (v['controller'], sorted(v['brokers'])) for i, v in views.items()} }")
    # Requests librdkafka sends to the controller go through, at either broker.
    for b in c.live():
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        name = f"after-controller-{b.broker_id}"
        admin.create_topics([NewTopic(name, 2)])[name].result(timeout=30)
    # The election resumes once the key is gone; the new controller assigns the topics.
    c.etcd.ctl("del", "/kafscale/controller")
    wait_view(c, {"after-controller-1": 2, "after-controller-2": 2}, balanced=False,
              what="the topics created while the elected controller was gone, with leaders")
    assert all(metadata(b)["controller"] in (1, 2) for b in c.live())


def test_a_live_broker_id_is_refused(cluster, tmp_path):
    """The cluster form of test_etcd.py's
    test_a_live_broker_id_is_refused_and_a_restarted_broker_takes_its_own (which
    checks the whole message and the restart on the same address)."""
    c = cluster(3)
    dup = Broker(tmp_path / "dup", env=dict(c.env))
    dup.env.update({"KAFSCALE_BROKER_ID": "2", "KAFSCALE_BROKER_HOST": "127.0.0.1",
                    "KAFSCALE_BROKER_PORT": str(dup.port)})
    try:
        dup.start()
        raise AssertionError(f"a second broker with live id 2 started\n{dup.log()[-2000:]}")
    except RuntimeError:
        pass
    finally:
        if dup.alive():
            dup.kill9()
    assert dup.proc.wait(timeout=30) == 1
    assert f"broker id 2 is already registered by a live broker at 127.0.0.1:{c[2].port}" in dup.log(), \
        dup.log()[-2000:]
    assert registered(c, 2) == (2, "127.0.0.1", c[2].port)
    assert all(b.alive() for b in c.brokers.values())
    assert metadata(c[2])["brokers"].get(2) == c[2].bootstrap
