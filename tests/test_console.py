"""The console at /ui/: its JSON state, its server-sent events, and the page itself
rendered by Debian's Chromium (driven by playwright-core from tests/ui/), all against
a live broker with a known topic and a consumer group that lags behind."""
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from clients import create_topic, produce
from harness import ROOT

TOPIC, GROUP, CLIENT_ID = "console-orders", "console-readers", "console-test-client"
ARTIFACTS = ROOT / "tests" / ".artifacts"


def state(b):
    status, body = b.http_get("/ui/api/state")
    assert status == 200, body
    return json.loads(body)


def poll(fn, ok, timeout=30):
    """Calls fn() until ok(value); returns the last value."""
    deadline = time.time() + timeout
    v = fn()
    while not ok(v) and time.time() < deadline:
        time.sleep(0.1)
        v = fn()
    return v


def topic_of(s, name):
    return next(t for t in s["topics"] if t["name"] == name)


def group_of(s, name):
    return next((g for g in s["groups"] if g["id"] == name), None)


def store_bytes(b, topic, partition):
    """Bytes of the partition's .kfs objects in the broker's local object store."""
    return sum(p.stat().st_size for p in b.objects.rglob("*.kfs")
               if p.parent.name == str(partition) and p.parent.parent.name == topic)


def first_sse_event(b, timeout=10):
    """(event name, data) of the first event /ui/events sends."""
    with urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/ui/events", timeout=timeout) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        name, data = None, []
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line == "":
                return name, "\n".join(data)
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
    raise AssertionError("the event stream ended before an event")


def test_console_state_events_and_page(make_broker, tmp_path):
    b = make_broker()
    create_topic(b.bootstrap, TOPIC, partitions=2)
    first = {0: 137, 1: 42}
    msgs = [(None, f"m{p}-{i}".encode(), None, p) for p in first for i in range(first[p])]
    delivered, errors = produce(b.bootstrap, TOPIC, msgs)
    assert errors == [] and len(delivered) == sum(first.values())

    # Rates are differences of the real counters between two gatherings.
    before = state(b)
    extra = [(None, b"x" * 300, None, 1) for _ in range(5)]
    delivered, errors = produce(b.bootstrap, TOPIC, extra)
    assert errors == [] and len(delivered) == 5
    time.sleep(0.3)  # gatherings closer than 0.2 s share their rates
    after = state(b)
    grown = topic_of(after, TOPIC)["produce_bytes_total"] - topic_of(before, TOPIC)["produce_bytes_total"]
    assert grown >= 5 * 300
    rate = next(t for t in after["rates"]["topics"] if t["topic"] == TOPIC)
    assert rate["produce_bytes"] == grown
    assert rate["produce_bytes_per_sec"] == grown / after["rates"]["interval_sec"]
    hw = {0: 137, 1: 47}

    # A group member that read everything but committed behind the end.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": GROUP, "client.id": CLIENT_ID,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": 30000, "fetch.wait.max.ms": 100})
    try:
        c.subscribe([TOPIC])
        seen, deadline = 0, time.time() + 60
        while seen < sum(hw.values()) and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                seen += 1
        assert seen == sum(hw.values())
        committed = {0: 100, 1: 40}
        c.commit(offsets=[TopicPartition(TOPIC, p, o) for p, o in committed.items()], asynchronous=False)

        s = poll(lambda: state(b), lambda s: (group_of(s, GROUP) or {}).get("state") == "Stable"
                 and all(p["unflushed_bytes"] == 0 for p in topic_of(s, TOPIC)["partitions"]))

        assert s["broker"]["address"] == b.bootstrap
        assert s["broker"]["shards"] == 2 and len(s["shards"]) == 2
        h = s["store"]["health"]
        assert (h["state"], h["detail"], h["error_rate"]) == ("healthy", None, 0.0)
        assert h["latency_avg_ms"] > 0
        puts = next(o for o in s["store"]["operations"] if o["operation"] == "put")
        assert puts["requests"] == 2 * len(list(b.objects.rglob("*.kfs"))) and puts["errors"] == 0

        t = topic_of(s, TOPIC)
        assert [p["partition"] for p in t["partitions"]] == [0, 1]
        for p in t["partitions"]:
            i = p["partition"]
            assert p["loaded"] is True
            assert (p["log_start"], p["high_watermark"], p["next_offset"]) == (0, hw[i], hw[i])
            assert p["store_bytes"] == store_bytes(b, TOPIC, i) > 0
            assert p["unflushed_bytes"] == 0

        g = group_of(s, GROUP)
        assert g["protocol_type"] == "consumer"
        assert len(g["members"]) == 1
        m = g["members"][0]
        assert m["client_id"] == CLIENT_ID
        assert "127.0.0.1" in m["host"]
        assert m["assignment"] == [{"topic": TOPIC, "partitions": [0, 1]}]
        assert g["leader"] == m["member_id"]
        assert [(o["topic"], o["partition"], o["committed"], o["high_watermark"], o["lag"]) for o in g["offsets"]] == [
            (TOPIC, 0, 100, 137, 37), (TOPIC, 1, 40, 47, 7)]
        assert g["total_lag"] == 44

        # The event stream sends the same state.
        name, data = first_sse_event(b)
        assert name == "state"
        ev = json.loads(data)
        assert [p["high_watermark"] for p in topic_of(ev, TOPIC)["partitions"]] == [137, 47]
        assert group_of(ev, GROUP)["total_lag"] == 44

        # The page, in a real browser.
        page = render_page(b, tmp_path, [TOPIC, GROUP, CLIENT_ID, "137", "47"])
        assert page["missing"] == [], page["text"]
        assert page["consoleErrors"] == []
        assert page["live"] == "live"
        text = page["text"]
        for word in (TOPIC, GROUP, CLIENT_ID, "Stable", "healthy", "total lag 44"):
            assert word in text, text
        assert (ARTIFACTS / "console.png").stat().st_size > 0
    finally:
        c.close()


def render_page(b, tmp_path, expected):
    """Loads /ui/ in headless Chromium; returns what tests/ui/console_page.mjs reports."""
    ui = ROOT / "tests" / "ui"
    assert (ui / "node_modules" / "playwright-core").is_dir(), \
        "playwright-core is missing: run scripts/install-test-tools.sh"
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    assert shutil.which(chromium), f"{chromium} is missing: run scripts/install-test-tools.sh"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    r = subprocess.run(
        ["node", str(ui / "console_page.mjs"), f"http://127.0.0.1:{b.metrics_port}/ui/",
         str(ARTIFACTS / "console.png"), str(profile), json.dumps(expected)],
        cwd=ui, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_console_follows_the_object_store(make_broker, s3):
    b = make_broker(env=s3.broker_env())
    create_topic(b.bootstrap, TOPIC, partitions=1)
    delivered, errors = produce(b.bootstrap, TOPIC, [(None, b"v", None, 0)] * 3)
    assert errors == [] and len(delivered) == 3
    health = lambda: state(b)["store"]["health"]  # noqa: E731
    assert poll(health, lambda h: h["state"] == "healthy")["state"] == "healthy"

    s3.stop()
    h = poll(health, lambda h: h["state"] == "unavailable")
    assert h["state"] == "unavailable" and h["detail"]
    s = state(b)
    # The broker's own state is still there while the store is away.
    assert topic_of(s, TOPIC)["partitions"][0]["high_watermark"] == 3
    assert next(o for o in s["store"]["operations"] if o["operation"] == "list")["errors"] > 0

    s3.start()
    h = poll(health, lambda h: h["state"] == "healthy")
    assert (h["state"], h["detail"]) == ("healthy", None)
