"""A container runtime for the image tests, or the reason there is none.

Podman (what `make tools` installs) or Docker with a reachable daemon. No image
registry is reachable from the test machines, so the images are built from the
Dockerfiles' `prebuilt` targets over a base assembled here from the host's own
glibc and libgcc (what distroless/cc holds): the same Dockerfile stages, users,
entrypoints and files, without a pull.
"""
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/kafscale-test-base:latest"


class Unavailable(Exception):
    """No container can run here; the message says why."""


def _run(args, timeout=120, check=True):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def _rlimit_flags():
    # The runtime sets the container's limits; a machine whose own hard limits are
    # lower than the runtime's defaults (podman asks for 1048576 processes) refuses
    # to start any container, so ask for what this machine allows.
    flags = []
    for name, res, cap in (("nofile", resource.RLIMIT_NOFILE, 65536), ("nproc", resource.RLIMIT_NPROC, 4096)):
        hard = resource.getrlimit(res)[1]
        n = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        flags += ["--ulimit", f"{name}={n}:{n}"]
    return flags


class Runtime:
    def __init__(self, cmd, global_flags):
        self.cmd = cmd
        self.global_flags = global_flags
        self.run_flags = _rlimit_flags()

    def __call__(self, *args, timeout=120, check=True):
        return _run([self.cmd, *self.global_flags, *args], timeout=timeout, check=check)

    def build_prebuilt(self, dockerfile, binary, tag):
        """Builds the Dockerfile's `prebuilt` target with a stripped copy of `binary`
        as dist/<name> in a context of its own."""
        with tempfile.TemporaryDirectory(prefix="kafscale-image-") as ctx:
            dist = Path(ctx) / "dist"
            dist.mkdir()
            out = dist / Path(binary).name
            if shutil.which("strip"):
                _run(["strip", "-o", str(out), str(binary)])
            else:
                shutil.copy2(binary, out)
            self("build", "-q", "-f", str(dockerfile), "--target", "prebuilt",
                 "--build-arg", f"RUNTIME_BASE={BASE}", "-t", tag, ctx, timeout=600)

    def remove_image(self, tag):
        self("rmi", "-f", tag, check=False)


def _base_image(rt):
    """The base image: the host's dynamic loader, glibc and libgcc, an /etc/passwd
    with the distroless `nonroot` user (65532), and a world-writable /tmp."""
    if rt("image", "exists", BASE, check=False).returncode == 0 if rt.cmd == "podman" else \
            rt("image", "inspect", BASE, check=False).returncode == 0:
        return
    libs = ["/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libm.so.6", "/lib/x86_64-linux-gnu/libgcc_s.so.1"]
    missing = [lib for lib in libs if not os.path.exists(lib)]
    if missing:
        raise Unavailable(f"cannot assemble a base image: {', '.join(missing)} missing (not x86_64 Debian?)")
    with tempfile.TemporaryDirectory(prefix="kafscale-base-") as d:
        root = Path(d) / "root"
        for lib in libs:
            dst = root / lib.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), dst)
        (root / "etc").mkdir()
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                         "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        (root / "etc/group").write_text("root:x:0:\nnonroot:x:65532:\n")
        (root / "tmp").mkdir(mode=0o1777)
        os.chmod(root / "tmp", 0o1777)
        tar = Path(d) / "base.tar"
        _run(["tar", "-C", str(root), "-cf", str(tar), "."])
        rt("import", str(tar), BASE)


def runtime():
    """A Runtime that has just run a container, or Unavailable with the reason."""
    reasons = []
    candidates = []
    if shutil.which("podman"):
        candidates.append(("podman", []))
        # crun refuses hosts with cgroups v1 and v2 mounted at once ("hybrid");
        # runc runs there.
        if shutil.which("runc"):
            candidates.append(("podman", ["--runtime", "runc"]))
    else:
        reasons.append("podman is not installed (make tools installs it)")
    if shutil.which("docker"):
        r = _run(["docker", "info"], check=False, timeout=20)
        if r.returncode == 0:
            candidates.append(("docker", []))
        else:
            reasons.append(f"docker has no daemon: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    for cmd, flags in candidates:
        rt = Runtime(cmd, flags)
        try:
            _base_image(rt)
            r = rt("run", "--rm", "--network", "none", *rt.run_flags, BASE, "/lib64/ld-linux-x86-64.so.2",
                   "--version", check=False, timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            reasons.append(f"{cmd} {' '.join(flags)}: {e}")
            continue
        if r.returncode == 0:
            return rt
        reasons.append(f"{cmd} {' '.join(flags)}: {(r.stderr or r.stdout).strip()}")
    raise Unavailable("no container runtime can run a container here: " + "; ".join(reasons))
