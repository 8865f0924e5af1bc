//! Who owns a topic's configs: a `KafscaleTopic` owns the keys it sets, the
//! runtime (AlterConfigs, CreateTopics) owns every other key. A three-way compare
//! of the spec, what the operator last wrote (`status.appliedConfig`) and what the
//! store holds tells the two kinds of change apart:
//!
//! - the spec differs from what was last written: the user changed the resource,
//!   and the spec is written, whatever the runtime did meanwhile;
//! - the store differs from what was last written: the runtime changed the key,
//!   and `configDrift` decides: `Revert` writes the spec back (reported, never
//!   silent), `Keep` leaves it (reported while it differs);
//! - a key the spec no longer sets is removed if the store still holds what the
//!   operator wrote, and left to the runtime if it was changed at runtime.

use std::collections::BTreeMap;

/// A key the resource sets whose runtime value is kept (`configDrift: Keep`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differs {
    pub key: String,
    pub spec: String,
    /// None: deleted at runtime (back to the broker default).
    pub runtime: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Every config the topic should hold (the store's, with the spec's applied).
    pub configs: BTreeMap<String, String>,
    /// Keys changed at runtime and set back to the spec.
    pub reverted: Vec<String>,
    /// Keys changed at runtime and left so.
    pub differs: Vec<Differs>,
}

pub fn plan(
    spec: &BTreeMap<String, String>,
    last_applied: &BTreeMap<String, String>,
    stored: &BTreeMap<String, String>,
    keep_runtime: bool,
) -> Plan {
    let mut out = Plan {
        configs: stored.clone(),
        ..Plan::default()
    };
    for (k, written) in last_applied {
        if !spec.contains_key(k) && stored.get(k) == Some(written) {
            out.configs.remove(k);
        }
    }
    for (k, want) in spec {
        let current = stored.get(k);
        if current == Some(want) {
            continue;
        }
        let runtime_changed = last_applied.get(k) == Some(want);
        if runtime_changed && keep_runtime {
            out.differs.push(Differs {
                key: k.clone(),
                spec: want.clone(),
                runtime: current.cloned(),
            });
            continue;
        }
        if runtime_changed {
            out.reverted.push(k.clone());
        }
        out.configs.insert(k.clone(), want.clone());
    }
    out
}

/// `key: spec X, runtime Y` for each, for a condition's message.
pub fn describe(differs: &[Differs]) -> String {
    differs
        .iter()
        .map(|d| {
            format!(
                "{}: spec {}, runtime {}",
                d.key,
                d.spec,
                d.runtime.as_deref().unwrap_or("(broker default)")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_new_resource_writes_its_keys_and_keeps_the_runtime_ones() {
        let p = plan(
            &m(&[("retention.ms", "1000")]),
            &m(&[]),
            &m(&[("retention.ms", "5"), ("segment.bytes", "1048576")]),
            false,
        );
        // No last write: the spec is new, not a runtime change.
        assert!(p.reverted.is_empty());
        assert_eq!(
            p.configs,
            m(&[("retention.ms", "1000"), ("segment.bytes", "1048576")])
        );
    }

    #[test]
    fn a_runtime_change_to_an_owned_key_is_reverted_or_kept() {
        let spec = m(&[("retention.ms", "1000")]);
        let stored = m(&[("retention.ms", "42"), ("max.message.bytes", "2000000")]);
        let p = plan(&spec, &spec, &stored, false);
        assert_eq!(p.reverted, ["retention.ms"]);
        assert_eq!(
            p.configs,
            m(&[("max.message.bytes", "2000000"), ("retention.ms", "1000")])
        );
        let p = plan(&spec, &spec, &stored, true);
        assert_eq!(p.configs, stored);
        assert_eq!(
            p.differs,
            [Differs {
                key: "retention.ms".into(),
                spec: "1000".into(),
                runtime: Some("42".into())
            }]
        );
        assert_eq!(describe(&p.differs), "retention.ms: spec 1000, runtime 42");
        // Deleted at runtime counts as a change too.
        let p = plan(&spec, &spec, &m(&[]), true);
        assert_eq!(p.differs[0].runtime, None);
    }

    #[test]
    fn a_spec_change_wins_over_a_runtime_change() {
        let p = plan(
            &m(&[("retention.ms", "2000")]),
            &m(&[("retention.ms", "1000")]),
            &m(&[("retention.ms", "42")]),
            true,
        );
        assert!(p.differs.is_empty() && p.reverted.is_empty());
        assert_eq!(p.configs, m(&[("retention.ms", "2000")]));
    }

    #[test]
    fn a_key_dropped_from_the_spec_goes_unless_the_runtime_changed_it() {
        let last = m(&[("retention.ms", "1000"), ("segment.bytes", "1048576")]);
        let stored = m(&[("retention.ms", "1000"), ("segment.bytes", "2097152")]);
        let p = plan(&m(&[]), &last, &stored, false);
        assert_eq!(p.configs, m(&[("segment.bytes", "2097152")]));
    }

    #[test]
    fn in_sync_changes_nothing() {
        let spec = m(&[("retention.ms", "1000")]);
        let stored = m(&[("retention.ms", "1000"), ("cleanup.policy", "delete")]);
        let p = plan(&spec, &spec, &stored, false);
        assert_eq!(
            p,
            Plan {
                configs: stored,
                ..Plan::default()
            }
        );
    }
}
