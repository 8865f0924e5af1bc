//! Protobuf messages generated at build time (protox + prost + tonic, no `protoc`):
//! the values Kafscale keeps in etcd (`proto/kafscale/metadata.proto`) and the
//! BrokerControl gRPC service (`control/broker.proto`). The schemas'
//! compatibility rules are in those files: fields are only ever added.
//!
//! What the brokers and the operator both need, kept here so they cannot drift:
//! `keys`, the etcd key layout the values are stored under; `snapshot`, the
//! compare-and-swap read-modify-write of the cluster snapshot; `topic_config`, the
//! supported topic configs with their rules, defaults and documentation.

/// `kafscale.metadata`: cluster snapshot, topics, partition state, groups, offsets.
pub mod metadata {
    include!(concat!(env!("OUT_DIR"), "/kafscale.metadata.rs"));
}

/// `kafscale.control.v1`: the BrokerControl service, its messages, server and client.
pub mod control {
    include!(concat!(env!("OUT_DIR"), "/kafscale.control.v1.rs"));
}

pub mod keys;
pub mod snapshot;
pub mod topic_config;

pub use prost::Message;

#[cfg(test)]
mod tests {
    use super::metadata::*;
    use prost::Message;

    #[test]
    fn snapshot_round_trips() {
        let s = ClusterSnapshot {
            cluster_id: "c1".into(),
            brokers: vec![BrokerInfo {
                node_id: 3,
                host: "h".into(),
                port: 9092,
                rack: String::new(),
            }],
            topics: vec![TopicConfig {
                name: "orders".into(),
                topic_id: vec![7; 16],
                partitions: 12,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
                created_ms: 5,
                deleting: false,
            }],
        };
        let b = s.encode_to_vec();
        assert_eq!(ClusterSnapshot::decode(&b[..]).unwrap(), s);
    }

    #[test]
    fn optional_strings_keep_absent_apart_from_empty() {
        for m in [None, Some(String::new()), Some("x".to_string())] {
            let o = CommittedOffset {
                offset: 9,
                leader_epoch: -1,
                metadata: m.clone(),
                commit_ms: 1,
            };
            assert_eq!(
                CommittedOffset::decode(&o.encode_to_vec()[..])
                    .unwrap()
                    .metadata,
                m
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_fields_are_zero() {
        // A value written by a newer version with an extra field 99 (varint 1).
        let mut b = PartitionState {
            topic_id: vec![1; 16],
            next_offset: 42,
            broker_id: 0,
            updated_ms: 0,
            leader_epoch: 0,
            log_start_offset: 0,
        }
        .encode_to_vec();
        b.extend_from_slice(&[0x98, 0x06, 0x01]);
        let p = PartitionState::decode(&b[..]).unwrap();
        assert_eq!((p.next_offset, p.broker_id), (42, 0));
        assert_eq!(
            GroupMetadata::decode(&[][..]).unwrap(),
            GroupMetadata::default()
        );
    }
}
