//! Which shard owns which partition. The hash is part of the on-wire behaviour of a broker
//! (it decides where state lives), so it is pinned by a test and must not change:
//! CRC32C of the topic name's bytes followed by the partition as big-endian i32.

/// Shard that owns partition `partition` of `topic`.
pub fn partition_shard(topic: &str, partition: i32, shards: usize) -> usize {
    let h = crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), &partition.to_be_bytes());
    (h as usize) % shards.max(1)
}

/// Shard that owns consumer group `group` (its members, timers and offsets).
pub fn group_shard(group: &str, shards: usize) -> usize {
    (crc32c::crc32c(group.as_bytes()) as usize) % shards.max(1)
}

/// Shard that serialises cluster-metadata changes (topic creation and deletion).
pub const METADATA_SHARD: usize = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable() {
        // Pinned values: changing the hash moves partitions between shards.
        let got: Vec<usize> = (0..8).map(|p| partition_shard("orders", p, 4)).collect();
        assert_eq!(got, vec![3, 0, 0, 3, 0, 3, 3, 0]);
        assert_eq!(partition_shard("orders", 0, 1), 0);
    }

    #[test]
    fn group_placement_is_stable() {
        // Pinned values: changing the hash moves groups (and their offsets) between shards.
        let got: Vec<usize> = (0..8)
            .map(|i| group_shard(&format!("group-{i}"), 4))
            .collect();
        assert_eq!(got, vec![1, 2, 2, 1, 2, 1, 1, 2]);
        assert_eq!(group_shard("g", 1), 0);
    }

    #[test]
    fn placement_spreads_partitions() {
        let mut counts = [0usize; 4];
        for p in 0..400 {
            counts[partition_shard("events", p, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
    }
}
