"""The Kubernetes Pod Security Standards' checks (baseline and restricted,
https://kubernetes.io/docs/concepts/security/pod-security-standards/), applied to a
pod spec the way the Pod Security admission controller applies them. Each check
returns the list of violations (empty: the level is met)."""

BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def _containers(pod):
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def baseline(pod):
    v = []
    psc = pod.get("securityContext") or {}
    for c in _containers(pod):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            v.append(f"{name}: hostProcess")
        if sc.get("privileged"):
            v.append(f"{name}: privileged")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPS:
            v.append(f"{name}: capabilities {sorted(added - BASELINE_CAPS)}")
        for p in c.get("ports", []):
            if p.get("hostPort"):
                v.append(f"{name}: hostPort {p['hostPort']}")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            v.append(f"{name}: appArmorProfile")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t",
                                  "container_engine_t") or se.get("user") or se.get("role"):
            v.append(f"{name}: seLinuxOptions")
        if sc.get("procMount") not in (None, "Default"):
            v.append(f"{name}: procMount")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            v.append(f"{name}: seccompProfile Unconfined")
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(k):
            v.append(k)
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        v.append("pod: hostProcess")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        v.append("pod: seccompProfile Unconfined")
    for vol in pod.get("volumes", []):
        if "hostPath" in vol:
            v.append(f"volume {vol['name']}: hostPath")
    for s in psc.get("sysctls", []):
        if s["name"] not in SAFE_SYSCTLS:
            v.append(f"sysctl {s['name']}")
    return v


def restricted(pod):
    v = baseline(pod)
    psc = pod.get("securityContext") or {}
    for vol in pod.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            v.append(f"volume {vol['name']}: {sorted(kinds)}")
    for c in _containers(pod):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append(f"{name}: allowPrivilegeEscalation not false")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            v.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            v.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            v.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            v.append(f"{name}: capabilities not dropping ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            v.append(f"{name}: capabilities add {caps.get('add')}")
    return v
