//! Finding a partition on its shard, and restoring its state from the object
//! store the first time it is touched after start: list the segments, read the
//! last one's footer, and continue after its last offset. Recovery is lazy, so a
//! broker with many partitions starts at once and loads only what is used.

use std::rc::Rc;

use futures::channel::oneshot;
use kafscale_segstore::SegmentMeta;
use tracing::{error, info};

use super::{Load, Partition, SegRef};
use crate::errors::{KAFKA_STORAGE_ERROR, UNKNOWN_TOPIC_OR_PARTITION};
use crate::runtime::spawn_detached;
use crate::shard::Shard;

/// The partition `topic`/`index` of this shard, loaded. Errors are Kafka codes.
pub async fn partition(shard: &Rc<Shard>, topic: &str, index: i32) -> Result<Rc<Partition>, i16> {
    let existing = shard
        .partitions
        .borrow()
        .get(topic)
        .and_then(|m| m.get(&index))
        .cloned();
    let p = match existing {
        Some(p) => p,
        None => {
            let cluster = shard.cluster();
            let t = cluster.topic(topic).ok_or(UNKNOWN_TOPIC_OR_PARTITION)?;
            if index < 0 || index >= t.partitions {
                return Err(UNKNOWN_TOPIC_OR_PARTITION);
            }
            let name: std::sync::Arc<str> = t.name.as_str().into();
            let settings = t.settings(shard.cfg.segment_bytes);
            let p = Rc::new(Partition::new(name.clone(), index, t.id, settings));
            shard
                .partitions
                .borrow_mut()
                .entry(name)
                .or_default()
                .insert(index, p.clone());
            spawn_detached(load(shard.clone(), p.clone()));
            p
        }
    };
    let rx = {
        let mut st = p.st.borrow_mut();
        if st.deleted {
            return Err(UNKNOWN_TOPIC_OR_PARTITION);
        }
        match &mut st.load {
            Load::Ready => return Ok(p.clone()),
            Load::Loading(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                rx
            }
        }
    };
    match rx.await {
        Ok(Ok(())) => Ok(p),
        Ok(Err(code)) => Err(code),
        Err(_) => Err(KAFKA_STORAGE_ERROR),
    }
}

/// Durable segments and the next offset, from the segment listing and the last
/// segment's footer.
fn restore(segs: &[SegmentMeta], last_offset: Option<i64>) -> Result<(Vec<SegRef>, i64), String> {
    let mut out = Vec::with_capacity(segs.len());
    for (i, s) in segs.iter().enumerate() {
        let last = match segs.get(i + 1) {
            Some(next) => next.base_offset - 1,
            None => last_offset.ok_or("missing footer")?,
        };
        if last < s.base_offset {
            return Err(format!(
                "segment {} ends at {last}, before it starts",
                s.base_offset
            ));
        }
        out.push(SegRef {
            base: s.base_offset,
            last,
            bytes: s.size,
            max_ts: None,
        });
    }
    let next = out.last().map_or(0, |s| s.last + 1);
    Ok((out, next))
}

async fn load(shard: Rc<Shard>, p: Rc<Partition>) {
    let store = shard.store.clone();
    let topic = p.topic.to_string();
    let index = p.index;
    let res = shard
        .io
        .run(async move {
            let segs = store.list_segments(&topic, index).await?;
            let footer = match segs.last() {
                Some(last) => Some(store.read_footer(&topic, index, last).await?),
                None => None,
            };
            Ok::<_, kafscale_segstore::StoreError>((segs, footer))
        })
        .await;
    let outcome = match res {
        Ok(Ok((segs, footer))) => restore(&segs, footer.map(|f| f.last_offset)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let waiters = {
        let mut st = p.st.borrow_mut();
        let result = match outcome {
            Ok((durable, next)) => {
                st.log_start = durable.first().map_or(0, |s| s.base);
                st.next_offset = next;
                st.high_watermark = next;
                if !durable.is_empty() {
                    info!(topic = %p.topic, partition = p.index, segments = durable.len(), next_offset = next, "partition recovered");
                }
                st.durable = durable;
                Ok(())
            }
            Err(e) => {
                error!(topic = %p.topic, partition = p.index, error = %e, "partition recovery failed; will retry on next request");
                Err(KAFKA_STORAGE_ERROR)
            }
        };
        let waiters = match std::mem::replace(&mut st.load, Load::Ready) {
            Load::Loading(w) => w,
            Load::Ready => Vec::new(),
        };
        if result.is_err() {
            st.deleted = true;
        }
        waiters.into_iter().map(|w| (w, result)).collect::<Vec<_>>()
    };
    if p.st.borrow().deleted {
        // A failed load is forgotten, so the next request starts a fresh one.
        if let Some(m) = shard.partitions.borrow_mut().get_mut(&*p.topic) {
            if m.get(&p.index).is_some_and(|x| Rc::ptr_eq(x, &p)) {
                m.remove(&p.index);
            }
        }
    }
    for (w, r) in waiters {
        let _ = w.send(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_ranges_from_listing_and_footer() {
        let segs = [
            SegmentMeta {
                base_offset: 0,
                size: 10,
            },
            SegmentMeta {
                base_offset: 5,
                size: 10,
            },
        ];
        let (refs, next) = restore(&segs, Some(9)).unwrap();
        assert_eq!(
            (refs[0].base, refs[0].last, refs[1].base, refs[1].last, next),
            (0, 4, 5, 9, 10)
        );
        assert_eq!(restore(&[], None).unwrap().1, 0);
        assert!(restore(&segs, Some(3)).is_err());
    }
}
