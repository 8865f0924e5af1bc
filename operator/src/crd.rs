//! The custom resources, `kafscale.io/v1alpha1`: `KafscaleCluster` and
//! `KafscaleTopic`. The CRD YAML (and the chart's `crds/` copy) is generated from
//! these types (`kafscale-operator crd`), so the schema and the code never drift.

// Several printcolumn(...) entries share `type_ = ...`, which clippy takes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Toleration, TopologySpreadConstraint};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "kafscale.io";
pub const VERSION: &str = "v1alpha1";

/// Condition types and reasons the controllers set.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const S3_VALIDATED: &str = "S3Validated";
    pub const ETCD_AVAILABLE: &str = "EtcdAvailable";

    pub const S3_VALIDATION_FAILED: &str = "S3ValidationFailed";
    pub const S3_VALIDATION_SUCCEEDED: &str = "S3ValidationSucceeded";
    pub const ETCD_CONNECTED: &str = "EtcdConnected";
    pub const ETCD_UNAVAILABLE: &str = "EtcdUnavailable";
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const BROKERS_READY: &str = "BrokersReady";
    pub const BROKERS_NOT_READY: &str = "BrokersNotReady";
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    pub const TOPIC_APPLIED: &str = "TopicApplied";
    pub const PARTITION_DECREASE_REFUSED: &str = "PartitionDecreaseRefused";
    pub const INVALID_CONFIG: &str = "InvalidConfig";
    pub const SECRET_FORBIDDEN: &str = "SecretForbidden";
    /// The topic is marked for deletion (a DeleteTopics or a `deletionPolicy: Delete`
    /// of an earlier resource); the brokers finish it, then it is created again.
    pub const TOPIC_BEING_DELETED: &str = "TopicBeingDeleted";

    /// Topics: whether the metadata store holds the configs the resource sets.
    pub const CONFIG_IN_SYNC: &str = "ConfigInSync";
    pub const IN_SYNC: &str = "InSync";
    /// A key the resource sets was changed at runtime and set back (`configDrift: Revert`).
    pub const RUNTIME_CONFIG_REVERTED: &str = "RuntimeConfigReverted";
    /// A key the resource sets differs at runtime and is left so (`configDrift: Keep`).
    pub const RUNTIME_CONFIG_DIFFERS: &str = "RuntimeConfigDiffers";
}

/// Event reasons that are not condition reasons.
pub mod event {
    pub const TOPIC_DELETED: &str = "TopicDeleted";
    pub const TOPIC_RETAINED: &str = "TopicRetained";
}

/// Phases shown in `status.phase` (and `kubectl get`).
pub mod phase {
    /// Accepted, nothing applied yet.
    pub const PENDING: &str = "Pending";
    /// Broker objects applied; not every broker is ready yet.
    pub const PROVISIONING: &str = "Provisioning";
    /// Every broker is ready (cluster) / the topic is in the metadata store (topic).
    pub const RUNNING: &str = "Running";
    pub const READY: &str = "Ready";
    /// Something the user has to fix (see the conditions); retried with back-off.
    pub const FAILED: &str = "Failed";
}

/// A Kafscale cluster: a broker StatefulSet with its Services and HPA, segments in
/// an S3 bucket, metadata in etcd.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kafscale.io",
    version = "v1alpha1",
    kind = "KafscaleCluster",
    doc = "A Kafscale cluster: brokers (StatefulSet, Services, HPA), an S3 bucket, etcd.",
    namespaced,
    status = "KafscaleClusterStatus",
    shortname = "ksc",
    category = "kafscale",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.brokers.replicas"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleClusterSpec {
    #[serde(default)]
    pub brokers: BrokerSpec,
    pub s3: S3Spec,
    pub etcd: EtcdSpec,
    #[serde(default)]
    pub config: BrokerConfig,
    /// Listeners, TLS, SASL, ACLs and the brokers' NetworkPolicy
    /// (docs/security.md). Unset: one PLAINTEXT listener on 9092, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Brokers (pods), and the HPA's minimum.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// HPA maximum; defaults to `replicas` (a fixed size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// HPA target average CPU utilisation, percent of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,
    /// Broker image; defaults to the operator's `--broker-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default)]
    pub resources: BrokerResources,
    /// Host advertised to clients in Metadata. Default: each pod's own DNS name
    /// under the headless Service (`<pod>.<cluster>-broker-headless.<ns>.svc`).
    /// Clients must reach each broker at its own address: with more than one
    /// replica, include `$(POD_NAME)` (expanded per pod), e.g.
    /// `$(POD_NAME).kafka.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_host: Option<String>,
    /// Port advertised to clients (default 9092).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub advertised_port: Option<i32>,
    #[serde(default)]
    pub service: ServiceSpec,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Seconds a stopping broker has to seal and upload its buffers (default 120):
    /// the preStop drain gets half, SIGTERM's flush and lease revoke the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub termination_grace_period_seconds: Option<i64>,
    /// The seccomp profile of the broker container. io_uring (glommio) needs the
    /// `io_uring_setup`, `io_uring_enter` and `io_uring_register` syscalls, which
    /// the container runtimes' default profiles block. Default: the `Localhost`
    /// profile the chart installs on every node (the operator's
    /// `--broker-seccomp-profile`, `kafscale/kafscale-broker.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompSpec>,
    /// Add the `IPC_LOCK` capability, for nodes whose container runtime gives
    /// containers less `RLIMIT_MEMLOCK` than 512 KiB per shard (io_uring's
    /// registered memory is then not charged to it). Off by default: the Pod
    /// Security `baseline` level refuses the capability.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipc_lock: bool,
    /// Topology spread of the broker pods. Default: at most one broker more per
    /// node, and per zone, than on any other (`ScheduleAnyway`: a smaller cluster
    /// still schedules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

fn one() -> i32 {
    1
}

impl Default for BrokerSpec {
    fn default() -> Self {
        BrokerSpec {
            replicas: 1,
            max_replicas: None,
            target_cpu_utilization: None,
            image: None,
            resources: BrokerResources::default(),
            advertised_host: None,
            advertised_port: None,
            service: ServiceSpec::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            termination_grace_period_seconds: None,
            seccomp_profile: None,
            ipc_lock: false,
            topology_spread_constraints: Vec::new(),
        }
    }
}

/// Requests equal limits (Guaranteed QoS) and the CPU count is whole, so the
/// kubelet's static CPU manager gives each broker dedicated cores for its shards.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerResources {
    /// Whole CPUs per broker (requests = limits); one shard per CPU.
    #[serde(default = "default_cpus")]
    #[schemars(range(min = 1, max = 256))]
    pub cpus: i32,
    /// Memory per broker (requests = limits), a Kubernetes quantity.
    #[serde(default = "default_memory")]
    pub memory: String,
}

fn default_cpus() -> i32 {
    2
}

fn default_memory() -> String {
    "2Gi".into()
}

impl Default for BrokerResources {
    fn default() -> Self {
        BrokerResources {
            cpus: default_cpus(),
            memory: default_memory(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Type of the client Service (default `ClusterIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(ClusterIP|NodePort|LoadBalancer)$"))]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeccompSpec {
    #[schemars(regex(pattern = "^(Unconfined|RuntimeDefault|Localhost)$"))]
    pub r#type: String,
    /// For `Localhost`: the profile's path under the kubelet's seccomp directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    #[schemars(length(min = 3))]
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Custom endpoint (MinIO, Ceph, ...); `http://` is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Read replica (cross-region replication): brokers read from it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_endpoint: Option<String>,
    /// SSE-KMS key for segment objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    /// Prefix of every object in the bucket (`KAFSCALE_S3_NAMESPACE`). Default:
    /// the cluster's Kubernetes namespace, so clusters of different namespaces
    /// can share a bucket. Brokers of one cluster always share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-zA-Z0-9._-]{1,253}$"))]
    pub namespace: Option<String>,
    /// Secret in the cluster's namespace with `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`. Without it the
    /// brokers use the pod's AWS environment (e.g. IRSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    /// etcd client URLs, e.g. `http://etcd-0.etcd:2379`.
    #[schemars(length(min = 1))]
    pub endpoints: Vec<String>,
    /// Secret in the cluster's namespace with `username` and `password` keys, when
    /// etcd has authentication enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// TLS towards etcd (`https://` endpoints), for the brokers and the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EtcdTlsSpec>,
}

/// TLS towards etcd from a Secret with cert-manager's key names: `ca.crt` (the
/// CA that signed etcd's certificate) and, with `clientCertificate`, `tls.crt`
/// and `tls.key` (for etcd's `--client-cert-auth`). The brokers read the files
/// at start, so the Secret is part of the checksum that rolls them; the operator
/// must be allowed to read it (the chart's `rbac.secrets`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdTlsSpec {
    pub secret_ref: SecretRef,
    /// Present `tls.crt`/`tls.key` to etcd (default true).
    #[serde(default = "yes")]
    pub client_certificate: bool,
    /// Name etcd's certificate is checked against (default: each endpoint's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn yes() -> bool {
    true
}

/// The security block of a `KafscaleCluster`: what the brokers' `KAFSCALE_LISTENERS`,
/// TLS, SASL and authorizer settings become, and an optional NetworkPolicy. The
/// operator checks what the schema cannot (protocols, names, ports, which
/// listener needs which Secret) and reports `Ready=False/InvalidSpec` without
/// applying anything.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// Kafka listeners; every broker pod binds each on `0.0.0.0:<port>` and
    /// advertises its own address for it. Empty: one PLAINTEXT listener on 9092.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerSpec>,
    /// Certificate of the TLS listeners (SSL, SASL_SSL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationSpec>,
    /// A NetworkPolicy for this cluster's broker pods, made by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    /// Listener name, as in Kafka (`INTERNAL`, `EXTERNAL`, `SASL_SSL`): letters,
    /// digits and `_`. It also names the container and Service port (lowercase,
    /// `_` as `-`, at most 15 characters).
    #[schemars(regex(pattern = "^[A-Za-z][A-Za-z0-9_]{0,14}$"))]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`; default: the name, when
    /// the name is one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host clients are told for this listener. Default: the pod's own name under
    /// the headless Service (`<pod>.<cluster>-broker-headless.<ns>.svc`). Each
    /// broker must advertise its own address: include `$(POD_NAME)`, expanded per
    /// pod (e.g. `$(POD_NAME).kafka.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_host: Option<String>,
    /// Port clients are told (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub advertised_port: Option<i32>,
}

/// The listeners' certificate from a Secret with cert-manager's keys (`tls.crt`,
/// `tls.key`, `ca.crt`), mounted read-only as a directory: a renewed certificate
/// reaches the broker, which reloads it for new connections, without a restart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTlsSpec {
    pub secret_ref: SecretRef,
    /// `Required`: TLS clients must present a certificate signed by the CA in
    /// `ca.crt` (mutual TLS); on SSL listeners its subject is the principal.
    /// `None` (default): no client certificate asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(None|Required)$"))]
    pub client_auth: Option<String>,
    /// Secret whose `ca.crt` verifies client certificates (default: `secretRef`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_secret_ref: Option<SecretRef>,
    /// Kafka's `ssl.principal.mapping.rules` (`RULE:pattern/replacement/[LU]`, `DEFAULT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_mapping_rules: Option<String>,
}

impl ListenerTlsSpec {
    pub fn mutual(&self) -> bool {
        self.client_auth.as_deref() == Some("Required")
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SaslSpec {
    /// Offered on SASL listeners: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`
    /// (default: all three).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mechanisms: Vec<String>,
    /// The users file (`name:password` lines): users without a SCRAM credential
    /// get one when a broker starts; existing ones are kept (change passwords with
    /// the Admin API). Required when every listener is a SASL one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_secret_ref: Option<SecretKeyRef>,
    /// PBKDF2 iterations of credentials made from the users file (4096–16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 4096, max = 16384))]
    pub scram_iterations: Option<i32>,
    /// Longest SASL session (KIP-368); clients re-authenticate before it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub session_lifetime_ms: Option<i64>,
}

/// A key of a Secret in the custom resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    /// Default `users`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationSpec {
    /// `none` (default: everything allowed) or `acl` (Kafka's ACLs, in the metadata store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<String>,
    /// Principals allowed everything with `acl`, e.g. `User:admin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub super_users: Vec<String>,
    /// With `acl`: allow requests on resources no ACL covers (default false, as Kafka).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_everyone_if_no_acl_found: bool,
}

/// Ingress rules for the broker pods. Kafka listener ports from `kafkaFrom`;
/// the HTTP port (metrics, health, the console: no authentication) from
/// `metricsFrom` only. The kubelet's probes come from the node, which the common
/// CNIs do not filter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    pub enabled: bool,
    /// Who may reach the listener ports (namespaceSelector, podSelector, ipBlock).
    /// Empty: everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kafka_from: Vec<NetworkPolicyPeer>,
    /// Who may reach port 9093. Empty: nobody (but the kubelet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics_from: Vec<NetworkPolicyPeer>,
}

/// A Secret in the custom resource's namespace (pods can only reference Secrets
/// of their own namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Broker settings, passed as their `KAFSCALE_*` variables; unset ones keep the
/// broker's defaults (docs/configuration.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BrokerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub segment_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub flush_interval_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cache_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub readahead_segments: Option<i64>,
    /// Shards per broker; at most `brokers.resources.cpus`, which is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub shards: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A topic of a `KafscaleCluster` (same namespace), written by the operator into
/// the cluster's metadata store.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kafscale.io",
    version = "v1alpha1",
    kind = "KafscaleTopic",
    doc = "A topic of a KafscaleCluster, written by the operator into the cluster's etcd.",
    namespaced,
    status = "KafscaleTopicStatus",
    shortname = "kst",
    category = "kafscale",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef"),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".status.partitions"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleTopicSpec {
    /// Name of the `KafscaleCluster` in this namespace.
    #[schemars(length(min = 1))]
    pub cluster_ref: String,
    /// Kafka topic name; defaults to `metadata.name` (set it for names Kubernetes
    /// does not allow, e.g. with `_` or capitals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-zA-Z0-9._-]{1,249}$"))]
    pub topic_name: Option<String>,
    /// Partition count; it can grow, never shrink.
    #[schemars(range(min = 1))]
    pub partitions: i32,
    /// `retention.ms` (-1: keep forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_ms: Option<i64>,
    /// `retention.bytes` per partition (-1: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_bytes: Option<i64>,
    /// Other topic configs, by their Kafka names (`segment.bytes`, `cleanup.policy`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// What happens when a config this resource sets is changed at runtime
    /// (AlterConfigs): `Revert` (default) sets it back at the next reconcile,
    /// with a Warning Event; `Keep` leaves the runtime value and reports
    /// `ConfigInSync=False`. Keys the resource does not set belong to the
    /// runtime either way, and a changed spec value always wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(Revert|Keep)$"))]
    pub config_drift: Option<String>,
    /// What deleting this resource does to the topic: `Retain` (default) keeps
    /// it and its data; `Delete` removes it from the metadata store, as a Kafka
    /// DeleteTopics does (its objects stay in the bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(Retain|Delete)$"))]
    pub deletion_policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleTopicStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Partitions the topic has in the metadata store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// The Kafka topic id (UUID) in the metadata store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// The configs the operator last wrote for the keys this resource sets: what
    /// tells a runtime change (the store differs from it) from a spec change (the
    /// spec differs from it), and which keys a spec no longer sets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub applied_config: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Finalizer on every `KafscaleTopic`: its deletion waits for the operator to
/// apply `deletionPolicy`.
pub const TOPIC_FINALIZER: &str = "kafscale.io/topic";

impl KafscaleTopic {
    /// `configDrift: Keep`.
    pub fn keeps_runtime_config(&self) -> bool {
        self.spec.config_drift.as_deref() == Some("Keep")
    }

    /// `deletionPolicy: Delete`.
    pub fn deletes_topic(&self) -> bool {
        self.spec.deletion_policy.as_deref() == Some("Delete")
    }

    /// The Kafka topic's name.
    pub fn topic_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}

pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![KafscaleCluster::crd(), KafscaleTopic::crd()]
}

/// The CRDs as one multi-document YAML stream (what `kafscale-operator crd` prints).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::from("# Generated by `kafscale-operator crd`; do not edit.\n");
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// One CRD per file, as the chart's `crds/` folder holds them: (file name, YAML).
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = format!(
                "# Generated by `kafscale-operator crd --dir helm/kafscale/crds`; do not edit.\n{}",
                serde_yaml::to_string(&crd)?
            );
            Ok((format!("{name}.yaml"), yaml))
        })
        .collect()
}
