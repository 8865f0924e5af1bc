"""The Helm chart and the operator's objects, checked offline (`make test-helm`):
helm lint, helm template with default and non-default values validated with
kubernetes-validate --strict, the objects the operator applies for the sample
cluster validated the same way, and the sample custom resources validated against
the generated CRD schemas with jsonschema."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

import podsecurity

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kafscale"
BIN = ROOT / ".venv" / "bin"
HELM = str(BIN / "helm")
VALIDATE = str(BIN / "kubernetes-validate")

NON_DEFAULT = """
operator:
  replicas: 3
  leaderElection: {enabled: false}
  logFormat: text
  logLevel: debug
  metricsPort: 9100
  image: {repository: registry.example/kafscale/operator, tag: "1.2.3", pullPolicy: Always}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: ops, effect: NoSchedule}]
  podAnnotations: {example.com/team: streaming}
  resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: "1", memory: 512Mi}}
broker:
  image: {repository: registry.example/kafscale/broker, tag: "1.2.3"}
imagePullSecrets: [{name: regcred}]
serviceAccount: {create: true, name: kafscale-ops, annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::1:role/x"}}
"""


def run(*args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def run_fails(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode != 0, f"{' '.join(map(str, args))} succeeded"
    return r.stderr


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def render(tmp_path, values=None):
    args = [HELM, "template", "kafscale", str(CHART), "--namespace", "kafscale", "--include-crds"]
    if values:
        f = tmp_path / "values.yaml"
        f.write_text(values)
        args += ["-f", str(f)]
    out = run(*args)
    path = tmp_path / "rendered.yaml"
    path.write_text(out)
    return path, docs(out)


def validate(path):
    out = run(VALIDATE, "--strict", str(path))
    assert "passed" in out


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def test_helm_lint():
    run(HELM, "lint", "--strict", str(CHART))


def test_default_values_render_valid_manifests(tmp_path):
    path, objs = render(tmp_path)
    validate(path)
    (dep,) = by_kind(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFSCALE_OPERATOR_LEADER_ELECTION"] == "true"
    assert env["KAFSCALE_BROKER_IMAGE"] == "kafscale/broker:0.1.0"
    assert env["KAFSCALE_LOG_FORMAT"] == "json"
    assert {c["metadata"]["name"] for c in by_kind(objs, "CustomResourceDefinition")} == {
        "kafscaleclusters.kafscale.io", "kafscaletopics.kafscale.io"}
    # Leader election can only touch Leases, in the release namespace.
    (role,) = by_kind(objs, "Role")
    assert role["metadata"]["namespace"] == "kafscale"
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]
    # No Grafana dashboard unless asked for.
    assert not [o for o in by_kind(objs, "ConfigMap") if "dashboard" in o["metadata"]["name"]]


def cluster_rules(cr):
    return {(g, r): set(rule["verbs"]) for rule in cr["rules"]
            for g in rule["apiGroups"] for r in rule["resources"]}


BASE_RULES = {
    ("kafscale.io", "kafscaleclusters"): {"get", "list", "watch"},
    # patch: the KafscaleTopic finalizer.
    ("kafscale.io", "kafscaletopics"): {"get", "list", "watch", "patch"},
    ("kafscale.io", "kafscaleclusters/status"): {"patch"},
    ("kafscale.io", "kafscaletopics/status"): {"patch"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch", "create", "patch"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch"},
    # delete: a cluster that turns its NetworkPolicy off gets it removed.
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "watch", "create", "patch", "delete"},
    ("events.k8s.io", "events"): {"create", "patch"},
}


def test_rbac_is_least_privilege(tmp_path):
    _, objs = render(tmp_path)
    (cr,) = by_kind(objs, "ClusterRole")
    rules = cluster_rules(cr)
    # No Secret at all unless listed: the operator reads only what clusters name.
    assert rules == BASE_RULES
    assert not any("*" in v for v in rules.values())
    # Garbage collection deletes what a cluster owns; the one delete is the
    # NetworkPolicy a cluster no longer asks for.
    assert [k for k, v in rules.items() if "delete" in v] == [("networking.k8s.io", "networkpolicies")]
    (dep,) = by_kind(objs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFSCALE_OPERATOR_WATCH_SECRETS"] == "false"


def test_rbac_reads_only_the_listed_secrets(tmp_path):
    path, objs = render(tmp_path, """
rbac:
  secrets:
    - {namespace: kafscale, names: [s3-credentials, etcd-credentials]}
    - {namespace: team-b, names: [s3-b]}
""")
    validate(path)
    (cr,) = by_kind(objs, "ClusterRole")
    assert cluster_rules(cr) == BASE_RULES
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role") if r["metadata"]["name"].endswith("-secrets")}
    assert roles["kafscale"]["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                                          "resourceNames": ["s3-credentials", "etcd-credentials"], "verbs": ["get"]}]
    assert roles["team-b"]["rules"][0]["resourceNames"] == ["s3-b"]
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objs, "RoleBinding")
                if b["metadata"]["name"].endswith("-secrets")}
    assert set(bindings) == {"kafscale", "team-b"}
    assert bindings["team-b"]["subjects"] == [{"kind": "ServiceAccount", "name": "kafscale-operator",
                                               "namespace": "kafscale"}]


def test_rbac_watch_all_secrets_is_an_explicit_choice(tmp_path):
    path, objs = render(tmp_path, "rbac: {watchAllSecrets: true, secrets: [{namespace: a, names: [x]}]}")
    validate(path)
    (cr,) = by_kind(objs, "ClusterRole")
    assert cluster_rules(cr) == {**BASE_RULES, ("", "secrets"): {"get", "list", "watch"}}
    assert not [r for r in by_kind(objs, "Role") if r["metadata"]["name"].endswith("-secrets")]
    (dep,) = by_kind(objs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFSCALE_OPERATOR_WATCH_SECRETS"] == "true"


def test_non_default_values_render_valid_manifests(tmp_path):
    path, objs = render(tmp_path, NON_DEFAULT)
    validate(path)
    (dep,) = by_kind(objs, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 3
    assert spec["serviceAccountName"] == "kafscale-ops"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    c = spec["containers"][0]
    assert c["image"] == "registry.example/kafscale/operator:1.2.3"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KAFSCALE_OPERATOR_LEADER_ELECTION"] == "false"
    assert env["KAFSCALE_OPERATOR_METRICS_ADDR"] == "0.0.0.0:9100"
    assert env["KAFSCALE_BROKER_IMAGE"] == "registry.example/kafscale/broker:1.2.3"
    # Without leader election there is no Lease permission at all.
    assert not by_kind(objs, "Role")
    (sa,) = by_kind(objs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}


def crd_schemas():
    out = {}
    for f in (CHART / "crds").glob("*.yaml"):
        crd = yaml.safe_load(f.read_text())
        (version,) = crd["spec"]["versions"]
        out[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return out


def samples():
    return [(f.name, d) for f in sorted((CHART / "examples").glob("*.yaml")) for d in docs(f.read_text())
            if d["apiVersion"].startswith("kafscale.io/")]


@pytest.mark.parametrize("name,obj", samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_samples_match_the_crd_schemas(name, obj):
    schema = crd_schemas()[obj["kind"]]
    # metadata is the API server's business; the schema describes spec and status.
    jsonschema.validate({k: v for k, v in obj.items() if k != "metadata"}, schema)


def test_schemas_reject_bad_resources():
    schemas = crd_schemas()
    cluster = next(o for _, o in samples() if o["kind"] == "KafscaleCluster")
    bad = yaml.safe_load(yaml.safe_dump(cluster))
    bad["spec"]["brokers"]["replicas"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["KafscaleCluster"])
    del bad["spec"]["s3"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["KafscaleCluster"])
    topic = next(o for _, o in samples() if o["kind"] == "KafscaleTopic")
    bad = yaml.safe_load(yaml.safe_dump(topic))
    bad["spec"]["topicName"] = "has space"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas["KafscaleTopic"])


def operator_bin():
    b = os.environ.get("KAFSCALE_OPERATOR_BIN")
    if b:
        return b
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "release" / "kafscale-operator")


def test_operator_objects_for_the_sample_cluster_are_valid(tmp_path):
    exe = operator_bin()
    assert Path(exe).exists(), f"{exe} is missing: cargo build --release -p kafscale-operator"
    out = run(exe, "render", str(CHART / "examples" / "kafscalecluster.yaml"))
    path = tmp_path / "objects.yaml"
    path.write_text(out)
    validate(path)
    objs = docs(out)
    assert [o["kind"] for o in objs] == ["StatefulSet", "Service", "Service", "Service",
                                         "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    pod = objs[0]["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["key"] == "dedicated"
    res = pod["containers"][0]["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "2", "memory": "4Gi"}
    # Several brokers: each pod its own id and DNS name, resolvable before it is
    # ready; a drain before SIGTERM that fits in the grace period.
    sts, headless = objs[0], objs[1]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["KAFSCALE_BROKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["KAFSCALE_BROKER_HOST"]["value"] == "$(POD_NAME).prod-broker-headless.kafscale.svc"
    assert env["KAFSCALE_CONTROL_ADDR"]["value"] == "127.0.0.1:9094"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert pod["terminationGracePeriodSeconds"] == 120
    assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == [
        "kafscale-broker", "ctl", "--addr", "127.0.0.1:9094", "drain", "--timeout-ms", "60000"]


def test_chart_crds_are_the_generated_ones():
    exe = operator_bin()
    assert Path(exe).exists(), f"{exe} is missing: cargo build --release -p kafscale-operator"
    generated = docs(run(exe, "crd"))
    stored = [yaml.safe_load(f.read_text()) for f in sorted((CHART / "crds").glob("*.yaml"))]
    key = lambda c: c["metadata"]["name"]  # noqa: E731
    assert sorted(generated, key=key) == sorted(stored, key=key)


MONITORING = """
metrics:
  serviceMonitor: {enabled: true}
  brokers: {podMonitor: {enabled: true, interval: 10s}}
  prometheusRule: {enabled: true, labels: {release: prom}, consumerLagThreshold: 5000}
grafana: {dashboard: {enabled: true}}
"""


def test_monitoring_objects(tmp_path):
    path, objs = render(tmp_path, MONITORING)
    validate(path)
    (pm,) = by_kind(objs, "PodMonitor")
    # Every broker pod the operator runs, in any namespace.
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "kafscale-broker",
                                                     "app.kubernetes.io/managed-by": "kafscale-operator"}
    assert pm["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "10s"}]
    (rule,) = by_kind(objs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "KafscaleBrokerNotReady", "KafscaleObjectStoreUnavailable", "KafscaleObjectStoreDegraded",
        "KafscaleObjectStoreErrors", "KafscaleBufferedBytesHigh", "KafscaleUploadQueueGrowing",
        "KafscaleHighWatermarkLagGrowing", "KafscaleConsumerLagHigh", "KafscaleOperatorReconcileErrors",
        "KafscaleOperatorNoLeader"}
    assert alerts["KafscaleConsumerLagHigh"]["expr"].endswith("> 5000")
    assert alerts["KafscaleBufferedBytesHigh"]["expr"].endswith("> 214748364")
    # Templates in annotations reach Prometheus unexpanded by Helm.
    assert "{{ $labels.pod }}" in alerts["KafscaleObjectStoreUnavailable"]["annotations"]["summary"]
    # Every Kafscale metric an alert reads is one the broker or operator exports
    # (docs/operations.md lists them as the scrape shows them).
    documented = set(re.findall(r"`(kafscale_[a-z0-9_]+)`", (ROOT / "docs" / "operations.md").read_text()))
    used = {m for a in alerts.values() for m in re.findall(r"kafscale_[a-z0-9_]+", a["expr"])}
    assert used and used <= documented, used - documented
    for a in alerts.values():
        assert a["labels"]["severity"] in ("warning", "critical") and a["for"]


def test_network_policies(tmp_path):
    path, objs = render(tmp_path, """
networkPolicy:
  enabled: true
  brokerNamespaces: [kafscale, team-b]
  kafkaFrom: [{namespaceSelector: {matchLabels: {kafka-clients: "true"}}}]
""")
    validate(path)
    pols = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in by_kind(objs, "NetworkPolicy")}
    assert set(pols) == {("kafscale", "kafscale-operator"), ("kafscale", "kafscale-brokers"),
                         ("team-b", "kafscale-brokers")}
    brokers = pols[("team-b", "kafscale-brokers")]["spec"]
    kafka, http = brokers["ingress"]
    assert kafka["ports"] == [{"port": 9092, "protocol": "TCP"}]
    # Clusters with listeners: their ports.
    _, objs = render(tmp_path, "networkPolicy: {enabled: true, kafkaPorts: [9092, 9096]}")
    (brokers,) = [p for p in by_kind(objs, "NetworkPolicy") if p["metadata"]["name"] == "kafscale-brokers"]
    assert brokers["spec"]["ingress"][0]["ports"] == [{"port": 9092, "protocol": "TCP"},
                                                      {"port": 9096, "protocol": "TCP"}]
    assert kafka["from"] == [{"namespaceSelector": {"matchLabels": {"kafka-clients": "true"}}}]
    # The unauthenticated console and /metrics: the monitoring namespace only.
    assert http["ports"] == [{"port": 9093, "protocol": "TCP"}]
    assert http["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    op = pols[("kafscale", "kafscale-operator")]["spec"]
    assert op["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}], "from": http["from"]}]
    # Off by default.
    _, objs = render(tmp_path)
    assert not by_kind(objs, "NetworkPolicy")


def test_disruption_budget_and_seccomp_installer(tmp_path):
    _, objs = render(tmp_path)
    (pdb,) = by_kind(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (dep,) = by_kind(objs, "Deployment")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    (ds,) = by_kind(objs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "kafscale/operator:0.1.0"
    assert c["args"] == ["seccomp", "install", "--dir", "/host-seccomp/kafscale"]
    assert pod["volumes"] == [{"name": "seccomp", "hostPath": {"path": "/var/lib/kubelet/seccomp",
                                                               "type": "DirectoryOrCreate"}}]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    # The operator points brokers at the file the installer writes.
    assert env["KAFSCALE_BROKER_SECCOMP_PROFILE"] == "kafscale/kafscale-broker.json"
    # One operator replica: no budget (it would block every drain); no installer when disabled.
    path, objs = render(tmp_path, "operator: {replicas: 1}\nbroker: {seccompProfile: {installer: {enabled: false}}}")
    validate(path)
    assert not by_kind(objs, "PodDisruptionBudget") and not by_kind(objs, "DaemonSet")


@pytest.mark.parametrize("values,complaint", [
    ("operator: {logFormat: xml}", "logFormat"),
    ("operator: {replicas: 0}", "replicas"),
    ("networkPolicy: {metricsFrom: []}", "metricsFrom"),
    ("rbac: {secrets: [{namespace: kafscale}]}", "names"),
    ("broker: {seccompProfile: {localhostProfile: /abs/profile.json}}", "localhostProfile"),
    ("metrics: {brokers: {podMonitor: {interval: often}}}", "interval"),
    ("unknownTopLevel: 1", "unknownTopLevel"),
    ("networkPolicy: {kafkaPorts: []}", "kafkaPorts"),
    ("clusters: [{spec: {}}]", "name"),
    ("clusters: [{name: Prod, spec: {}}]", "name"),
    ("clusters: [{name: prod, spec: {}, certificate: {enabled: true}}]", "issuerRef"),
])
def test_values_schema_rejects_bad_values(tmp_path, values, complaint):
    f = tmp_path / "bad.yaml"
    f.write_text(values)
    err = run_fails(HELM, "template", "kafscale", str(CHART), "-f", str(f))
    assert complaint in err, err


def pod_of(obj):
    return obj["spec"]["template"]["spec"]


def test_broker_pods_pass_pod_security_baseline_and_restricted(tmp_path):
    exe = operator_bin()
    out = run(exe, "render", str(CHART / "examples" / "kafscalecluster.yaml"))
    (sts,) = [o for o in docs(out) if o["kind"] == "StatefulSet"]
    pod = pod_of(sts)
    assert podsecurity.baseline(pod) == []
    assert podsecurity.restricted(pod) == []
    c = pod["containers"][0]
    assert c["securityContext"]["seccompProfile"] == {"type": "Localhost",
                                                      "localhostProfile": "kafscale/kafscale-broker.json"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # The checks can fail: what the operator used to render (Unconfined, IPC_LOCK).
    old = yaml.safe_load(yaml.safe_dump(pod))
    old["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    old["containers"][0]["securityContext"]["capabilities"]["add"] = ["IPC_LOCK"]
    assert podsecurity.baseline(old) == ["broker: capabilities ['IPC_LOCK']", "broker: seccompProfile Unconfined"]


def test_broker_opt_ins_are_reported_against_baseline(tmp_path):
    """ipcLock and an Unconfined profile are the cluster's explicit choice, and
    the pods then need a namespace at the privileged level: the checks say so."""
    exe = operator_bin()
    k = yaml.safe_load((CHART / "examples" / "kafscalecluster.yaml").read_text())
    k["spec"]["brokers"]["ipcLock"] = True
    k["spec"]["brokers"]["seccompProfile"] = {"type": "Unconfined"}
    f = tmp_path / "k.yaml"
    f.write_text(yaml.safe_dump(k))
    (sts,) = [o for o in docs(run(exe, "render", str(f))) if o["kind"] == "StatefulSet"]
    assert podsecurity.baseline(pod_of(sts)) == ["broker: capabilities ['IPC_LOCK']",
                                                 "broker: seccompProfile Unconfined"]


def test_chart_pods_pod_security(tmp_path):
    _, objs = render(tmp_path)
    (dep,) = by_kind(objs, "Deployment")
    assert podsecurity.restricted(pod_of(dep)) == []
    # The installer writes to the node: hostPath is its one baseline violation
    # (and root its one more restricted one); docs/kubernetes.md says so.
    (ds,) = by_kind(objs, "DaemonSet")
    assert podsecurity.baseline(pod_of(ds)) == ["volume seccomp: hostPath"]
    assert podsecurity.restricted(pod_of(ds)) == [
        "volume seccomp: hostPath", "volume seccomp: ['hostPath']",
        "install: runAsNonRoot not true", "install: runAsUser 0"]


SECURE_EXAMPLE = CHART / "examples" / "kafscalecluster-secure.yaml"


def secure_example():
    (k,) = [d for d in docs(SECURE_EXAMPLE.read_text()) if d["kind"] == "KafscaleCluster"]
    return k


def render_cluster(tmp_path, k):
    """The objects the operator applies for KafscaleCluster `k`."""
    f = tmp_path / "cluster.yaml"
    f.write_text(yaml.safe_dump(k))
    out = run(operator_bin(), "render", str(f))
    path = tmp_path / "objects.yaml"
    path.write_text(out)
    return path, docs(out)


def test_secure_example_renders_valid_broker_objects(tmp_path):
    path, objs = render_cluster(tmp_path, secure_example())
    validate(path)
    assert [o["kind"] for o in objs] == ["StatefulSet", "Service", "Service", "Service",
                                         "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"]
    sts, headless, client = objs[0], objs[1], objs[2]
    pod = pod_of(sts)
    # Secrets do not weaken the pods: still restricted.
    assert podsecurity.restricted(pod) == []
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KAFSCALE_LISTENERS"] == "SASL_SSL://0.0.0.0:9096,INTERNAL://0.0.0.0:9092"
    assert env["KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP"] == "SASL_SSL:SASL_SSL,INTERNAL:SASL_PLAINTEXT"
    # Each broker advertises its own name, per listener.
    assert env["KAFSCALE_ADVERTISED_LISTENERS"] == (
        "SASL_SSL://$(POD_NAME).prod-broker-headless.kafscale.svc:9096,"
        "INTERNAL://$(POD_NAME).prod-broker-headless.kafscale.svc:9092")
    assert env["KAFSCALE_TLS_CERT_FILE"] == "/etc/kafscale/tls/tls.crt"
    assert env["KAFSCALE_SASL_USERS_FILE"] == "/etc/kafscale/sasl/users"
    assert env["KAFSCALE_AUTHORIZER"] == "acl" and env["KAFSCALE_SUPER_USERS"] == "User:admin"
    assert env["KAFSCALE_ETCD_CA_FILE"] == "/etc/kafscale/etcd-tls/ca.crt"
    assert env["KAFSCALE_INSECURE_OPS_ENDPOINTS"] == "true"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for name in ("tls", "sasl-users", "etcd-tls"):
        # A directory, never subPath: a renewed Secret reaches the broker.
        assert mounts[name]["readOnly"] is True and "subPath" not in mounts[name]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == "prod-kafka-tls"
    assert [p["name"] for p in c["ports"]] == ["sasl-ssl", "internal", "http"]
    for svc in (headless, client):
        assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("sasl-ssl", 9096), ("internal", 9092)]
    np = objs[6]
    kafka, metrics = np["spec"]["ingress"]
    assert kafka["ports"] == [{"port": 9096, "protocol": "TCP"}, {"port": 9092, "protocol": "TCP"}]
    assert kafka["from"][1] == {"ipBlock": {"cidr": "10.20.0.0/16"}}
    assert metrics["ports"] == [{"port": 9093, "protocol": "TCP"}]


@pytest.mark.parametrize("change,complaint", [
    (lambda s: s["security"].pop("tls"), "needs security.tls.secretRef"),
    (lambda s: s["security"]["listeners"][1].update(protocol="KERBEROS"), "unknown protocol"),
    (lambda s: s["security"]["listeners"][1].update(port=9096), "used by another listener"),
    (lambda s: s["security"]["sasl"].pop("usersSecretRef"), "usersSecretRef is not set"),
    (lambda s: s["etcd"].update(endpoints=["http://etcd:2379"]), "not https://"),
])
def test_operator_refuses_invalid_security_specs(tmp_path, change, complaint):
    k = secure_example()
    change(k["spec"])
    # The CRD schema lets these through; the operator's check does not.
    jsonschema.validate({key: v for key, v in k.items() if key != "metadata"}, crd_schemas()["KafscaleCluster"])
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(k))
    err = run_fails(operator_bin(), "render", str(f))
    assert complaint in err, err


CLUSTERS = """
rbac:
  secrets:
    - {namespace: kafscale, names: [kafscale-s3-creds, kafscale-etcd-creds, kafscale-etcd-client-tls]}
clusters:
  - name: prod
    spec: SPEC
    certificate:
      enabled: true
      issuerRef: {name: kafscale-ca, kind: ClusterIssuer}
      extraDnsNames: [kafka.example.com]
  - name: dev
    namespace: team-b
    labels: {team: b}
    spec:
      s3: {bucket: dev-bucket}
      etcd: {endpoints: ["http://etcd.team-b.svc:2379"]}
"""


def test_clusters_from_values_render_with_their_certificates(tmp_path):
    spec = secure_example()["spec"]
    path, objs = render(tmp_path, CLUSTERS.replace("SPEC", json.dumps(spec)))
    builtin = [o for o in objs if o["apiVersion"].split("/")[0] not in ("kafscale.io", "cert-manager.io")]
    p = tmp_path / "builtin.yaml"
    p.write_text(yaml.safe_dump_all(builtin))
    validate(p)
    clusters = {(k["metadata"]["namespace"], k["metadata"]["name"]): k for k in by_kind(objs, "KafscaleCluster")}
    assert set(clusters) == {("kafscale", "prod"), ("team-b", "dev")}
    assert clusters[("kafscale", "prod")]["spec"] == spec
    assert clusters[("team-b", "dev")]["metadata"]["labels"]["team"] == "b"
    schema = crd_schemas()["KafscaleCluster"]
    for k in clusters.values():
        jsonschema.validate({key: v for key, v in k.items() if key != "metadata"}, schema)
    # What the chart renders is what the operator accepts.
    _, prod_objs = render_cluster(tmp_path, clusters[("kafscale", "prod")])
    assert prod_objs[-1]["kind"] == "NetworkPolicy"
    # One Certificate, for the cluster that asks, writing the Secret its listeners read.
    (cert,) = by_kind(objs, "Certificate")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["metadata"] == {**cert["metadata"], "name": "prod-kafka-tls", "namespace": "kafscale"}
    assert cert["spec"]["secretName"] == spec["security"]["tls"]["secretRef"]["name"]
    assert cert["spec"]["issuerRef"] == {"name": "kafscale-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    # Every name a client is sent to: each broker's advertised host and the bootstrap.
    assert cert["spec"]["dnsNames"] == [
        "*.prod-broker-headless.kafscale.svc", "*.prod-broker-headless.kafscale.svc.cluster.local",
        "prod-broker.kafscale.svc", "prod-broker.kafscale.svc.cluster.local", "kafka.example.com"]
    assert cert["spec"]["usages"] == ["digital signature", "key encipherment", "server auth"]
    assert cert["spec"]["privateKey"]["rotationPolicy"] == "Always"


def test_a_certificate_needs_the_clusters_tls_secret(tmp_path):
    f = tmp_path / "v.yaml"
    f.write_text("clusters: [{name: x, spec: {s3: {bucket: b}}, certificate: {enabled: true, issuerRef: {name: ca}}}]")
    err = run_fails(HELM, "template", "kafscale", str(CHART), "-f", str(f))
    assert "needs spec.security.tls.secretRef.name" in err, err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
