//! Splitting a request's partitions by owning shard and putting the answers
//! back in request order. Every cross-shard hop of the data path goes through
//! `scatter`, so it is the one place to look for how a request fans out.

use std::future::Future;
use std::rc::Rc;

use crate::shard::Shard;

/// Runs `f` once per owning shard with that shard's items (concurrently across
/// shards) and returns the results in the order of `items`. `owner` gives each
/// item's shard; `lost` answers for items whose shard could not be reached.
///
/// The items are sent when `scatter` is called, not when the returned future is
/// first polled: a caller that must keep its requests in order (produce) calls
/// `scatter` for one request before the next, and each owner then sees them in
/// that order (see `Shard::on`).
pub fn scatter<P, R, F, Fut>(
    shard: &Rc<Shard>,
    items: Vec<P>,
    owner: impl Fn(&P) -> usize,
    lost: impl Fn() -> R + 'static,
    f: F,
) -> impl Future<Output = Vec<R>> + 'static
where
    P: Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<Shard>, Vec<P>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Vec<R>> + 'static,
{
    let n = items.len();
    let mut groups: Vec<(Vec<usize>, Vec<P>)> =
        (0..shard.count).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, item) in items.into_iter().enumerate() {
        let g = &mut groups[owner(&item) % shard.count];
        g.0.push(i);
        g.1.push(item);
    }
    let calls: Vec<_> = groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.1.is_empty())
        .map(|(target, (idx, parts))| {
            let f = f.clone();
            let call = shard.on(target, move |sh| f(sh, parts));
            async move { (idx, call.await) }
        })
        .collect();
    async move {
        let answers = futures::future::join_all(calls).await;
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for (idx, res) in answers {
            match res {
                Ok(rs) => {
                    for (i, r) in idx.into_iter().zip(rs) {
                        out[i] = Some(r);
                    }
                }
                Err(_) => {
                    for i in idx {
                        out[i] = Some(lost());
                    }
                }
            }
        }
        out.into_iter().map(|r| r.unwrap_or_else(&lost)).collect()
    }
}
