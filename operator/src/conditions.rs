//! Standard `metav1.Condition`s, kept stable across reconciles: a condition whose
//! status did not change keeps its `lastTransitionTime`, so an unchanged status
//! compares equal and is not patched again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// What one reconcile found for one condition type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Found {
    pub fn ok(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Found {
            type_,
            ok: true,
            reason,
            message: message.into(),
        }
    }

    pub fn failed(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Found {
            type_,
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// The conditions to store: `found` in order, each keeping the transition time of
/// the previous condition of its type when its status is the same.
pub fn merge(previous: &[Condition], found: &[Found], generation: Option<i64>) -> Vec<Condition> {
    let now = Time(Timestamp::now());
    found
        .iter()
        .map(|f| {
            let status = if f.ok { "True" } else { "False" }.to_string();
            let since = previous
                .iter()
                .find(|c| c.type_ == f.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: f.type_.to_string(),
                status,
                reason: f.reason.to_string(),
                // The API server requires a message field; keep it short and useful.
                message: f.message.chars().take(1024).collect(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// The found conditions whose status or reason differ from the previous ones
/// (or that are new): what deserves an Event. A resync that finds the same
/// outcome publishes nothing. One per reason: kube-rs folds Events of the same
/// reason into one series that keeps the first note, and the first (the
/// specific condition, before `Ready`) says the most.
pub fn transitions<'a>(previous: &[Condition], found: &'a [Found]) -> Vec<&'a Found> {
    let mut out: Vec<&Found> = Vec::new();
    for f in found {
        let status = if f.ok { "True" } else { "False" };
        let same = previous
            .iter()
            .any(|c| c.type_ == f.type_ && c.status == status && c.reason == f.reason);
        if !same && !out.iter().any(|o| o.reason == f.reason) {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_outcomes_are_transitions() {
        let before = merge(
            &[],
            &[
                Found::ok("Ready", "BrokersReady", "3/3"),
                Found::ok("S3Validated", "Ok", "fine"),
            ],
            Some(1),
        );
        let now = [
            Found::ok("Ready", "BrokersReady", "3/3 again"),
            Found::failed("S3Validated", "Ok", "now failing"),
            Found::ok("EtcdAvailable", "EtcdConnected", "new"),
        ];
        let t: Vec<_> = transitions(&before, &now)
            .into_iter()
            .map(|f| f.type_)
            .collect();
        assert_eq!(t, ["S3Validated", "EtcdAvailable"]);
        let reason = [Found::ok("Ready", "Other", "3/3")];
        assert_eq!(transitions(&before, &reason).len(), 1);
        // Two conditions failing for one reason: one Event, the first's.
        let both = [
            Found::failed("S3Validated", "S3ValidationFailed", "403 from the bucket"),
            Found::failed("Ready", "S3ValidationFailed", "S3 validation failed"),
        ];
        let t = transitions(&[], &both);
        assert_eq!((t.len(), t[0].message.as_str()), (1, "403 from the bucket"));
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let first = merge(&[], &[Found::ok("Ready", "R", "fine")], Some(1));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let again = merge(&first, &[Found::ok("Ready", "R", "fine")], Some(1));
        assert_eq!(first, again);
        let flipped = merge(&first, &[Found::failed("Ready", "X", "broken")], Some(1));
        assert_eq!(flipped[0].status, "False");
        assert_ne!(
            flipped[0].last_transition_time,
            first[0].last_transition_time
        );
    }
}
