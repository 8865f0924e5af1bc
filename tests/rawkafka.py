"""Hand-built Kafka requests, for tests that need exact control of the bytes."""
import socket
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
