"""Malformed input gets an answer or a clean close, and the broker keeps serving."""
import socket
import struct

from clients import consume_all, create_topic, produce


def send_raw(bootstrap, payload, read_timeout=5.0):
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(read_timeout)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


def request(api_key, version, correlation, body=b"", client_id=b"t"):
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def still_serving(broker, topic):
    create_topic(broker.bootstrap, topic)
    delivered, errors = produce(broker.bootstrap, topic, [(b"k", b"still alive", None, None)])
    assert errors == [] and len(delivered) == 1
    assert [m[3] for m in consume_all(broker.bootstrap, topic, 1, 1)] == [b"still alive"]


def test_garbage_bytes_close_the_connection(broker):
    assert send_raw(broker.bootstrap, b"\x00\x00\x00\x10" + b"\xff" * 16) == b""
    assert send_raw(broker.bootstrap, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    still_serving(broker, "after-garbage")


def test_frame_claiming_2gb_is_refused(broker):
    assert send_raw(broker.bootstrap, struct.pack(">i", 2_000_000_000) + b"\x00\x12\x00\x00") == b""
    assert send_raw(broker.bootstrap, struct.pack(">i", -5)) == b""
    assert broker.alive()
    still_serving(broker, "after-huge")


def test_unknown_api_key_and_unsupported_version(broker):
    assert send_raw(broker.bootstrap, request(999, 0, 7)) == b""
    assert send_raw(broker.bootstrap, request(3, 99, 8)) == b""  # Metadata v99
    assert send_raw(broker.bootstrap, request(15, 0, 9)) == b""  # DescribeGroups: not implemented
    still_serving(broker, "after-unknown")


def test_api_versions_above_max_gets_v0_answer_with_our_ranges(broker):
    resp = send_raw(broker.bootstrap, request(18, 42, 1234), read_timeout=2.0)
    size, corr, err, n = struct.unpack(">iihi", resp[:14])
    assert size == len(resp) - 4
    assert corr == 1234
    assert err == 35  # UNSUPPORTED_VERSION
    ranges = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", resp[14 + 6 * i:20 + 6 * i])
        ranges[k] = (lo, hi)
    assert ranges[18] == (0, 3)
    assert ranges[0] == (0, 9)  # Produce: v0-2 with message sets of magic 0/1
    assert ranges[1] == (0, 13)  # Fetch: v0-3 get magic 0/1 message sets
    assert ranges[11] == (0, 9)  # JoinGroup
    assert ranges[15] == (0, 5)  # DescribeGroups
    assert ranges[21] == (0, 2)  # DeleteRecords
    assert 24 not in ranges  # AddPartitionsToTxn: transactions are not built, so not advertised
    assert 17 not in ranges  # SaslHandshake only on SASL listeners


def test_malformed_body_closes_only_that_connection(broker):
    # Produce v3 whose topic array claims 2^31-1 entries in a 20-byte body.
    body = struct.pack(">hhii", -1, -1, 30000, 0x7FFFFFFF)
    assert send_raw(broker.bootstrap, request(0, 3, 1, body)) == b""
    still_serving(broker, "after-malformed")
