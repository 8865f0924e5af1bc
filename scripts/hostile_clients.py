"""The hostile-client measurement of docs/operations.md ("Limits"): start a broker,
open N connections that each announce a large Produce request, send a few bytes of
it and stall; report the broker's RSS before and while they stall.

    .venv/bin/python scripts/hostile_clients.py [--bin PATH] [--connections 40] [--mib 100]
"""
import argparse
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import Broker  # noqa: E402


def announce(bootstrap, size):
    """A connection that announces a Produce frame of `size` bytes, sends its
    header and 4 KiB of body, and stops there."""
    host, port = bootstrap.split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    header = struct.pack(">hhih", 0, 9, 1, 1) + b"h"
    s.sendall(struct.pack(">i", size) + header + b"\0" * 4096)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="broker binary (default: KAFSCALE_BROKER_BIN or the target dir)")
    ap.add_argument("--connections", type=int, default=40)
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to let the broker read")
    args = ap.parse_args()
    if args.bin:
        import os
        os.environ["KAFSCALE_BROKER_BIN"] = args.bin
    with tempfile.TemporaryDirectory() as d:
        b = Broker(Path(d), env={"KAFSCALE_MAX_REQUEST_BYTES": str(200 << 20)}).start()
        try:
            time.sleep(0.5)
            before = b.rss_kib()
            conns = [announce(b.bootstrap, args.mib << 20) for _ in range(args.connections)]
            time.sleep(args.settle)
            during = b.rss_kib()
            alive = b.alive()
            print(f"connections={args.connections} announced={args.mib} MiB each")
            print(f"rss_before_mib={before / 1024:.1f}")
            print(f"rss_stalled_mib={during / 1024:.1f}")
            print(f"broker_alive={alive}")
            for c in conns:
                c.close()
        finally:
            if b.alive():
                b.stop()


if __name__ == "__main__":
    main()
