//! `spec.security` and `spec.etcd.tls` of a `KafscaleCluster`, turned into what the
//! broker pods need: the `KAFSCALE_*` security variables of docs/security.md, the
//! Secret volumes behind their files, the ports per listener, and the optional
//! NetworkPolicy. `check` refuses what the schema cannot express, so the
//! reconcile applies nothing for a spec the brokers would refuse at start.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::{KafscaleCluster, ListenerSpec};

pub const TLS_DIR: &str = "/etc/kafscale/tls";
pub const CLIENT_CA_DIR: &str = "/etc/kafscale/client-ca";
pub const SASL_DIR: &str = "/etc/kafscale/sasl";
pub const ETCD_TLS_DIR: &str = "/etc/kafscale/etcd-tls";
/// Default key of the users file in `sasl.usersSecretRef`.
pub const USERS_KEY: &str = "users";
/// Ports a listener may not take: the HTTP endpoint's, and the control
/// endpoint's (bound on the pod's loopback, which a `0.0.0.0` listener would
/// collide with).
const RESERVED_PORTS: [(i32, &str); 2] = [
    (
        crate::resources::HTTP_PORT,
        "the HTTP endpoint (metrics, health)",
    ),
    (9094, "the control endpoint"),
];
/// Secret files: readable by the broker's group (fsGroup), by no one else.
const SECRET_MODE: i32 = 0o440;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Protocol::Plaintext,
            "SSL" => Protocol::Ssl,
            "SASL_PLAINTEXT" => Protocol::SaslPlaintext,
            "SASL_SSL" => Protocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// A Kafka port of the broker pods: its container/Service port name and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPort {
    pub name: String,
    pub port: i32,
}

/// The listeners the spec asks for (None: the single PLAINTEXT listener of a
/// cluster without `security.listeners`, configured the older way).
fn listener_specs(c: &KafscaleCluster) -> Option<&[ListenerSpec]> {
    c.spec
        .security
        .as_ref()
        .map(|s| s.listeners.as_slice())
        .filter(|l| !l.is_empty())
}

/// A listener's protocol: its `protocol`, or its name when that is one.
fn protocol(l: &ListenerSpec) -> Option<Protocol> {
    match &l.protocol {
        Some(p) => Protocol::parse(p),
        None => Protocol::parse(&l.name),
    }
}

/// Container and Service port name of a listener: a Kubernetes port name
/// (IANA service name: lowercase, digits and single inner `-`).
pub fn port_name(listener: &str) -> String {
    listener.to_ascii_lowercase().replace('_', "-")
}

/// The Kafka ports, in listener order (`kafka`/9092 without listeners).
pub fn kafka_ports(c: &KafscaleCluster) -> Vec<KafkaPort> {
    match listener_specs(c) {
        None => vec![KafkaPort {
            name: "kafka".into(),
            port: crate::resources::KAFKA_PORT,
        }],
        Some(ls) => ls
            .iter()
            .map(|l| KafkaPort {
                name: port_name(&l.name),
                port: l.port,
            })
            .collect(),
    }
}

fn protocols(c: &KafscaleCluster) -> Vec<Protocol> {
    match listener_specs(c) {
        None => vec![Protocol::Plaintext],
        Some(ls) => ls.iter().filter_map(protocol).collect(),
    }
}

const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// What the schema cannot check; the message names the field.
pub fn check(c: &KafscaleCluster) -> Result<(), String> {
    let s = &c.spec;
    if let Some(tls) = &s.etcd.tls {
        if let Some(e) = s.etcd.endpoints.iter().find(|e| !e.starts_with("https://")) {
            return Err(format!("etcd.tls is set but endpoint {e} is not https://"));
        }
        if tls.secret_ref.name.is_empty() {
            return Err("etcd.tls.secretRef.name is empty".into());
        }
    }
    let Some(sec) = &s.security else {
        return Ok(());
    };
    let listeners = listener_specs(c).unwrap_or_default();
    if !listeners.is_empty()
        && (s.brokers.advertised_host.is_some() || s.brokers.advertised_port.is_some())
    {
        return Err(
            "brokers.advertisedHost/advertisedPort and security.listeners are both set: \
             give each listener its advertisedHost/advertisedPort"
                .into(),
        );
    }
    let several = s.brokers.replicas > 1 || s.brokers.max_replicas.unwrap_or(1) > 1;
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for l in listeners {
        let name = l.name.to_ascii_uppercase();
        let at = format!("security.listeners {name}");
        if !names.insert(name.clone()) {
            return Err(format!("{at}: the name appears twice"));
        }
        let pn = port_name(&name);
        if name.ends_with('_') || pn.contains("--") || pn == "http" || pn.len() > 15 {
            return Err(format!(
                "{at}: {pn:?} is not usable as a port name (at most 15 characters, no `__` or trailing `_`, not `http`)"
            ));
        }
        if !ports.insert(l.port) {
            return Err(format!("{at}: port {} is used by another listener", l.port));
        }
        if let Some((_, what)) = RESERVED_PORTS.iter().find(|(p, _)| *p == l.port) {
            return Err(format!("{at}: port {} is {what}'s", l.port));
        }
        let proto = match (&l.protocol, protocol(l)) {
            (_, Some(p)) => p,
            (Some(p), None) => {
                return Err(format!(
                    "{at}: unknown protocol {p:?} (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "{at}: no protocol (set protocol, or name the listener after one)"
                ))
            }
        };
        if let Some(own) = Protocol::parse(&name) {
            if own != proto {
                return Err(format!(
                    "{at}: a listener named after protocol {} cannot be {}",
                    own.name(),
                    proto.name()
                ));
            }
        }
        if let Some(h) = &l.advertised_host {
            if h.is_empty() || h.contains([',', '/', ' ']) {
                return Err(format!("{at}: advertisedHost {h:?} is not a host name"));
            }
            if several && !h.contains("$(POD_NAME)") {
                return Err(format!(
                    "{at}: advertisedHost {h:?} would be the same for every broker: include $(POD_NAME)"
                ));
            }
        }
        if proto.tls() && sec.tls.is_none() {
            return Err(format!(
                "{at}: protocol {} needs security.tls.secretRef",
                proto.name()
            ));
        }
    }
    let protos = protocols(c);
    if let Some(tls) = &sec.tls {
        if tls.client_ca_secret_ref.is_some() && !tls.mutual() {
            return Err(
                "security.tls.clientCaSecretRef is set but clientAuth is not Required".into(),
            );
        }
        if let Some(r) = &tls.principal_mapping_rules {
            if r.trim().is_empty() {
                return Err("security.tls.principalMappingRules is empty".into());
            }
        }
    }
    let sasl_listener = protos.iter().any(|p| p.sasl());
    if let Some(sasl) = &sec.sasl {
        if let Some(m) = sasl
            .mechanisms
            .iter()
            .find(|m| !MECHANISMS.contains(&m.to_ascii_uppercase().as_str()))
        {
            return Err(format!(
                "security.sasl.mechanisms: unknown mechanism {m:?} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
            ));
        }
    }
    // Credentials can be made with the Admin API, which needs a way in: a
    // listener that is not SASL. Without one, only the users file can.
    let users = sec.sasl.as_ref().and_then(|s| s.users_secret_ref.as_ref());
    if sasl_listener && users.is_none() && protos.iter().all(|p| p.sasl()) {
        return Err(
            "every listener is SASL but security.sasl.usersSecretRef is not set: no user could log in".into(),
        );
    }
    if let Some(a) = &sec.authorization {
        if let Some(kind) = &a.authorizer {
            if !matches!(kind.as_str(), "none" | "acl") {
                return Err(format!(
                    "security.authorization.authorizer: {kind:?} is neither none nor acl"
                ));
            }
        }
        for u in &a.super_users {
            let ok = matches!(u.split_once(':'), Some((t, n)) if !t.is_empty() && !n.is_empty())
                && !u.contains([';', ',']);
            if !ok {
                return Err(format!(
                    "security.authorization.superUsers: {u:?} is not Type:name (e.g. User:admin)"
                ));
            }
        }
    }
    Ok(())
}

fn env(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

/// The security variables of the broker container (none for a cluster without
/// `security` or `etcd.tls`, whose pods stay as they were).
pub fn broker_env(c: &KafscaleCluster) -> Vec<EnvVar> {
    let mut e = Vec::new();
    let name = c.name_any();
    let ns = c.metadata.namespace.clone().unwrap_or_default();
    if let Some(ls) = listener_specs(c) {
        let pod_host = format!(
            "$(POD_NAME).{}.{ns}.svc",
            crate::resources::headless_name(&name)
        );
        let names: Vec<String> = ls.iter().map(|l| l.name.to_ascii_uppercase()).collect();
        let bind: Vec<String> = ls
            .iter()
            .zip(&names)
            .map(|(l, n)| format!("{n}://0.0.0.0:{}", l.port))
            .collect();
        let map: Vec<String> = ls
            .iter()
            .zip(&names)
            .filter_map(|(l, n)| protocol(l).map(|p| format!("{n}:{}", p.name())))
            .collect();
        let advertised: Vec<String> = ls
            .iter()
            .zip(&names)
            .map(|(l, n)| {
                let host = l.advertised_host.as_deref().unwrap_or(&pod_host);
                format!("{n}://{host}:{}", l.advertised_port.unwrap_or(l.port))
            })
            .collect();
        e.push(env("KAFSCALE_LISTENERS", bind.join(",")));
        e.push(env(
            "KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP",
            map.join(","),
        ));
        e.push(env("KAFSCALE_ADVERTISED_LISTENERS", advertised.join(",")));
    }
    if protocols(c).iter().any(|p| *p != Protocol::Plaintext) {
        // The kubelet's probes and Prometheus reach the HTTP endpoint on the pod
        // IP; the broker refuses that next to a secured listener unless told.
        // The NetworkPolicy (security.networkPolicy) is what limits who else can.
        e.push(env("KAFSCALE_INSECURE_OPS_ENDPOINTS", "true"));
    }
    let sec = c.spec.security.as_ref();
    if let Some(tls) = sec.and_then(|s| s.tls.as_ref()) {
        e.push(env("KAFSCALE_TLS_CERT_FILE", format!("{TLS_DIR}/tls.crt")));
        e.push(env("KAFSCALE_TLS_KEY_FILE", format!("{TLS_DIR}/tls.key")));
        if tls.mutual() {
            let dir = if tls.client_ca_secret_ref.is_some() {
                CLIENT_CA_DIR
            } else {
                TLS_DIR
            };
            e.push(env("KAFSCALE_TLS_CLIENT_CA_FILE", format!("{dir}/ca.crt")));
        }
        if let Some(r) = &tls.principal_mapping_rules {
            e.push(env("KAFSCALE_SSL_PRINCIPAL_MAPPING_RULES", r));
        }
    }
    if let Some(sasl) = sec.and_then(|s| s.sasl.as_ref()) {
        if !sasl.mechanisms.is_empty() {
            let m: Vec<String> = sasl
                .mechanisms
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            e.push(env("KAFSCALE_SASL_MECHANISMS", m.join(",")));
        }
        if sasl.users_secret_ref.is_some() {
            e.push(env(
                "KAFSCALE_SASL_USERS_FILE",
                format!("{SASL_DIR}/{USERS_KEY}"),
            ));
        }
        if let Some(n) = sasl.scram_iterations {
            e.push(env("KAFSCALE_SCRAM_ITERATIONS", n));
        }
        if let Some(n) = sasl.session_lifetime_ms {
            e.push(env("KAFSCALE_SASL_SESSION_LIFETIME_MS", n));
        }
    }
    if let Some(a) = sec.and_then(|s| s.authorization.as_ref()) {
        if let Some(kind) = &a.authorizer {
            e.push(env("KAFSCALE_AUTHORIZER", kind));
        }
        if !a.super_users.is_empty() {
            e.push(env("KAFSCALE_SUPER_USERS", a.super_users.join(";")));
        }
        if a.allow_everyone_if_no_acl_found {
            e.push(env("KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND", "true"));
        }
    }
    if let Some(t) = &c.spec.etcd.tls {
        e.push(env(
            "KAFSCALE_ETCD_CA_FILE",
            format!("{ETCD_TLS_DIR}/ca.crt"),
        ));
        if t.client_certificate {
            e.push(env(
                "KAFSCALE_ETCD_CERT_FILE",
                format!("{ETCD_TLS_DIR}/tls.crt"),
            ));
            e.push(env(
                "KAFSCALE_ETCD_KEY_FILE",
                format!("{ETCD_TLS_DIR}/tls.key"),
            ));
        }
        if let Some(n) = &t.server_name {
            e.push(env("KAFSCALE_ETCD_TLS_SERVER_NAME", n));
        }
    }
    e
}

/// A Secret volume of the listed keys. Mounted as a directory, never through
/// `subPath`: the kubelet then swaps in renewed contents, which the broker's
/// TLS reload picks up. A key missing from the Secret keeps the pod from
/// starting, with the key named in its events.
fn secret_volume(volume: &str, secret: &str, keys: &[(&str, &str)]) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(SECRET_MODE),
            items: Some(
                keys.iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).into(),
                        path: (*path).into(),
                        mode: None,
                    })
                    .collect(),
            ),
            optional: None,
        }),
        ..Default::default()
    }
}

fn mount(volume: &str, dir: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: dir.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The Secret volumes and their read-only mounts, for the files `broker_env` names.
pub fn volumes(c: &KafscaleCluster) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut v = Vec::new();
    let mut m = Vec::new();
    let sec = c.spec.security.as_ref();
    if let Some(tls) = sec.and_then(|s| s.tls.as_ref()) {
        let mut keys = vec![("tls.crt", "tls.crt"), ("tls.key", "tls.key")];
        if tls.mutual() && tls.client_ca_secret_ref.is_none() {
            keys.push(("ca.crt", "ca.crt"));
        }
        v.push(secret_volume("tls", &tls.secret_ref.name, &keys));
        m.push(mount("tls", TLS_DIR));
        if let (true, Some(ca)) = (tls.mutual(), &tls.client_ca_secret_ref) {
            v.push(secret_volume(
                "client-ca",
                &ca.name,
                &[("ca.crt", "ca.crt")],
            ));
            m.push(mount("client-ca", CLIENT_CA_DIR));
        }
    }
    if let Some(users) = sec
        .and_then(|s| s.sasl.as_ref())
        .and_then(|s| s.users_secret_ref.as_ref())
    {
        let key = users.key.as_deref().unwrap_or(USERS_KEY);
        v.push(secret_volume(
            "sasl-users",
            &users.name,
            &[(key, USERS_KEY)],
        ));
        m.push(mount("sasl-users", SASL_DIR));
    }
    if let Some(t) = &c.spec.etcd.tls {
        let mut keys = vec![("ca.crt", "ca.crt")];
        if t.client_certificate {
            keys.extend([("tls.crt", "tls.crt"), ("tls.key", "tls.key")]);
        }
        v.push(secret_volume("etcd-tls", &t.secret_ref.name, &keys));
        m.push(mount("etcd-tls", ETCD_TLS_DIR));
    }
    (v, m)
}

/// Name of the cluster's NetworkPolicy (the StatefulSet's).
pub fn network_policy_name(cluster: &str) -> String {
    crate::resources::sts_name(cluster)
}

/// Whether the cluster asks for its NetworkPolicy.
pub fn wants_network_policy(c: &KafscaleCluster) -> bool {
    c.spec
        .security
        .as_ref()
        .and_then(|s| s.network_policy.as_ref())
        .is_some_and(|n| n.enabled)
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

/// The broker pods' ingress: every listener port from `kafkaFrom` (empty:
/// anyone), the HTTP port from `metricsFrom` only (empty: no rule, so only the
/// node's kubelet). Nothing else reaches the pods.
pub fn network_policy(c: &KafscaleCluster) -> Option<NetworkPolicy> {
    let np = c.spec.security.as_ref()?.network_policy.as_ref()?;
    if !np.enabled {
        return None;
    }
    let name = c.name_any();
    let mut ingress = vec![NetworkPolicyIngressRule {
        ports: Some(kafka_ports(c).iter().map(|p| tcp(p.port)).collect()),
        from: (!np.kafka_from.is_empty()).then(|| np.kafka_from.clone()),
    }];
    if !np.metrics_from.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp(crate::resources::HTTP_PORT)]),
            from: Some(np.metrics_from.clone()),
        });
    }
    Some(NetworkPolicy {
        metadata: crate::resources::meta(c, network_policy_name(&name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(crate::resources::selector_labels(&name)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use serde_json::{json, Value};

    fn cluster(security: Value, etcd: Value, replicas: i32) -> KafscaleCluster {
        serde_json::from_value(json!({
            "apiVersion": "kafscale.io/v1alpha1",
            "kind": "KafscaleCluster",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {
                "brokers": {"replicas": replicas},
                "s3": {"bucket": "b", "region": "r"},
                "etcd": etcd,
                "security": security
            }
        }))
        .expect("cluster")
    }

    fn secure() -> Value {
        json!({
            "listeners": [
                {"name": "INTERNAL", "port": 9092, "protocol": "PLAINTEXT"},
                {"name": "SASL_SSL", "port": 9096},
                {"name": "external", "port": 9097, "protocol": "ssl",
                 "advertisedHost": "$(POD_NAME).kafka.example.com", "advertisedPort": 443}
            ],
            "tls": {"secretRef": {"name": "kafka-tls"}, "clientAuth": "Required",
                    "principalMappingRules": "RULE:^CN=([^,]+).*$/$1/L,DEFAULT"},
            "sasl": {"mechanisms": ["SCRAM-SHA-512", "plain"],
                     "usersSecretRef": {"name": "kafka-users", "key": "users.txt"},
                     "scramIterations": 8192, "sessionLifetimeMs": 3600000},
            "authorization": {"authorizer": "acl", "superUsers": ["User:admin", "User:ops"]},
            "networkPolicy": {
                "enabled": true,
                "kafkaFrom": [{"namespaceSelector": {"matchLabels": {"team": "a"}}},
                              {"ipBlock": {"cidr": "10.0.0.0/8"}}],
                "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]
            }
        })
    }

    fn etcd_tls() -> Value {
        json!({"endpoints": ["https://etcd:2379"],
               "tls": {"secretRef": {"name": "etcd-client"}, "serverName": "etcd.internal"}})
    }

    fn plain_etcd() -> Value {
        json!({"endpoints": ["http://etcd:2379"]})
    }

    fn env_map(c: &KafscaleCluster) -> std::collections::BTreeMap<String, String> {
        crate::resources::broker_env(c)
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect()
    }

    fn pod(c: &KafscaleCluster) -> k8s_openapi::api::core::v1::PodSpec {
        let sts: StatefulSet = crate::resources::statefulset(c, "img", "p.json", 3, "");
        sts.spec.unwrap().template.spec.unwrap()
    }

    #[test]
    fn listeners_become_the_brokers_listener_variables_with_per_pod_addresses() {
        let c = cluster(secure(), etcd_tls(), 3);
        assert_eq!(check(&c), Ok(()));
        let e = env_map(&c);
        assert_eq!(
            e["KAFSCALE_LISTENERS"],
            "INTERNAL://0.0.0.0:9092,SASL_SSL://0.0.0.0:9096,EXTERNAL://0.0.0.0:9097"
        );
        assert_eq!(
            e["KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP"],
            "INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL,EXTERNAL:SSL"
        );
        // Each pod its own name: $(POD_NAME) is expanded by the kubelet.
        assert_eq!(
            e["KAFSCALE_ADVERTISED_LISTENERS"],
            "INTERNAL://$(POD_NAME).c-broker-headless.ns.svc:9092,\
             SASL_SSL://$(POD_NAME).c-broker-headless.ns.svc:9096,\
             EXTERNAL://$(POD_NAME).kafka.example.com:443"
        );
        let names: Vec<String> = crate::resources::broker_env(&c)
            .into_iter()
            .map(|e| e.name)
            .collect();
        let at = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(at("POD_NAME") < at("KAFSCALE_ADVERTISED_LISTENERS"));
        assert_eq!(e["KAFSCALE_INSECURE_OPS_ENDPOINTS"], "true");
        assert_eq!(e["KAFSCALE_TLS_CERT_FILE"], "/etc/kafscale/tls/tls.crt");
        assert_eq!(e["KAFSCALE_TLS_KEY_FILE"], "/etc/kafscale/tls/tls.key");
        assert_eq!(e["KAFSCALE_TLS_CLIENT_CA_FILE"], "/etc/kafscale/tls/ca.crt");
        assert_eq!(
            e["KAFSCALE_SSL_PRINCIPAL_MAPPING_RULES"],
            "RULE:^CN=([^,]+).*$/$1/L,DEFAULT"
        );
        assert_eq!(e["KAFSCALE_SASL_MECHANISMS"], "SCRAM-SHA-512,PLAIN");
        assert_eq!(e["KAFSCALE_SASL_USERS_FILE"], "/etc/kafscale/sasl/users");
        assert_eq!(e["KAFSCALE_SCRAM_ITERATIONS"], "8192");
        assert_eq!(e["KAFSCALE_SASL_SESSION_LIFETIME_MS"], "3600000");
        assert_eq!(e["KAFSCALE_AUTHORIZER"], "acl");
        assert_eq!(e["KAFSCALE_SUPER_USERS"], "User:admin;User:ops");
        assert!(!e.contains_key("KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND"));
        assert_eq!(e["KAFSCALE_ETCD_CA_FILE"], "/etc/kafscale/etcd-tls/ca.crt");
        assert_eq!(
            e["KAFSCALE_ETCD_CERT_FILE"],
            "/etc/kafscale/etcd-tls/tls.crt"
        );
        assert_eq!(
            e["KAFSCALE_ETCD_KEY_FILE"],
            "/etc/kafscale/etcd-tls/tls.key"
        );
        assert_eq!(e["KAFSCALE_ETCD_TLS_SERVER_NAME"], "etcd.internal");
    }

    #[test]
    fn ports_follow_the_listeners() {
        let c = cluster(secure(), plain_etcd(), 3);
        let p = pod(&c);
        let ports: Vec<(String, i32)> = p.containers[0]
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.container_port))
            .collect();
        let want = |n: &str, p: i32| (n.to_string(), p);
        assert_eq!(
            ports,
            [
                want("internal", 9092),
                want("sasl-ssl", 9096),
                want("external", 9097),
                want("http", 9093)
            ]
        );
        for svc in [
            crate::resources::client_service(&c),
            crate::resources::headless_service(&c),
        ] {
            let sp: Vec<(String, i32, String)> = svc
                .spec
                .unwrap()
                .ports
                .unwrap()
                .into_iter()
                .map(|p| {
                    let target = match p.target_port {
                        Some(IntOrString::String(s)) => s,
                        other => panic!("target port {other:?}"),
                    };
                    (p.name.unwrap(), p.port, target)
                })
                .collect();
            assert_eq!(
                sp.iter().map(|p| p.1).collect::<Vec<_>>(),
                [9092, 9096, 9097]
            );
            assert!(sp.iter().all(|(name, _, target)| name == target));
        }
        // No listeners: the one `kafka` port, and no security variables at all.
        let plain = cluster(json!({}), plain_etcd(), 1);
        let ports: Vec<String> = pod(&plain).containers[0]
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .filter_map(|p| p.name)
            .collect();
        assert_eq!(ports, ["kafka", "http"]);
        assert!(broker_env(&plain).is_empty());
        assert_eq!(volumes(&plain), (vec![], vec![]));
    }

    #[test]
    fn secrets_are_read_only_directory_mounts() {
        let c = cluster(secure(), etcd_tls(), 3);
        let p = pod(&c);
        let mounts = p.containers[0].volume_mounts.clone().unwrap();
        let dirs: Vec<(String, String, Option<bool>)> = mounts
            .iter()
            .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
            .collect();
        let ro = |n: &str, d: &str| (n.to_string(), d.to_string(), Some(true));
        assert_eq!(
            dirs,
            [
                ("data".to_string(), "/var/lib/kafscale".to_string(), None),
                ro("tls", TLS_DIR),
                ro("sasl-users", SASL_DIR),
                ro("etcd-tls", ETCD_TLS_DIR)
            ]
        );
        // subPath mounts never see a renewed Secret.
        assert!(mounts.iter().all(|m| m.sub_path.is_none()));
        let vols = p.volumes.unwrap();
        let secret = |n: &str| {
            vols.iter()
                .find(|v| v.name == n)
                .and_then(|v| v.secret.clone())
                .unwrap_or_else(|| panic!("volume {n}"))
        };
        let items = |s: &SecretVolumeSource| {
            s.items
                .clone()
                .unwrap()
                .into_iter()
                .map(|i| (i.key, i.path))
                .collect::<Vec<_>>()
        };
        let kp = |k: &str, p: &str| (k.to_string(), p.to_string());
        let tls = secret("tls");
        assert_eq!(tls.secret_name.as_deref(), Some("kafka-tls"));
        assert_eq!(tls.default_mode, Some(0o440));
        assert_eq!(
            items(&tls),
            [
                kp("tls.crt", "tls.crt"),
                kp("tls.key", "tls.key"),
                kp("ca.crt", "ca.crt")
            ]
        );
        let users = secret("sasl-users");
        assert_eq!(users.secret_name.as_deref(), Some("kafka-users"));
        assert_eq!(items(&users), [kp("users.txt", "users")]);
        assert_eq!(
            items(&secret("etcd-tls")),
            [
                kp("ca.crt", "ca.crt"),
                kp("tls.crt", "tls.crt"),
                kp("tls.key", "tls.key")
            ]
        );
    }

    #[test]
    fn a_separate_client_ca_gets_its_own_mount() {
        let mut s = secure();
        s["tls"]["clientCaSecretRef"] = json!({"name": "clients-ca"});
        let c = cluster(s, plain_etcd(), 1);
        assert_eq!(
            env_map(&c)["KAFSCALE_TLS_CLIENT_CA_FILE"],
            "/etc/kafscale/client-ca/ca.crt"
        );
        let (v, m) = volumes(&c);
        let ca = v.iter().find(|v| v.name == "client-ca").unwrap();
        assert_eq!(
            ca.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("clients-ca")
        );
        assert!(m.iter().any(|m| m.mount_path == CLIENT_CA_DIR));
        // The listener certificate's own ca.crt is then not needed.
        let tls = v.iter().find(|v| v.name == "tls").unwrap();
        assert_eq!(
            tls.secret.as_ref().unwrap().items.as_ref().unwrap().len(),
            2
        );
    }

    #[test]
    fn the_network_policy_opens_the_listener_ports_and_metrics_separately() {
        let c = cluster(secure(), plain_etcd(), 3);
        let np = network_policy(&c).expect("policy");
        assert_eq!(np.metadata.name.as_deref(), Some("c-broker"));
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels,
            Some(crate::resources::selector_labels("c"))
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 2);
        let ports = |r: &NetworkPolicyIngressRule| {
            r.ports
                .clone()
                .unwrap()
                .into_iter()
                .map(|p| p.port)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ports(&rules[0]),
            [9092, 9096, 9097].map(|p| Some(IntOrString::Int(p)))
        );
        let from = rules[0].from.clone().unwrap();
        assert_eq!(from.len(), 2);
        assert_eq!(
            from[1].ip_block.as_ref().map(|b| b.cidr.as_str()),
            Some("10.0.0.0/8")
        );
        assert_eq!(ports(&rules[1]), [Some(IntOrString::Int(9093))]);
        assert!(rules[1].from.as_ref().unwrap()[0].pod_selector.is_some());

        // kafkaFrom empty: the Kafka ports from anywhere; metricsFrom empty: no
        // rule, so the HTTP port only from the node.
        let mut s = secure();
        s["networkPolicy"] = json!({"enabled": true});
        let rules = network_policy(&cluster(s.clone(), plain_etcd(), 3))
            .unwrap()
            .spec
            .unwrap()
            .ingress
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].from, None);
        s["networkPolicy"]["enabled"] = json!(false);
        assert!(network_policy(&cluster(s, plain_etcd(), 3)).is_none());
        assert!(!wants_network_policy(&cluster(json!({}), plain_etcd(), 1)));
    }

    fn invalid(security: Value, etcd: Value, replicas: i32) -> String {
        check(&cluster(security, etcd, replicas)).expect_err("invalid spec")
    }

    #[test]
    fn invalid_specs_are_refused_with_the_field_named() {
        let l = |listeners: Value| {
            json!({"listeners": listeners, "tls": {"secretRef": {"name": "t"}},
                   "sasl": {"usersSecretRef": {"name": "u"}}})
        };
        let cases: Vec<(Value, &str)> = vec![
            (
                l(json!([{"name": "EXTERNAL", "port": 9092, "protocol": "KERBEROS"}])),
                "unknown protocol \"KERBEROS\"",
            ),
            (
                l(json!([{"name": "EXTERNAL", "port": 9092}])),
                "no protocol",
            ),
            (
                l(json!([{"name": "SSL", "port": 9092, "protocol": "PLAINTEXT"}])),
                "named after protocol SSL",
            ),
            (
                l(
                    json!([{"name": "PLAINTEXT", "port": 9092}, {"name": "plaintext", "port": 9095}]),
                ),
                "the name appears twice",
            ),
            (
                l(json!([{"name": "PLAINTEXT", "port": 9092}, {"name": "SSL", "port": 9092}])),
                "port 9092 is used by another listener",
            ),
            (l(json!([{"name": "SSL", "port": 9093}])), "HTTP endpoint"),
            (
                l(json!([{"name": "SSL", "port": 9094}])),
                "control endpoint",
            ),
            (
                l(json!([{"name": "A__B", "port": 9092, "protocol": "SSL"}])),
                "not usable as a port name",
            ),
            (
                l(json!([{"name": "HTTP", "port": 9092, "protocol": "SSL"}])),
                "not usable as a port name",
            ),
            (
                l(json!([{"name": "SSL", "port": 9092, "advertisedHost": "kafka.example.com"}])),
                "include $(POD_NAME)",
            ),
            (
                json!({"listeners": [{"name": "SSL", "port": 9093 + 3}]}),
                "SSL needs security.tls.secretRef",
            ),
            (
                json!({"listeners": [{"name": "SASL_SSL", "port": 9096}],
                       "tls": {"secretRef": {"name": "t"}}}),
                "security.sasl.usersSecretRef is not set",
            ),
            (
                json!({"listeners": [{"name": "SASL_PLAINTEXT", "port": 9096}],
                       "sasl": {"mechanisms": ["GSSAPI"], "usersSecretRef": {"name": "u"}}}),
                "unknown mechanism \"GSSAPI\"",
            ),
            (
                json!({"tls": {"secretRef": {"name": "t"}, "clientCaSecretRef": {"name": "ca"}}}),
                "clientAuth is not Required",
            ),
            (
                json!({"authorization": {"authorizer": "ranger"}}),
                "neither none nor acl",
            ),
            (
                json!({"authorization": {"authorizer": "acl", "superUsers": ["admin"]}}),
                "not Type:name",
            ),
        ];
        for (security, want) in cases {
            let got = invalid(security.clone(), plain_etcd(), 3);
            assert!(got.contains(want), "{security}: {got:?} lacks {want:?}");
        }
        // etcd TLS needs https:// endpoints.
        let etcd = json!({"endpoints": ["http://etcd:2379"], "tls": {"secretRef": {"name": "e"}}});
        assert!(invalid(json!({}), etcd, 1).contains("not https://"));
        // A SASL listener next to a non-SASL one may do without a users file: an
        // admin can make credentials through the other listener.
        let ok = json!({"listeners": [{"name": "SASL_PLAINTEXT", "port": 9096},
                                      {"name": "SSL", "port": 9097}],
                        "tls": {"secretRef": {"name": "t"}}});
        assert_eq!(check(&cluster(ok, plain_etcd(), 3)), Ok(()));
        // One broker may advertise a fixed host.
        let one = json!({"listeners": [{"name": "PLAINTEXT", "port": 9092,
                                        "advertisedHost": "kafka.example.com"}]});
        assert_eq!(check(&cluster(one, plain_etcd(), 1)), Ok(()));
    }

    #[test]
    fn older_advertised_settings_and_listeners_do_not_mix() {
        let mut c = cluster(
            json!({"listeners": [{"name": "PLAINTEXT", "port": 9092}]}),
            plain_etcd(),
            1,
        );
        c.spec.brokers.advertised_port = Some(19092);
        assert!(check(&c).unwrap_err().contains("both set"));
    }
}
