#!/usr/bin/env python3
"""Where the broker's CPU goes while it takes produce requests (`make profile-produce`).

Starts one release broker (2 shards, local directory store, KAFSCALE_LOCAL_IO as
set in the environment, default thread), runs `kafscale-bench produce` (acks=all,
1 KiB values, 6 partitions) at saturation, and samples the broker with
`perf record -e cpu-clock` (a software clock: it works where hardware counters
are not offered, as in most VMs) for --seconds in the middle of the run. Prints:

  - the flat profile: the functions the samples landed in (self time), and
  - the allocator's share (malloc, free, realloc, calloc and their internals)
    with the callers that allocate most, from DWARF call graphs.

perf comes from Debian's linux-perf; `scripts/install-test-tools.sh` does not
install it, this script asks for it when it is missing.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

ALLOC = ("malloc", "free", "realloc", "calloc", "_int_malloc", "_int_free", "malloc_consolidate",
         "__libc_malloc", "__libc_free", "__libc_realloc", "cfree", "_int_realloc", "__rust_alloc",
         "__rust_dealloc", "__rust_realloc", "tcache_get", "tcache_put", "unlink_chunk")


def perf_report(data, *args):
    r = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-header", *args],
                       capture_output=True, text=True)
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="the kafscale-bench binary")
    ap.add_argument("--seconds", type=int, default=10, help="seconds sampled")
    ap.add_argument("--freq", type=int, default=499, help="samples per second")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("perf is not installed (Debian: apt-get install linux-perf)")
    from harness import Broker
    work = Path(tempfile.mkdtemp(prefix="kafscale-profile-"))
    b = Broker(work, env={"KAFSCALE_LOCAL_IO": os.environ.get("KAFSCALE_LOCAL_IO", "thread")}, shards=2).start()
    data = work / "perf.data"
    try:
        run = a.seconds + 8
        load = subprocess.Popen([a.bench, "produce", "--bootstrap", b.bootstrap, "--topic", "profile",
                                 "--partitions", "6", "--message-size", "1024", "--acks", "all",
                                 "--duration", str(run)], stdout=subprocess.DEVNULL)
        time.sleep(4)
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(a.freq), "--call-graph",
                        "dwarf,32768", "-o", str(data), "-p", str(b.proc.pid), "--", "sleep", str(a.seconds)],
                       check=True, stderr=subprocess.DEVNULL)
        load.wait(timeout=run + 120)
        flat = perf_report(data, "--no-children", "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.5")
        lines = [ln for ln in flat.splitlines() if ln.strip() and not ln.startswith("#")]
        print(f"## Flat profile (self time), top {a.top}\n")
        print("\n".join(lines[:a.top]))
        every = perf_report(data, "--no-children", "--sort", "symbol", "-g", "none")
        shares = {}
        for ln in every.splitlines():
            parts = ln.split()
            if len(parts) >= 3 and parts[0].endswith("%") and parts[1] in ("[.]", "[k]"):
                shares[parts[2]] = shares.get(parts[2], 0.0) + float(parts[0].rstrip("%"))
        alloc = sum(v for k, v in shares.items() if k in ALLOC)
        copies = {k: v for k, v in shares.items() if k.startswith(("__memmove", "__memcpy", "__memset"))}
        print(f"\n## Allocator share of samples: {alloc:.1f}%")
        print("## Copies and fills in user space: "
              + ", ".join(f"{k} {v:.1f}%" for k, v in sorted(copies.items(), key=lambda kv: -kv[1])) + "\n")
        wanted = [k for k in shares if k in ALLOC] + list(copies)
        callers = perf_report(data, "--no-children", "--sort", "symbol", "-g", "caller,0.5,callee,function,percent",
                              "--symbols", ",".join(wanted), "--percent-limit", "0.3", "--max-stack", "14")
        print("\n".join(ln.rstrip() for ln in callers.splitlines()[:260] if "IPC" not in ln))
    finally:
        b.stop(timeout=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
