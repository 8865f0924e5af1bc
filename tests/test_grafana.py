"""The Grafana dashboard shipped in the Helm chart queries only metrics the broker
exports (checked against a live broker's scrape), and the chart's template wraps
it in a ConfigMap the Grafana sidecar picks up."""
import json
import re
import shutil
import subprocess

from confluent_kafka import Consumer, TopicPartition

from clients import consume_all, create_topic, produce
from harness import ROOT, sample_names

CHART = ROOT / "helm" / "kafscale"
DASHBOARD = CHART / "dashboards" / "kafscale.json"
TEMPLATE = CHART / "templates" / "grafana-dashboard.yaml"


def queries(dashboard):
    """Every PromQL expression of the dashboard: panel targets (rows included)
    and template variable queries."""
    out = []

    def walk(panels):
        for p in panels:
            out.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            out.append(q)
    return out


def test_dashboard_queries_only_exported_metrics(make_broker):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Kafscale"
    exprs = queries(dashboard)
    assert len(exprs) >= 20
    used = {n for e in exprs for n in re.findall(r"\bkafscale_[a-zA-Z0-9_]+", e)}

    # A workload that makes every labelled family have series: produce, fetch, an
    # admin request, a committed offset.
    b = make_broker()
    create_topic(b.bootstrap, "dash", partitions=2)
    delivered, errors = produce(b.bootstrap, "dash", [(None, b"v" * 100, None, i % 2) for i in range(50)])
    assert errors == [] and len(delivered) == 50
    assert len(consume_all(b.bootstrap, "dash", 2, 50)) == 50
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "dash-group", "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("dash", 0, 5)], asynchronous=False)
    finally:
        c.close()
    exported = sample_names(b.metrics_text())

    missing = sorted(used - exported)
    assert missing == [], f"dashboard queries metrics the broker does not export: {missing}"
    # The dashboard covers what issue #7 asks operators to see.
    for needed in ("kafscale_produce_rps", "kafscale_fetch_rps", "kafscale_s3_health_state",
                   "kafscale_s3_latency_ms_avg", "kafscale_request_duration_seconds_bucket",
                   "kafscale_object_store_request_duration_seconds_bucket", "kafscale_upload_queue_bytes",
                   "kafscale_high_watermark_lag", "kafscale_consumer_group_lag", "kafscale_admin_requests_total",
                   "kafscale_read_cache_hits_total", "kafscale_open_connections"):
        assert needed in used, needed


def test_chart_template_ships_the_dashboard_as_a_labelled_configmap(tmp_path):
    text = TEMPLATE.read_text()
    assert '{{- if ((.Values.grafana).dashboard).enabled }}' in text
    assert 'grafana_dashboard: "1"' in text
    assert '.Files.Get "dashboards/kafscale.json"' in text
    helm = shutil.which("helm") or (str(ROOT / ".venv" / "bin" / "helm") if (ROOT / ".venv" / "bin" / "helm").exists() else None)
    if helm is None:
        return
    # Render just this template in a scratch chart, with the dashboard on and off.
    chart = tmp_path / "kafscale"
    (chart / "templates").mkdir(parents=True)
    (chart / "dashboards").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: kafscale\nversion: 0.0.0\n")
    shutil.copy(TEMPLATE, chart / "templates" / TEMPLATE.name)
    shutil.copy(DASHBOARD, chart / "dashboards" / DASHBOARD.name)
    on = subprocess.run([helm, "template", "r", str(chart), "--set", "grafana.dashboard.enabled=true"],
                        capture_output=True, text=True, check=True).stdout
    assert 'grafana_dashboard: "1"' in on and "kind: ConfigMap" in on
    body = on.split("kafscale.json: |-\n", 1)[1]
    embedded = "\n".join(line[4:] for line in body.splitlines())
    assert json.loads(embedded) == json.loads(DASHBOARD.read_text())
    off = subprocess.run([helm, "template", "r", str(chart)], capture_output=True, text=True, check=True).stdout
    assert "ConfigMap" not in off
