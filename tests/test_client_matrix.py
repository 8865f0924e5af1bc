"""The client matrix: each client (aiokafka, kafkajs, Sarama, segmentio kafka-go)
produces and consumes with keys, values, headers and offsets checked, runs a group
of two members that split the partitions and commit, resumes from the commit,
creates / describes / deletes a topic, and produces idempotently and with every
compression codec it offers. librdkafka (confluent-kafka, kcat) and kafka-python
are the other files' clients; here they are the independent side that writes what
a client reads and reads what it wrote.

Every client is a small program under tests/clients/<lang>/ speaking one protocol
(tests/clients/README.md): a JSON request on stdin, a JSON answer on stdout. The Go
programs are built once per session from Debian's packages (GOPATH mode: no module
proxy); kafkajs comes from tests/clients/node/node_modules (scripts/install-test-tools.sh).
One broker serves the whole file; each test uses its own topics."""
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition as KTP

from clients import consume_all, create_topic, go_build, produce
from harness import Broker, stored_batches
from test_groups import GROUP_ENV

ROOT = Path(__file__).resolve().parent.parent
CLIENTS_DIR = ROOT / "tests" / "clients"
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@dataclass
class Client:
    name: str
    codecs: list
    headers: bool = True
    idempotence: bool = True
    describe_configs: bool = True
    # Why produce/consume fail today, when they do (an xfail(strict) reason: the test
    # turns red the day the broker accepts the client, so the matrix gets updated).
    data_gap: str = ""


CLIENTS = [
    Client("aiokafka", ["gzip", "snappy", "lz4", "zstd"]),
    Client("kafkajs", ["gzip", "snappy"]),
    Client("sarama", ["gzip", "snappy", "lz4", "zstd"]),
    # kafka-go 0.2.1 (Debian) never asks ApiVersions: it sends Produce v2 and Fetch v2
    # with message format v1 (magic 1), which the broker converts (docs/protocol.md).
    Client("kafka-go", ["gzip", "snappy", "lz4"], headers=False, idempotence=False, describe_configs=False),
]
BY_NAME = {c.name: c for c in CLIENTS}


def node_cmd():
    node = shutil.which("node")
    assert node, "node is missing: run scripts/install-test-tools.sh"
    assert (CLIENTS_DIR / "node" / "node_modules" / "kafkajs").is_dir(), \
        "kafkajs is missing: run scripts/install-test-tools.sh"
    return [node, str(CLIENTS_DIR / "node" / "kafkajs_client.js")]


@pytest.fixture(scope="session")
def commands(tmp_path_factory):
    """How to run a client's program (the Go ones built on first use, once a session)."""
    make = {
        "aiokafka": lambda: [sys.executable, str(CLIENTS_DIR / "python" / "aiokafka_client.py")],
        "kafkajs": node_cmd,
        "sarama": lambda: [str(go_build(CLIENTS_DIR / "go" / "sarama", tmp_path_factory.mktemp("go") / "sarama"))],
        "kafka-go": lambda: [str(go_build(CLIENTS_DIR / "go" / "kafkago", tmp_path_factory.mktemp("go") / "kafkago"))],
    }
    made = {}

    def get(name):
        if name not in made:
            made[name] = make[name]()
        return made[name]
    return get


@pytest.fixture(scope="module")
def mbroker(tmp_path_factory):
    # No auto-creation: every topic is made on purpose, and a deleted one stays deleted
    # (Metadata v1-v3, which kafka-go sends, cannot ask not to create).
    b = Broker(tmp_path_factory.mktemp("matrix"), env=dict(GROUP_ENV, KAFSCALE_AUTO_CREATE_TOPICS="false")).start()
    yield b
    assert b.stop() == 0, b.log()[-4000:]


class Run:
    """Runs one request through a client's program; a failure shows its stderr and
    the broker's log tail."""

    def __init__(self, client, cmd, broker):
        self.client, self.cmd, self.broker = client, cmd, broker

    def __call__(self, op, **req):
        # A bound on each wait inside the program (for assignments, for messages): a
        # client known not to work with the broker yet fails in seconds.
        req.update(op=op, bootstrap=self.broker.bootstrap, wait_s=8 if self.client.data_gap else 60)
        r = subprocess.run(self.cmd, input=json.dumps(req), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (f"{self.client.name} {op} failed ({r.returncode}):\n{r.stderr[-3000:]}\n"
                                   f"----- broker log -----\n{self.broker.log()[-3000:]}")
        return json.loads(r.stdout)


def with_gap(client):
    return pytest.param(client.name, marks=pytest.mark.xfail(strict=True, reason=client.data_gap)) \
        if client.data_gap else client.name


ALL = [c.name for c in CLIENTS]
DATA = [with_gap(c) for c in CLIENTS]


@pytest.fixture
def run(request, commands, mbroker):
    client = BY_NAME[request.param]
    return Run(client, commands(client.name), mbroker)


def topic_for(run, what):
    return f"{run.client.name}-{what}"


def messages(client, n, partitions):
    """n messages over the partitions in turn: keys (one null), values (one empty,
    one not ASCII) and, where the client has them, headers (one with an empty value)."""
    out = []
    for i in range(n):
        m = {"key": None if i == 3 else f"k-{i}", "value": "" if i == 4 else ("värde-ü" if i == 5 else f"v-{i}"),
             "partition": i % partitions}
        if client.headers:
            m["headers"] = [["trace", f"t-{i}"], ["empty", ""]] if i % 2 == 0 else []
        out.append(m)
    return out


def expected(msgs):
    """(partition, offset, key, value, headers) of msgs written to empty partitions in order."""
    nxt, out = {}, []
    for m in msgs:
        o = nxt.get(m["partition"], 0)
        nxt[m["partition"]] = o + 1
        out.append((m["partition"], o, m["key"], m["value"], [tuple(h) for h in m.get("headers", [])]))
    return out


def as_bytes(rows):
    return sorted((p, o, None if k is None else k.encode(), v.encode(), [(hk, hv.encode()) for hk, hv in h])
                  for p, o, k, v, h in rows)


def read_back(bootstrap, topic, partitions, n):
    """What librdkafka reads: (partition, offset, key, value, headers), headers [] when none."""
    got = consume_all(bootstrap, topic, partitions, n)
    assert len(got) == n, f"read {len(got)} of {n}"
    return sorted((p, o, k, v, h or []) for p, o, k, v, h in got)


def committed(bootstrap, group, topic, partitions):
    a = AdminClient({"bootstrap.servers": bootstrap})
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    res = a.list_consumer_group_offsets([req])[group].result(timeout=15)
    return {tp.partition: tp.offset for tp in res.topic_partitions}


@pytest.mark.parametrize("run", DATA, indirect=True)
def test_produce_read_back_by_librdkafka(run, mbroker):
    topic = topic_for(run, "produce")
    create_topic(mbroker.bootstrap, topic, 3)
    msgs = messages(run.client, 12, 3)
    want = expected(msgs)
    got = run("produce", topic=topic, messages=msgs)
    # Acknowledged where asked, at consecutive offsets from 0 in each partition.
    assert [tuple(d) for d in got["delivered"]] == [(p, o) for p, o, *_ in want]
    assert read_back(mbroker.bootstrap, topic, 3, len(msgs)) == as_bytes(want)


@pytest.mark.parametrize("run", DATA, indirect=True)
def test_consume_what_librdkafka_wrote(run, mbroker):
    topic = topic_for(run, "consume")
    create_topic(mbroker.bootstrap, topic, 3)
    msgs = messages(run.client, 12, 3)
    for i, m in enumerate(msgs):  # librdkafka writes headers whether or not the client reads them
        m["headers"] = [["trace", f"t-{i}"], ["empty", ""]] if i % 2 == 0 else []
    delivered, errors = produce(mbroker.bootstrap, topic,
                                [(None if m["key"] is None else m["key"].encode(), m["value"].encode(),
                                  [(k, v.encode()) for k, v in m["headers"]], m["partition"]) for m in msgs])
    assert errors == [] and len(delivered) == len(msgs)
    got = run("consume", topic=topic, partitions=3, count=len(msgs), group=f"{topic}-reader")
    want = expected(msgs)
    if not run.client.headers:
        want = [(p, o, k, v, []) for p, o, k, v, _ in want]
    assert sorted((p, o, k, v, [tuple(h) for h in hs]) for p, o, k, v, hs in got["messages"]) == sorted(want)


def codec_params():
    for c in CLIENTS:
        for codec in c.codecs:
            marks = [pytest.mark.xfail(strict=True, reason=c.data_gap)] if c.data_gap else []
            yield pytest.param(c.name, codec, marks=marks, id=f"{c.name}-{codec}")


@pytest.mark.parametrize("run,codec", list(codec_params()), indirect=["run"])
def test_compressed_produce(run, mbroker, codec):
    topic = topic_for(run, f"codec-{codec}")
    create_topic(mbroker.bootstrap, topic, 2)
    msgs = [{"key": f"k-{i}", "value": f"{codec}-{i}-" * 30, "partition": i % 2} for i in range(40)]
    want = expected(msgs)
    got = run("produce", topic=topic, messages=msgs, compression=codec)
    assert [tuple(d) for d in got["delivered"]] == [(p, o) for p, o, *_ in want]
    assert read_back(mbroker.bootstrap, topic, 2, len(msgs)) == as_bytes(want)
    # The stored batches are the client's compressed ones, not re-encoded.
    batches = [b for f in mbroker.objects.rglob(f"{topic}/*/*.kfs") for b in stored_batches(f)]
    assert sum(n for _, _, n in batches) == len(msgs)
    assert {a & 7 for _, a, _ in batches} == {CODEC_IDS[codec]}


@pytest.mark.parametrize("run", DATA, indirect=True)
def test_group_of_two_splits_commits_and_resumes(run, mbroker):
    topic, group, parts = topic_for(run, "group"), f"{run.client.name}-g", 4
    create_topic(mbroker.bootstrap, topic, parts)
    got = run("group", topic=topic, group=group, partitions=parts, count=40)
    a, b = got["members"]
    # Two members, disjoint assignments covering every partition, each reading only its own.
    assert a["assignment"] and b["assignment"]
    assert sorted(a["assignment"] + b["assignment"]) == list(range(parts))
    for m in (a, b):
        assert {p for p, *_ in m["messages"]} <= set(m["assignment"])
    # Every message once, at its offset (the program wrote message i to partition i % 4).
    rows = sorted(tuple(r) for r in a["messages"] + b["messages"])
    assert rows == sorted((i % parts, i // parts, f"k-{i}", f"g-{i}") for i in range(40))
    assert committed(mbroker.bootstrap, group, topic, parts) == {p: 10 for p in range(parts)}
    more = [(b"n", f"new-{i}".encode(), None, i % parts) for i in range(8)]
    assert produce(mbroker.bootstrap, topic, more)[1] == []
    # A new member of the group starts at the commits: only the new messages.
    got = run("resume", topic=topic, group=group, count=8)
    assert sorted(tuple(r) for r in got["messages"]) == sorted((i % parts, 10 + i // parts, "n", f"new-{i}")
                                                                for i in range(8))
    assert committed(mbroker.bootstrap, group, topic, parts) == {p: 12 for p in range(parts)}


@pytest.mark.parametrize("run", ALL, indirect=True)
def test_admin_create_describe_delete(run, mbroker):
    topic = topic_for(run, "admin")
    run("create_topic", topic=topic, partitions=3, config={"retention.ms": "123456"})
    # librdkafka sees what the client created.
    a = AdminClient({"bootstrap.servers": mbroker.bootstrap})
    md = a.list_topics(timeout=10)
    assert sorted(md.topics[topic].partitions) == [0, 1, 2]
    res = a.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    (cfg,) = [f.result(timeout=15) for f in res.values()]
    assert cfg["retention.ms"].value == "123456"
    got = run("describe_topic", topic=topic, config_names=["retention.ms", "cleanup.policy"])
    assert topic in got["topics"] and got["partitions"] == [0, 1, 2]
    if run.client.describe_configs:
        assert got["configs"] == {"retention.ms": "123456", "cleanup.policy": "delete"}
    run("delete_topic", topic=topic)
    assert topic not in a.list_topics(timeout=10).topics
    assert topic not in run("list_topics", topic=topic)["topics"]


def producers(bootstrap, topic, partitions):
    """DescribeProducers per partition: [(producer id, epoch, last sequence)]."""
    k = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        got = k.describe_producers([KTP(topic, p) for p in range(partitions)])
    finally:
        k.close()
    out = {}
    for p in range(partitions):
        state = got[KTP(topic, p)]
        ps = state.active_producers if hasattr(state, "active_producers") else state["active_producers"]
        get = (lambda s, k: getattr(s, k)) if ps and hasattr(ps[0], "producer_id") else (lambda s, k: s[k])
        out[p] = [(get(s, "producer_id"), get(s, "producer_epoch"), get(s, "last_sequence")) for s in ps]
    return out


@pytest.mark.parametrize("run", [c.name for c in CLIENTS if c.idempotence], indirect=True)
def test_idempotent_producer(run, mbroker):
    topic = topic_for(run, "idem")
    create_topic(mbroker.bootstrap, topic, 2)
    msgs = [{"key": f"k-{i}", "value": f"i-{i}", "partition": i % 2} for i in range(21)]
    want = expected(msgs)
    got = run("produce", topic=topic, messages=msgs, idempotent=True)
    assert [tuple(d) for d in got["delivered"]] == [(p, o) for p, o, *_ in want]
    assert read_back(mbroker.bootstrap, topic, 2, len(msgs)) == as_bytes(want)
    # One producer id (from InitProducerId) on both partitions, its sequences ending at
    # the partition's count - 1: the client sent sequenced batches and the broker tracked them.
    state = producers(mbroker.bootstrap, topic, 2)
    (pid0, epoch0, last0), = state[0]
    (pid1, epoch1, last1), = state[1]
    assert pid0 == pid1 and pid0 >= 0 and epoch0 == epoch1 >= 0
    assert (last0, last1) == (10, 9)
