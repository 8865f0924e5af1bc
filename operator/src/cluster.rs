//! Reconcile of a `KafscaleCluster` (see operator/README.md for the flow):
//! read the referenced Secrets, validate S3 with them, check etcd, apply the
//! broker StatefulSet, Services, HPA and PodDisruptionBudget, then patch the
//! status if it changed, with an Event for each condition that changed.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::conditions::{merge, transitions, Found};
use crate::context::{secret_value, secrets_checksum, Context, Error, FIELD_MANAGER};
use crate::crd::{condition as c, phase, KafscaleCluster, KafscaleClusterStatus};
use crate::etcd::{EtcdCredentials, EtcdTls, Metadata};
use crate::resources;
use crate::s3::{self, S3Credentials};
use crate::security;

/// Spec errors the schema cannot express.
pub fn check_spec(k: &KafscaleCluster) -> Result<(), String> {
    let s = &k.spec;
    let cpus = s.brokers.resources.cpus;
    if let Some(n) = s.config.shards {
        if n > cpus {
            return Err(format!(
                "config.shards is {n} but brokers.resources.cpus is {cpus}: a shard needs a CPU of its own"
            ));
        }
    }
    if let Some(p) = &s.brokers.seccomp_profile {
        if p.r#type == "Localhost" && p.localhost_profile.is_none() {
            return Err("brokers.seccompProfile: type Localhost needs localhostProfile".into());
        }
    }
    if s.etcd.endpoints.is_empty() {
        return Err("etcd.endpoints is empty".into());
    }
    security::check(k)
}

pub async fn reconcile(k: Arc<KafscaleCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = k.name_any();
    let ns = k
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let key = format!("cluster/{ns}/{name}");

    if let Err(msg) = check_spec(&k) {
        let found = [Found::failed(c::READY, c::INVALID_SPEC, msg)];
        patch_status(&ctx, &k, phase::FAILED, None, &found).await?;
        return Ok(ctx.backoff(&key));
    }

    // Secrets: their values feed the probes here; the pods get secretKeyRefs.
    let s3_ref = k.spec.s3.credentials_secret_ref.as_ref();
    let etcd_ref = k.spec.etcd.credentials_secret_ref.as_ref();
    let read = async |r: Option<&crate::crd::SecretRef>| match r {
        Some(r) => ctx.secret(&ns, &r.name).await,
        None => Ok(None),
    };
    let etcd_tls_ref = k.spec.etcd.tls.as_ref().map(|t| &t.secret_ref);
    let secrets = match (
        read(s3_ref).await,
        read(etcd_ref).await,
        read(etcd_tls_ref).await,
    ) {
        (Ok(s3), Ok(etcd), Ok(tls)) => Ok((s3, etcd, tls)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
    };
    let (s3_secret, etcd_secret, etcd_tls_secret) = match secrets {
        Ok(pair) => pair,
        Err(e @ Error::SecretForbidden { .. }) => {
            // Not retried faster than any failure: RBAC changes with a helm upgrade.
            let found = [Found::failed(c::READY, c::SECRET_FORBIDDEN, e.to_string())];
            patch_status(&ctx, &k, phase::FAILED, None, &found).await?;
            return Ok(ctx.backoff(&key));
        }
        Err(e) => return Err(e),
    };

    let s3_found = match (s3_ref, &s3_secret) {
        (Some(r), None) => Found::failed(
            c::S3_VALIDATED,
            c::SECRET_MISSING,
            format!("Secret {ns}/{} not found", r.name),
        ),
        (Some(r), Some(sec)) => match (
            secret_value(sec, "AWS_ACCESS_KEY_ID"),
            secret_value(sec, "AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(access_key), Some(secret_key)) => {
                let creds = S3Credentials {
                    access_key,
                    secret_key,
                    session_token: secret_value(sec, "AWS_SESSION_TOKEN"),
                };
                s3_probe(&k, Some(&creds), &ctx).await
            }
            _ => Found::failed(
                c::S3_VALIDATED,
                c::SECRET_MISSING,
                format!(
                    "Secret {ns}/{} needs the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    r.name
                ),
            ),
        },
        (None, _) => s3_probe(&k, None, &ctx).await,
    };

    let etcd_creds = match (etcd_ref, &etcd_secret) {
        (Some(r), None) => Err(format!("Secret {ns}/{} not found", r.name)),
        (Some(r), Some(sec)) => {
            match (secret_value(sec, "username"), secret_value(sec, "password")) {
                (Some(username), Some(password)) => {
                    Ok(Some(EtcdCredentials { username, password }))
                }
                _ => Err(format!(
                    "Secret {ns}/{} needs the keys username and password",
                    r.name
                )),
            }
        }
        (None, _) => Ok(None),
    };
    let etcd_tls = match &k.spec.etcd.tls {
        Some(t) => EtcdTls::from_secret(t, &ns, etcd_tls_secret.as_ref()).map(Some),
        None => Ok(None),
    };
    let etcd_found = match etcd_creds.and_then(|creds| Ok((creds, etcd_tls?))) {
        Err(msg) => Found::failed(c::ETCD_AVAILABLE, c::SECRET_MISSING, msg),
        Ok((creds, tls)) => {
            match Metadata::connect(
                &k.spec.etcd.endpoints,
                creds.as_ref(),
                tls.as_ref(),
                ctx.timeout,
            )
            .await
            {
                Ok(m) => match m.snapshot().await {
                    Ok(_) => Found::ok(c::ETCD_AVAILABLE, c::ETCD_CONNECTED, "metadata readable"),
                    Err(e) => Found::failed(c::ETCD_AVAILABLE, c::ETCD_UNAVAILABLE, e.to_string()),
                },
                Err(e) => Found::failed(c::ETCD_AVAILABLE, c::ETCD_UNAVAILABLE, e.to_string()),
            }
        }
    };

    if !s3_found.ok {
        // Brokers with these settings could not store anything: leave the running
        // ones (and their working credentials) alone until S3 validates.
        warn!(cluster = %key, error = %s3_found.message, "S3 validation failed");
        let found = [
            s3_found,
            etcd_found,
            Found::failed(c::READY, c::S3_VALIDATION_FAILED, "S3 validation failed"),
        ];
        patch_status(&ctx, &k, phase::FAILED, None, &found).await?;
        return Ok(ctx.backoff(&key));
    }

    // The etcd TLS files are read once at start, so a renewal must roll the
    // brokers; the listeners' certificate is reloaded by the brokers and the
    // users file only bootstraps, so neither is part of the digest. A cluster
    // without etcd TLS keeps the digest (and so the pods) it had before.
    let mut digest_of = vec![("s3", s3_secret.as_ref()), ("etcd", etcd_secret.as_ref())];
    if k.spec.etcd.tls.is_some() {
        digest_of.push(("etcd-tls", etcd_tls_secret.as_ref()));
    }
    let checksum = secrets_checksum(&digest_of);
    // The HPA owns the replica count between its bounds; the operator only moves
    // it into them (a new cluster starts at the minimum).
    let (min, max) = resources::hpa_bounds(&k);
    let sts_api = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns);
    let sts_name = resources::sts_name(&name);
    let current = sts_api
        .get_opt(&sts_name)
        .await?
        .and_then(|s| s.spec.and_then(|s| s.replicas));
    let replicas = current.unwrap_or(min).clamp(min, max);
    let image = k
        .spec
        .brokers
        .image
        .clone()
        .unwrap_or_else(|| ctx.broker_image.clone());

    let sts = ctx
        .apply(
            &ns,
            &sts_name,
            &resources::statefulset(&k, &image, &ctx.broker_seccomp_profile, replicas, &checksum),
        )
        .await?;
    let headless = resources::headless_service(&k);
    ctx.apply(&ns, &resources::headless_name(&name), &headless)
        .await?;
    let client_svc = resources::client_service(&k);
    ctx.apply(&ns, &resources::client_service_name(&name), &client_svc)
        .await?;
    let metrics_svc = resources::metrics_service(&k);
    ctx.apply(&ns, &resources::metrics_service_name(&name), &metrics_svc)
        .await?;
    ctx.apply(&ns, &sts_name, &resources::hpa(&k)).await?;
    ctx.apply(&ns, &resources::pdb_name(&name), &resources::pdb(&k))
        .await?;
    let np_name = security::network_policy_name(&name);
    match security::network_policy(&k) {
        Some(np) => {
            ctx.apply(&ns, &np_name, &np).await?;
        }
        None => {
            ctx.delete_if_present::<NetworkPolicy>(&ns, &np_name)
                .await?
        }
    }

    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let all_ready = ready >= replicas;
    let ready_found = if all_ready {
        Found::ok(
            c::READY,
            c::BROKERS_READY,
            format!("{ready}/{replicas} brokers ready"),
        )
    } else {
        Found::failed(
            c::READY,
            c::BROKERS_NOT_READY,
            format!("{ready}/{replicas} brokers ready"),
        )
    };
    let etcd_ok = etcd_found.ok;
    let ph = if all_ready && etcd_ok {
        phase::RUNNING
    } else {
        phase::PROVISIONING
    };
    patch_status(
        &ctx,
        &k,
        ph,
        Some(ready),
        &[s3_found, etcd_found, ready_found],
    )
    .await?;
    if etcd_ok {
        Ok(ctx.healthy(&key))
    } else {
        Ok(ctx.backoff(&key))
    }
}

async fn s3_probe(k: &KafscaleCluster, creds: Option<&S3Credentials>, ctx: &Context) -> Found {
    match s3::validate(&k.spec.s3, creds, ctx.timeout).await {
        Ok(()) => Found::ok(
            c::S3_VALIDATED,
            c::S3_VALIDATION_SUCCEEDED,
            format!(
                "listed and wrote {} in bucket {}",
                s3::PROBE_KEY,
                k.spec.s3.bucket
            ),
        ),
        Err(e) => Found::failed(c::S3_VALIDATED, c::S3_VALIDATION_FAILED, e),
    }
}

/// Applies the status through the status subresource, only when it differs from
/// the stored one (transition times of unchanged conditions are kept).
async fn patch_status(
    ctx: &Context,
    k: &KafscaleCluster,
    ph: &str,
    ready: Option<i32>,
    found: &[Found],
) -> Result<(), Error> {
    let old = k.status.clone().unwrap_or_default();
    let generation = k.metadata.generation;
    let new = KafscaleClusterStatus {
        phase: Some(ph.to_string()),
        observed_generation: generation,
        ready_replicas: ready.or(old.ready_replicas),
        conditions: merge(&old.conditions, found, generation),
    };
    if k.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let name = k.name_any();
    let ns = k.namespace().unwrap_or_default();
    info!(cluster = %format!("{ns}/{name}"), phase = ph, "status changed");
    let api = Api::<KafscaleCluster>::namespaced(ctx.client.clone(), &ns);
    let body = json!({
        "apiVersion": KafscaleCluster::api_version(&()),
        "kind": KafscaleCluster::kind(&()),
        "status": new,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    for f in transitions(&old.conditions, found) {
        // Brokers starting is progress, not a problem.
        let warning = !f.ok && f.reason != c::BROKERS_NOT_READY;
        ctx.event(k, warning, f.reason, f.message.clone(), "Reconcile")
            .await;
    }
    Ok(())
}
