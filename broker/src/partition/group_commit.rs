//! Group commit: a partition holding data that an `acks=-1` producer waits for
//! is sealed and uploaded as soon as it may, instead of at the next flush tick.
//! What arrives while its upload runs goes into the next one, so under load the
//! objects grow with the traffic and their number is bounded by the store's
//! speed, not by the number of requests.
//!
//! A partition is sealed early when all of these hold:
//! - no upload of its own is running or queued (per partition, segments upload
//!   one at a time and in order anyway: sealing more would only cut the next
//!   object smaller, not make it durable sooner);
//! - the shard runs fewer partition uploads than `KAFSCALE_UPLOAD_CONCURRENCY`;
//! - its previous seal is at least `KAFSCALE_FLUSH_MIN_INTERVAL_MS` old (the
//!   lower bound that keeps the request count of an S3 store in check).
//!
//! Whatever waits longer is still sealed by the flush tick
//! (`KAFSCALE_FLUSH_INTERVAL_MS`, the upper bound; `append::flush_ticker`), which
//! also covers `acks=0/1` data: nobody waits for it, so it is left to collect.
//!
//! One task per shard makes the decisions. An append only marks its partition
//! and wakes the task; the task runs after the jobs already queued on the shard,
//! so the appends of one burst of requests share one seal.

use std::rc::Rc;
use std::time::Instant;

use futures::channel::oneshot;

use super::logs::Logs;
use super::Partition;

/// Notes that `p`'s active buffer holds data an `acks=-1` producer waits for,
/// and wakes the shard's group-commit task. Called with the partition's state
/// borrowed by the append (`st`).
pub(super) fn want(logs: &Logs, p: &Rc<Partition>, st: &mut super::State) {
    st.awaited = true;
    if !st.eager_queued {
        st.eager_queued = true;
        logs.eager.borrow_mut().push(p.clone());
    }
    wake(logs);
}

/// Wakes the group-commit task (an upload ended, a slot freed, data arrived).
pub(super) fn wake(logs: &Logs) {
    logs.eager_wake.set(true);
    if let Some(tx) = logs.eager_waiter.borrow_mut().take() {
        let _ = tx.send(());
    }
}

/// The shard's group-commit task: seals waiting partitions as soon as the rules
/// above allow, sleeping until it is woken or a minimum interval runs out.
pub async fn group_commit(logs: Rc<Logs>) {
    loop {
        if logs.is_shutting_down() {
            return;
        }
        logs.eager_wake.set(false);
        let due = pass(&logs);
        if logs.eager_wake.get() {
            continue;
        }
        let (tx, rx) = oneshot::channel();
        *logs.eager_waiter.borrow_mut() = Some(tx);
        match due {
            Some(at) => {
                let timer = logs.clock.sleep_until(at);
                futures::pin_mut!(timer);
                let _ = futures::future::select(rx, timer).await;
            }
            None => {
                let _ = rx.await;
            }
        }
    }
}

/// One look at the waiting partitions: seals those that may go now, keeps the
/// others, and returns the earliest time one of them is held only by its
/// minimum interval.
fn pass(logs: &Rc<Logs>) -> Option<Instant> {
    let waiting = std::mem::take(&mut *logs.eager.borrow_mut());
    if waiting.is_empty() {
        return None;
    }
    let now = logs.clock.now();
    let min_interval = logs.settings.flush_min_interval;
    let mut keep = Vec::new();
    let mut due: Option<Instant> = None;
    for p in waiting {
        let sealed = {
            let mut st = p.st.borrow_mut();
            if st.deleted || !st.awaited {
                // Sealed meanwhile (full segment, tick, flush, release) or gone.
                st.eager_queued = false;
                continue;
            }
            if let Some(log) = &logs.clog {
                // One log append at a time per shard: what waits meanwhile goes
                // into the next (its end wakes this task again).
                if log.busy() || st.pending.len() > st.log_taken {
                    keep.push(p.clone());
                    continue;
                }
            } else if st.uploading || !st.pending.is_empty() {
                // Its upload's end wakes this task again.
                keep.push(p.clone());
                continue;
            }
            if logs.clog.is_none() && logs.uploads_running() >= logs.settings.upload_concurrency {
                // An upload's end wakes this task again.
                keep.push(p.clone());
                continue;
            }
            if let Some(ready) = st.last_seal.map(|t| t + min_interval) {
                if ready > now {
                    due = Some(due.map_or(ready, |d| d.min(ready)));
                    keep.push(p.clone());
                    continue;
                }
            }
            st.eager_queued = false;
            super::append::seal_locked(&mut st, now)
        };
        if sealed {
            super::upload::kick(logs, &p);
        }
    }
    logs.eager.borrow_mut().extend(keep);
    due
}
