//! Splitting a request's partitions by owning shard and putting the answers
//! back in request order. Every cross-shard hop of the data path goes through
//! `scatter`, so it is the one place to look for how a request fans out.

use std::future::Future;
use std::rc::Rc;

use crate::shard::{Shard, ShardGone};

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
    let calls = fan_out(shard, items, owner, f);
    async move {
        let answers = futures::future::join_all(calls).await;
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for answer in answers {
            answer.place(&mut out, &lost);
        }
        out.into_iter().map(|r| r.unwrap_or_else(&lost)).collect()
    }
}

/// One owning shard's answer: the request positions of its items and its results
/// (in the same order), or the shard could not be reached.
pub struct Answer<R> {
    pub positions: Vec<usize>,
    pub results: Result<Vec<R>, ShardGone>,
}

impl<R> Answer<R> {
    /// Puts the results at their request positions (`lost()` for an unreachable shard).
    pub fn place(self, out: &mut [Option<R>], lost: impl Fn() -> R) {
        match self.results {
            Ok(rs) => {
                for (i, r) in self.positions.into_iter().zip(rs) {
                    if let Some(slot) = out.get_mut(i) {
                        *slot = Some(r);
                    }
                }
            }
            Err(_) => {
                for i in self.positions {
                    if let Some(slot) = out.get_mut(i) {
                        *slot = Some(lost());
                    }
                }
            }
        }
    }
}

/// The fan-out under `scatter`: one call per owning shard, sent at once, as
/// futures the caller may await in any order (fetch answers as soon as one
/// shard has data instead of waiting for all of them).
pub fn fan_out<P, R, F, Fut>(
    shard: &Rc<Shard>,
    items: Vec<P>,
    owner: impl Fn(&P) -> usize,
    f: F,
) -> Vec<impl Future<Output = Answer<R>> + 'static>
where
    P: Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<Shard>, Vec<P>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Vec<R>> + 'static,
{
    let mut groups: Vec<(Vec<usize>, Vec<P>)> =
        (0..shard.count).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, item) in items.into_iter().enumerate() {
        let target = owner(&item) % shard.count.max(1);
        if let Some(g) = groups.get_mut(target) {
            g.0.push(i);
            g.1.push(item);
        }
    }
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, g)| !g.1.is_empty())
        .map(|(target, (positions, parts))| {
            let f = f.clone();
            let call = shard.on(target, move |sh| f(sh, parts));
            async move {
                Answer {
                    positions,
                    results: call.await,
                }
            }
        })
        .collect()
}
