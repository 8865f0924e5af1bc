"""ACLs end to end (docs/security.md, "ACLs"): KAFSCALE_AUTHORIZER=acl with
CreateAcls/DescribeAcls/DeleteAcls through confluent-kafka's AdminClient, and
SASL users (SCRAM-SHA-256 over SASL_PLAINTEXT) refused with Kafka's codes until
an ACL allows them: produce, consume, groups, topic administration, ACL
administration, idempotent producers, auto-creation. Deny beats allow, prefixed
patterns, super users, Metadata hiding what a principal may not describe,
allow-everyone-if-no-ACL, ACLs surviving a restart, and ACLs made at one broker
enforced by a second one sharing etcd. Waits are bounded polls; nothing asserts
on timings."""
import struct
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourcePatternType, ResourceType)

from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                         KafkaAdminClient, ResourcePatternFilter)
from kafka.admin import ResourceType as KpResourceType
from kafka.errors import ClusterAuthorizationFailedError, SecurityDisabledError

from clients import wait_until
from harness import free_port
import rawkafka
from rawkafka import Conn, Raw

pytestmark = pytest.mark.timeout(300)

WAIT = 30  # seconds: the bound of every wait for a state
USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
ACL_ENV = {"KAFSCALE_AUTHORIZER": "acl", "KAFSCALE_SUPER_USERS": "User:admin;User:ops",
           "KAFSCALE_AUTO_CREATE_TOPICS": "false"}
ANY_ACL = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)


KP_ANY_ACL = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                       permission_type=ACLPermissionType.ANY,
                       resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None, ACLResourcePatternType.ANY))


def kp_admin(port, user):
    """kafka-python's admin client, which reports DescribeAcls's top-level error."""
    return KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_PLAINTEXT",
                            sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=user,
                            sasl_plain_password=USERS[user])


def wait_for(what, fn):
    return wait_until(what, fn, timeout=WAIT)


def users_file(tmp_path):
    p = tmp_path / "users.txt"
    p.write_text("".join(f"{u}:{pw}\n" for u, pw in USERS.items()))
    return str(p)


def with_sasl(b, tmp_path, env):
    """Adds a SASL_PLAINTEXT listener (b.sasl_port) beside the harness's PLAINTEXT one."""
    b.sasl_port = free_port()
    b.env.update({
        "KAFSCALE_LISTENERS": f"PLAINTEXT://127.0.0.1:{b.port},SASL_PLAINTEXT://127.0.0.1:{b.sasl_port}",
        "KAFSCALE_SASL_USERS_FILE": users_file(tmp_path),
        **env,
    })
    return b


def acl_broker(make_broker, tmp_path, env=None):
    return with_sasl(make_broker(start=False, shards=2), tmp_path, {**ACL_ENV, **(env or {})}).start()


def conf(port, user):
    return {"bootstrap.servers": f"127.0.0.1:{port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": USERS[user]}


def acl(name, principal, op, pattern=ResourcePatternType.LITERAL, rt=ResourceType.TOPIC,
        perm=AclPermissionType.ALLOW, host="*"):
    return AclBinding(rt, name, pattern, principal, host, op, perm)


def create_acls(admin, bindings):
    for f in admin.create_acls(bindings).values():
        f.result(timeout=10)


def create_topics(admin, names):
    for f in admin.create_topics([NewTopic(t, 1) for t in names]).values():
        f.result(timeout=10)


def delivery_codes(c, topic, n=3, **extra):
    """The delivery outcome of n messages: 0 or the error code, per message."""
    p = Producer({**c, "acks": "all", "message.timeout.ms": 8000, "retries": 0, **extra})
    out = []
    for i in range(n):
        p.produce(topic, f"{i}".encode(), on_delivery=lambda e, m: out.append(e.code() if e else 0))
    p.flush(20)
    return out


def error_code(fn):
    with pytest.raises(KafkaException) as e:
        fn()
    return e.value.args[0].code()


def consume(c, topic, group, n):
    """Up to n values of `topic` in `group` (subscribed), or the first error code."""
    k = Consumer({**c, "group.id": group, "auto.offset.reset": "earliest"})
    k.subscribe([topic])
    got, deadline = [], time.time() + WAIT
    try:
        while len(got) < n and time.time() < deadline:
            m = k.poll(1.0)
            if m is None:
                continue
            if m.error() is None:
                got.append(m.value())
            elif m.error().code() != KafkaError._PARTITION_EOF:
                return m.error().code()
    finally:
        k.close()
    return got


def end_offset(c, topic):
    k = Consumer({**c, "group.id": "watermarks"})
    try:
        return k.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        k.close()


def test_acls_are_enforced_with_kafka_codes(make_broker, tmp_path):
    b = acl_broker(make_broker, tmp_path)
    admin_conf = conf(b.sasl_port, "admin")
    admin = AdminClient(admin_conf)
    create_topics(admin, ["orders-eu", "orders-secret", "payments", "other"])
    assert delivery_codes(admin_conf, "payments", 2) == [0, 0], "a super user may do anything"
    alice = conf(b.sasl_port, "alice")
    # No ACL yet: alice sees nothing and writes nothing.
    assert not AdminClient(alice).list_topics(timeout=10).topics
    assert delivery_codes(alice, "orders-eu", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

    create_acls(admin, [
        acl("orders-", "User:alice", AclOperation.WRITE, ResourcePatternType.PREFIXED),
        acl("orders-secret", "User:alice", AclOperation.ALL, perm=AclPermissionType.DENY),
        acl("payments", "User:alice", AclOperation.READ),
        acl("g-alice", "User:alice", AclOperation.READ, rt=ResourceType.GROUP),
        acl("orders-eu", "User:alice", AclOperation.ALTER_CONFIGS, perm=AclPermissionType.DENY),
    ])
    found = admin.describe_acls(ANY_ACL).result(timeout=10)
    assert len(found) == 5
    assert {(a.name, a.resource_pattern_type, a.operation, a.permission_type) for a in found} >= {
        ("orders-", ResourcePatternType.PREFIXED, AclOperation.WRITE, AclPermissionType.ALLOW),
        ("orders-secret", ResourcePatternType.LITERAL, AclOperation.ALL, AclPermissionType.DENY)}
    # MATCH: every binding that applies to the resource orders-eu.
    match = admin.describe_acls(AclBindingFilter(ResourceType.TOPIC, "orders-eu", ResourcePatternType.MATCH,
                                                 None, None, AclOperation.ANY, AclPermissionType.ANY))
    assert sorted(a.name for a in match.result(timeout=10)) == ["orders-", "orders-eu"]
    by_principal = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:bob", None,
                                    AclOperation.ANY, AclPermissionType.ANY)
    assert admin.describe_acls(by_principal).result(timeout=10) == []

    # Produce: under the prefix only; the DENY beats the prefixed ALLOW.
    assert delivery_codes(alice, "orders-eu") == [0, 0, 0]
    assert delivery_codes(alice, "orders-secret", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert delivery_codes(alice, "payments", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # Metadata hides what alice may not describe (WRITE and READ imply DESCRIBE;
    # the DENY of ALL covers DESCRIBE).
    assert set(AdminClient(alice).list_topics(timeout=10).topics) == {"orders-eu", "payments"}
    # Consuming needs READ on the topic and on the group.
    assert consume(alice, "payments", "g-alice", 2) == [b"0", b"1"]
    assert consume(alice, "payments", "g-other", 2) == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert consume(alice, "orders-eu", "g-alice", 1) == KafkaError.TOPIC_AUTHORIZATION_FAILED, \
        "WRITE does not grant READ"
    # The consumer group protocol (KIP-848): READ on the group for ConsumerGroupHeartbeat.
    create_acls(admin, [acl("g-alice-cp", "User:alice", AclOperation.READ, rt=ResourceType.GROUP)])
    cp = {**alice, "group.protocol": "consumer"}
    assert consume(cp, "payments", "g-alice-cp", 2) == [b"0", b"1"]
    assert consume(cp, "payments", "g-other-cp", 2) == KafkaError.GROUP_AUTHORIZATION_FAILED
    cp_acl = AclBindingFilter(ResourceType.GROUP, "g-alice-cp", ResourcePatternType.LITERAL, None, None,
                              AclOperation.ANY, AclPermissionType.ANY)
    for f in admin.delete_acls([cp_acl]).values():
        assert len(f.result(timeout=10)) == 1
    # Administration: each refusal with its code.
    a_admin = AdminClient(alice)
    assert error_code(lambda: a_admin.delete_topics(["orders-eu"])["orders-eu"].result(timeout=10)) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    res = ConfigResource(ResourceType.TOPIC, "orders-eu", incremental_configs=[
        ConfigEntry("retention.ms", "0", incremental_operation=AlterConfigOpType.SET)])
    assert error_code(lambda: a_admin.incremental_alter_configs([res])[res].result(timeout=10)) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    described = ConfigResource(ResourceType.TOPIC, "payments")
    assert error_code(lambda: a_admin.describe_configs([described])[described].result(timeout=10)) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert error_code(lambda: a_admin.create_topics([NewTopic("orders-new", 1)])["orders-new"].result(
        timeout=10)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    binding = acl("x", "User:alice", AclOperation.ALL)
    assert error_code(lambda: a_admin.create_acls([binding])[binding].result(timeout=10)) == \
        KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # librdkafka drops DescribeAcls's top-level error (an empty list comes back):
    # kafka-python reports it.
    assert a_admin.describe_acls(ANY_ACL).result(timeout=10) == []
    kp = kp_admin(b.sasl_port, "alice")
    with pytest.raises(ClusterAuthorizationFailedError):
        kp.describe_acls(KP_ANY_ACL)
    kp.close()
    assert error_code(lambda: a_admin.delete_consumer_groups(["g-alice"])["g-alice"].result(timeout=10)) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    # bob has no ACL at all.
    bob = conf(b.sasl_port, "bob")
    assert not AdminClient(bob).list_topics(timeout=10).topics
    assert delivery_codes(bob, "orders-eu", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # An acks=0 producer hears nothing back: the broker closes its connection and
    # stores nothing (checked below).
    delivery_codes(bob, "orders-eu", 2, acks=0)

    # The ACLs survive a restart (embedded store).
    assert b.stop() == 0
    b.start()
    admin = AdminClient(admin_conf)
    assert len(admin.describe_acls(ANY_ACL).result(timeout=10)) == 5
    assert delivery_codes(alice, "orders-eu") == [0, 0, 0]
    # Deleting the prefixed ALLOW takes effect at once.
    prefixed = AclBindingFilter(ResourceType.TOPIC, "orders-", ResourcePatternType.PREFIXED, "User:alice", None,
                                AclOperation.ANY, AclPermissionType.ANY)
    deleted = admin.delete_acls([prefixed])
    assert [[a.name for a in f.result(timeout=10)] for f in deleted.values()] == [["orders-"]]
    assert delivery_codes(alice, "orders-eu", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert len(admin.describe_acls(ANY_ACL).result(timeout=10)) == 4
    # What was stored: only what was authorized (3 + 3 from alice; nothing from bob).
    assert end_offset(admin_conf, "orders-eu") == 6
    assert end_offset(admin_conf, "orders-secret") == 0


IDEMPOTENT = {"enable.idempotence": True, "retries": 3}


def test_idempotent_producer_needs_idempotent_write_or_a_topic_write(make_broker, tmp_path):
    b = acl_broker(make_broker, tmp_path)
    admin = AdminClient(conf(b.sasl_port, "admin"))
    create_topics(admin, ["idem"])
    carol = conf(b.sasl_port, "carol")
    create_acls(admin, [acl("idem", "User:carol", AclOperation.DESCRIBE)])
    # InitProducerId: neither IDEMPOTENT_WRITE on the cluster nor WRITE on any
    # topic. librdkafka makes CLUSTER_AUTHORIZATION_FAILED a fatal error.
    errors = []
    p = Producer({**carol, **IDEMPOTENT, "message.timeout.ms": 8000,
                  "error_cb": lambda e: errors.append((e.code(), e.fatal()))})
    try:
        p.produce("idem", b"x")
        p.flush(10)
    except KafkaException as e:  # raised by produce or flush once the error is fatal
        errors.append((e.args[0].code(), e.args[0].fatal()))
    assert (KafkaError.CLUSTER_AUTHORIZATION_FAILED, True) in errors, errors
    assert end_offset(conf(b.sasl_port, "admin"), "idem") == 0
    # KIP-679: WRITE on some topic is enough.
    create_acls(admin, [acl("idem", "User:carol", AclOperation.WRITE)])
    assert delivery_codes(carol, "idem", 3, **IDEMPOTENT) == [0, 0, 0]
    # Or IDEMPOTENT_WRITE on the cluster, once the topic WRITE is gone (the
    # records then fail on the topic, not on the producer id).
    for f in admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "idem", ResourcePatternType.LITERAL,
                                                 "User:carol", None, AclOperation.WRITE,
                                                 AclPermissionType.ALLOW)]).values():
        assert len(f.result(timeout=10)) == 1
    create_acls(admin, [acl("kafka-cluster", "User:carol", AclOperation.IDEMPOTENT_WRITE,
                            rt=ResourceType.BROKER)])
    assert delivery_codes(carol, "idem", 1, **IDEMPOTENT) == [
        KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_auto_creation_needs_create(make_broker, tmp_path):
    b = acl_broker(make_broker, tmp_path, env={"KAFSCALE_AUTO_CREATE_TOPICS": "true"})
    admin = AdminClient(conf(b.sasl_port, "admin"))
    alice = conf(b.sasl_port, "alice")
    create_acls(admin, [acl("auto-", "User:alice", AclOperation.WRITE, ResourcePatternType.PREFIXED)])
    # WRITE without CREATE: nothing is created.
    assert delivery_codes(alice, "auto-a", 1) != [0]
    assert "auto-a" not in admin.list_topics(timeout=10).topics
    # CREATE on the topic prefix (or on the cluster) lets the producer create it.
    create_acls(admin, [acl("auto-", "User:alice", AclOperation.CREATE, ResourcePatternType.PREFIXED)])
    assert delivery_codes(alice, "auto-a", 2) == [0, 0]
    assert "auto-a" in admin.list_topics(timeout=10).topics


def test_allow_everyone_if_no_acl_found(make_broker, tmp_path):
    b = acl_broker(make_broker, tmp_path, env={"KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "true"})
    admin = AdminClient(conf(b.sasl_port, "admin"))
    create_topics(admin, ["open", "guarded"])
    create_acls(admin, [acl("guarded", "User:alice", AclOperation.WRITE)])
    bob = conf(b.sasl_port, "bob")
    assert delivery_codes(bob, "open", 1) == [0], "no ACL names the topic"
    assert delivery_codes(bob, "guarded", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert delivery_codes(conf(b.sasl_port, "alice"), "guarded", 1) == [0]


def test_host_restricted_acl(make_broker, tmp_path):
    b = acl_broker(make_broker, tmp_path)
    admin = AdminClient(conf(b.sasl_port, "admin"))
    create_topics(admin, ["hosts"])
    alice = conf(b.sasl_port, "alice")
    create_acls(admin, [acl("hosts", "User:alice", AclOperation.WRITE, host="10.9.9.9")])
    assert delivery_codes(alice, "hosts", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    create_acls(admin, [acl("hosts", "User:*", AclOperation.WRITE, host="127.0.0.1")])
    assert delivery_codes(alice, "hosts", 1) == [0]


def api_versions(port):
    """{api key: (min, max)} from ApiVersions v0 on the PLAINTEXT port."""
    c = Conn(f"127.0.0.1:{port}")
    body = struct.pack(">hhi", 18, 0, 1) + struct.pack(">h", 4) + b"test"
    frame = c.call(struct.pack(">i", len(body)) + body)
    c.close()
    # size, correlation id, error code, then the array.
    (n,) = struct.unpack_from(">i", frame, 10)
    out = {}
    for i in range(n):
        k, lo, hi = struct.unpack_from(">hhh", frame, 14 + 6 * i)
        out[k] = (lo, hi)
    return out


def test_without_an_authorizer_acl_apis_answer_security_disabled(broker):
    versions = api_versions(broker.port)
    assert versions[29] == (1, 3) and versions[30] == (1, 3) and versions[31] == (1, 3)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    binding = acl("t", "User:alice", AclOperation.READ)
    assert error_code(lambda: admin.create_acls([binding])[binding].result(timeout=10)) == \
        KafkaError.SECURITY_DISABLED
    assert admin.describe_acls(ANY_ACL).result(timeout=10) == [], "librdkafka drops the top-level error"
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    with pytest.raises(SecurityDisabledError):
        kp.describe_acls(KP_ANY_ACL)
    kp.close()


def admin_at(b):
    """A connection to broker b alone, as the super user: an admin client sends the
    ACL APIs to whichever broker it likes, and this test is about what each holds."""
    return Raw(b.sasl_port).login_plain("admin", USERS["admin"])


def acls_at(b):
    """The bindings broker b holds."""
    c = admin_at(b)
    err, acls = c.describe_acls()
    c.close()
    assert err == 0
    return acls


def test_acls_reach_a_second_broker_through_etcd(cluster, tmp_path):
    c = cluster(n=0)
    brokers = [with_sasl(c.add(start=False), tmp_path, ACL_ENV).start() for _ in range(2)]
    b1, b2 = brokers
    admin1 = AdminClient(conf(b1.sasl_port, "admin"))
    create_topics(admin1, ["shared-t"])
    # Created at broker 1, each request sent to it alone.
    alice_all = (rawkafka.TOPIC, "shared-", rawkafka.PREFIXED, "User:alice", "*", rawkafka.ALL, rawkafka.ALLOW)
    # More bindings in one request than etcd takes in one transaction.
    bulk = [(rawkafka.TOPIC, f"bulk-{i}", rawkafka.LITERAL, "User:bob", "*", rawkafka.READ, rawkafka.ALLOW)
            for i in range(150)]
    at1 = admin_at(b1)
    assert at1.create_acls([alice_all]) == [0]
    assert at1.create_acls(bulk) == [0] * 150
    at1.close()
    # Broker 1 answered once it applied them; broker 2 learns them from etcd's watch.
    assert sorted(acls_at(b1)) == sorted([alice_all] + bulk)
    assert wait_for("the ACLs at broker 2", lambda: len(acls_at(b2)) == 151)
    assert sorted(acls_at(b2)) == sorted([alice_all] + bulk)
    admin2 = AdminClient(conf(b2.sasl_port, "admin"))
    shared = AclBindingFilter(ResourceType.TOPIC, "shared-", ResourcePatternType.ANY, None, None,
                              AclOperation.ANY, AclPermissionType.ANY)
    assert [a.principal for a in admin2.describe_acls(shared).result(timeout=10)] == ["User:alice"]
    # A new client's first Metadata goes to its bootstrap broker, 2.
    alice2 = conf(b2.sasl_port, "alice")
    assert delivery_codes(alice2, "shared-t", 2) == [0, 0]
    assert set(AdminClient(alice2).list_topics(timeout=10).topics) == {"shared-t"}
    # Both brokers restarted: the ACLs come back from etcd.
    for b in brokers:
        assert c.restart(b.broker_id)[0] == 0
    assert len(acls_at(b1)) == len(acls_at(b2)) == 151
    assert delivery_codes(alice2, "shared-t", 2) == [0, 0]
    assert delivery_codes(conf(b2.sasl_port, "bob"), "shared-t", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # Deleted at broker 2: refused at broker 1 too.
    at2 = admin_at(b2)
    assert at2.delete_acls() == (0, 151)
    at2.close()
    assert acls_at(b2) == []
    assert wait_for("the deletion at broker 1", lambda: acls_at(b1) == [])
    alice1 = conf(b1.sasl_port, "alice")
    assert not AdminClient(alice1).list_topics(timeout=10).topics
    assert delivery_codes(alice1, "shared-t", 1) == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
