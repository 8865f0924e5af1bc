//! A shard's byte-bounded LRU of segments. Single-threaded (one per shard), so
//! no locks; each hit is O(log n) in the recency map.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use crate::format::segment::Segment;

pub struct SegmentCache<K: Hash + Eq + Clone> {
    capacity: usize,
    bytes: usize,
    tick: u64,
    entries: HashMap<K, (Segment, u64)>,
    recency: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone> SegmentCache<K> {
    pub fn new(capacity_bytes: usize) -> Self {
        SegmentCache {
            capacity: capacity_bytes,
            bytes: 0,
            tick: 0,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
        }
    }

    fn touch(&mut self, k: &K) -> Option<&Segment> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(k)?;
        self.recency.remove(&entry.1);
        entry.1 = tick;
        self.recency.insert(tick, k.clone());
        Some(&entry.0)
    }

    /// The segment, marked most recently used. Cloning is cheap (`Bytes` plus the
    /// batch positions).
    pub fn get(&mut self, k: &K) -> Option<Segment> {
        self.touch(k).cloned()
    }

    pub fn contains(&self, k: &K) -> bool {
        self.entries.contains_key(k)
    }

    /// Caches a segment, evicting the least recently used ones to stay within the
    /// capacity. A segment larger than the whole capacity is not cached.
    pub fn insert(&mut self, k: K, seg: Segment) {
        let size = seg.size();
        if size > self.capacity {
            return;
        }
        self.remove(&k);
        while self.bytes + size > self.capacity {
            let Some((_, victim)) = self.recency.pop_first() else {
                break;
            };
            if let Some((s, _)) = self.entries.remove(&victim) {
                self.bytes -= s.size();
            }
        }
        self.tick += 1;
        self.recency.insert(self.tick, k.clone());
        self.entries.insert(k, (seg, self.tick));
        self.bytes += size;
    }

    pub fn remove(&mut self, k: &K) -> Option<Segment> {
        let (s, t) = self.entries.remove(k)?;
        self.recency.remove(&t);
        self.bytes -= s.size();
        Some(s)
    }

    pub fn remove_where(&mut self, pred: impl Fn(&K) -> bool) {
        let doomed: Vec<K> = self.entries.keys().filter(|k| pred(k)).cloned().collect();
        for k in doomed {
            self.remove(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::segment::SegmentBuilder;
    use kafscale_codec::batch::{build_batch, BatchHeader};

    fn seg(payload: usize) -> Segment {
        let v = vec![7u8; payload];
        let raw = build_batch(0, 1, &[&v]);
        let mut b = SegmentBuilder::new(0, 0, raw.len());
        b.append(&raw, &BatchHeader::parse(&raw).unwrap(), 0);
        b.finish(100).segment
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let one = seg(1000).size();
        let mut c = SegmentCache::new(one * 3);
        c.insert(1, seg(1000));
        c.insert(2, seg(1000));
        c.insert(3, seg(1000));
        assert_eq!((c.len(), c.bytes()), (3, one * 3));
        assert!(c.get(&1).is_some()); // 2 is now the oldest
        c.insert(4, seg(1000));
        assert!(c.contains(&1) && !c.contains(&2) && c.contains(&3) && c.contains(&4));
        c.insert(5, seg(one * 4));
        assert!(!c.contains(&5), "larger than the whole cache");
        c.remove_where(|k| *k >= 3);
        assert_eq!((c.len(), c.bytes()), (1, one));
        c.insert(1, seg(1000));
        assert_eq!(c.bytes(), one);
    }
}
