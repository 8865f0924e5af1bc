//! Reconcile of a `KafscaleTopic`: find its cluster, write the topic into the
//! cluster's etcd (snapshot and topic config, the layout brokers read), report
//! what the store holds in the status. Partition counts only grow; a smaller count
//! is refused in the status and the topic keeps its partitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafscale_proto::topic_config::{self, TopicConfigError};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::conditions::{merge, Found};
use crate::context::{secret_value, Context, Error, FIELD_MANAGER};
use crate::crd::{condition as c, phase, KafscaleCluster, KafscaleTopic, KafscaleTopicStatus};
use crate::etcd::{DesiredTopic, EtcdCredentials, Metadata};

/// The topic's configs as stored: `config` (values trimmed) plus the typed
/// retention fields, which win; every entry must pass the brokers' own rules
/// (`kafscale_proto::topic_config`), so the operator stores nothing a broker
/// would refuse. The error names the offending entry.
pub fn desired_configs(t: &KafscaleTopic) -> Result<BTreeMap<String, String>, TopicConfigError> {
    let mut out: BTreeMap<String, String> = t
        .spec
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.trim().to_string()))
        .collect();
    if let Some(ms) = t.spec.retention_ms {
        out.insert("retention.ms".into(), ms.to_string());
    }
    if let Some(b) = t.spec.retention_bytes {
        out.insert("retention.bytes".into(), b.to_string());
    }
    for (k, v) in &out {
        topic_config::check(k, Some(v))?;
    }
    Ok(out)
}

pub async fn reconcile(t: Arc<KafscaleTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = t.name_any();
    let ns = t
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let key = format!("topic/{ns}/{name}");
    let (ctx_ref, t_ref, key_ref) = (&ctx, &t, &key);
    let fail = |found: Vec<Found>| async move {
        patch_status(ctx_ref, t_ref, phase::FAILED, None, &found).await?;
        Ok::<_, Error>(ctx_ref.backoff(key_ref))
    };

    let configs = match desired_configs(&t) {
        Ok(c) => c,
        Err(e) => {
            return fail(vec![Found::failed(
                c::READY,
                c::INVALID_CONFIG,
                e.to_string(),
            )])
            .await
        }
    };
    let clusters = Api::<KafscaleCluster>::namespaced(ctx.client.clone(), &ns);
    let Some(cluster) = clusters.get_opt(&t.spec.cluster_ref).await? else {
        let msg = format!("KafscaleCluster {ns}/{} not found", t.spec.cluster_ref);
        return fail(vec![Found::failed(c::READY, c::CLUSTER_NOT_FOUND, msg)]).await;
    };
    let etcd = &cluster.spec.etcd;
    let creds = match &etcd.credentials_secret_ref {
        None => None,
        Some(r) => {
            let sec = ctx.secret(&ns, &r.name).await?;
            let pair = sec.as_ref().and_then(|s| {
                Some(EtcdCredentials {
                    username: secret_value(s, "username")?,
                    password: secret_value(s, "password")?,
                })
            });
            match pair {
                Some(p) => Some(p),
                None => {
                    let msg = format!(
                        "Secret {ns}/{} with the keys username and password not found",
                        r.name
                    );
                    return fail(vec![
                        Found::failed(c::ETCD_AVAILABLE, c::SECRET_MISSING, msg.clone()),
                        Found::failed(c::READY, c::ETCD_UNAVAILABLE, msg),
                    ])
                    .await;
                }
            }
        }
    };
    let want = DesiredTopic {
        name: t.topic_name(),
        partitions: t.spec.partitions,
        configs,
    };
    let applied = match Metadata::connect(&etcd.endpoints, creds.as_ref(), ctx.timeout).await {
        Ok(m) => m.apply_topic(&want).await,
        Err(e) => Err(e),
    };
    let applied = match applied {
        Ok(a) => a,
        Err(e) => {
            let msg = e.to_string();
            return fail(vec![
                Found::failed(c::ETCD_AVAILABLE, c::ETCD_UNAVAILABLE, msg.clone()),
                Found::failed(c::READY, c::ETCD_UNAVAILABLE, msg),
            ])
            .await;
        }
    };
    if applied.written {
        info!(topic = %want.name, partitions = applied.partitions, "topic written to etcd");
    }
    let etcd_ok = Found::ok(c::ETCD_AVAILABLE, c::ETCD_CONNECTED, "topic stored in etcd");
    let (ph, ready) = if applied.decrease_refused {
        (
            phase::FAILED,
            Found::failed(
                c::READY,
                c::PARTITION_DECREASE_REFUSED,
                format!(
                    "spec.partitions is {} but the topic has {}: partitions can only be added",
                    want.partitions, applied.partitions
                ),
            ),
        )
    } else {
        (
            phase::READY,
            Found::ok(
                c::READY,
                c::TOPIC_APPLIED,
                format!("{} partitions", applied.partitions),
            ),
        )
    };
    let status = Applied {
        partitions: applied.partitions,
        topic_id: applied.topic_id.to_string(),
    };
    patch_status(&ctx, &t, ph, Some(status), &[etcd_ok, ready]).await?;
    Ok(ctx.healthy(&key))
}

struct Applied {
    partitions: i32,
    topic_id: String,
}

async fn patch_status(
    ctx: &Context,
    t: &KafscaleTopic,
    ph: &str,
    applied: Option<Applied>,
    found: &[Found],
) -> Result<(), Error> {
    let old = t.status.clone().unwrap_or_default();
    let generation = t.metadata.generation;
    let new = KafscaleTopicStatus {
        phase: Some(ph.to_string()),
        observed_generation: generation,
        partitions: applied.as_ref().map(|a| a.partitions).or(old.partitions),
        topic_id: applied.map(|a| a.topic_id).or(old.topic_id),
        conditions: merge(&old.conditions, found, generation),
    };
    if t.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api =
        Api::<KafscaleTopic>::namespaced(ctx.client.clone(), &t.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": KafscaleTopic::api_version(&()),
        "kind": KafscaleTopic::kind(&()),
        "status": new,
    });
    api.patch_status(
        &t.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(spec: serde_json::Value) -> KafscaleTopic {
        let mut spec = spec;
        spec["clusterRef"] = "prod".into();
        spec["partitions"] = 1.into();
        serde_json::from_value(json!({
            "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleTopic",
            "metadata": {"name": "orders", "namespace": "ns"},
            "spec": spec,
        }))
        .expect("topic")
    }

    #[test]
    fn configs_are_trimmed_and_the_typed_fields_win() {
        let t = topic(json!({
            "retentionMs": 1000,
            "config": {"retention.ms": "5", "segment.bytes": " 1048576 ", "cleanup.policy": "delete"}
        }));
        assert_eq!(
            desired_configs(&t).expect("valid"),
            BTreeMap::from([
                ("cleanup.policy".to_string(), "delete".to_string()),
                ("retention.ms".to_string(), "1000".to_string()),
                ("segment.bytes".to_string(), "1048576".to_string()),
            ])
        );
    }

    /// What the brokers refuse, the operator refuses (segment.bytes beyond
    /// Kafka's int used to pass here and fail at the broker).
    #[test]
    fn configs_the_brokers_refuse_are_refused() {
        for (k, v) in [
            ("segment.bytes", "4294967296"),
            ("segment.bytes", "2147483648"),
            ("segment.bytes", "0"),
            ("retention.bytes", "-2"),
            ("cleanup.policy", "shred"),
            ("max.message.bytes", "-1"),
            ("min.insync.replicas", "0"),
            ("no.such.config", "1"),
        ] {
            let t = topic(json!({"config": {k: v}}));
            let e = desired_configs(&t).expect_err(k);
            assert_eq!(Err(e), topic_config::check(k, Some(v)), "{k}={v}");
        }
        let t = topic(json!({"config": {"segment.bytes": "2147483647"}}));
        assert!(desired_configs(&t).is_ok());
        // The typed fields too (their schema says >= -1, but a spec is not
        // always checked against it).
        let t = topic(json!({"retentionBytes": -5}));
        assert_eq!(
            desired_configs(&t).expect_err("-5").to_string(),
            "retention.bytes must be an integer in -1..=9223372036854775807"
        );
    }
}
