//! Liveness and readiness. Liveness is "the process serves HTTP and every shard
//! runs jobs": each shard must answer within `LIVENESS_TIMEOUT` (before the shards
//! start, during metadata loading, serving HTTP is enough). Readiness also
//! needs the metadata loaded, every shard answering, the object store reachable
//! at the last probe (a cheap LIST of the namespace prefix, repeated on the I/O
//! runtime so a scrape or readiness check never waits on the store), and the
//! store's health not `unavailable` (see `kafscale_segstore::health`).

use std::sync::Arc;
use std::time::Duration;

use kafscale_segstore::HealthState;
use tracing::{info, warn};

use super::Endpoint;

/// How often the object store is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe slower than this counts as unreachable (the store client's own retries
/// against a store that is down would otherwise take minutes).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes the object store forever; spawn on the I/O runtime.
pub async fn probe_store(ep: Arc<Endpoint>) {
    loop {
        let r = match tokio::time::timeout(PROBE_TIMEOUT, ep.store.probe()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
        };
        let changed = {
            let mut st = match ep.store_status.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let changed = st.as_ref().map(|s| s.is_ok()) != Some(r.is_ok());
            *st = Some(r.clone());
            changed
        };
        if changed {
            match &r {
                Ok(()) => info!("object store reachable"),
                Err(e) => warn!(error = %e, "object store unreachable"),
            }
        }
        // Old samples leave the health window as time passes, not only when
        // requests arrive.
        ep.stats.health.refresh();
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// How long `/healthz` waits for each shard: below the probe timeouts of the
/// Helm chart and the operator (3 s), above any pause of a working shard.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

/// The `/healthz` answer: `Ok(body)` for a 200, `Err(body)` for a 503. The first
/// line is `ok` or names the shards that did not answer; one line per shard
/// follows (`shard <i>: ok`, `no answer within 1000 ms`, or `stopped`).
pub async fn liveness(ep: &Endpoint) -> Result<String, String> {
    let Some(inboxes) = ep.inboxes.get() else {
        return Ok("ok\nshards: starting\n".into());
    };
    let asks = inboxes.iter().map(|tx| async move {
        match tokio::time::timeout(LIVENESS_TIMEOUT, crate::runtime::ask(tx, |_| async {})).await {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err("stopped".to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                LIVENESS_TIMEOUT.as_millis()
            )),
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut lines = String::new();
    let mut missing = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        match a {
            Ok(()) => lines.push_str(&format!("shard {i}: ok\n")),
            Err(why) => {
                missing.push(i.to_string());
                lines.push_str(&format!("shard {i}: {why}\n"));
            }
        }
    }
    if missing.is_empty() {
        Ok(format!("ok\n{lines}"))
    } else {
        let s = if missing.len() == 1 { "" } else { "s" };
        Err(format!(
            "shard{s} {} did not answer\n{lines}",
            missing.join(", ")
        ))
    }
}

/// `Ok` when ready, else the reason for a 503.
pub async fn readiness(ep: &Endpoint) -> Result<(), String> {
    if !ep
        .metadata_loaded
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return Err("metadata not loaded".into());
    }
    ep.snapshot().await?;
    let status = match ep.store_status.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    match status {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(format!("object store unreachable: {e}")),
        None => return Err("object store not checked yet".into()),
    }
    let h = ep.stats.health.snapshot();
    if h.state == HealthState::Unavailable {
        return Err(format!("object store unavailable: {}", h.reason));
    }
    Ok(())
}
