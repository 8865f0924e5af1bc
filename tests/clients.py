"""Small helpers over the real clients, so tests read as what they check."""
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=10)
    fut[name].result(timeout=15)


def produce(bootstrap, topic, messages, acks="all", extra=None):
    """messages: iterable of (key, value, headers-or-None, partition-or-None).
    Returns the list of delivered (partition, offset, key, value) and the errors."""
    conf = {"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "message.timeout.ms": 30000}
    conf.update(extra or {})
    p = Producer(conf)
    d = Deliveries()
    delivered, errors = d.delivered, d.errors
    for key, value, headers, partition in messages:
        send(p, topic, key, value, d.cb, headers=headers, partition=partition)
    remaining = p.flush(60)
    assert remaining == 0, f"{remaining} messages still in the producer queue"
    return delivered, errors


class Deliveries:
    """A producer's delivery reports: `cb` is the on_delivery callback."""

    def __init__(self):
        self.delivered, self.errors = [], []

    def cb(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.delivered.append((msg.partition(), msg.offset(), msg.key(), msg.value()))


def send(p, topic, key, value, cb, headers=None, partition=None):
    """Hands one message to a confluent-kafka producer, waiting while its queue is full."""
    kw = {"key": key, "value": value, "on_delivery": cb}
    if headers:
        kw["headers"] = headers
    if partition is not None:
        kw["partition"] = partition
    while True:
        try:
            p.produce(topic, **kw)
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)


def consume_all(bootstrap, topic, partitions, expected, timeout=60, extra=None):
    """Reads partitions from offset 0 with manual assignment until `expected`
    messages arrived. Returns messages as (partition, offset, key, value, headers)."""
    conf = {"bootstrap.servers": bootstrap, "group.id": "kafscale-tests-unused", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100}
    conf.update(extra or {})
    c = Consumer(conf)
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    deadline = time.time() + timeout
    try:
        while len(out) < expected and time.time() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    raise KafkaException(m.error())
                out.append((m.partition(), m.offset(), m.key(), m.value(), m.headers()))
    finally:
        c.close()
    return out


def wait_for(cond, timeout=60, what="condition"):
    """Poll `cond` until it is true; a bounded wait for a state, never a result."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_until(what, fn, timeout=30):
    """Poll `fn` until it returns something true and return that; exceptions count
    as not yet. A bounded wait for a state; the last outcome is in the failure."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the last failure is reported
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{what}: still {last!r} after {timeout}s")


def go_build(src_dir, out):
    """Builds the Go program in src_dir to `out` from Debian's Go packages (GOPATH mode,
    GOPATH=/usr/share/gocode: the Go module proxy is not reachable here;
    scripts/install-test-tools.sh installs golang-go and the client sources). Go's
    own build cache (GOCACHE, by default under ~/.cache) is kept: a cold build
    compiles Sarama's cgo zstd, which takes minutes on a busy machine."""
    import os
    import shutil
    import subprocess
    from pathlib import Path
    go = shutil.which("go")
    assert go, "go is missing: run scripts/install-test-tools.sh"
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="")
    if not any(k in env for k in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):  # go refuses to guess one
        env["GOCACHE"] = str(Path.home() / ".cache" / "go-build")
    r = subprocess.run([go, "build", "-o", str(out), "."], cwd=src_dir, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, f"go build in {src_dir} failed:\n{r.stderr[-3000:]}"
    return out
