//! Liveness and readiness. Liveness is "the process serves HTTP and every shard
//! runs jobs": each shard must answer within `LIVENESS_TIMEOUT` (before the shards
//! start, during metadata loading, serving HTTP is enough). Readiness also
//! needs the metadata loaded, every shard answering, the object store reachable
//! at the last probe (a cheap LIST of the namespace prefix, repeated on the I/O
//! runtime so a scrape or readiness check never waits on the store), and the
//! store's health not `unavailable` (see `kafscale_segstore::health`).

use std::sync::Arc;
use std::time::Duration;

use kafscale_segstore::{HealthConfig, HealthState};
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

/// The object-store health thresholds (names and defaults of the Go Kafscale,
/// plus the failure streak and the minimum sample count).
#[derive(Debug, Clone, clap::Args)]
pub struct S3HealthArgs {
    /// Window of the object-store health rating (error rate and average latency), in seconds.
    #[arg(long, env = "KAFSCALE_S3_HEALTH_WINDOW_SEC", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub s3_health_window_sec: u64,
    /// Average latency over the window at which the store is degraded.
    #[arg(long, env = "KAFSCALE_S3_LATENCY_WARN_MS", default_value_t = 500)]
    pub s3_latency_warn_ms: u64,
    /// Average latency over the window at which the store is unavailable.
    #[arg(long, env = "KAFSCALE_S3_LATENCY_CRIT_MS", default_value_t = 3000)]
    pub s3_latency_crit_ms: u64,
    /// Share of failed requests over the window at which the store is degraded.
    #[arg(long, env = "KAFSCALE_S3_ERROR_RATE_WARN", default_value_t = 0.2)]
    pub s3_error_rate_warn: f64,
    /// Share of failed requests over the window at which the store is unavailable.
    #[arg(long, env = "KAFSCALE_S3_ERROR_RATE_CRIT", default_value_t = 0.6)]
    pub s3_error_rate_crit: f64,
    /// Failed requests of one operation in a row (no success between) that make the
    /// store unavailable at once; its next success ends the outage.
    #[arg(long, env = "KAFSCALE_S3_HEALTH_FAILURE_STREAK", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub s3_health_failure_streak: u32,
    /// Requests the window must hold before its error rate and latency are rated.
    #[arg(long, env = "KAFSCALE_S3_HEALTH_MIN_SAMPLES", default_value_t = 10)]
    pub s3_health_min_samples: u64,
}

impl S3HealthArgs {
    pub fn config(&self) -> HealthConfig {
        HealthConfig {
            window: Duration::from_secs(self.s3_health_window_sec),
            latency_warn: Duration::from_millis(self.s3_latency_warn_ms),
            latency_crit: Duration::from_millis(self.s3_latency_crit_ms),
            error_rate_warn: self.s3_error_rate_warn,
            error_rate_crit: self.s3_error_rate_crit,
            failure_streak: self.s3_health_failure_streak,
            min_samples: self.s3_health_min_samples,
        }
    }

    /// Checks what clap cannot: the warning thresholds are below the critical ones.
    pub fn validate(&self) -> Result<(), String> {
        let rate_ok = |r: f64| r.is_finite() && r > 0.0;
        if !rate_ok(self.s3_error_rate_warn) || !rate_ok(self.s3_error_rate_crit) {
            return Err(
                "KAFSCALE_S3_ERROR_RATE_WARN and KAFSCALE_S3_ERROR_RATE_CRIT must be positive"
                    .into(),
            );
        }
        if self.s3_error_rate_warn > self.s3_error_rate_crit {
            return Err(
                "KAFSCALE_S3_ERROR_RATE_WARN must be at most KAFSCALE_S3_ERROR_RATE_CRIT".into(),
            );
        }
        if self.s3_latency_warn_ms > self.s3_latency_crit_ms {
            return Err(
                "KAFSCALE_S3_LATENCY_WARN_MS must be at most KAFSCALE_S3_LATENCY_CRIT_MS".into(),
            );
        }
        Ok(())
    }
}
