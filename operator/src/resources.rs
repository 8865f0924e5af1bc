//! The Kubernetes objects a `KafscaleCluster` owns, built from its spec: the broker
//! StatefulSet, a headless, a client and a metrics Service, an HPA and a
//! PodDisruptionBudget. Pure functions, so the exact objects are testable without
//! an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::KafscaleCluster;
use crate::security;

pub const KAFKA_PORT: i32 = 9092;
pub const HTTP_PORT: i32 = 9093;
/// BrokerControl (gRPC, no authentication): bound to the pod's loopback only. The
/// preStop hook runs inside the pod and reaches it there; nothing else needs it.
pub const CONTROL_ADDR: &str = "127.0.0.1:9094";
/// Pod-template annotation holding a digest of the referenced Secrets' data: a
/// rotated credential changes the template, and the StatefulSet rolls the brokers.
pub const SECRET_CHECKSUM: &str = "kafscale.io/secret-checksum";
/// Default `terminationGracePeriodSeconds`: the preStop drain and then SIGTERM's
/// own flush and lease revoke must both fit in it (see `drain_timeout_ms`). A
/// flush uploads at most one open segment per partition, normally seconds; the
/// rest is headroom for a slow object store, since a broker killed before its
/// uploads finish loses its `acks=1` tail and is taken over only after its lease
/// expires.
pub const DEFAULT_GRACE_SECONDS: i64 = 120;
pub const DEFAULT_CPU_TARGET: i32 = 70;
const DATA_DIR: &str = "/var/lib/kafscale";
/// The images' unprivileged user (distroless `nonroot`).
pub const BROKER_UID: i64 = 65532;

/// Keys read from the S3 credentials Secret, and the broker variables they feed.
pub const S3_SECRET_KEYS: [(&str, &str, bool); 3] = [
    ("AWS_ACCESS_KEY_ID", "KAFSCALE_S3_ACCESS_KEY", false),
    ("AWS_SECRET_ACCESS_KEY", "KAFSCALE_S3_SECRET_KEY", false),
    ("AWS_SESSION_TOKEN", "KAFSCALE_S3_SESSION_TOKEN", true),
];
/// Keys read from the etcd credentials Secret.
pub const ETCD_SECRET_KEYS: [(&str, &str, bool); 2] = [
    ("username", "KAFSCALE_ETCD_USERNAME", false),
    ("password", "KAFSCALE_ETCD_PASSWORD", false),
];

pub fn sts_name(cluster: &str) -> String {
    format!("{cluster}-broker")
}

pub fn headless_name(cluster: &str) -> String {
    format!("{cluster}-broker-headless")
}

pub fn client_service_name(cluster: &str) -> String {
    format!("{cluster}-broker")
}

pub fn metrics_service_name(cluster: &str) -> String {
    format!("{cluster}-broker-metrics")
}

/// The PodDisruptionBudget shares the StatefulSet's name.
pub fn pdb_name(cluster: &str) -> String {
    sts_name(cluster)
}

/// Labels that select one cluster's broker pods.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "kafscale-broker".into()),
        ("app.kubernetes.io/instance".into(), cluster.into()),
    ])
}

fn labels(cluster: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "kafscale-operator".into(),
    );
    l.insert("app.kubernetes.io/component".into(), "broker".into());
    l
}

/// Controller reference to the cluster: garbage collection removes the objects
/// with it, and the controller maps their events back to it.
pub fn owner_ref(c: &KafscaleCluster) -> Option<OwnerReference> {
    c.controller_owner_ref(&())
}

pub(crate) fn meta(c: &KafscaleCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: c.metadata.namespace.clone(),
        labels: Some(labels(&c.name_any())),
        owner_references: owner_ref(c).map(|o| vec![o]),
        ..Default::default()
    }
}

fn env(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn env_from_secret(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
    }
}

/// Shards per broker: `config.shards`, or one per CPU.
pub fn shards(c: &KafscaleCluster) -> i32 {
    c.spec
        .config
        .shards
        .unwrap_or(c.spec.brokers.resources.cpus)
}

/// The broker's environment, with the variable names of docs/configuration.md.
/// Credentials are `secretKeyRef`s: their values never leave the Secrets.
pub fn broker_env(c: &KafscaleCluster) -> Vec<EnvVar> {
    let name = c.name_any();
    let ns = c.metadata.namespace.clone().unwrap_or_default();
    let spec = &c.spec;
    let mut e = vec![
        env_from_field("POD_NAME", "metadata.name"),
        // The StatefulSet controller labels each pod with its ordinal (Kubernetes
        // 1.28+), which makes a stable, unique broker id.
        env_from_field(
            "KAFSCALE_BROKER_ID",
            "metadata.labels['apps.kubernetes.io/pod-index']",
        ),
        env("KAFSCALE_BROKER_ADDR", format!("0.0.0.0:{KAFKA_PORT}")),
        env(
            "KAFSCALE_BROKER_HOST",
            spec.brokers
                .advertised_host
                .clone()
                .unwrap_or_else(|| format!("$(POD_NAME).{}.{ns}.svc", headless_name(&name))),
        ),
        env(
            "KAFSCALE_BROKER_PORT",
            spec.brokers.advertised_port.unwrap_or(KAFKA_PORT),
        ),
        env("KAFSCALE_METRICS_ADDR", format!("0.0.0.0:{HTTP_PORT}")),
        env("KAFSCALE_CONTROL_ADDR", CONTROL_ADDR),
        env("KAFSCALE_DATA_DIR", DATA_DIR),
        env("KAFSCALE_SHARDS", shards(c)),
        env("KAFSCALE_LOG_FORMAT", "json"),
        env("KAFSCALE_S3_BUCKET", &spec.s3.bucket),
        env("KAFSCALE_S3_REGION", &spec.s3.region),
        env("KAFSCALE_S3_PATH_STYLE", spec.s3.force_path_style),
        env("KAFSCALE_S3_NAMESPACE", s3_namespace(c)),
    ];
    let optional = [
        ("KAFSCALE_S3_ENDPOINT", &spec.s3.endpoint),
        ("KAFSCALE_S3_READ_BUCKET", &spec.s3.read_bucket),
        ("KAFSCALE_S3_READ_REGION", &spec.s3.read_region),
        ("KAFSCALE_S3_READ_ENDPOINT", &spec.s3.read_endpoint),
        ("KAFSCALE_S3_KMS_ARN", &spec.s3.kms_key_arn),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            e.push(env(k, v));
        }
    }
    if let Some(s) = &spec.s3.credentials_secret_ref {
        for (key, var, optional) in S3_SECRET_KEYS {
            e.push(env_from_secret(var, &s.name, key, optional));
        }
    }
    e.push(env(
        "KAFSCALE_ETCD_ENDPOINTS",
        spec.etcd.endpoints.join(","),
    ));
    if let Some(s) = &spec.etcd.credentials_secret_ref {
        for (key, var, optional) in ETCD_SECRET_KEYS {
            e.push(env_from_secret(var, &s.name, key, optional));
        }
    }
    let cfg = &spec.config;
    let numbers = [
        ("KAFSCALE_SEGMENT_BYTES", cfg.segment_bytes),
        ("KAFSCALE_FLUSH_INTERVAL_MS", cfg.flush_interval_ms),
        ("KAFSCALE_CACHE_BYTES", cfg.cache_bytes),
        ("KAFSCALE_READAHEAD_SEGMENTS", cfg.readahead_segments),
    ];
    for (k, v) in numbers {
        if let Some(v) = v {
            e.push(env(k, v));
        }
    }
    e.extend(security::broker_env(c));
    e
}

/// The object prefix of the cluster in its bucket: `s3.namespace`, or the
/// cluster's Kubernetes namespace (as the Go Kafscale's operator did), so that
/// clusters of different namespaces sharing a bucket never share a prefix.
pub fn s3_namespace(c: &KafscaleCluster) -> String {
    c.spec
        .s3
        .namespace
        .clone()
        .or_else(|| c.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into())
}

/// Default topology spread: brokers are interchangeable, so losing a node or a
/// zone should cost as few of them as possible; `ScheduleAnyway` keeps a
/// cluster with more brokers than nodes (or a single zone) schedulable.
fn default_spread(cluster: &str) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// Grace period of the broker pods: the spec's, or `DEFAULT_GRACE_SECONDS`.
pub fn grace_seconds(c: &KafscaleCluster) -> i64 {
    c.spec
        .brokers
        .termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_SECONDS)
}

/// How long the preStop drain waits for durability: half the grace period. The
/// hook's time counts against the grace period, and the other half is left to
/// SIGTERM's own flush (of whatever the drain did not finish) and the lease
/// revoke; a hook that outlived the grace period would get the broker killed.
/// At most 600 s, the longest wait the broker accepts.
pub fn drain_timeout_ms(grace_seconds: i64) -> i64 {
    (grace_seconds.clamp(2, 1200) * 1000) / 2
}

/// preStop: `kafscale-broker ctl drain` against the broker's own control endpoint.
/// The broker stops taking writes (producers get NOT_LEADER_OR_FOLLOWER and
/// retry) and uploads what it buffers while still fully up, so by the time
/// SIGTERM arrives there is nothing left to flush and the broker only revokes its
/// lease: its partitions move to the others at once. A failing hook (e.g. an
/// upload error) is only an event: SIGTERM follows and flushes again.
fn pre_stop_drain(grace_seconds: i64) -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "kafscale-broker".into(),
                    "ctl".into(),
                    "--addr".into(),
                    CONTROL_ADDR.into(),
                    "drain".into(),
                    "--timeout-ms".into(),
                    drain_timeout_ms(grace_seconds).to_string(),
                ]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Default::default()
    }
}

/// The broker StatefulSet. `replicas` is decided by the caller (the spec, kept
/// within the HPA's bounds); `checksum` is the digest of the referenced Secrets;
/// `seccomp_profile` is the `Localhost` profile of clusters that name none.
pub fn statefulset(
    c: &KafscaleCluster,
    image: &str,
    seccomp_profile: &str,
    replicas: i32,
    checksum: &str,
) -> StatefulSet {
    let name = c.name_any();
    let b = &c.spec.brokers;
    let grace = grace_seconds(c);
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(b.resources.cpus.to_string())),
        ("memory".to_string(), Quantity(b.resources.memory.clone())),
    ]);
    let seccomp = match &b.seccomp_profile {
        Some(s) => SeccompProfile {
            type_: s.r#type.clone(),
            localhost_profile: s.localhost_profile.clone(),
        },
        None => SeccompProfile {
            type_: "Localhost".into(),
            localhost_profile: Some(seccomp_profile.into()),
        },
    };
    // IPC_LOCK only on request: the Pod Security baseline level refuses it, and
    // a node whose runtime gives containers RLIMIT_MEMLOCK >= 512 KiB per shard
    // (systemd's default 8 MiB covers 16) does not need it.
    let add = b.ipc_lock.then(|| vec!["IPC_LOCK".to_string()]);
    let mut ports: Vec<ContainerPort> = security::kafka_ports(c)
        .into_iter()
        .map(|p| ContainerPort {
            name: Some(p.name),
            container_port: p.port,
            ..Default::default()
        })
        .collect();
    ports.push(ContainerPort {
        name: Some("http".into()),
        container_port: HTTP_PORT,
        ..Default::default()
    });
    let (secret_volumes, secret_mounts) = security::volumes(c);
    let mut mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: DATA_DIR.into(),
        ..Default::default()
    }];
    mounts.extend(secret_mounts);
    let mut volumes = vec![Volume {
        name: "data".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    volumes.extend(secret_volumes);
    let container = Container {
        name: "broker".into(),
        image: Some(image.into()),
        ports: Some(ports),
        env: Some(broker_env(c)),
        // Requests == limits with whole CPUs: Guaranteed QoS, pinned cores.
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..Default::default()
        }),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        lifecycle: Some(pre_stop_drain(grace)),
        // What the Pod Security restricted level asks, except where a cluster
        // opts into Unconfined or IPC_LOCK: no root, no escalation, no
        // capabilities, a confining seccomp profile, an immutable image.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                add,
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(seccomp),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let mut template_meta = ObjectMeta {
        labels: Some(labels(&name)),
        ..Default::default()
    };
    template_meta.annotations = Some(BTreeMap::from([(
        SECRET_CHECKSUM.to_string(),
        checksum.to_string(),
    )]));
    StatefulSet {
        metadata: meta(c, sts_name(&name)),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(headless_name(&name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..Default::default()
            },
            // One broker at a time: the next one stops only when the previous one
            // is ready again.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    max_unavailable: Some(IntOrString::Int(1)),
                    partition: Some(0),
                }),
            }),
            // Parallel only changes scaling (rolling updates stay one pod at a
            // time): brokers never wait for each other (a broker's readiness needs
            // only etcd and the bucket, and ids come from the ordinal, not from
            // start order), so starting or stopping several at once is safe.
            // Ownership is decided in etcd (distinct ids, claims under leases,
            // fenced commits), and each stopping pod drains its own partitions.
            // OrderedReady would only make scaling by N take N start-ups.
            pod_management_policy: Some("Parallel".into()),
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // Brokers do not call the Kubernetes API.
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(grace),
                    node_selector: (!b.node_selector.is_empty()).then(|| b.node_selector.clone()),
                    tolerations: (!b.tolerations.is_empty()).then(|| b.tolerations.clone()),
                    topology_spread_constraints: Some(
                        if b.topology_spread_constraints.is_empty() {
                            default_spread(&name)
                        } else {
                            b.topology_spread_constraints.clone()
                        },
                    ),
                    // fsGroup: the emptyDir data directory belongs to the broker's group.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(BROKER_UID),
                        run_as_group: Some(BROKER_UID),
                        fs_group: Some(BROKER_UID),
                        ..Default::default()
                    }),
                    // Segments live in S3 and metadata in etcd: the data directory
                    // only holds scratch state; the rest are Secrets (security).
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// One Service port per Kafka listener.
fn kafka_service_ports(c: &KafscaleCluster) -> Vec<ServicePort> {
    security::kafka_ports(c)
        .iter()
        .map(|p| port(&p.name, p.port))
        .collect()
}

/// Per-pod DNS names for the advertised addresses. Not-ready pods are published
/// too: a broker registers in etcd, and so appears in every broker's Metadata
/// and may be assigned partitions, before its readiness probe passes, and a
/// terminating broker stays a partition's leader until its drain ends; clients
/// must resolve its name in both cases. (Brokers never connect to each other.)
pub fn headless_service(c: &KafscaleCluster) -> Service {
    let name = c.name_any();
    Service {
        metadata: meta(c, headless_name(&name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&name)),
            ports: Some(kafka_service_ports(c)),
            ..Default::default()
        }),
        status: None,
    }
}

/// The bootstrap Service clients connect to: the Kafka ports only (one per listener). A client
/// Service of type LoadBalancer must not publish `/metrics` and the console,
/// which have no authentication.
pub fn client_service(c: &KafscaleCluster) -> Service {
    let name = c.name_any();
    let s = &c.spec.brokers.service;
    let mut metadata = meta(c, client_service_name(&name));
    if !s.annotations.is_empty() {
        metadata.annotations = Some(s.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(s.r#type.clone().unwrap_or_else(|| "ClusterIP".into())),
            selector: Some(selector_labels(&name)),
            ports: Some(kafka_service_ports(c)),
            ..Default::default()
        }),
        status: None,
    }
}

/// `/metrics`, the health endpoints and the console, inside the cluster only
/// (always `ClusterIP`, whatever the client Service's type); the chart's
/// NetworkPolicy can narrow who reaches it.
pub fn metrics_service(c: &KafscaleCluster) -> Service {
    let name = c.name_any();
    let mut metadata = meta(c, metrics_service_name(&name));
    if let Some(l) = metadata.labels.as_mut() {
        l.insert(
            "app.kubernetes.io/component".into(),
            "broker-metrics".into(),
        );
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![port("http", HTTP_PORT)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// One broker at a time may be evicted (node drains, cluster upgrades), as in
/// a rolling update: each evicted pod runs its preStop drain, and its
/// partitions move before the next one goes.
pub fn pdb(c: &KafscaleCluster) -> PodDisruptionBudget {
    let name = c.name_any();
    PodDisruptionBudget {
        metadata: meta(c, pdb_name(&name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// HPA bounds: `replicas` is the minimum, `maxReplicas` (default: `replicas`) the maximum.
pub fn hpa_bounds(c: &KafscaleCluster) -> (i32, i32) {
    let min = c.spec.brokers.replicas.max(1);
    (min, c.spec.brokers.max_replicas.unwrap_or(min).max(min))
}

pub fn hpa(c: &KafscaleCluster) -> HorizontalPodAutoscaler {
    let name = c.name_any();
    let (min, max) = hpa_bounds(c);
    HorizontalPodAutoscaler {
        metadata: meta(c, sts_name(&name)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "StatefulSet".into(),
                name: sts_name(&name),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(
                            c.spec
                                .brokers
                                .target_cpu_utilization
                                .unwrap_or(DEFAULT_CPU_TARGET),
                        ),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(brokers: serde_json::Value) -> KafscaleCluster {
        serde_json::from_value(json!({
            "apiVersion": "kafscale.io/v1alpha1",
            "kind": "KafscaleCluster",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {
                "brokers": brokers,
                "s3": {"bucket": "b", "region": "r"},
                "etcd": {"endpoints": ["http://etcd:2379"]}
            }
        }))
        .expect("cluster")
    }

    fn pre_stop(sts: &StatefulSet) -> (Vec<String>, i64) {
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let cmd = pod.containers[0]
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone())
            .expect("preStop exec");
        (cmd, pod.termination_grace_period_seconds.unwrap())
    }

    #[test]
    fn the_drain_gets_half_the_grace_period() {
        assert_eq!(drain_timeout_ms(120), 60_000);
        assert_eq!(drain_timeout_ms(10), 5_000);
        // The broker waits at most 600 s; tiny values still give the drain a second.
        assert_eq!(drain_timeout_ms(3600), 600_000);
        assert_eq!(drain_timeout_ms(0), 1_000);
    }

    #[test]
    fn pre_stop_drains_within_the_configured_grace_period() {
        let (cmd, grace) = pre_stop(&statefulset(
            &cluster(json!({"replicas": 3, "terminationGracePeriodSeconds": 30})),
            "img",
            "p.json",
            3,
            "",
        ));
        assert_eq!(grace, 30);
        assert_eq!(
            cmd,
            [
                "kafscale-broker",
                "ctl",
                "--addr",
                CONTROL_ADDR,
                "drain",
                "--timeout-ms",
                "15000"
            ]
        );
        let (cmd, grace) = pre_stop(&statefulset(&cluster(json!({})), "img", "p.json", 1, ""));
        assert_eq!(grace, DEFAULT_GRACE_SECONDS);
        assert_eq!(cmd.last().map(String::as_str), Some("60000"));
    }

    #[test]
    fn every_pod_has_its_own_id_and_host_and_a_loopback_control_endpoint() {
        let env = broker_env(&cluster(json!({"replicas": 2})));
        let get = |n: &str| env.iter().find(|e| e.name == n).cloned().expect(n);
        assert_eq!(
            get("KAFSCALE_BROKER_ID")
                .value_from
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path),
            Some("metadata.labels['apps.kubernetes.io/pod-index']".to_string())
        );
        // $(POD_NAME) is expanded by the kubelet: POD_NAME is defined before it.
        let pod_name = env.iter().position(|e| e.name == "POD_NAME").unwrap();
        let host = env
            .iter()
            .position(|e| e.name == "KAFSCALE_BROKER_HOST")
            .unwrap();
        assert!(pod_name < host);
        assert_eq!(
            get("KAFSCALE_BROKER_HOST").value.as_deref(),
            Some("$(POD_NAME).c-broker-headless.ns.svc")
        );
        assert_eq!(
            get("KAFSCALE_CONTROL_ADDR").value.as_deref(),
            Some("127.0.0.1:9094")
        );
    }

    fn container_sc(sts: &StatefulSet) -> SecurityContext {
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers[0]
            .security_context
            .clone()
            .expect("security context")
    }

    #[test]
    fn ipc_lock_and_the_seccomp_profile_are_per_cluster_choices() {
        let sc = container_sc(&statefulset(&cluster(json!({})), "img", "p.json", 1, ""));
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.add.clone()), None);
        assert_eq!(
            sc.seccomp_profile,
            Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("p.json".into())
            })
        );
        let c = cluster(json!({"ipcLock": true, "seccompProfile": {"type": "RuntimeDefault"}}));
        let sc = container_sc(&statefulset(&c, "img", "p.json", 1, ""));
        assert_eq!(
            sc.capabilities.and_then(|c| c.add),
            Some(vec!["IPC_LOCK".to_string()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_),
            Some("RuntimeDefault".into())
        );
    }

    #[test]
    fn the_bucket_prefix_is_the_namespace_unless_set() {
        let get = |c: &KafscaleCluster| {
            broker_env(c)
                .into_iter()
                .find(|e| e.name == "KAFSCALE_S3_NAMESPACE")
                .and_then(|e| e.value)
        };
        assert_eq!(get(&cluster(json!({}))), Some("ns".into()));
        let mut c = cluster(json!({}));
        c.spec.s3.namespace = Some("default".into());
        assert_eq!(get(&c), Some("default".into()));
    }

    #[test]
    fn a_cluster_spread_replaces_the_default() {
        let spread = |c: &KafscaleCluster| {
            let sts = statefulset(c, "img", "p.json", 1, "");
            sts.spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .topology_spread_constraints
                .unwrap()
        };
        let d = spread(&cluster(json!({})));
        assert_eq!(
            d.iter()
                .map(|t| t.topology_key.as_str())
                .collect::<Vec<_>>(),
            ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        );
        let c = cluster(json!({"topologySpreadConstraints": [
            {"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}
        ]}));
        let t = spread(&c);
        assert_eq!(
            (t.len(), t[0].max_skew, t[0].topology_key.as_str()),
            (1, 2, "rack")
        );
    }
}
