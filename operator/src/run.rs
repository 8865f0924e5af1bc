//! Wiring: the two controllers, what they watch, and how their results are
//! measured and retried.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use crate::context::{Context, Error};
use crate::crd::{KafscaleCluster, KafscaleTopic};
use crate::{cluster, topic};

/// Objects the operator created carry this label; owned-object watches select it.
const MANAGED: &str = "app.kubernetes.io/managed-by=kafscale-operator";

async fn measured_cluster(k: Arc<KafscaleCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let r = cluster::reconcile(k, ctx.clone()).await;
    ctx.metrics.observe("cluster", start.elapsed(), r.is_err());
    r
}

async fn measured_topic(t: Arc<KafscaleTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let r = topic::reconcile(t, ctx.clone()).await;
    ctx.metrics.observe("topic", start.elapsed(), r.is_err());
    r
}

/// API errors (a conflict, the server away) are retried with the object's back-off.
fn on_cluster_error(k: Arc<KafscaleCluster>, e: &Error, ctx: Arc<Context>) -> Action {
    warn!(cluster = %k.name_any(), error = %e, "reconcile failed");
    ctx.backoff(&format!(
        "cluster/{}/{}",
        k.namespace().unwrap_or_default(),
        k.name_any()
    ))
}

fn on_topic_error(t: Arc<KafscaleTopic>, e: &Error, ctx: Arc<Context>) -> Action {
    warn!(topic = %t.name_any(), error = %e, "reconcile failed");
    ctx.backoff(&format!(
        "topic/{}/{}",
        t.namespace().unwrap_or_default(),
        t.name_any()
    ))
}

/// Runs both controllers until the process is asked to stop. `watch_secrets`:
/// watch every Secret (needs list/watch on all of them) so a rotation rolls the
/// brokers at once; otherwise the next resync (5 min) picks it up.
pub async fn controllers(ctx: Arc<Context>, watch_secrets: bool) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(MANAGED);
    let clusters = Controller::new(
        Api::<KafscaleCluster>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = clusters.store();
    // A changed Secret reconciles the clusters that reference it, which changes
    // the checksum annotation and rolls their brokers.
    let secret_users = move |s: Secret| {
        let ns = s.namespace().unwrap_or_default();
        let name = s.name_any();
        store
            .state()
            .into_iter()
            .filter(|k| {
                k.namespace().as_deref() == Some(ns.as_str())
                    && [
                        k.spec.s3.credentials_secret_ref.as_ref(),
                        k.spec.etcd.credentials_secret_ref.as_ref(),
                        k.spec.etcd.tls.as_ref().map(|t| &t.secret_ref),
                    ]
                    .into_iter()
                    .flatten()
                    .any(|r| r.name == name)
            })
            .map(|k| ObjectRef::from_obj(&*k))
            .collect::<Vec<_>>()
    };
    let mut clusters = clusters
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            owned.clone(),
        )
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<NetworkPolicy>::all(client.clone()), owned);
    if watch_secrets {
        clusters = clusters.watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default(),
            secret_users,
        );
    }
    let cluster_loop = clusters
        .shutdown_on_signal()
        .run(measured_cluster, on_cluster_error, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                debug!(error = %e, "cluster controller");
            }
        });
    let topic_loop = Controller::new(
        Api::<KafscaleTopic>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(measured_topic, on_topic_error, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            debug!(error = %e, "topic controller");
        }
    });
    futures::join!(cluster_loop, topic_loop);
}
