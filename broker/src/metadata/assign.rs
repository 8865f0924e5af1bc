//! Which live broker should own each partition of a topic: the controller's
//! rule (docs/cluster.md, "Ownership").
//!
//! Balanced: with P partitions over B brokers, every broker gets ⌊P/B⌋ or
//! ⌈P/B⌉. Stable: a partition stays with its current owner while that owner is
//! live and within its quota, and the ceilings go to the brokers already holding
//! the most, so a join or leave moves only what it must.

use std::collections::BTreeMap;

/// The new owner of each of `partitions` partitions, given the `live` broker ids
/// and the `current` owners (index = partition; shorter or longer than
/// `partitions` after a change of the partition count). Empty when no broker is live.
pub fn assign(partitions: usize, live: &[i32], current: &[i32]) -> Vec<i32> {
    let mut live: Vec<i32> = live.to_vec();
    live.sort_unstable();
    live.dedup();
    if live.is_empty() {
        return Vec::new();
    }
    let b = live.len();
    let (floor, extra) = (partitions / b, partitions % b);
    // What each live broker holds now, lowest partition first.
    let mut held: BTreeMap<i32, Vec<usize>> = live.iter().map(|&id| (id, Vec::new())).collect();
    for (i, owner) in current.iter().take(partitions).enumerate() {
        if let Some(h) = held.get_mut(owner) {
            h.push(i);
        }
    }
    // The `extra` ceilings go to the brokers holding the most (ties: lower id).
    let mut by_holding: Vec<i32> = live.clone();
    by_holding.sort_by_key(|id| (std::cmp::Reverse(held[id].len()), *id));
    let quota: BTreeMap<i32, usize> = by_holding
        .iter()
        .enumerate()
        .map(|(rank, &id)| (id, floor + usize::from(rank < extra)))
        .collect();
    let mut out: Vec<Option<i32>> = vec![None; partitions];
    let mut count: BTreeMap<i32, usize> = live.iter().map(|&id| (id, 0)).collect();
    for (&id, parts) in &held {
        for &i in parts.iter().take(quota[&id]) {
            out[i] = Some(id);
            *count.entry(id).or_default() += 1;
        }
    }
    for slot in out.iter_mut().filter(|s| s.is_none()) {
        // The broker furthest under its quota (ties: lower id).
        let Some(&id) = live
            .iter()
            .filter(|id| count[*id] < quota[*id])
            .max_by_key(|id| (quota[*id] - count[*id], std::cmp::Reverse(**id)))
        else {
            break;
        };
        *slot = Some(id);
        *count.entry(id).or_default() += 1;
    }
    out.into_iter().map(|o| o.unwrap_or(live[0])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(a: &[i32]) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for id in a {
            *m.entry(*id).or_default() += 1;
        }
        m
    }

    fn balanced(a: &[i32], live: &[i32]) -> bool {
        let (p, b) = (a.len(), live.len());
        let c = counts(a);
        live.iter().all(|id| {
            let n = c.get(id).copied().unwrap_or(0);
            n == p / b || n == p.div_ceil(b)
        }) && a.iter().all(|id| live.contains(id))
    }

    fn moved(a: &[i32], b: &[i32]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn a_fresh_topic_is_spread_evenly() {
        let a = assign(6, &[1, 2, 3], &[]);
        assert_eq!(counts(&a), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
        let a = assign(7, &[3, 1, 2], &[]);
        assert!(balanced(&a, &[1, 2, 3]), "{a:?}");
        assert_eq!(assign(4, &[], &[]), Vec::<i32>::new());
        assert_eq!(assign(0, &[1], &[]), Vec::<i32>::new());
    }

    #[test]
    fn a_balanced_assignment_does_not_move() {
        let a = assign(6, &[1, 2, 3], &[]);
        assert_eq!(assign(6, &[1, 2, 3], &a), a);
        let a = assign(7, &[1, 2, 3], &[]);
        assert_eq!(assign(7, &[1, 2, 3], &a), a);
    }

    #[test]
    fn a_leave_moves_only_the_leavers_partitions() {
        let before = assign(6, &[1, 2, 3], &[]);
        let after = assign(6, &[1, 3], &before);
        assert!(balanced(&after, &[1, 3]), "{after:?}");
        for (x, y) in before.iter().zip(&after) {
            if *x != 2 {
                assert_eq!(x, y, "{before:?} -> {after:?}");
            }
        }
    }

    #[test]
    fn a_join_moves_the_minimum() {
        for p in 1..20usize {
            for b in 1..6i32 {
                let live: Vec<i32> = (1..=b).collect();
                let before = assign(p, &live, &[]);
                let mut grown = live.clone();
                grown.push(b + 1);
                let after = assign(p, &grown, &before);
                assert!(balanced(&after, &grown), "p={p} {after:?}");
                // The newcomer gets its floor (or ceiling) and nothing else moves.
                let newcomer = counts(&after).get(&(b + 1)).copied().unwrap_or(0);
                assert_eq!(moved(&before, &after), newcomer, "p={p} b={b}");
                assert!(newcomer <= p.div_ceil(grown.len()));
            }
        }
    }

    #[test]
    fn partitions_added_or_owners_unknown_are_placed() {
        let before = assign(4, &[1, 2], &[]);
        let after = assign(6, &[1, 2], &before);
        assert_eq!(&after[..4], &before[..]);
        assert!(balanced(&after, &[1, 2]));
        let after = assign(3, &[1, 2], &[9, 9, 1]);
        assert!(balanced(&after, &[1, 2]));
        assert_eq!(after[2], 1);
    }
}
