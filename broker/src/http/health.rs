//! Liveness and readiness. Liveness is "the process serves HTTP". Readiness also
//! needs the metadata loaded, every shard answering, and the object store
//! reachable at the last probe: a cheap LIST of the namespace prefix, repeated on
//! the I/O runtime so a scrape or readiness check never waits on the store.

use std::sync::Arc;
use std::time::Duration;

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
        tokio::time::sleep(PROBE_INTERVAL).await;
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
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("object store unreachable: {e}")),
        None => Err("object store not checked yet".into()),
    }
}
