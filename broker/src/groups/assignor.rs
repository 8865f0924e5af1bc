//! Server-side assignors of the consumer protocol (KIP-848): the coordinator,
//! not a group leader, decides which member owns which partition.
//!
//! Both are pure functions of the members' subscriptions, the subscribed
//! topics' partition counts and (for `uniform`) the previous target, so they
//! are deterministic: the same input gives the same assignment on any broker,
//! which matters after a coordinator failover.

use std::collections::{BTreeMap, BTreeSet};

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The assignors a member may name in `ServerAssignor`.
pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";
pub const ASSIGNORS: &[&str] = &[UNIFORM, RANGE];

/// What an assignor sees: every member's subscribed topics (only topics that
/// exist), the partition count of each, and the previous target.
pub struct Input<'a> {
    pub members: &'a BTreeMap<String, BTreeSet<String>>,
    pub partitions: &'a BTreeMap<String, i32>,
    pub previous: &'a BTreeMap<String, Assignment>,
}

/// Runs the assignor `name` (one of `ASSIGNORS`; anything else is `uniform`,
/// the request was refused before it got here).
pub fn assign(name: &str, input: &Input) -> BTreeMap<String, Assignment> {
    match name {
        RANGE => range(input),
        _ => uniform(input),
    }
}

/// Kafka's range layout: per topic, the members subscribed to it in member-id
/// order each take a contiguous range; the first `partitions % members` take one
/// more. Members subscribed to the same topics with the same partition counts
/// get the same partition numbers of every topic (co-partitioning).
pub fn range(input: &Input) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = input
        .members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, &n) in input.partitions {
        let subscribers: Vec<&String> = input
            .members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() || n <= 0 {
            continue;
        }
        let count = subscribers.len() as i32;
        let (per, extra) = (n / count, n % count);
        let mut next = 0;
        for (i, m) in subscribers.into_iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            if take == 0 {
                continue;
            }
            let parts = out
                .entry(m.clone())
                .or_default()
                .entry(topic.clone())
                .or_default();
            parts.extend(next..next + take);
            next += take;
        }
    }
    out
}

/// Kafka's uniform assignor: as balanced as the subscriptions allow (with
/// identical subscriptions the partition counts of any two members differ by at
/// most one) and sticky: a partition stays with its previous owner unless it
/// has to move for balance, so a new member takes partitions from the others
/// without reshuffling the rest.
pub fn uniform(input: &Input) -> BTreeMap<String, Assignment> {
    let eligible = |topic: &str| -> Vec<&String> {
        input
            .members
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect()
    };
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut count: BTreeMap<&String, usize> = input.members.keys().map(|m| (m, 0)).collect();
    // Keep what the previous target gave each member, where still valid.
    for (m, topics) in input.previous {
        let Some((key, subscribed)) = input.members.get_key_value(m) else {
            continue;
        };
        for (topic, parts) in topics {
            let n = input.partitions.get(topic).copied().unwrap_or(0);
            if !subscribed.contains(topic) {
                continue;
            }
            for &p in parts.iter().filter(|&&p| p >= 0 && p < n) {
                if owner.contains_key(&(topic.clone(), p)) {
                    continue;
                }
                owner.insert((topic.clone(), p), m.clone());
                *count.entry(key).or_default() += 1;
            }
        }
    }
    // New or orphaned partitions go to the least loaded member subscribed to them.
    for (topic, &n) in input.partitions {
        let candidates = eligible(topic);
        if candidates.is_empty() {
            continue;
        }
        for p in 0..n.max(0) {
            let key = (topic.clone(), p);
            if owner.contains_key(&key) {
                continue;
            }
            if let Some(m) = least_loaded(&candidates, &count) {
                owner.insert(key, m.clone());
                *count.entry(m).or_default() += 1;
            }
        }
    }
    // Balance: move a partition from a member to an eligible member with at
    // least two fewer. Each move lowers the sum of squared counts, so this ends.
    let candidates_of: BTreeMap<&String, Vec<&String>> =
        input.partitions.keys().map(|t| (t, eligible(t))).collect();
    loop {
        let mut moved = false;
        let keys: Vec<(String, i32)> = owner.keys().rev().cloned().collect();
        for key in keys {
            let Some(from) = owner.get(&key).cloned() else {
                continue;
            };
            let Some(candidates) = candidates_of.get(&key.0) else {
                continue;
            };
            let Some(to) = least_loaded(candidates, &count) else {
                continue;
            };
            let (cf, ct) = (
                count.get(&from).copied().unwrap_or(0),
                count.get(to).copied().unwrap_or(0),
            );
            if cf > ct + 1 {
                if let Some(c) = count.get_mut(&from) {
                    *c -= 1;
                }
                *count.entry(to).or_default() += 1;
                owner.insert(key, to.clone());
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut out: BTreeMap<String, Assignment> = input
        .members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for ((topic, p), m) in owner {
        out.entry(m)
            .or_default()
            .entry(topic)
            .or_default()
            .insert(p);
    }
    out
}

/// The candidate with the fewest partitions, ties broken by member id.
fn least_loaded<'a>(
    candidates: &[&'a String],
    count: &BTreeMap<&String, usize>,
) -> Option<&'a String> {
    candidates
        .iter()
        .min_by_key(|m| (count.get(**m).copied().unwrap_or(0), (**m).clone()))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        members
            .iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn parts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn total(a: &BTreeMap<String, Assignment>) -> Vec<(String, i32)> {
        let mut all: Vec<(String, i32)> = a
            .values()
            .flat_map(|x| {
                x.iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            })
            .collect();
        all.sort();
        all
    }

    fn sizes(a: &BTreeMap<String, Assignment>) -> Vec<usize> {
        a.values()
            .map(|x| x.values().map(|p| p.len()).sum())
            .collect()
    }

    fn every_partition_once(a: &BTreeMap<String, Assignment>, topics: &[(&str, i32)]) {
        let mut want: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.to_string(), p)))
            .collect();
        want.sort();
        assert_eq!(total(a), want);
    }

    #[test]
    fn uniform_splits_evenly_and_assigns_each_partition_once() {
        let m = subs(&[("a", &["t"]), ("b", &["t"])]);
        let p = parts(&[("t", 6)]);
        let prev = BTreeMap::new();
        let a = uniform(&Input {
            members: &m,
            partitions: &p,
            previous: &prev,
        });
        every_partition_once(&a, &[("t", 6)]);
        assert_eq!(sizes(&a), vec![3, 3]);
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins() {
        let p = parts(&[("t", 6)]);
        let m2 = subs(&[("a", &["t"]), ("b", &["t"])]);
        let none = BTreeMap::new();
        let first = uniform(&Input {
            members: &m2,
            partitions: &p,
            previous: &none,
        });
        let m3 = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let second = uniform(&Input {
            members: &m3,
            partitions: &p,
            previous: &first,
        });
        every_partition_once(&second, &[("t", 6)]);
        assert_eq!(sizes(&second), vec![2, 2, 2]);
        // a and b each keep two of their three partitions; nothing moves between them.
        for m in ["a", "b"] {
            let before = &first[m]["t"];
            let after = &second[m]["t"];
            assert!(after.is_subset(before), "{m}: {after:?} ⊄ {before:?}");
        }
    }

    #[test]
    fn uniform_gives_a_leaving_members_partitions_to_the_rest() {
        let p = parts(&[("t", 6)]);
        let m3 = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let none = BTreeMap::new();
        let first = uniform(&Input {
            members: &m3,
            partitions: &p,
            previous: &none,
        });
        let m2 = subs(&[("a", &["t"]), ("b", &["t"])]);
        let second = uniform(&Input {
            members: &m2,
            partitions: &p,
            previous: &first,
        });
        every_partition_once(&second, &[("t", 6)]);
        assert_eq!(sizes(&second), vec![3, 3]);
        for m in ["a", "b"] {
            assert!(first[m]["t"].is_subset(&second[m]["t"]));
        }
    }

    #[test]
    fn uniform_respects_different_subscriptions() {
        let m = subs(&[("a", &["x"]), ("b", &["x", "y"]), ("c", &["y"])]);
        let p = parts(&[("x", 4), ("y", 2)]);
        let none = BTreeMap::new();
        let a = uniform(&Input {
            members: &m,
            partitions: &p,
            previous: &none,
        });
        every_partition_once(&a, &[("x", 4), ("y", 2)]);
        assert!(!a["a"].contains_key("y"));
        assert!(!a["c"].contains_key("x"));
        assert_eq!(sizes(&a), vec![2, 2, 2]);
    }

    #[test]
    fn uniform_drops_partitions_of_topics_no_longer_subscribed_or_gone() {
        let m = subs(&[("a", &["x"])]);
        let p = parts(&[("x", 2)]);
        let mut prev = BTreeMap::new();
        prev.insert(
            "a".to_string(),
            Assignment::from([
                ("x".to_string(), BTreeSet::from([0, 1, 5])),
                ("y".to_string(), BTreeSet::from([0])),
            ]),
        );
        let a = uniform(&Input {
            members: &m,
            partitions: &p,
            previous: &prev,
        });
        assert_eq!(
            a["a"],
            Assignment::from([("x".to_string(), BTreeSet::from([0, 1]))])
        );
    }

    #[test]
    fn more_members_than_partitions_leaves_some_empty() {
        let m = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let p = parts(&[("t", 2)]);
        let none = BTreeMap::new();
        for a in [
            uniform(&Input {
                members: &m,
                partitions: &p,
                previous: &none,
            }),
            range(&Input {
                members: &m,
                partitions: &p,
                previous: &none,
            }),
        ] {
            every_partition_once(&a, &[("t", 2)]);
            let mut s = sizes(&a);
            s.sort();
            assert_eq!(s, vec![0, 1, 1]);
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_first_members_one_more() {
        let m = subs(&[("a", &["t", "u"]), ("b", &["t", "u"])]);
        let p = parts(&[("t", 5), ("u", 5)]);
        let none = BTreeMap::new();
        let a = range(&Input {
            members: &m,
            partitions: &p,
            previous: &none,
        });
        every_partition_once(&a, &[("t", 5), ("u", 5)]);
        assert_eq!(a["a"]["t"], BTreeSet::from([0, 1, 2]));
        assert_eq!(a["b"]["t"], BTreeSet::from([3, 4]));
        // Co-partitioned: the same partition numbers of both topics.
        assert_eq!(a["a"]["t"], a["a"]["u"]);
        assert_eq!(a["b"]["t"], a["b"]["u"]);
    }

    #[test]
    fn assign_picks_by_name() {
        let m = subs(&[("a", &["t"]), ("b", &["t"])]);
        let p = parts(&[("t", 4)]);
        let none = BTreeMap::new();
        let input = Input {
            members: &m,
            partitions: &p,
            previous: &none,
        };
        assert_eq!(assign(RANGE, &input)["a"]["t"], BTreeSet::from([0, 1]));
        every_partition_once(&assign(UNIFORM, &input), &[("t", 4)]);
    }
}
