//! The etcd key layout, in one place (see docs/metadata.md):
//!
//! ```text
//! /kafscale/metadata/snapshot                          ClusterSnapshot
//! /kafscale/topics/{topic}/config                      TopicConfig
//! /kafscale/topics/{topic}/partitions/{p}              PartitionState
//! /kafscale/topics/{topic}/compaction/{p}              CompactionManifest
//! /kafscale/consumers/{group}/metadata                 GroupMetadata
//! /kafscale/consumers/{group}/offsets/{topic}/{p}      CommittedOffset
//! /kafscale/brokers/{id}                               BrokerRegistration (leased)
//! /kafscale/controller                                 ControllerClaim (leased)
//! /kafscale/assignments/{topic}                        Assignment
//! /kafscale/owners/{topic}/{p}                         PartitionOwner (leased)
//! /kafscale/security/scram/{user}/{mechanism}          ScramCredential
//! /kafscale/security/acl/{type}/{pattern}/{name}/...   AclBinding
//! ```
//!
//! Names are path segments, so any byte that could break the layout (`/`, `%`,
//! spaces, non-ASCII) is percent-encoded; Kafka's topic-name characters
//! `[a-zA-Z0-9._-]` stay as they are, so valid topics appear under their own name.
//! Group ids are free-form in Kafka, which is why the encoding exists at all.

pub const SNAPSHOT: &str = "/kafscale/metadata/snapshot";
pub const CONSUMERS: &str = "/kafscale/consumers/";
pub const BROKERS: &str = "/kafscale/brokers/";
pub const CONTROLLER: &str = "/kafscale/controller";
pub const ASSIGNMENTS: &str = "/kafscale/assignments/";
pub const OWNERS: &str = "/kafscale/owners/";
/// `/kafscale/deletions/{topic}`: the broker finishing a topic's deletion, under its
/// lease (so an abandoned deletion is picked up by the controller).
pub const DELETIONS: &str = "/kafscale/deletions/";
/// Security records (SCRAM credentials, ACLs), read as a whole by every broker.
pub const SECURITY: &str = "/kafscale/security/";

/// Percent-encodes every byte outside `[A-Za-z0-9._-]`.
pub fn encode(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Reverses `encode`; None for a malformed escape or bytes that are not UTF-8.
pub fn decode(seg: &str) -> Option<String> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = seg.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn topic_prefix(topic: &str) -> String {
    format!("/kafscale/topics/{}/", encode(topic))
}

pub fn topic_config(topic: &str) -> String {
    format!("{}config", topic_prefix(topic))
}

pub fn partition(topic: &str, partition: i32) -> String {
    format!("{}partitions/{partition}", topic_prefix(topic))
}

/// A partition's compaction manifest (under the topic, so topic deletion removes it).
pub fn compaction(topic: &str, partition: i32) -> String {
    format!("{}compaction/{partition}", topic_prefix(topic))
}

pub fn assignment(topic: &str) -> String {
    format!("{ASSIGNMENTS}{}", encode(topic))
}

/// The topic name of an assignment key.
pub fn parse_assignment(key: &str) -> Option<String> {
    decode(key.strip_prefix(ASSIGNMENTS)?)
}

pub fn deletion(topic: &str) -> String {
    format!("{DELETIONS}{}", encode(topic))
}

pub fn owners_prefix(topic: &str) -> String {
    format!("{OWNERS}{}/", encode(topic))
}

pub fn owner(topic: &str, partition: i32) -> String {
    format!("{}{partition}", owners_prefix(topic))
}

/// The topic and partition of an owner key.
pub fn parse_owner(key: &str) -> Option<(String, i32)> {
    let (topic, p) = key.strip_prefix(OWNERS)?.split_once('/')?;
    Some((decode(topic)?, p.parse().ok()?))
}

pub fn group_prefix(group: &str) -> String {
    format!("{CONSUMERS}{}/", encode(group))
}

pub fn group_meta(group: &str) -> String {
    format!("{}metadata", group_prefix(group))
}

pub fn group_topic_offsets(group: &str, topic: &str) -> String {
    format!("{}offsets/{}/", group_prefix(group), encode(topic))
}

pub fn offset(group: &str, topic: &str, partition: i32) -> String {
    format!("{}{partition}", group_topic_offsets(group, topic))
}

pub fn broker(id: i32) -> String {
    format!("{BROKERS}{id}")
}

/// What a key under `/kafscale/consumers/` holds.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumerKey {
    Meta {
        group: String,
    },
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
}

/// Parses a key under `/kafscale/consumers/`; None for anything else (keys a
/// newer version might add are skipped, not errors).
pub fn parse_consumer_key(key: &str) -> Option<ConsumerKey> {
    let rest = key.strip_prefix(CONSUMERS)?;
    let (g, rest) = rest.split_once('/')?;
    let group = decode(g)?;
    if rest == "metadata" {
        return Some(ConsumerKey::Meta { group });
    }
    let rest = rest.strip_prefix("offsets/")?;
    let (t, p) = rest.split_once('/')?;
    Some(ConsumerKey::Offset {
        group,
        topic: decode(t)?,
        partition: p.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_documented_keys() {
        assert_eq!(
            topic_config("orders.v1"),
            "/kafscale/topics/orders.v1/config"
        );
        assert_eq!(
            partition("orders", 7),
            "/kafscale/topics/orders/partitions/7"
        );
        assert_eq!(group_meta("g-1"), "/kafscale/consumers/g-1/metadata");
        assert_eq!(offset("g", "t", 3), "/kafscale/consumers/g/offsets/t/3");
        assert_eq!(broker(2), "/kafscale/brokers/2");
    }

    #[test]
    fn free_form_group_ids_cannot_break_the_layout() {
        let tricky = "a/offsets/b/1 %é";
        let k = offset(tricky, "t", 1);
        assert_eq!(
            k,
            "/kafscale/consumers/a%2Foffsets%2Fb%2F1%20%25%C3%A9/offsets/t/1"
        );
        assert_eq!(
            parse_consumer_key(&k),
            Some(ConsumerKey::Offset {
                group: tricky.into(),
                topic: "t".into(),
                partition: 1
            })
        );
        assert_eq!(
            parse_consumer_key(&group_meta("")),
            Some(ConsumerKey::Meta { group: "".into() })
        );
        // A prefix of one group never covers another group's keys.
        assert!(!offset("ab", "t", 0).starts_with(&group_prefix("a")));
        assert!(!offset("g", "tt", 0).starts_with(&group_topic_offsets("g", "t")));
    }

    #[test]
    fn malformed_keys_are_skipped() {
        for k in [
            "/kafscale/consumers/g",
            "/kafscale/consumers/g/other",
            "/kafscale/consumers/g/offsets/t/x",
            "/kafscale/consumers/%zz/metadata",
            "/kafscale/consumers/%C3/metadata",
            "/kafscale/topics/t/config",
        ] {
            assert_eq!(parse_consumer_key(k), None, "{k}");
        }
        assert_eq!(decode("a%2"), None);
    }
}
