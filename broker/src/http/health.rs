//! Liveness and readiness. Liveness is "the process serves HTTP and every shard
//! runs jobs": each shard must answer within `LIVENESS_TIMEOUT` (before the shards
//! start, during metadata loading, serving HTTP is enough). Readiness also
//! needs the metadata loaded, every shard answering, the object store reachable
//! at the last probe (a cheap LIST of the namespace prefix, repeated on the I/O
//! runtime so a scrape or readiness check never waits on the store), and the
//! store's health not `unavailable` (see `kafscale_segstore::health`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kafscale_segstore::HealthState;
use tracing::{info, warn};

use super::{Endpoint, ProbeError, ShardsError};

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
            Ok(Err(e)) => Err(ProbeError::Store(Arc::new(e))),
            Err(_) => Err(ProbeError::Timeout(PROBE_TIMEOUT)),
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

/// Why a shard failed the liveness check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardDown {
    /// Its inbox is closed.
    #[error("stopped")]
    Stopped,
    #[error("no answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
}

/// Every shard's answer to the liveness job, by shard id; displayed as one line
/// per shard (`shard <i>: ok`, `shard <i>: no answer within 1000 ms`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardAnswers(pub Vec<Result<(), ShardDown>>);

impl ShardAnswers {
    /// The shards that did not answer.
    pub fn missing(&self) -> Vec<usize> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_err())
            .map(|(i, _)| i)
            .collect()
    }
}

impl fmt::Display for ShardAnswers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            match a {
                Ok(()) => writeln!(f, "shard {i}: ok")?,
                Err(why) => writeln!(f, "shard {i}: {why}")?,
            }
        }
        Ok(())
    }
}

/// A passed liveness check; displayed as the 200 body: `ok`, then `shards:
/// starting` or one line per shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// The shards are not running yet (metadata is loading): serving HTTP is enough.
    Starting,
    Answered(ShardAnswers),
}

impl fmt::Display for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Live::Starting => f.write_str("ok\nshards: starting\n"),
            Live::Answered(answers) => write!(f, "ok\n{answers}"),
        }
    }
}

/// A failed liveness check: some shards did not answer. Displayed as the 503
/// body: a line naming them, then one line per shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} did not answer\n{answers}", named(&.answers.missing()))]
pub struct NotLive {
    pub answers: ShardAnswers,
}

/// `shard 1`, `shards 0, 2`.
fn named(ids: &[usize]) -> String {
    let s = if ids.len() == 1 { "" } else { "s" };
    let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    format!("shard{s} {}", ids.join(", "))
}

/// The `/healthz` check: `Ok` for a 200, `Err` for a 503, each displayed as the
/// response body.
pub async fn liveness(ep: &Endpoint) -> Result<Live, NotLive> {
    let Some(inboxes) = ep.inboxes.get() else {
        return Ok(Live::Starting);
    };
    let asks = inboxes.iter().map(|tx| async move {
        match tokio::time::timeout(LIVENESS_TIMEOUT, crate::runtime::ask(tx, |_| async {})).await {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(ShardDown::Stopped),
            Err(_) => Err(ShardDown::NoAnswer(LIVENESS_TIMEOUT)),
        }
    });
    let answers = ShardAnswers(futures::future::join_all(asks).await);
    if answers.missing().is_empty() {
        Ok(Live::Answered(answers))
    } else {
        Err(NotLive { answers })
    }
}

/// Why the broker is not ready (the text is the 503 body).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotReady {
    #[error("metadata not loaded")]
    MetadataNotLoaded,
    #[error("{0}")]
    Shards(#[from] ShardsError),
    #[error("object store unreachable: {0}")]
    StoreUnreachable(#[source] ProbeError),
    #[error("object store not checked yet")]
    StoreNotChecked,
    /// The store's health rating is `unavailable`, for this reason.
    #[error("object store unavailable: {0}")]
    StoreUnavailable(String),
}

/// `Ok` when ready, else the reason for a 503.
pub async fn readiness(ep: &Endpoint) -> Result<(), NotReady> {
    if !ep
        .metadata_loaded
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return Err(NotReady::MetadataNotLoaded);
    }
    ep.snapshot().await?;
    let status = match ep.store_status.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    match status {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(NotReady::StoreUnreachable(e)),
        None => return Err(NotReady::StoreNotChecked),
    }
    let h = ep.stats.health.snapshot();
    if h.state == HealthState::Unavailable {
        return Err(NotReady::StoreUnavailable(h.reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_bodies() {
        assert_eq!(Live::Starting.to_string(), "ok\nshards: starting\n");
        let all = ShardAnswers(vec![Ok(()), Ok(())]);
        assert_eq!(
            Live::Answered(all).to_string(),
            "ok\nshard 0: ok\nshard 1: ok\n"
        );
        let late = ShardDown::NoAnswer(LIVENESS_TIMEOUT);
        let one = NotLive {
            answers: ShardAnswers(vec![Ok(()), Err(late.clone()), Ok(())]),
        };
        assert_eq!(one.answers.missing(), vec![1]);
        assert_eq!(
            one.to_string(),
            "shard 1 did not answer\nshard 0: ok\nshard 1: no answer within 1000 ms\nshard 2: ok\n"
        );
        let two = NotLive {
            answers: ShardAnswers(vec![Err(ShardDown::Stopped), Err(late)]),
        };
        assert_eq!(
            two.to_string(),
            "shards 0, 1 did not answer\nshard 0: stopped\nshard 1: no answer within 1000 ms\n"
        );
    }

    #[test]
    fn readiness_reasons() {
        let unreachable = NotReady::StoreUnreachable(ProbeError::Timeout(PROBE_TIMEOUT));
        assert_eq!(
            unreachable.to_string(),
            "object store unreachable: no answer within 2000 ms"
        );
        assert!(std::error::Error::source(&unreachable).is_some());
        assert_eq!(
            NotReady::from(ShardsError::Missing(vec![1, 2])).to_string(),
            "shards [1, 2] did not answer"
        );
        assert_eq!(
            NotReady::from(ShardsError::Timeout(Duration::from_secs(2))).to_string(),
            "shards did not answer within 2000 ms"
        );
        assert_eq!(
            NotReady::MetadataNotLoaded.to_string(),
            "metadata not loaded"
        );
    }
}
