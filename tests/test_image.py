"""The broker image (docker/broker.Dockerfile) in a real container, locked down as
the operator runs it in a pod: read-only root filesystem, user 65532, no
capabilities, no privilege escalation, and the seccomp profile the chart installs
(operator/seccomp/kafscale-broker.json) instead of `Unconfined`. Produces and
consumes with confluent-kafka, drains with the pod's preStop command, restarts on
the same data and reads everything back.

Skipped, with the reason, where no container can run (no runtime, no daemon, a
kernel or cgroup setup the runtime refuses). The image is the Dockerfile's
`prebuilt` target over a locally assembled base (see container.py): building the
from-source target needs the Rust and distroless images from a registry."""
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import container
from clients import consume_all, create_topic, produce
from harness import ROOT, broker_bin, free_port

PROFILE = ROOT / "operator" / "seccomp" / "kafscale-broker.json"
DOCKERFILE = ROOT / "docker" / "broker.Dockerfile"
# The operator's preStop hook (helm/tests/test_chart.py checks the operator renders
# exactly this), with the container's control address.
PRE_STOP = ["kafscale-broker", "ctl", "--addr", "127.0.0.1:{control}", "drain", "--timeout-ms", "60000"]


@pytest.fixture(scope="module")
def rt():
    try:
        r = container.runtime()
    except container.Unavailable as e:
        pytest.skip(f"image test skipped: {e}")
    if not Path(broker_bin()).exists():
        pytest.fail(f"{broker_bin()} is missing: make build")
    return r


@pytest.fixture(scope="module")
def image(rt):
    tag = f"localhost/kafscale-broker:test-{uuid.uuid4().hex[:8]}"
    rt.build_prebuilt(DOCKERFILE, broker_bin(), tag)
    yield tag
    rt.remove_image(tag)


class BrokerContainer:
    def __init__(self, rt, image, data, seccomp=str(PROFILE)):
        self.rt, self.image, self.data, self.seccomp = rt, image, data, seccomp
        self.port, self.http, self.control = free_port(), free_port(), free_port()
        self.name = f"kafscale-test-{uuid.uuid4().hex[:8]}"

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.rt("run", "-d", "--name", self.name, "--network", "host", *self.rt.run_flags,
                "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--security-opt", f"seccomp={self.seccomp}",
                "-v", f"{self.data}:/var/lib/kafscale",
                "-e", f"KAFSCALE_BROKER_ADDR=127.0.0.1:{self.port}",
                "-e", f"KAFSCALE_METRICS_ADDR=127.0.0.1:{self.http}",
                "-e", f"KAFSCALE_CONTROL_ADDR=127.0.0.1:{self.control}",
                "-e", "KAFSCALE_SHARDS=1", "-e", "KAFSCALE_FLUSH_INTERVAL_MS=50",
                self.image)
        return self

    def logs(self):
        r = self.rt("logs", self.name, check=False)
        return r.stdout + r.stderr

    def running(self):
        r = self.rt("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return r.stdout.strip() == "true"

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.running():
                raise AssertionError(f"broker container exited:\n{self.logs()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"/readyz not 200 within {timeout}s:\n{self.logs()[-3000:]}")

    def exit_code(self):
        return int(self.rt("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def stop(self):
        self.rt("stop", "-t", "60", self.name, check=False, timeout=90)

    def remove(self):
        self.rt("rm", "-f", self.name, check=False)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    # The image's user owns the data directory, as an emptyDir with fsGroup would.
    os.chown(d, 65532, 65532)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_image_metadata(rt, image):
    cfg = json.loads(rt("image", "inspect", image).stdout)[0]["Config"]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["/usr/local/bin/kafscale-broker"]
    # kafscale-broker must be on PATH for the preStop hook.
    assert any(e.startswith("PATH=") and "/usr/local/bin" in e for e in cfg["Env"])


def test_produce_consume_drain_restart_in_a_locked_down_container(rt, image, data_dir):
    b = BrokerContainer(rt, image, data_dir).start()
    try:
        b.wait_ready()
        topic = "image-test"
        create_topic(b.bootstrap, topic, partitions=2)
        msgs = [(f"k{i}".encode(), f"v{i}".encode(), None, i % 2) for i in range(200)]
        delivered, errors = produce(b.bootstrap, topic, msgs)
        assert errors == [] and len(delivered) == 200
        got = consume_all(b.bootstrap, topic, 2, 200)
        assert sorted((p, k, v) for p, _, k, v, _ in got) == sorted((p, k, v) for k, v, _, p in msgs)

        # The pod's preStop hook, run the way the kubelet runs it: in the container.
        cmd = [a.format(control=b.control) for a in PRE_STOP]
        r = rt("exec", b.name, *cmd[:2], "--json", *cmd[2:], check=False, timeout=90)
        assert r.returncode == 0, f"preStop drain failed: {r.stdout}{r.stderr}\n{b.logs()[-3000:]}"
        drained = json.loads(r.stdout)
        parts = [p for p in drained["partitions"] if p["topic"] == topic]
        assert sorted(p["partition"] for p in parts) == [0, 1]
        assert sum(p["high_watermark"] for p in parts) == 200
        assert all(p["error"] == "" and p["high_watermark"] == p["log_end_offset"] for p in parts)
        b.stop()
        assert b.exit_code() == 0, b.logs()[-3000:]
    finally:
        b.remove()

    # A new container on the same data directory serves everything that was drained.
    b2 = BrokerContainer(rt, image, data_dir).start()
    try:
        b2.wait_ready()
        got = consume_all(b2.bootstrap, topic, 2, 200)
        assert sorted((p, k, v) for p, _, k, v, _ in got) == sorted((p, k, v) for k, v, _, p in msgs)
        assert sorted(o for p, o, *_ in got if p == 0) == list(range(100))
    finally:
        b2.stop()
        b2.remove()


def test_the_runtime_default_seccomp_profile_blocks_io_uring(rt, image, data_dir):
    """Why the chart installs a profile: under the runtime's default profile the
    broker refuses to start and says what is missing."""
    if rt.cmd != "podman":
        pytest.skip("checked with podman's default profile only")
    default = Path("/usr/share/containers/seccomp.json")
    if not default.exists():
        pytest.skip(f"{default} (podman's default profile) is missing")
    b = BrokerContainer(rt, image, data_dir, seccomp=str(default)).start()
    try:
        deadline = time.time() + 30
        while b.running() and time.time() < deadline:
            time.sleep(0.1)
        assert not b.running()
        assert b.exit_code() != 0
        assert "io_uring" in b.logs()
    finally:
        b.remove()
