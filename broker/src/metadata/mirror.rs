//! A local copy of every key under an etcd prefix, kept current by a watch.
//!
//! The live broker set, the assignments and the controller key are small and
//! change rarely, and each broker needs all of them at once (Metadata lists every
//! broker and every partition's leader). A mirror reads the prefix once, then
//! applies the watch's events; after a watch error or a compaction it reads the
//! prefix again. Readers get the whole map as one `Arc` through a
//! `tokio::sync::watch` channel, so a change is seen as a consistent snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tracing::warn;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One key's current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

impl Entry {
    fn of(kv: &etcd_client::KeyValue) -> Self {
        Entry {
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }
    }
}

/// The keys under the prefix (full key → entry) at `revision`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirrored {
    pub entries: BTreeMap<String, Entry>,
    /// The etcd revision this copy is current to (0 before the first read).
    pub revision: i64,
}

/// Starts mirroring `prefix` (every key starting with it) on the current tokio
/// runtime. The task ends when every receiver is gone.
pub fn spawn(client: Client, prefix: &str, timeout: Duration) -> watch::Receiver<Arc<Mirrored>> {
    let (tx, rx) = watch::channel(Arc::new(Mirrored::default()));
    tokio::spawn(run(client, prefix.to_string(), timeout, tx));
    rx
}

/// Waits until the mirror has read the prefix at least once.
pub async fn first(rx: &mut watch::Receiver<Arc<Mirrored>>) -> Arc<Mirrored> {
    loop {
        let cur = rx.borrow_and_update().clone();
        if cur.revision > 0 {
            return cur;
        }
        if rx.changed().await.is_err() {
            return cur;
        }
    }
}

async fn read(
    client: &mut Client,
    prefix: &str,
    timeout: Duration,
) -> Result<Mirrored, etcd_client::Error> {
    let resp = match tokio::time::timeout(
        timeout,
        client.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            return Err(etcd_client::Error::WatchError(format!(
                "no answer within {timeout:?}"
            )))
        }
    };
    let mut entries = BTreeMap::new();
    for kv in resp.kvs() {
        if let Ok(k) = kv.key_str() {
            entries.insert(k.to_string(), Entry::of(kv));
        }
    }
    let revision = resp.header().map_or(1, |h| h.revision()).max(1);
    Ok(Mirrored { entries, revision })
}

async fn run(
    mut client: Client,
    prefix: String,
    timeout: Duration,
    tx: watch::Sender<Arc<Mirrored>>,
) {
    let mut backoff = FIRST_BACKOFF;
    while !tx.is_closed() {
        let mut cur = match read(&mut client, &prefix, timeout).await {
            Ok(m) => m,
            Err(e) => {
                warn!(prefix, error = %e, "reading an etcd prefix failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        tx.send_if_modified(|old| {
            if **old == cur {
                false
            } else {
                *old = Arc::new(cur.clone());
                true
            }
        });
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(cur.revision + 1)
            .with_progress_notify();
        let mut stream =
            match tokio::time::timeout(timeout, client.watch(prefix.as_str(), Some(opts))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    warn!(prefix, error = %e, "watching an etcd prefix failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(_) => {
                    warn!(prefix, "watching an etcd prefix timed out; retrying");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
        backoff = FIRST_BACKOFF;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tx.closed() => return,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    warn!(prefix, error = %e, "etcd watch failed; reading the prefix again");
                    break;
                }
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                break;
            }
            let mut changed = false;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(k) = kv.key_str() else { continue };
                cur.revision = cur.revision.max(kv.mod_revision());
                changed = true;
                match ev.event_type() {
                    EventType::Put => {
                        cur.entries.insert(k.to_string(), Entry::of(kv));
                    }
                    EventType::Delete => {
                        cur.entries.remove(k);
                    }
                }
            }
            if let Some(h) = resp.header() {
                if h.revision() > cur.revision && resp.events().is_empty() {
                    // A progress notification: nothing changed up to here.
                    cur.revision = h.revision();
                }
            }
            if changed {
                let _ = tx.send(Arc::new(cur.clone()));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
