"""Hand-built Kafka requests, for tests that need exact control of the bytes."""
import socket
import struct

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
