"""What the ACL authorizer costs on produce: broker CPU per message and
throughput with KAFSCALE_AUTHORIZER unset against KAFSCALE_AUTHORIZER=acl (with
KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND and 200 unrelated prefixed ACLs, so that
every request is checked against the index and allowed), runs alternating, a new
broker per run. CPU per message (the broker's utime+stime from /proc) is less
disturbed by other work on the machine than throughput. Results: docs/security.md.

Usage: KAFSCALE_BROKER_BIN=... .venv/bin/python scripts/acl_bench.py [rounds] [messages]
(kafscale-bench is taken from beside the broker binary, or KAFSCALE_BENCH_BIN)."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,  # noqa: E402
                                   ResourcePatternType, ResourceType)

from harness import Broker, broker_bin  # noqa: E402

BENCH = os.environ.get("KAFSCALE_BENCH_BIN") or str(Path(broker_bin()).with_name("kafscale-bench"))
TICK = os.sysconf("SC_CLK_TCK")
CONFIGS = [("unset", {}),
           ("acl", {"KAFSCALE_AUTHORIZER": "acl", "KAFSCALE_SUPER_USERS": "User:admin",
                    "KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "true"})]
LOADS = [(100, 0), (1024, 5)]  # (message bytes, linger.ms): many small requests, then batches


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(env, messages, size, linger):
    b = Broker(Path(tempfile.mkdtemp()), env=env, shards=2).start()
    try:
        if env.get("KAFSCALE_AUTHORIZER") == "acl":
            admin = AdminClient({"bootstrap.servers": b.bootstrap})
            acls = [AclBinding(ResourceType.TOPIC, f"other-{i}-", ResourcePatternType.PREFIXED, f"User:u{i}",
                               "*", AclOperation.WRITE, AclPermissionType.ALLOW) for i in range(200)]
            for f in admin.create_acls(acls).values():
                f.result(timeout=10)
        before = cpu_seconds(b.proc.pid)
        r = subprocess.run([BENCH, "produce", "--bootstrap", b.bootstrap, "--topic", "bench", "--partitions", "6",
                            "--messages", str(messages), "--message-size", str(size), "--linger-ms", str(linger),
                            "--acks", "1", "--json"], capture_output=True, text=True, timeout=600, check=True)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out["cpu_us_per_msg"] = (cpu_seconds(b.proc.pid) - before) * 1e6 / messages
        return out
    finally:
        b.stop()


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    results = {}
    for _ in range(rounds):
        for label, env in CONFIGS:
            for size, linger in LOADS:
                o = run(env, messages, size, linger)
                results.setdefault((label, size, linger), []).append(o)
                print(label, size, linger, round(o["msgs_per_sec"]), "msg/s",
                      round(o["cpu_us_per_msg"], 2), "CPU us/msg", flush=True)
    print("median of", rounds, "runs,", messages, "messages each; load average", os.getloadavg())
    for (label, size, linger), v in results.items():
        print(f"{label:6} {size:5} B linger {linger}: "
              f"{statistics.median(r['msgs_per_sec'] for r in v):9.0f} msg/s, "
              f"{statistics.median(r['cpu_us_per_msg'] for r in v):6.2f} CPU us/msg")


if __name__ == "__main__":
    main()
