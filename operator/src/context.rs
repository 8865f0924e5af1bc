//! What both controllers share: the Kubernetes client, settings, metrics, the
//! per-object failure counts behind the back-off, and the helpers that read Secrets
//! and apply objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;

/// The field manager of every server-side apply, and the Events' reporting controller.
pub const FIELD_MANAGER: &str = "kafscale-operator";
/// The brokers' seccomp profile, relative to the kubelet's seccomp directory:
/// where the chart's DaemonSet (`kafscale-operator seccomp install`) puts it.
pub const DEFAULT_SECCOMP_PROFILE: &str = "kafscale/kafscale-broker.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    /// RBAC does not let the operator read the Secret: with the chart, it reads
    /// only the Secrets listed in `rbac.secrets`.
    #[error(
        "the operator may not read Secret {namespace}/{name}: list it in the chart's rbac.secrets"
    )]
    SecretForbidden { namespace: String, name: String },
    #[error("finalizer: {0}")]
    Finalizer(String),
}

pub struct Context {
    pub client: Client,
    /// Broker image of clusters that do not name one.
    pub broker_image: String,
    /// Deadline of each S3 and etcd call the controllers make.
    pub timeout: Duration,
    /// Requeue of a healthy object (re-checks S3 and etcd, repairs drift).
    pub resync: Duration,
    pub metrics: Arc<Metrics>,
    /// `localhostProfile` of brokers whose cluster does not name a seccomp profile.
    pub broker_seccomp_profile: String,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, broker_image: impl Into<String>, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            broker_image: broker_image.into(),
            timeout: Duration::from_secs(5),
            resync: Duration::from_secs(300),
            metrics,
            broker_seccomp_profile: DEFAULT_SECCOMP_PROFILE.into(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_broker_seccomp_profile(mut self, profile: impl Into<String>) -> Self {
        self.broker_seccomp_profile = profile.into();
        self
    }

    /// Publishes a Kubernetes Event about `obj` (`kubectl describe` shows it). An
    /// Event is a report, not part of the outcome: failing to publish one is
    /// logged and the reconcile goes on.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: impl Into<String>,
        action: &str,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            // The API server refuses notes over 1 kB.
            note: Some(note.into().chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(reason, error = %e, "publishing an Event failed");
        }
    }

    /// Requeue after a failure: 5 s, doubling per consecutive failure of the same
    /// object, at most 5 minutes.
    pub fn backoff(&self, key: &str) -> Action {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        let delay = Duration::from_secs(5u64 << (*n).min(6)).min(Duration::from_secs(300));
        *n += 1;
        Action::requeue(delay)
    }

    /// Requeue after a success; forgets earlier failures.
    pub fn healthy(&self, key: &str) -> Action {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        Action::requeue(self.resync)
    }

    /// The Secret's data, or None when it does not exist.
    pub async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, Error> {
        match Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
        {
            Ok(s) => Ok(s),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(Error::SecretForbidden {
                namespace: ns.into(),
                name: name.into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Server-side apply of an object we own (force: the operator is the authority
    /// for every field it sets).
    pub async fn apply<K>(&self, ns: &str, name: &str, obj: &K) -> Result<K, Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let api = Api::<K>::namespaced(self.client.clone(), ns);
        Ok(api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?)
    }
}

impl Context {
    /// Deletes an object we may have made earlier and no longer want (e.g. a
    /// NetworkPolicy a cluster turned off). Absent is success; so is a refusal
    /// (403): RBAC that forbids the delete forbade making it too.
    pub async fn delete_if_present<K>(&self, ns: &str, name: &str) -> Result<(), Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = Api::<K>::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A Secret key's value as text (None: missing or not UTF-8).
pub fn secret_value(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// SHA-256 over the referenced Secrets' names, keys and values, in a fixed order.
/// Only the digest leaves the operator: it goes on the pod template, so a rotated
/// credential rolls the brokers.
pub fn secrets_checksum(secrets: &[(&str, Option<&Secret>)]) -> String {
    let mut h = Sha256::new();
    for (role, s) in secrets {
        h.update(role.as_bytes());
        h.update([0]);
        let Some(s) = s else { continue };
        h.update(s.metadata.name.as_deref().unwrap_or_default().as_bytes());
        h.update([0]);
        let data: BTreeMap<&String, &[u8]> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k, v.0.as_slice()))
            .collect();
        for (k, v) in data {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v);
        }
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}
