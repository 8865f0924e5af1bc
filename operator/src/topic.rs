//! Reconcile of a `KafscaleTopic`: find its cluster, write the topic into the
//! cluster's etcd (snapshot and topic config, the layout brokers read), report
//! what the store holds in the status. Partition counts only grow; a smaller count
//! is refused in the status and the topic keeps its partitions. Configs follow the
//! ownership rule of `drift`. A finalizer makes deletion wait for
//! `deletionPolicy` (`Retain`: nothing; `Delete`: the topic is marked for the brokers to delete).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kafscale_proto::topic_config::{self, TopicConfigError};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer, Event as Finalize};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::conditions::{merge, transitions, Found};
use crate::context::{secret_value, Context, Error, FIELD_MANAGER};
use crate::crd::{
    condition as c, event, phase, KafscaleCluster, KafscaleTopic, KafscaleTopicStatus,
    TOPIC_FINALIZER,
};
use crate::drift;
use crate::etcd::{Deletion, DesiredTopic, EtcdCredentials, EtcdTls, Metadata};

/// How often a resource whose topic name is still being deleted looks again.
const DELETION_POLL: std::time::Duration = std::time::Duration::from_secs(5);

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
    let ns = t
        .namespace()
        .ok_or_else(|| Error::NoNamespace(t.name_any()))?;
    let api = Api::<KafscaleTopic>::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, TOPIC_FINALIZER, t, |ev| async {
        match ev {
            Finalize::Apply(t) => apply(t, ctx.clone()).await,
            Finalize::Cleanup(t) => cleanup(t, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => e.into(),
        other => Error::Finalizer(other.to_string()),
    })
}

/// Where the topic's cluster keeps its metadata, or the conditions saying why
/// it cannot be reached.
enum Store {
    Found(Box<Metadata>),
    Unreachable(Vec<Found>),
    NoCluster(Found),
}

async fn store(t: &KafscaleTopic, ctx: &Context, ns: &str) -> Result<Store, Error> {
    let clusters = Api::<KafscaleCluster>::namespaced(ctx.client.clone(), ns);
    let cluster = match clusters.get_opt(&t.spec.cluster_ref).await? {
        Some(k) if k.meta().deletion_timestamp.is_none() => k,
        _ => {
            let msg = format!("KafscaleCluster {ns}/{} not found", t.spec.cluster_ref);
            return Ok(Store::NoCluster(Found::failed(
                c::READY,
                c::CLUSTER_NOT_FOUND,
                msg,
            )));
        }
    };
    let etcd = &cluster.spec.etcd;
    let creds = match &etcd.credentials_secret_ref {
        None => None,
        Some(r) => {
            let read = etcd_secret(ctx, ns, &r.name, |sec| {
                sec.and_then(|s| {
                    Some(EtcdCredentials {
                        username: secret_value(s, "username")?,
                        password: secret_value(s, "password")?,
                    })
                })
                .ok_or_else(|| {
                    format!(
                        "Secret {ns}/{} with the keys username and password not found",
                        r.name
                    )
                })
            });
            match read.await? {
                Ok(c) => Some(c),
                Err(found) => return Ok(Store::Unreachable(found)),
            }
        }
    };
    let tls = match &etcd.tls {
        None => None,
        Some(spec) => {
            let read = etcd_secret(ctx, ns, &spec.secret_ref.name, |sec| {
                EtcdTls::from_secret(spec, ns, sec)
            });
            match read.await? {
                Ok(t) => Some(t),
                Err(found) => return Ok(Store::Unreachable(found)),
            }
        }
    };
    match Metadata::connect(&etcd.endpoints, creds.as_ref(), tls.as_ref(), ctx.timeout).await {
        Ok(m) => Ok(Store::Found(Box::new(m))),
        Err(e) => Ok(Store::Unreachable(etcd_failed(e.to_string()))),
    }
}

/// Reads a Secret the cluster's etcd access needs and makes `use_it` of it;
/// a Secret RBAC hides, or one `use_it` refuses (its message), becomes the
/// conditions to report.
async fn etcd_secret<T>(
    ctx: &Context,
    ns: &str,
    name: &str,
    use_it: impl FnOnce(Option<&Secret>) -> Result<T, String>,
) -> Result<Result<T, Vec<Found>>, Error> {
    let sec = match ctx.secret(ns, name).await {
        Err(e @ Error::SecretForbidden { .. }) => {
            let msg = e.to_string();
            return Ok(Err(vec![
                Found::failed(c::ETCD_AVAILABLE, c::SECRET_FORBIDDEN, msg.clone()),
                Found::failed(c::READY, c::SECRET_FORBIDDEN, msg),
            ]));
        }
        other => other?,
    };
    Ok(use_it(sec.as_ref()).map_err(|msg| {
        vec![
            Found::failed(c::ETCD_AVAILABLE, c::SECRET_MISSING, msg.clone()),
            Found::failed(c::READY, c::ETCD_UNAVAILABLE, msg),
        ]
    }))
}

fn etcd_failed(msg: String) -> Vec<Found> {
    vec![
        Found::failed(c::ETCD_AVAILABLE, c::ETCD_UNAVAILABLE, msg.clone()),
        Found::failed(c::READY, c::ETCD_UNAVAILABLE, msg),
    ]
}

async fn apply(t: Arc<KafscaleTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = t.name_any();
    let ns = t.namespace().unwrap_or_default();
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
    let metadata = match store(&t, &ctx, &ns).await? {
        Store::Found(m) => m,
        Store::NoCluster(f) => return fail(vec![f]).await,
        Store::Unreachable(found) => return fail(found).await,
    };
    let want = DesiredTopic {
        name: t.topic_name(),
        partitions: t.spec.partitions,
        configs,
        last_applied: t
            .status
            .as_ref()
            .map(|s| s.applied_config.clone())
            .unwrap_or_default(),
        keep_runtime: t.keeps_runtime_config(),
    };
    let applied = match metadata.apply_topic(&want).await {
        Ok(a) => a,
        Err(e) => return fail(etcd_failed(e.to_string())).await,
    };
    if applied.being_deleted {
        // Not a failure: the brokers are deleting the old topic of this name, and
        // it is created again at the first reconcile after they are done.
        let waiting = Found::failed(
            c::READY,
            c::TOPIC_BEING_DELETED,
            format!(
                "topic {} is marked for deletion; it is created again once the brokers have deleted it",
                want.name
            ),
        );
        let etcd_ok = Found::ok(c::ETCD_AVAILABLE, c::ETCD_CONNECTED, "etcd answered");
        patch_status(&ctx, &t, phase::PENDING, None, &[etcd_ok, waiting]).await?;
        return Ok(Action::requeue(DELETION_POLL));
    }
    if applied.written {
        info!(topic = %want.name, partitions = applied.partitions, "topic written to etcd");
    }
    if !applied.reverted.is_empty() {
        // Reported every time it happens: each is a runtime change undone.
        ctx.event(
            &*t,
            true,
            c::RUNTIME_CONFIG_REVERTED,
            format!(
                "changed at runtime, set back to the spec (configDrift: Revert): {}",
                applied.reverted.join(", ")
            ),
            "Reconcile",
        )
        .await;
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
    let in_sync = if !applied.differs.is_empty() {
        Found::failed(
            c::CONFIG_IN_SYNC,
            c::RUNTIME_CONFIG_DIFFERS,
            format!(
                "changed at runtime and kept (configDrift: Keep): {}",
                drift::describe(&applied.differs)
            ),
        )
    } else if !applied.reverted.is_empty() {
        Found::ok(
            c::CONFIG_IN_SYNC,
            c::RUNTIME_CONFIG_REVERTED,
            format!("set back to the spec: {}", applied.reverted.join(", ")),
        )
    } else {
        Found::ok(
            c::CONFIG_IN_SYNC,
            c::IN_SYNC,
            "the store holds the configs this resource sets",
        )
    };
    let status = Applied {
        partitions: applied.partitions,
        topic_id: applied.topic_id.to_string(),
        config: want.configs,
    };
    patch_status(&ctx, &t, ph, Some(status), &[etcd_ok, ready, in_sync]).await?;
    Ok(ctx.healthy(&key))
}

/// Deletion of the resource: `Retain` keeps the topic; `Delete` removes it from
/// the cluster's etcd. A cluster that is gone (or going) has nothing to remove
/// from, so the finalizer never holds up the deletion of a namespace; an etcd
/// that does not answer is retried, and the finalizer stays until it does.
async fn cleanup(t: Arc<KafscaleTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let topic = t.topic_name();
    let ns = t.namespace().unwrap_or_default();
    if !t.deletes_topic() {
        ctx.event(
            &*t,
            false,
            event::TOPIC_RETAINED,
            format!("topic {topic} and its data are kept (deletionPolicy: Retain)"),
            "Delete",
        )
        .await;
        return Ok(Action::await_change());
    }
    let metadata = match store(&t, &ctx, &ns).await? {
        Store::Found(m) => m,
        Store::NoCluster(f) => {
            ctx.event(
                &*t,
                true,
                event::TOPIC_RETAINED,
                format!("topic {topic} not deleted: {}", f.message),
                "Delete",
            )
            .await;
            return Ok(Action::await_change());
        }
        Store::Unreachable(found) => {
            let msg = found.first().map(|f| f.message.clone()).unwrap_or_default();
            ctx.event(
                &*t,
                true,
                c::ETCD_UNAVAILABLE,
                format!("deleting topic {topic}: {msg}; retrying"),
                "Delete",
            )
            .await;
            return Ok(ctx.backoff(&format!("topic/{ns}/{}", t.name_any())));
        }
    };
    match metadata.delete_topic(&topic).await {
        Ok(done) => {
            let note = match done {
                Deletion::Marked | Deletion::AlreadyMarked => format!(
                    "topic {topic} marked for deletion; the brokers delete its data (deletionPolicy: Delete)"
                ),
                Deletion::Absent => format!("topic {topic} was not in the metadata store"),
            };
            info!(topic = %topic, ?done, "topic deleted");
            ctx.event(&*t, false, event::TOPIC_DELETED, note, "Delete")
                .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            // Kept as an error: the finalizer stays and the deletion is retried.
            ctx.event(
                &*t,
                true,
                c::ETCD_UNAVAILABLE,
                format!("deleting topic {topic}: {e}; retrying"),
                "Delete",
            )
            .await;
            Ok(ctx.backoff(&format!("topic/{ns}/{}", t.name_any())))
        }
    }
}

struct Applied {
    partitions: i32,
    topic_id: String,
    config: BTreeMap<String, String>,
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
        topic_id: applied
            .as_ref()
            .map(|a| a.topic_id.clone())
            .or(old.topic_id.clone()),
        applied_config: applied
            .map(|a| a.config)
            .unwrap_or_else(|| old.applied_config.clone()),
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
    for f in transitions(&old.conditions, found) {
        // Reverts have their own Event, one per revert.
        if f.reason != c::RUNTIME_CONFIG_REVERTED {
            ctx.event(t, !f.ok, f.reason, f.message.clone(), "Reconcile")
                .await;
        }
    }
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
