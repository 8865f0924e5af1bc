"""Security end to end (docs/security.md): listeners, TLS, mutual TLS, SASL PLAIN
and SCRAM, SCRAM credentials through the Admin API, in the metadata store.

Real clients only: confluent-kafka (librdkafka 2.16) and kcat (librdkafka 2.0,
which speaks SaslHandshake v0 and the pre-2.6.1 SCRAM nonce) over SASL_SSL with
SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN, kcat and kafka-python over SSL,
mutual TLS with a principal mapping rule; hand-built SaslHandshake and
SaslAuthenticate frames where the exact error code or session lifetime is the
point. Certificates (a CA, the broker's, clients') are made in the test with
the `cryptography` package. Credentials survive a restart (embedded store) and
reach a second broker through etcd. Waits are bounded polls; nothing asserts on
timings."""
import base64
import hashlib
import hmac
import struct
import subprocess
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

from clients import wait_until
from harness import free_port
from pki import Pki
from rawkafka import Raw

pytestmark = pytest.mark.timeout(300)

WAIT = 30  # seconds: the bound of every wait for a state
USERS = {"admin": "admin-secret", "alice": "alice-secret"}
SASL_AUTHENTICATION_FAILED = 58
ILLEGAL_SASL_STATE = 34
UNSUPPORTED_SASL_MECHANISM = 33


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


def users_file(tmp_path, users=USERS):
    p = tmp_path / "users.txt"
    p.write_text("# bootstrap users\n" + "".join(f"{u}:{pw}\n" for u, pw in users.items()))
    return str(p)


def secured_broker(make_broker, pki, tmp_path, env=None, client_ca=False):
    """A broker with PLAINTEXT (the harness's port), SASL_SSL, SSL and
    SASL_PLAINTEXT listeners; returns it with .ports = {listener: port}."""
    b = make_broker(start=False, shards=2)
    ports = {"PLAINTEXT": b.port, "SASL_SSL": free_port(), "SSL": free_port(), "SASL_PLAINTEXT": free_port()}
    b.env.update({
        "KAFSCALE_LISTENERS": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
        "KAFSCALE_TLS_CERT_FILE": pki.server_cert,
        "KAFSCALE_TLS_KEY_FILE": pki.server_key,
        "KAFSCALE_SASL_USERS_FILE": users_file(tmp_path),
        "KAFSCALE_LOG_LEVEL": "info,kafscale_broker::connection=debug",
    })
    if client_ca:
        b.env["KAFSCALE_TLS_CLIENT_CA_FILE"] = pki.ca
    b.env.update(env or {})
    b.ports = ports
    return b.start()


def sasl_conf(port, pki, mechanism="SCRAM-SHA-512", user="alice", password=None, protocol="SASL_SSL"):
    conf = {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": protocol,
            "sasl.mechanism": mechanism, "sasl.username": user,
            "sasl.password": USERS.get(user) if password is None else password}
    if protocol.endswith("SSL"):
        conf["ssl.ca.location"] = pki.ca
    return conf


def produce(conf, topic, values):
    p = Producer({**conf, "acks": "all", "message.timeout.ms": 20000})
    acked = []
    for v in values:
        p.produce(topic, v, on_delivery=lambda e, m: acked.append(e or (m.partition(), m.offset())))
    assert p.flush(30) == 0
    return acked


def consume(conf, topic, n):
    c = Consumer({**conf, "group.id": f"g-{topic}-{time.monotonic_ns()}", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got, deadline = [], time.time() + WAIT
    while len(got) < n and time.time() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def wait_for(what, fn):
    return wait_until(what, fn, timeout=WAIT)


def scram_client(mechanism, user, password, client_nonce="fyko+d2lbbFgONRv9qkxdawL"):
    """RFC 5802's client side: (client-first, a function from server-first to
    (client-final, the server-final the server must send))."""
    name = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    bare = f"n={user},r={client_nonce}"

    def final(server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(client_nonce) and len(attrs["r"]) > len(client_nonce)
        salted = hashlib.pbkdf2_hmac(name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", name).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth = f"{bare},{server_first},{without_proof}".encode()
        sig = hmac.new(hashlib.new(name, client_key).digest(), auth, name).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
        server_key = hmac.new(salted, b"Server Key", name).digest()
        expect = "v=" + base64.b64encode(hmac.new(server_key, auth, name).digest()).decode()
        return f"{without_proof},p={proof}".encode(), expect.encode()

    return f"n,,{bare}".encode(), final


# ---- tests ----

@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_confluent_kafka_over_sasl_ssl(make_broker, pki, tmp_path, mechanism):
    b = secured_broker(make_broker, pki, tmp_path)
    conf = sasl_conf(b.ports["SASL_SSL"], pki, mechanism)
    topic = f"sasl-{mechanism.lower()}"
    values = [f"{mechanism}-{i}".encode() for i in range(20)]
    acked = produce(conf, topic, values)
    assert [a[1] for a in acked] == list(range(20)), acked
    assert consume(conf, topic, 20) == values
    # Metadata names the SASL_SSL listener's address to a client that came in on it.
    md = AdminClient(conf).list_topics(timeout=10)
    assert [(x.host, x.port) for x in md.brokers.values()] == [("127.0.0.1", b.ports["SASL_SSL"])]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_kcat_over_sasl_ssl(make_broker, pki, tmp_path, mechanism):
    # kcat 1.7 (librdkafka 2.0.2) starts SASL only when SaslHandshake v0 is listed,
    # then sends raw tokens; its SCRAM client-final repeats the client nonce
    # (librdkafka#4895), which Kafka 3.8.1-3.9 accept and so does the broker.
    b = secured_broker(make_broker, pki, tmp_path)
    topic = f"kcat-{mechanism.lower()}"

    def kcat(*args, password=USERS["alice"], **kw):
        sec = ["-b", f"127.0.0.1:{b.ports['SASL_SSL']}", "-X", "security.protocol=SASL_SSL",
               "-X", f"ssl.ca.location={pki.ca}", "-X", f"sasl.mechanisms={mechanism}",
               "-X", "sasl.username=alice", "-X", f"sasl.password={password}"]
        return subprocess.run(["kcat", *sec, *args], capture_output=True, text=True, timeout=60, **kw)

    lines = [f"{mechanism}-{i}" for i in range(10)]
    r = kcat("-P", "-t", topic, "-X", "acks=all", input="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    r = kcat("-C", "-e", "-o", "beginning", "-q", "-t", topic)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == lines
    # A wrong password: refused, nothing listed, nothing stored.
    r = kcat("-L", "-t", topic, "-m", "10", password="wrong")
    assert r.returncode != 0 and "Authentication failed" in r.stderr, r.stderr
    assert wait_for("refusal logged", lambda: "SASL authentication failed" in b.log())
    r = kcat("-P", "-t", "kcat-never", "-X", "message.timeout.ms=5000", password="wrong", input="x\n")
    assert r.returncode != 0
    assert not (b.objects / "default" / "kcat-never").exists()


def test_sasl_handshake_v0_raw_tokens(make_broker, pki, tmp_path):
    b = secured_broker(make_broker, pki, tmp_path)
    # PLAIN: one raw token, answered by an empty frame; then Kafka requests.
    raw = Raw(b.ports["SASL_PLAINTEXT"])
    assert raw.handshake("PLAIN", version=0) == (0, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    assert raw.raw_token(b"\0alice\0alice-secret") == b""
    assert raw.metadata_brokers() == {0: ("127.0.0.1", b.ports["SASL_PLAINTEXT"])}
    # Re-authentication needs v1 (KIP-368).
    assert raw.handshake("PLAIN", version=0)[0] == ILLEGAL_SASL_STATE
    raw.close()
    # SCRAM over TLS: two raw round trips, the server's signature checked.
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"]:
        raw = Raw(b.ports["SASL_SSL"], tls_ca=pki.ca)
        assert raw.handshake(mechanism, version=0)[0] == 0
        first, final = scram_client(mechanism, "admin", USERS["admin"])
        client_final, expect = final(raw.raw_token(first).decode())
        assert raw.raw_token(client_final) == expect
        assert raw.metadata_brokers() == {0: ("127.0.0.1", b.ports["SASL_SSL"])}
        raw.close()
    # A wrong password: no error can be sent in raw framing, the connection is closed.
    raw = Raw(b.ports["SASL_PLAINTEXT"])
    assert raw.handshake("SCRAM-SHA-512", version=0)[0] == 0
    first, final = scram_client("SCRAM-SHA-512", "alice", "not-her-password")
    client_final, _ = final(raw.raw_token(first).decode())
    with pytest.raises(ConnectionError):
        raw.raw_token(client_final)
    raw.close()
    raw = Raw(b.ports["SASL_PLAINTEXT"])
    assert raw.handshake("PLAIN", version=0)[0] == 0
    with pytest.raises(ConnectionError):
        raw.raw_token(b"\0alice\0wrong")
    raw.close()


def test_kcat_over_ssl(make_broker, pki, tmp_path):
    b = secured_broker(make_broker, pki, tmp_path)
    common = ["-b", f"127.0.0.1:{b.ports['SSL']}", "-X", "security.protocol=SSL",
              "-X", f"ssl.ca.location={pki.ca}", "-t", "kcat-ssl"]
    lines = [f"line-{i}" for i in range(10)]
    subprocess.run(["kcat", "-P", *common], input="\n".join(lines) + "\n", text=True, check=True, timeout=60)
    out = subprocess.run(["kcat", "-C", "-e", "-o", "beginning", "-q", *common], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.splitlines() == lines


def test_kafka_python_over_ssl(make_broker, pki, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer
    b = secured_broker(make_broker, pki, tmp_path)
    bootstrap = f"127.0.0.1:{b.ports['SSL']}"
    p = KafkaProducer(bootstrap_servers=bootstrap, security_protocol="SSL", ssl_cafile=pki.ca, acks="all")
    for i in range(10):
        p.send("kp-ssl", f"v{i}".encode()).get(timeout=30)
    # Over 16 KiB in one fetch answer: written as chunks (record slices) through rustls.
    big = [f"big-{i}-".encode() * 200 for i in range(40)]
    for v in big:
        p.send("kp-ssl", v)
    p.flush(timeout=30)
    p.close()
    c = KafkaConsumer("kp-ssl", bootstrap_servers=bootstrap, security_protocol="SSL", ssl_cafile=pki.ca,
                      auto_offset_reset="earliest", consumer_timeout_ms=10000, group_id=None)
    got = [m.value for m in c]
    c.close()
    assert got == [f"v{i}".encode() for i in range(10)] + big


def test_wrong_password_is_refused_and_stores_nothing(make_broker, pki, tmp_path):
    b = secured_broker(make_broker, pki, tmp_path)
    # The exact code, on a hand-built exchange (SASL_PLAINTEXT listener).
    raw = Raw(b.ports["SASL_PLAINTEXT"])
    assert raw.handshake("PLAIN") == (0, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    err, msg, _, _ = raw.authenticate(b"\0alice\0not-the-password")
    assert err == SASL_AUTHENTICATION_FAILED, msg
    assert "Authentication failed" in msg
    # After a failure the connection takes nothing more: another handshake is out
    # of place, any other request closes it.
    assert raw.handshake("PLAIN")[0] == ILLEGAL_SASL_STATE
    with pytest.raises(ConnectionError):
        raw.metadata_brokers()
    raw.close()
    raw = Raw(b.ports["SASL_PLAINTEXT"])
    raw.handshake("SCRAM-SHA-512")
    err, _, _, _ = raw.authenticate(b"n,,n=nobody,r=abcdef")
    assert err == SASL_AUTHENTICATION_FAILED
    raw.close()
    # A real producer with a wrong password: nothing is acknowledged or stored.
    conf = sasl_conf(b.ports["SASL_SSL"], pki, "SCRAM-SHA-512", password="wrong")
    p = Producer({**conf, "message.timeout.ms": 5000})
    errors = []
    for i in range(5):
        p.produce("never-stored", b"x", on_delivery=lambda e, m: errors.append(e))
    p.flush(20)
    assert len(errors) == 5 and all(e is not None for e in errors), errors
    good = AdminClient(sasl_conf(b.ports["SASL_SSL"], pki, "SCRAM-SHA-512", user="admin"))
    assert "never-stored" not in good.list_topics(timeout=10).topics
    assert not (b.objects / "default" / "never-stored").exists()


def test_sasl_listener_admits_nothing_before_authentication(make_broker, pki, tmp_path):
    b = secured_broker(make_broker, pki, tmp_path)
    raw = Raw(b.ports["SASL_PLAINTEXT"])
    keys = raw.api_keys()
    assert {17, 36} <= keys  # SaslHandshake, SaslAuthenticate
    assert raw.handshake("GSSAPI")[0] == UNSUPPORTED_SASL_MECHANISM
    with pytest.raises(ConnectionError):
        raw.metadata_brokers()  # before authentication: the connection is closed
    raw.close()
    # On the PLAINTEXT listener the SASL APIs are not offered, and a handshake is out of place.
    raw = Raw(b.ports["PLAINTEXT"])
    assert not ({17, 36} & raw.api_keys())
    assert raw.handshake("PLAIN")[0] == ILLEGAL_SASL_STATE
    assert raw.metadata_brokers() == {0: ("127.0.0.1", b.ports["PLAINTEXT"])}
    raw.close()
    # Over TLS, authenticated with PLAIN: Metadata advertises the SASL_SSL listener.
    raw = Raw(b.ports["SASL_SSL"], tls_ca=pki.ca)
    assert raw.handshake("PLAIN")[0] == 0
    err, _, _, lifetime = raw.authenticate(b"\0admin\0admin-secret")
    assert (err, lifetime) == (0, 0)
    assert raw.metadata_brokers() == {0: ("127.0.0.1", b.ports["SASL_SSL"])}
    raw.close()


def test_session_lifetime_and_reauthentication(make_broker, pki, tmp_path):
    b = secured_broker(make_broker, pki, tmp_path, env={"KAFSCALE_SASL_SESSION_LIFETIME_MS": "1500"})
    raw = Raw(b.ports["SASL_PLAINTEXT"])
    raw.handshake("PLAIN")
    err, _, _, lifetime = raw.authenticate(b"\0alice\0alice-secret")
    assert (err, lifetime) == (0, 1500)
    assert raw.metadata_brokers()
    # Re-authentication on the same connection (KIP-368) renews the session.
    raw.handshake("PLAIN")
    assert raw.authenticate(b"\0alice\0alice-secret")[0] == 0
    # ... but must keep the principal.
    raw.handshake("PLAIN")
    assert raw.authenticate(b"\0admin\0admin-secret")[0] == SASL_AUTHENTICATION_FAILED
    raw.close()
    # A session that has expired is closed at its next request.
    raw = Raw(b.ports["SASL_PLAINTEXT"])
    raw.handshake("PLAIN")
    assert raw.authenticate(b"\0alice\0alice-secret")[0] == 0
    time.sleep(2)
    with pytest.raises(ConnectionError):
        raw.metadata_brokers()
    raw.close()
    # librdkafka re-authenticates by itself and goes on producing across several lifetimes.
    conf = sasl_conf(b.ports["SASL_SSL"], pki, "SCRAM-SHA-256")
    p = Producer({**conf, "acks": "all"})
    acked = []
    for i in range(8):
        p.produce("reauth", f"{i}".encode(), on_delivery=lambda e, m: acked.append(e))
        p.flush(30)
        time.sleep(0.5)
    assert acked == [None] * 8
    assert consume(conf, "reauth", 8) == [f"{i}".encode() for i in range(8)]


def test_mutual_tls_principal(make_broker, pki, tmp_path):
    b = secured_broker(make_broker, pki, tmp_path, client_ca=True, env={
        "KAFSCALE_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=([^,]+),OU=eng,.*$/$1/L,DEFAULT"})
    cert, key = pki.client("alice", C="US", O="Acme", OU="eng", CN="Alice")
    conf = {"bootstrap.servers": f"127.0.0.1:{b.ports['SSL']}", "security.protocol": "SSL",
            "ssl.ca.location": pki.ca, "ssl.certificate.location": cert, "ssl.key.location": key}
    values = [f"m{i}".encode() for i in range(10)]
    assert len(produce(conf, "mtls", values)) == 10
    assert consume(conf, "mtls", 10) == values
    # The certificate's subject (RFC 2253, most significant last) mapped by the rule.
    assert wait_for("principal logged", lambda: "principal=User:alice" in b.log())
    cert2, key2 = pki.client("ops", C="US", O="Acme", CN="ops")
    conf2 = {**conf, "ssl.certificate.location": cert2, "ssl.key.location": key2}
    AdminClient(conf2).list_topics(timeout=10)
    assert wait_for("DEFAULT rule", lambda: "principal=User:CN=ops,O=Acme,C=US" in b.log())
    # Without a client certificate the handshake fails.
    no_cert = AdminClient({"bootstrap.servers": conf["bootstrap.servers"], "security.protocol": "SSL",
                           "ssl.ca.location": pki.ca})
    with pytest.raises(KafkaException):
        no_cert.list_topics(timeout=5)


def test_scram_credentials_admin_api_survive_restart(make_broker, pki, tmp_path):
    b = secured_broker(make_broker, pki, tmp_path)
    admin = AdminClient(sasl_conf(b.ports["SASL_SSL"], pki, "SCRAM-SHA-512", user="admin"))
    futs = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"carol-pw"),
        UserScramCredentialUpsertion("bad", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw"),
    ])
    futs["carol"].result(timeout=10)
    with pytest.raises(KafkaException) as e:
        futs["bad"].result(timeout=10)
    assert "UNACCEPTABLE_CREDENTIAL" in str(e.value) or "Iterations" in str(e.value)
    desc = admin.describe_user_scram_credentials(["carol", "alice"])
    carol = desc["carol"].result(timeout=10)
    assert [(i.mechanism, i.iterations) for i in carol.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_512, 8192)]
    alice = desc["alice"].result(timeout=10)
    assert sorted((i.mechanism.name, i.iterations) for i in alice.scram_credential_infos) == [
        ("SCRAM_SHA_256", 4096), ("SCRAM_SHA_512", 4096)]
    carol_conf = sasl_conf(b.ports["SASL_SSL"], pki, "SCRAM-SHA-512", user="carol", password="carol-pw")
    assert wait_for("carol logs in", lambda: AdminClient(carol_conf).list_topics(timeout=5).brokers)
    # Stored salted in the embedded store: no password in it.
    stored = (b.data_dir / "security.json").read_text()
    assert "scram/carol/SCRAM-SHA-512" in stored and "carol-pw" not in stored and "alice-secret" not in stored
    assert b.stop() == 0
    b.start()
    assert AdminClient(carol_conf).list_topics(timeout=10).brokers
    # PLAIN checks the password against the stored SCRAM credential.
    assert AdminClient({**carol_conf, "sasl.mechanism": "PLAIN"}).list_topics(timeout=10).brokers
    admin = AdminClient(sasl_conf(b.ports["SASL_SSL"], pki, "SCRAM-SHA-512", user="admin"))
    admin.alter_user_scram_credentials([UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)])[
        "carol"].result(timeout=10)
    with pytest.raises(KafkaException):
        admin.describe_user_scram_credentials(["carol"])["carol"].result(timeout=10)

    def refused():
        try:
            AdminClient(carol_conf).list_topics(timeout=3)
            return False
        except KafkaException:
            return True
    assert wait_for("carol refused after deletion", refused)


def test_credentials_reach_a_second_broker_through_etcd(cluster, pki, tmp_path):
    c = cluster(n=0)
    brokers = []
    for _ in range(2):
        b = c.add(start=False)
        b.ports = {"PLAINTEXT": b.port, "SASL_SSL": free_port()}
        b.env.update({
            "KAFSCALE_LISTENERS": f"PLAINTEXT://127.0.0.1:{b.port},SASL_SSL://127.0.0.1:{b.ports['SASL_SSL']}",
            "KAFSCALE_TLS_CERT_FILE": pki.server_cert, "KAFSCALE_TLS_KEY_FILE": pki.server_key,
            "KAFSCALE_SASL_USERS_FILE": users_file(tmp_path),
        })
        brokers.append(b.start())
    b1, b2 = brokers
    # Every broker advertises every broker's address on the client's listener.
    want = {b.broker_id: ("127.0.0.1", b.ports["SASL_SSL"]) for b in brokers}

    def listed():
        raw = Raw(b2.ports["SASL_SSL"], tls_ca=pki.ca)
        raw.handshake("PLAIN")
        assert raw.authenticate(b"\0admin\0admin-secret")[0] == 0
        got = raw.metadata_brokers()
        raw.close()
        return got == want and got
    wait_for("both brokers on the SASL_SSL listener", listed)
    plain = Raw(b1.ports["PLAINTEXT"])
    assert wait_for("PLAINTEXT addresses", lambda: plain.metadata_brokers() == {
        b.broker_id: ("127.0.0.1", b.port) for b in brokers})
    plain.close()
    admin1 = AdminClient(sasl_conf(b1.ports["SASL_SSL"], pki, "SCRAM-SHA-256", user="admin"))
    admin1.alter_user_scram_credentials([
        UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                     b"dave-pw")])["dave"].result(timeout=10)
    dave2 = sasl_conf(b2.ports["SASL_SSL"], pki, "SCRAM-SHA-256", user="dave", password="dave-pw")
    # Bootstrapped at broker 2 only: the credential came through etcd.
    assert wait_for("dave at broker 2", lambda: AdminClient(dave2).list_topics(timeout=5).brokers)
    values = [f"d{i}".encode() for i in range(10)]
    assert len(produce(dave2, "from-dave", values)) == 10
    assert consume(dave2, "from-dave", 10) == values
    # Both brokers restarted: the credential is still in etcd.
    for b in brokers:
        c.restart(b.broker_id)
    assert wait_for("dave after restarts", lambda: AdminClient(dave2).list_topics(timeout=5).brokers)
    assert consume(dave2, "from-dave", 10) == values
