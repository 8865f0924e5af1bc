//! KafscaleCluster reconcile against the mocked API server, with a real S3 server
//! (s3s-fs) for the validation and a real etcd for the metadata check: the exact
//! requests the operator sends for a new cluster, a scaled cluster, a changed
//! Secret and failed S3 validation.

mod support;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kafscale_operator::cluster;
use kafscale_operator::context::{secrets_checksum, Context};
use kafscale_operator::crd::KafscaleCluster;
use kafscale_operator::resources::SECRET_CHECKSUM;
use kafscale_operator::security;
use serde_json::{json, Value};
use support::*;

const SECRET_NAME: &str = "s3-creds";
const STS: &str = "/apis/apps/v1/namespaces/kafscale/statefulsets/prod-broker";
const SVC: &str = "/api/v1/namespaces/kafscale/services";
const HPA: &str = "/apis/autoscaling/v2/namespaces/kafscale/horizontalpodautoscalers/prod-broker";
const PDB: &str = "/apis/policy/v1/namespaces/kafscale/poddisruptionbudgets/prod-broker";
const NP: &str = "/apis/networking.k8s.io/v1/namespaces/kafscale/networkpolicies/prod-broker";
const STATUS: &str = "/apis/kafscale.io/v1alpha1/namespaces/kafscale/kafscaleclusters/prod/status";
const UID: &str = "6a1f0d1e-0000-4000-8000-000000000001";

fn cluster(s3: &S3Server, etcd: &Etcd, replicas: i32, status: Option<Value>) -> KafscaleCluster {
    let mut v = json!({
        "apiVersion": "kafscale.io/v1alpha1",
        "kind": "KafscaleCluster",
        "metadata": {"name": "prod", "namespace": NS, "uid": UID, "generation": replicas},
        "spec": {
            "brokers": {"replicas": replicas, "maxReplicas": 6, "resources": {"cpus": 2, "memory": "4Gi"}},
            "s3": {
                "bucket": S3Server::BUCKET, "region": "us-east-1", "endpoint": s3.endpoint(),
                "forcePathStyle": true, "credentialsSecretRef": {"name": SECRET_NAME}
            },
            "etcd": {"endpoints": [etcd.endpoint()]},
            "config": {"segmentBytes": 4194304, "flushIntervalMs": 50}
        }
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).expect("cluster")
}

fn creds(secret_key: &str, extra: Option<(&str, &str)>) -> Value {
    let mut d = vec![
        ("AWS_ACCESS_KEY_ID", S3Server::ACCESS),
        ("AWS_SECRET_ACCESS_KEY", secret_key),
    ];
    d.extend(extra);
    secret(SECRET_NAME, &d)
}

fn checksum_of(secret: &Value) -> String {
    let s: Secret = serde_json::from_value(secret.clone()).expect("secret");
    secrets_checksum(&[("s3", Some(&s)), ("etcd", None)])
}

fn env_of(sts: &Value) -> Vec<Value> {
    sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .clone()
}

fn env_value(sts: &Value, name: &str) -> Value {
    env_of(sts)
        .into_iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the broker env"))
}

/// What one reconcile sent, when S3 validated and the objects were applied.
struct Applied {
    sts: Value,
    headless: Value,
    client: Value,
    metrics: Value,
    hpa: Value,
    pdb: Value,
    /// The NetworkPolicy applied (None: deleted, as the cluster asks for none).
    network_policy: Option<Value>,
    status: Option<Value>,
    events: Vec<Value>,
}

/// Drives one reconcile that gets as far as applying the objects; `current` is
/// the existing StatefulSet's replica count (None: it does not exist yet).
async fn reconcile_applied(
    ctx: Arc<Context>,
    api: &mut ApiServer,
    k: KafscaleCluster,
    secret: &Value,
    current: Option<i32>,
    ready: i32,
) -> Applied {
    reconcile_applied_with(ctx, api, k, &[secret], current, ready).await
}

/// `reconcile_applied` for a cluster whose Secrets are read in `secrets`' order.
async fn reconcile_applied_with(
    ctx: Arc<Context>,
    api: &mut ApiServer,
    k: KafscaleCluster,
    secrets: &[&Value],
    current: Option<i32>,
    ready: i32,
) -> Applied {
    let k = Arc::new(k);
    let mut task = tokio::spawn(cluster::reconcile(k.clone(), ctx));
    for secret in secrets {
        let name = secret["metadata"]["name"].as_str().expect("secret name");
        let (_, r) = api
            .expect(
                "GET",
                &format!("/api/v1/namespaces/kafscale/secrets/{name}"),
            )
            .await;
        r.json(200, secret);
    }
    let (_, r) = api.expect("GET", STS).await;
    match current {
        None => r.not_found("statefulsets.apps", "prod-broker"),
        Some(n) => r.json(
            200,
            &json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": "prod-broker", "namespace": NS},
                    "spec": {"replicas": n, "serviceName": "prod-broker-headless",
                             "selector": {}, "template": {}}}),
        ),
    }
    let (sts, r) = api.expect_apply(STS).await;
    r.echo(
        &sts,
        Some(json!({"replicas": ready, "readyReplicas": ready})),
    );
    let (headless, r) = api
        .expect_apply(&format!("{SVC}/prod-broker-headless"))
        .await;
    r.echo(&headless, None);
    let (client, r) = api.expect_apply(&format!("{SVC}/prod-broker")).await;
    r.echo(&client, None);
    let (metrics, r) = api
        .expect_apply(&format!("{SVC}/prod-broker-metrics"))
        .await;
    r.echo(&metrics, None);
    let (hpa, r) = api.expect_apply(HPA).await;
    r.echo(&hpa, None);
    let (pdb, r) = api.expect_apply(PDB).await;
    r.echo(&pdb, None);
    let network_policy = if security::wants_network_policy(&k) {
        let (np, r) = api.expect_apply(NP).await;
        r.echo(&np, None);
        Some(np.body)
    } else {
        // Turned off (or never on): whatever policy an earlier spec made goes.
        let (_, r) = api.expect("DELETE", NP).await;
        r.not_found("networkpolicies.networking.k8s.io", "prod-broker");
        None
    };
    // The status patch comes only when the status changed.
    let status = tokio::select! {
        biased;
        done = &mut task => {
            done.expect("join").expect("reconcile");
            None
        }
        Some((seen, r)) = api.next_opt() => {
            assert_eq!((seen.method.as_str(), seen.path.as_str()), ("PATCH", STATUS));
            assert_eq!(seen.query.get("fieldManager").map(String::as_str), Some("kafscale-operator"));
            r.object_with_status(&*k, &seen);
            Some(seen.body)
        }
    };
    let mut events = Vec::new();
    if status.is_some() {
        let (done, e) = finish(api, task).await;
        done.expect("reconcile");
        events = e;
    }
    Applied {
        sts: sts.body,
        headless: headless.body,
        client: client.body,
        metrics: metrics.body,
        hpa: hpa.body,
        pdb: pdb.body,
        network_policy,
        status,
        events,
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn new_cluster_applies_brokers_services_hpa_and_status() {
    let (s3, etcd) = (S3Server::start(), Etcd::start());
    etcd.client().await;
    let (ctx, mut api) = mock();
    let secret = creds(S3Server::SECRET, None);
    let a = reconcile_applied(
        ctx,
        &mut api,
        cluster(&s3, &etcd, 3, None),
        &secret,
        None,
        0,
    )
    .await;
    api.assert_idle();

    // The StatefulSet, as applied.
    let sts = &a.sts;
    assert_eq!(sts["apiVersion"], "apps/v1");
    assert_eq!(sts["kind"], "StatefulSet");
    assert_eq!(
        sts["metadata"]["ownerReferences"],
        json!([{"apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster", "name": "prod",
                "uid": UID, "controller": true}])
    );
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["serviceName"], "prod-broker-headless");
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "partition": 0}})
    );
    // Scaling starts and stops brokers together; they coordinate through etcd.
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 120);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], IMAGE);
    // Guaranteed QoS with whole CPUs, one shard per CPU.
    let res = json!({"cpu": "2", "memory": "4Gi"});
    assert_eq!(c["resources"], json!({"requests": res, "limits": res}));
    assert_eq!(env_value(sts, "KAFSCALE_SHARDS")["value"], "2");
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    // preStop drains through the loopback control endpoint, within half the grace period.
    assert_eq!(
        c["lifecycle"],
        json!({"preStop": {"exec": {"command": [
            "kafscale-broker", "ctl", "--addr", "127.0.0.1:9094", "drain", "--timeout-ms", "60000"
        ]}}})
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "kafka", "containerPort": 9092}, {"name": "http", "containerPort": 9093}])
    );
    // Pod Security restricted: no root, no capabilities, the io_uring profile
    // the chart installs instead of Unconfined, an immutable root filesystem.
    assert_eq!(
        c["securityContext"],
        json!({"allowPrivilegeEscalation": false,
               "readOnlyRootFilesystem": true,
               "runAsNonRoot": true,
               "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "Localhost",
                                  "localhostProfile": "kafscale/kafscale-broker.json"}})
    );
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532})
    );
    let sel = json!({"matchLabels": {"app.kubernetes.io/instance": "prod",
                                     "app.kubernetes.io/name": "kafscale-broker"}});
    assert_eq!(
        pod["topologySpreadConstraints"],
        json!([
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": sel},
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": sel}
        ])
    );
    // The environment uses the broker's own variable names.
    for (k, v) in [
        ("KAFSCALE_BROKER_ADDR", "0.0.0.0:9092"),
        (
            "KAFSCALE_BROKER_HOST",
            "$(POD_NAME).prod-broker-headless.kafscale.svc",
        ),
        ("KAFSCALE_BROKER_PORT", "9092"),
        ("KAFSCALE_METRICS_ADDR", "0.0.0.0:9093"),
        ("KAFSCALE_CONTROL_ADDR", "127.0.0.1:9094"),
        ("KAFSCALE_S3_BUCKET", S3Server::BUCKET),
        ("KAFSCALE_S3_REGION", "us-east-1"),
        ("KAFSCALE_S3_ENDPOINT", &s3.endpoint()),
        ("KAFSCALE_S3_PATH_STYLE", "true"),
        // The cluster's Kubernetes namespace: its own prefix in a shared bucket.
        ("KAFSCALE_S3_NAMESPACE", NS),
        ("KAFSCALE_ETCD_ENDPOINTS", &etcd.endpoint()),
        ("KAFSCALE_SEGMENT_BYTES", "4194304"),
        ("KAFSCALE_FLUSH_INTERVAL_MS", "50"),
    ] {
        assert_eq!(env_value(sts, k)["value"], v, "{k}");
    }
    assert_eq!(
        env_value(sts, "KAFSCALE_BROKER_ID")["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}})
    );
    // Credentials are references into the Secret; its values appear nowhere.
    assert_eq!(
        env_value(sts, "KAFSCALE_S3_SECRET_KEY")["valueFrom"],
        json!({"secretKeyRef": {"name": SECRET_NAME, "key": "AWS_SECRET_ACCESS_KEY"}})
    );
    assert_eq!(
        env_value(sts, "KAFSCALE_S3_SESSION_TOKEN")["valueFrom"],
        json!({"secretKeyRef": {"name": SECRET_NAME, "key": "AWS_SESSION_TOKEN", "optional": true}})
    );
    let everything = format!(
        "{sts}{}{}{}{}{}",
        a.headless, a.client, a.metrics, a.hpa, a.pdb
    );
    assert!(!everything.contains(S3Server::SECRET));
    assert_eq!(
        spec["template"]["metadata"]["annotations"][SECRET_CHECKSUM],
        checksum_of(&secret)
    );

    // Services and HPA.
    assert_eq!(a.headless["spec"]["clusterIP"], "None");
    assert_eq!(a.headless["spec"]["publishNotReadyAddresses"], true);
    // Clients get the Kafka port only; /metrics and the console have a Service
    // of their own, never exposed by the client Service's type.
    let kafka = json!([{"name": "kafka", "port": 9092, "targetPort": "kafka", "protocol": "TCP"}]);
    assert_eq!(a.headless["spec"]["ports"], kafka);
    assert_eq!(a.client["spec"]["type"], "ClusterIP");
    assert_eq!(a.client["spec"]["ports"], kafka);
    assert_eq!(a.metrics["metadata"]["name"], "prod-broker-metrics");
    assert_eq!(a.metrics["spec"]["type"], "ClusterIP");
    assert_eq!(
        a.metrics["spec"]["ports"],
        json!([{"name": "http", "port": 9093, "targetPort": "http", "protocol": "TCP"}])
    );
    assert_eq!(a.metrics["spec"]["selector"], a.client["spec"]["selector"]);
    assert_eq!(
        a.metrics["metadata"]["labels"]["app.kubernetes.io/component"],
        "broker-metrics"
    );
    // One broker at a time may be evicted, as in a rolling update.
    assert_eq!(a.pdb["apiVersion"], "policy/v1");
    assert_eq!(a.pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(a.pdb["spec"]["selector"], sel);
    assert_eq!(
        a.pdb["metadata"]["ownerReferences"],
        sts["metadata"]["ownerReferences"]
    );
    assert_eq!(
        a.client["spec"]["selector"],
        json!({"app.kubernetes.io/instance": "prod", "app.kubernetes.io/name": "kafscale-broker"})
    );
    assert_eq!(a.hpa["spec"]["minReplicas"], 3);
    assert_eq!(a.hpa["spec"]["maxReplicas"], 6);
    assert_eq!(
        a.hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "prod-broker"})
    );

    // Status: S3 and etcd fine, brokers not ready yet.
    let st = a.status.expect("a new cluster's status is written");
    assert_eq!(st["apiVersion"], "kafscale.io/v1alpha1");
    assert_eq!(st["status"]["phase"], "Provisioning");
    assert_eq!(st["status"]["observedGeneration"], 3);
    assert_eq!(condition(&st, "S3Validated")["status"], "True");
    assert_eq!(condition(&st, "EtcdAvailable")["status"], "True");
    assert_eq!(condition(&st, "Ready")["status"], "False");
    assert_eq!(condition(&st, "Ready")["message"], "0/3 brokers ready");
    // An Event per outcome; brokers still starting is not a warning.
    assert_eq!(
        summary(&a.events),
        [
            (
                "Normal".into(),
                "S3ValidationSucceeded".into(),
                format!(
                    "listed and wrote _kafscale/operator-probe in bucket {}",
                    S3Server::BUCKET
                )
            ),
            (
                "Normal".into(),
                "EtcdConnected".into(),
                "metadata readable".into()
            ),
            (
                "Normal".into(),
                "BrokersNotReady".into(),
                "0/3 brokers ready".into()
            ),
        ]
    );
    assert_eq!(a.events[0]["regarding"]["kind"], "KafscaleCluster");
    assert_eq!(a.events[0]["regarding"]["name"], "prod");
    assert_eq!(a.events[0]["reportingController"], "kafscale-operator");
    // The probe object is in the bucket.
    assert!(s3
        .dir
        .path()
        .join(S3Server::BUCKET)
        .join("_kafscale/operator-probe")
        .exists());
}

#[tokio::test]
async fn scaled_cluster_moves_replicas_and_hpa_and_patches_status_only_on_change() {
    let (s3, etcd) = (S3Server::start(), Etcd::start());
    etcd.client().await;
    let (ctx, mut api) = mock();
    let secret = creds(S3Server::SECRET, None);

    // Running with 3 ready brokers.
    let a = reconcile_applied(
        ctx.clone(),
        &mut api,
        cluster(&s3, &etcd, 3, None),
        &secret,
        Some(3),
        3,
    )
    .await;
    let st = a.status.expect("status");
    assert_eq!(st["status"]["phase"], "Running");
    assert_eq!(condition(&st, "Ready")["status"], "True");
    assert!(summary(&a.events).contains(&(
        "Normal".into(),
        "BrokersReady".into(),
        "3/3 brokers ready".into()
    )));

    // The same state again: nothing changed, so no status patch.
    let again = cluster(&s3, &etcd, 3, Some(st["status"].clone()));
    let b = reconcile_applied(ctx.clone(), &mut api, again, &secret, Some(3), 3).await;
    assert!(
        b.status.is_none(),
        "unchanged status was patched: {:?}",
        b.status
    );
    assert!(
        b.events.is_empty(),
        "a resync with the same outcome published Events"
    );
    assert_eq!(b.sts, a.sts);

    // Scaled to 5: the StatefulSet and the HPA's minimum follow.
    let scaled = cluster(&s3, &etcd, 5, Some(st["status"].clone()));
    let c = reconcile_applied(ctx.clone(), &mut api, scaled, &secret, Some(3), 3).await;
    assert_eq!(c.sts["spec"]["replicas"], 5);
    assert_eq!(c.hpa["spec"]["minReplicas"], 5);
    assert_eq!(c.hpa["spec"]["maxReplicas"], 6);
    let st = c.status.expect("status after scaling");
    assert_eq!(st["status"]["phase"], "Provisioning");
    assert_eq!(st["status"]["observedGeneration"], 5);
    assert_eq!(condition(&st, "Ready")["message"], "3/5 brokers ready");
    // Only the replica count changed in the StatefulSet.
    let mut before = a.sts.clone();
    before["spec"]["replicas"] = json!(5);
    assert_eq!(c.sts, before);

    // Within the HPA's bounds the HPA decides: 6 running brokers stay 6.
    let d = reconcile_applied(
        ctx,
        &mut api,
        cluster(&s3, &etcd, 5, None),
        &secret,
        Some(6),
        6,
    )
    .await;
    assert_eq!(d.sts["spec"]["replicas"], 6);
    api.assert_idle();
}

#[tokio::test]
async fn changed_secret_changes_the_checksum_and_rolls_brokers() {
    let (s3, etcd) = (S3Server::start(), Etcd::start());
    etcd.client().await;
    let (ctx, mut api) = mock();
    let v1 = creds(S3Server::SECRET, None);
    let a = reconcile_applied(
        ctx.clone(),
        &mut api,
        cluster(&s3, &etcd, 2, None),
        &v1,
        Some(2),
        2,
    )
    .await;
    let v2 = creds(S3Server::SECRET, Some(("AWS_SESSION_TOKEN", "rotated")));
    let b = reconcile_applied(ctx, &mut api, cluster(&s3, &etcd, 2, None), &v2, Some(2), 2).await;
    api.assert_idle();

    let sum = |v: &Value| v["spec"]["template"]["metadata"]["annotations"][SECRET_CHECKSUM].clone();
    assert_eq!(sum(&a.sts), checksum_of(&v1));
    assert_eq!(sum(&b.sts), checksum_of(&v2));
    assert_ne!(sum(&a.sts), sum(&b.sts));
    // The annotation is the only change, so the StatefulSet rolls the pods (one
    // at a time) onto the new Secret and nothing else.
    let mut expected = a.sts.clone();
    expected["spec"]["template"]["metadata"]["annotations"][SECRET_CHECKSUM] = sum(&b.sts);
    assert_eq!(b.sts, expected);
    assert!(!b.sts.to_string().contains("rotated"));
}

#[tokio::test]
async fn s3_validation_with_wrong_credentials_fails_without_touching_brokers() {
    let (s3, etcd) = (S3Server::start(), Etcd::start());
    etcd.client().await;
    let (ctx, mut api) = mock();
    let k = Arc::new(cluster(&s3, &etcd, 3, None));
    let task = tokio::spawn(cluster::reconcile(k.clone(), ctx));
    let (_, r) = api
        .expect(
            "GET",
            &format!("/api/v1/namespaces/kafscale/secrets/{SECRET_NAME}"),
        )
        .await;
    r.json(200, &creds("not-the-secret", None));
    // No StatefulSet, Service or HPA request: straight to the status.
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*k, &seen);
    let (action, events) = finish(&mut api, task).await;
    let action = action.expect("reconcile");
    api.assert_idle();
    let events = summary(&events);
    // One Event per reason: the S3 error itself, not Ready's summary of it.
    assert_eq!(
        events
            .iter()
            .filter(|e| e.1 == "S3ValidationFailed")
            .count(),
        1
    );
    assert_eq!(events[0].0, "Warning");
    assert_eq!(events[0].1, "S3ValidationFailed");
    assert!(
        events[0].2.contains("list of bucket \"kafscale\" failed"),
        "{events:?}"
    );
    let st = seen.body;
    assert_eq!(st["status"]["phase"], "Failed");
    let s3c = condition(&st, "S3Validated");
    assert_eq!(s3c["status"], "False");
    assert_eq!(s3c["reason"], "S3ValidationFailed");
    let msg = s3c["message"].as_str().expect("message");
    assert!(msg.contains("list of bucket \"kafscale\" failed"), "{msg}");
    assert!(
        msg.contains("SignatureDoesNotMatch") || msg.contains("403"),
        "{msg}"
    );
    assert_eq!(condition(&st, "Ready")["reason"], "S3ValidationFailed");
    assert_eq!(condition(&st, "EtcdAvailable")["status"], "True");
    // Retried with back-off, not after the healthy resync.
    assert_eq!(
        format!("{action:?}"),
        format!(
            "{:?}",
            kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
        )
    );
}

#[tokio::test]
async fn missing_secret_is_reported() {
    let (s3, etcd) = (S3Server::start(), Etcd::start());
    etcd.client().await;
    let (ctx, mut api) = mock();
    let k = Arc::new(cluster(&s3, &etcd, 1, None));
    let task = tokio::spawn(cluster::reconcile(k.clone(), ctx));
    let (_, r) = api
        .expect(
            "GET",
            &format!("/api/v1/namespaces/kafscale/secrets/{SECRET_NAME}"),
        )
        .await;
    r.not_found("secrets", SECRET_NAME);
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*k, &seen);
    finish(&mut api, task).await.0.expect("reconcile");
    let c = condition(&seen.body, "S3Validated");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("SecretMissing"))
    );
    assert_eq!(c["message"], "Secret kafscale/s3-creds not found");
}

/// With the chart's default RBAC the operator may read only the Secrets listed
/// in rbac.secrets: an unlisted one is reported, not retried as an API error.
#[tokio::test]
async fn a_secret_rbac_does_not_allow_is_reported() {
    let (s3, etcd) = (S3Server::start(), Etcd::start());
    let (ctx, mut api) = mock();
    let k = Arc::new(cluster(&s3, &etcd, 1, None));
    let task = tokio::spawn(cluster::reconcile(k.clone(), ctx));
    let (_, r) = api
        .expect(
            "GET",
            &format!("/api/v1/namespaces/kafscale/secrets/{SECRET_NAME}"),
        )
        .await;
    r.json(
        403,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "secrets \"s3-creds\" is forbidden", "reason": "Forbidden", "code": 403}),
    );
    // Nothing applied: straight to the status.
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*k, &seen);
    let (done, events) = finish(&mut api, task).await;
    done.expect("a Forbidden Secret is a status, not a reconcile error");
    api.assert_idle();
    assert_eq!(seen.body["status"]["phase"], "Failed");
    let ready = condition(&seen.body, "Ready");
    assert_eq!(ready["reason"], "SecretForbidden");
    assert_eq!(
        ready["message"],
        "the operator may not read Secret kafscale/s3-creds: list it in the chart's rbac.secrets"
    );
    assert_eq!(
        summary(&events),
        [(
            "Warning".to_string(),
            "SecretForbidden".to_string(),
            ready["message"].as_str().unwrap_or_default().to_string()
        )]
    );
}

/// A cluster with listeners, TLS, SASL, ACLs and a NetworkPolicy, on an etcd that
/// speaks only TLS with client certificates: the operator reaches etcd with the
/// Secret's certificate (EtcdAvailable), the brokers get the same Secret mounted,
/// and its digest rolls them when it is renewed.
#[tokio::test]
async fn a_secure_cluster_reaches_etcd_over_tls_and_applies_its_network_policy() {
    let certs = Certs::make();
    let (s3, etcd) = (S3Server::start(), Etcd::start_tls(&certs));
    etcd.tls_client(&certs).await;
    let (ctx, mut api) = mock();
    let mut k = cluster(&s3, &etcd, 3, None);
    k.spec = serde_json::from_value({
        let mut spec = serde_json::to_value(&k.spec).expect("spec");
        spec["etcd"]["tls"] = json!({"secretRef": {"name": "etcd-client"}});
        spec["security"] = json!({
            "listeners": [{"name": "INTERNAL", "port": 9092, "protocol": "SASL_PLAINTEXT"},
                          {"name": "SASL_SSL", "port": 9096}],
            "tls": {"secretRef": {"name": "prod-kafka-tls"}},
            "sasl": {"mechanisms": ["SCRAM-SHA-512"], "usersSecretRef": {"name": "kafka-users"}},
            "authorization": {"authorizer": "acl", "superUsers": ["User:admin"]},
            "networkPolicy": {"enabled": true,
                              "kafkaFrom": [{"namespaceSelector": {"matchLabels": {"kafka": "client"}}}]}
        });
        spec
    })
    .expect("secure spec");
    let s3_secret = creds(S3Server::SECRET, None);
    let etcd_secret = secret(
        "etcd-client",
        &[
            ("ca.crt", &certs.read("ca.crt")),
            ("tls.crt", &certs.read("client.crt")),
            ("tls.key", &certs.read("client.key")),
        ],
    );
    let a = reconcile_applied_with(ctx, &mut api, k, &[&s3_secret, &etcd_secret], None, 3).await;
    api.assert_idle();

    let status = a.status.expect("status");
    let etcd_ok = condition(&status, "EtcdAvailable");
    assert_eq!(
        (etcd_ok["status"].as_str(), etcd_ok["reason"].as_str()),
        (Some("True"), Some("EtcdConnected")),
        "{etcd_ok}"
    );
    // The etcd client certificate is part of the digest; the listeners'
    // certificate (reloaded by the brokers) is not read at all.
    let digest = |s: &Value| serde_json::from_value::<Secret>(s.clone()).expect("secret");
    let (s3s, etcds) = (digest(&s3_secret), digest(&etcd_secret));
    let want = secrets_checksum(&[
        ("s3", Some(&s3s)),
        ("etcd", None),
        ("etcd-tls", Some(&etcds)),
    ]);
    assert_eq!(
        a.sts["spec"]["template"]["metadata"]["annotations"][SECRET_CHECKSUM],
        want
    );
    assert_eq!(
        env_value(&a.sts, "KAFSCALE_LISTENERS")["value"],
        "INTERNAL://0.0.0.0:9092,SASL_SSL://0.0.0.0:9096"
    );
    assert_eq!(
        env_value(&a.sts, "KAFSCALE_INSECURE_OPS_ENDPOINTS")["value"],
        "true"
    );
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("list")
            .iter()
            .map(|x| x["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let pod = &a.sts["spec"]["template"]["spec"];
    assert_eq!(
        names(&pod["volumes"]),
        ["data", "tls", "sasl-users", "etcd-tls"]
    );
    assert_eq!(
        names(&pod["containers"][0]["ports"]),
        ["internal", "sasl-ssl", "http"]
    );
    assert_eq!(names(&a.client["spec"]["ports"]), ["internal", "sasl-ssl"]);
    assert_eq!(
        names(&a.headless["spec"]["ports"]),
        ["internal", "sasl-ssl"]
    );

    let np = a.network_policy.expect("a NetworkPolicy");
    assert_eq!(np["kind"], "NetworkPolicy");
    assert_eq!(
        np["metadata"]["ownerReferences"][0]["kind"],
        "KafscaleCluster"
    );
    assert_eq!(
        np["spec"]["ingress"],
        json!([{"ports": [{"port": 9092, "protocol": "TCP"}, {"port": 9096, "protocol": "TCP"}],
                "from": [{"namespaceSelector": {"matchLabels": {"kafka": "client"}}}]}])
    );
}

/// An etcd TLS Secret without the client key: the brokers would not start, so
/// the operator says which key is missing.
#[tokio::test]
async fn an_etcd_tls_secret_without_its_keys_is_reported() {
    let (s3, etcd) = (S3Server::start(), Etcd::start());
    let (ctx, mut api) = mock();
    let mut k = cluster(&s3, &etcd, 1, None);
    k.spec.etcd.endpoints = vec![format!("https://127.0.0.1:{}", etcd.port)];
    k.spec.etcd.tls =
        Some(serde_json::from_value(json!({"secretRef": {"name": "etcd-client"}})).expect("tls"));
    let s3_secret = creds(S3Server::SECRET, None);
    let etcd_secret = secret("etcd-client", &[("ca.crt", "x"), ("tls.crt", "y")]);
    let a = reconcile_applied_with(ctx, &mut api, k, &[&s3_secret, &etcd_secret], None, 1).await;
    let status = a.status.expect("status");
    let c = condition(&status, "EtcdAvailable");
    assert_eq!(
        (
            c["status"].as_str(),
            c["reason"].as_str(),
            c["message"].as_str()
        ),
        (
            Some("False"),
            Some("SecretMissing"),
            Some("Secret kafscale/etcd-client has no key tls.key")
        )
    );
}

/// A spec the brokers would refuse is reported and nothing is applied, not
/// even a Secret read.
#[tokio::test]
async fn an_invalid_security_spec_applies_nothing() {
    let (s3, etcd) = (S3Server::start(), Etcd::start());
    let (ctx, mut api) = mock();
    let mut k = cluster(&s3, &etcd, 3, None);
    k.spec.security = Some(
        serde_json::from_value(json!({"listeners": [{"name": "SSL", "port": 9096}]}))
            .expect("security"),
    );
    let k = Arc::new(k);
    let task = tokio::spawn(cluster::reconcile(k.clone(), ctx));
    let (seen, r) = api.expect_apply(STATUS).await;
    r.object_with_status(&*k, &seen);
    let (done, events) = finish(&mut api, task).await;
    done.expect("an invalid spec is a status, not a reconcile error");
    api.assert_idle();
    assert_eq!(seen.body["status"]["phase"], "Failed");
    let ready = condition(&seen.body, "Ready");
    assert_eq!(
        (
            ready["status"].as_str(),
            ready["reason"].as_str(),
            ready["message"].as_str()
        ),
        (
            Some("False"),
            Some("InvalidSpec"),
            Some("security.listeners SSL: protocol SSL needs security.tls.secretRef")
        )
    );
    assert_eq!(summary(&events)[0].1, "InvalidSpec");
}
