//! Retention: each shard, every `KAFSCALE_RETENTION_CHECK_INTERVAL_MS`, deletes
//! whole durable segments of its partitions that are older than the topic's
//! retention.ms (by the segment's max timestamp, as Kafka) or beyond its
//! retention.bytes, oldest first, and moves the log start to the first segment
//! kept.
//!
//! The newest durable segment always stays: its footer is what tells recovery the
//! next offset, so deleting it would make a restarted broker hand out offsets
//! again from the base of the deleted data (Kafka keeps its active segment for
//! the same reason). Deletion is oldest-first, so after a restart the first
//! remaining object is the log start: nothing needs persisting besides the objects.
//!
//! Safety against readers: a segment leaves the in-memory log (and the log start
//! moves past it) before its objects are deleted, so no new read picks it; a read
//! that had already picked it and then finds it gone answers OFFSET_OUT_OF_RANGE,
//! as a fetch below the log start does.

use std::rc::Rc;
use std::time::Duration;

use tracing::{info, warn};

use super::logs::Logs;
use super::timeindex::max_ts_of;
use super::{Load, Partition};
use crate::placement::partition_shard;

/// The shard's retention loop: its interval and the "now" segments are aged
/// against are the logs' `Clock`.
pub async fn retention_ticker(logs: Rc<Logs>) {
    let interval = logs
        .settings
        .retention_check_interval
        .max(Duration::from_millis(10));
    loop {
        logs.clock.sleep(interval).await;
        if logs.is_shutting_down() {
            return;
        }
        enforce_all(&logs).await;
    }
}

async fn enforce_all(logs: &Rc<Logs>) {
    let cluster = logs.cluster();
    let mut targets = Vec::new();
    for t in cluster.topics.values() {
        if !t.settings(logs.settings.segment_bytes).has_retention() {
            continue;
        }
        for i in 0..t.partitions {
            if partition_shard(&t.name, i, logs.shards) == logs.shard {
                targets.push((t.name.clone(), i));
            }
        }
    }
    for (topic, index) in targets {
        if logs.is_shutting_down() {
            return;
        }
        // Loads partitions nobody has touched since start (recovery is lazy), so
        // their expired data goes too.
        if let Ok(p) = super::partition(logs, &topic, index).await {
            enforce(logs, &p, logs.clock.wall_ms()).await;
        }
    }
}

/// One retention pass over one partition at wall-clock time `now`.
pub(crate) async fn enforce(logs: &Rc<Logs>, p: &Rc<Partition>, now: i64) {
    if !delete_doomed(logs, p).await {
        return;
    }
    loop {
        let settings = p.settings.get();
        if !settings.has_retention() {
            return;
        }
        let (first, total) = {
            let st = p.st.borrow();
            if st.deleted || !matches!(st.load, Load::Ready) || st.durable.len() < 2 {
                return;
            }
            (
                st.durable[0],
                st.durable.iter().map(|s| s.bytes).sum::<u64>(),
            )
        };
        // Kafka's rule: drop the oldest segment while the rest still reach the limit.
        let by_size =
            u64::try_from(settings.retention_bytes).is_ok_and(|limit| total - first.bytes >= limit);
        let by_time = !by_size
            && settings.retention_ms >= 0
            && match max_ts_of(logs, p, &first).await {
                Ok(max) => now.saturating_sub(max) > settings.retention_ms,
                Err(_) => return,
            };
        if !by_size && !by_time {
            return;
        }
        {
            let mut st = p.st.borrow_mut();
            // Re-check after the await: only the oldest segment, and never the last.
            if st.deleted
                || st.durable.len() < 2
                || st.durable[0].base != first.base
                || st.durable[0].gen != first.gen
            {
                return;
            }
            st.durable.remove(0);
            st.log_start = st.log_start.max(st.durable[0].base);
            st.doomed.push((first.base, first.gen));
            info!(topic = %p.topic, partition = p.index, base_offset = first.base, last_offset = first.last,
                  log_start = st.log_start, by_size, "retention: segment deleted");
        }
        logs.cache.borrow_mut().remove(&first.key(p));
        if !delete_doomed(logs, p).await {
            return;
        }
    }
}

/// Deletes the objects of segments already removed from the log, oldest first.
/// False if one failed (it is retried on the next pass).
pub(super) async fn delete_doomed(logs: &Rc<Logs>, p: &Rc<Partition>) -> bool {
    loop {
        let next = {
            let mut st = p.st.borrow_mut();
            if st.deleted {
                // Topic deletion removes every object of the topic itself.
                st.doomed.clear();
                return false;
            }
            st.doomed.first().copied()
        };
        let Some((base, gen)) = next else { return true };
        let store = logs.store.clone();
        let topic = p.topic.to_string();
        let index = p.index;
        let res = logs
            .io
            .call(async move { store.delete_object(&topic, index, base, gen).await })
            .await;
        if let Err(e) = res {
            warn!(topic = %p.topic, partition = p.index, base_offset = base, error = %e, "deleting segment objects failed; will retry");
            return false;
        }
        p.st.borrow_mut().doomed.retain(|b| *b != (base, gen));
    }
}
