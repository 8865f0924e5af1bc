"""Hand-built Kafka requests, for tests that need exact control of the bytes."""
import socket
import ssl
import struct
import zlib

_CRC32C = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def varint(v):
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def record_batch(values, producer_id=-1, epoch=-1, base_sequence=-1, timestamp=1_700_000_000_000):
    recs = b""
    for i, v in enumerate(values):
        body = b"\x00" + varint(0) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        recs += varint(len(body)) + body
    n = len(values)
    after_crc = struct.pack(">hiqqqhii", 0, n - 1, timestamp, timestamp, producer_id, epoch, base_sequence, n) + recs
    crc = crc32c(after_crc)
    head = struct.pack(">qiibI", 0, 4 + 1 + 4 + len(after_crc), 0, 2, crc)
    return head + after_crc


def _bytes(b):
    return struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b


def legacy_message(magic, value, key=None, timestamp=-1, attributes=0):
    """One message of magic 0 or 1 (the formats before Kafka 0.11), from its CRC on:
    crc32 (IEEE) of the rest, magic, attributes, timestamp (magic 1), key, value."""
    body = struct.pack(">bb", magic, attributes)
    if magic == 1:
        body += struct.pack(">q", timestamp)
    body += _bytes(key) + _bytes(value)
    return struct.pack(">I", zlib.crc32(body)) + body


def message_set(messages, first_offset=0):
    """A message set: each message behind its offset and size."""
    return b"".join(struct.pack(">qi", first_offset + i, len(m)) + m for i, m in enumerate(messages))


def parse_message_set(data):
    """[(offset, magic, attributes, timestamp or None, key, value)] of a message set of
    magic 0/1, each CRC checked; a message cut at the end is left out, as clients do."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        offset, size = struct.unpack_from(">qi", data, pos)
        if pos + 12 + size > len(data):
            break
        m = data[pos + 12:pos + 12 + size]
        crc, = struct.unpack_from(">I", m, 0)
        assert crc == zlib.crc32(m[4:]), f"bad CRC at offset {offset}"
        magic, attrs = m[4], m[5]
        at, ts = 6, None
        if magic == 1:
            ts, = struct.unpack_from(">q", m, at)
            at += 8
        fields = []
        for _ in range(2):
            n, = struct.unpack_from(">i", m, at)
            at += 4
            fields.append(None if n < 0 else m[at:at + n])
            at += max(n, 0)
        assert at == len(m), "bytes after the value"
        out.append((offset, magic, attrs, ts, fields[0], fields[1]))
        pos += 12 + size
    return out


def produce_v3(topic, partition, records, acks=-1, correlation=1, timeout_ms=30000):
    name = topic.encode()
    body = struct.pack(">hhi", -1, acks, timeout_ms)
    body += struct.pack(">ih", 1, len(name)) + name
    body += struct.pack(">iii", 1, partition, len(records)) + records
    header = struct.pack(">hhih", 0, 3, correlation, 4) + b"test"
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def parse_produce_v3(frame):
    """(error_code, base_offset) of the single partition in a Produce v3 response."""
    pos = 4 + 4  # size, correlation id
    ntopics, = struct.unpack_from(">i", frame, pos)
    pos += 4
    nlen, = struct.unpack_from(">h", frame, pos)
    pos += 2 + nlen
    nparts, = struct.unpack_from(">i", frame, pos)
    pos += 4
    _, err, base, _ = struct.unpack_from(">ihqq", frame, pos)
    return err, base


class Conn:
    def __init__(self, bootstrap):
        host, port = bootstrap.split(":")
        self.s = socket.create_connection((host, int(port)), timeout=10)

    def call(self, frame):
        self.s.sendall(frame)
        size = struct.unpack(">i", self._read(4))[0]
        return struct.pack(">i", size) + self._read(size)

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def close(self):
        self.s.close()


# ---- hand-built requests with exact control: SASL, ACLs, Metadata ----

def _str(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _frame(api, version, corr, body):
    msg = struct.pack(">hhi", api, version, corr) + _str("sec-test") + body
    return struct.pack(">i", len(msg)) + msg


class _Reader:
    def __init__(self, body):
        self.b, self.pos = body, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        v = self.b[self.pos:self.pos + n].decode()
        self.pos += n
        return v


# Enum values of the ACL APIs (Kafka's ResourceType, PatternType, AclOperation,
# AclPermissionType); ANY in filters, with null for the strings.
ACL_ANY, TOPIC, LITERAL, PREFIXED, ALL, READ, ALLOW = 1, 2, 3, 4, 2, 3, 3
_ANY_FILTER = (struct.pack(">b", ACL_ANY) + _str(None) + struct.pack(">b", ACL_ANY)
               + _str(None) + _str(None) + struct.pack(">bb", ACL_ANY, ACL_ANY))


class Raw(Conn):
    """A connection for hand-built requests, over TLS when given a CA. Unlike a
    client, it talks to the one broker it was opened to and to no other."""

    def __init__(self, port, tls_ca=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls_ca:
            ctx = ssl.create_default_context(cafile=tls_ca)
            s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        self.s = s
        self.corr = 0

    def call(self, api, version, body=b""):
        self.corr += 1
        self.s.sendall(_frame(api, version, self.corr, body))
        size, = struct.unpack(">i", self._read(4))
        data = self._read(size)
        assert struct.unpack_from(">i", data)[0] == self.corr
        return data[4:]

    def api_keys(self):
        r = self.call(18, 0)
        err, n = struct.unpack_from(">hi", r)
        assert err == 0
        return {struct.unpack_from(">h", r, 6 + 6 * i)[0] for i in range(n)}

    def handshake(self, mechanism, version=1):
        r = self.call(17, version, _str(mechanism))
        err, n = struct.unpack_from(">hi", r)
        pos, mechs = 6, []
        for _ in range(n):
            ln, = struct.unpack_from(">h", r, pos)
            mechs.append(r[pos + 2:pos + 2 + ln].decode())
            pos += 2 + ln
        return err, mechs

    def authenticate(self, token):
        """SaslAuthenticate v1: (error_code, message, auth_bytes, session_lifetime_ms)."""
        r = self.call(36, 1, struct.pack(">i", len(token)) + token)
        err, mlen = struct.unpack_from(">hh", r)
        pos = 4
        msg = None
        if mlen >= 0:
            msg = r[pos:pos + mlen].decode()
            pos += mlen
        blen, = struct.unpack_from(">i", r, pos)
        auth = r[pos + 4:pos + 4 + blen]
        lifetime, = struct.unpack_from(">q", r, pos + 4 + blen)
        return err, msg, auth, lifetime

    def raw_token(self, token):
        """After SaslHandshake v0: a size-prefixed token, answered by one."""
        self.s.sendall(struct.pack(">i", len(token)) + token)
        size, = struct.unpack(">i", self._read(4))
        return self._read(size)

    def metadata_brokers(self):
        """Metadata v1, no topics: {node_id: (host, port)}."""
        r = self.call(3, 1, struct.pack(">i", 0))
        n, = struct.unpack_from(">i", r)
        pos, out = 4, {}
        for _ in range(n):
            node, hl = struct.unpack_from(">ih", r, pos)
            host = r[pos + 6:pos + 6 + hl].decode()
            port, = struct.unpack_from(">i", r, pos + 6 + hl)
            rl, = struct.unpack_from(">h", r, pos + 10 + hl)
            pos += 12 + hl + max(rl, 0)
            out[node] = (host, port)
        return out

    def login_plain(self, user, password):
        """SaslHandshake and SaslAuthenticate with PLAIN, both answered with 0."""
        assert self.handshake("PLAIN")[0] == 0
        err, msg, _, _ = self.authenticate(f"\0{user}\0{password}".encode())
        assert err == 0, f"SaslAuthenticate: {err} {msg}"
        return self

    def describe_acls(self):
        """DescribeAcls v1 with an ANY filter: (error_code, [(resource_type, name,
        pattern_type, principal, host, operation, permission)])."""
        r = _Reader(self.call(29, 1, _ANY_FILTER))
        r.take(">i")  # throttle
        err = r.take(">h")
        r.string()
        out = []
        for _ in range(r.take(">i")):
            rtype, name, pattern = r.take(">b"), r.string(), r.take(">b")
            for _ in range(r.take(">i")):
                principal, host = r.string(), r.string()
                op, perm = r.take(">bb")
                out.append((rtype, name, pattern, principal, host, op, perm))
        return err, out

    def create_acls(self, bindings):
        """CreateAcls v1 of (resource_type, name, pattern_type, principal, host,
        operation, permission) bindings: the error code of each creation."""
        body = struct.pack(">i", len(bindings))
        for rtype, name, pattern, principal, host, op, perm in bindings:
            body += struct.pack(">b", rtype) + _str(name) + struct.pack(">b", pattern)
            body += _str(principal) + _str(host) + struct.pack(">bb", op, perm)
        r = _Reader(self.call(30, 1, body))
        r.take(">i")  # throttle
        out = []
        for _ in range(r.take(">i")):
            out.append(r.take(">h"))
            r.string()
        return out

    def delete_acls(self):
        """DeleteAcls v1 with one ANY filter: (error_code, bindings deleted)."""
        r = _Reader(self.call(31, 1, struct.pack(">i", 1) + _ANY_FILTER))
        r.take(">i")  # throttle
        assert r.take(">i") == 1
        err = r.take(">h")
        r.string()
        n = r.take(">i")
        for _ in range(n):
            assert r.take(">h") == 0
            r.string()
            r.take(">b"), r.string(), r.take(">b"), r.string(), r.string(), r.take(">bb")
        return err, n
