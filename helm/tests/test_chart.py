"""The Helm chart and the operator's objects, checked offline (`make test-helm`):
helm lint, helm template with default and non-default values validated with
kubernetes-validate --strict, the objects the operator applies for the sample
cluster validated the same way, and the sample custom resources validated against
the generated CRD schemas with jsonschema."""

import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

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


def test_rbac_is_least_privilege(tmp_path):
    _, objs = render(tmp_path)
    (cr,) = by_kind(objs, "ClusterRole")
    rules = {(g, r): set(rule["verbs"]) for rule in cr["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {
        ("kafscale.io", "kafscaleclusters"): {"get", "list", "watch"},
        ("kafscale.io", "kafscaletopics"): {"get", "list", "watch"},
        ("kafscale.io", "kafscaleclusters/status"): {"patch"},
        ("kafscale.io", "kafscaletopics/status"): {"patch"},
        ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch"},
        ("", "services"): {"get", "list", "watch", "create", "patch"},
        ("autoscaling", "horizontalpodautoscalers"): {"get", "list", "watch", "create", "patch"},
        ("", "secrets"): {"get", "list", "watch"},
    }
    assert not any("*" in v or "delete" in v for v in rules.values())


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
    assert [o["kind"] for o in objs] == ["StatefulSet", "Service", "Service", "HorizontalPodAutoscaler"]
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


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
