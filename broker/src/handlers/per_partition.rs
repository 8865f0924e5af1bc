//! Per-partition work on each partition's owning shard, answered in the shape of
//! the request (topics in order, partitions in order): the common part of the
//! admin APIs that act on partitions (DeleteRecords, DescribeProducers,
//! DescribeLogDirs).

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::TopicName;

use crate::placement::partition_shard;
use crate::router::scatter;
use crate::shard::Shard;

/// Runs `f(shard, topic, partition, payload)` on the shard owning each partition;
/// `lost()` answers the partitions whose shard could not be reached.
pub async fn on_owners<P, R, F, Fut>(
    shard: &Rc<Shard>,
    topics: Vec<(TopicName, Vec<(i32, P)>)>,
    lost: fn() -> R,
    f: F,
) -> Vec<(TopicName, Vec<(i32, R)>)>
where
    P: Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<Shard>, Arc<str>, i32, P) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = R> + 'static,
{
    let mut items = Vec::new();
    let mut shape = Vec::with_capacity(topics.len());
    for (name, parts) in topics {
        let topic: Arc<str> = Arc::from(name.0.as_str());
        let mut indexes = Vec::with_capacity(parts.len());
        for (index, payload) in parts {
            items.push((topic.clone(), index, payload));
            indexes.push(index);
        }
        shape.push((name, indexes));
    }
    let count = shard.count;
    let results = scatter(
        shard,
        items,
        move |(t, p, _)| partition_shard(t, *p, count),
        lost,
        move |sh, items| {
            let f = f.clone();
            async move {
                let mut out = Vec::with_capacity(items.len());
                for (topic, index, payload) in items {
                    out.push(f(sh.clone(), topic, index, payload).await);
                }
                out
            }
        },
    )
    .await;
    let mut it = results.into_iter();
    shape
        .into_iter()
        .map(|(name, indexes)| {
            let answers = indexes
                .into_iter()
                .map(|i| (i, it.next().unwrap_or_else(lost)))
                .collect();
            (name, answers)
        })
        .collect()
}
