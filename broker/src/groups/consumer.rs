//! The consumer group protocol of KIP-848 (`group.protocol=consumer`): members
//! send ConsumerGroupHeartbeat, the coordinator computes the assignment itself
//! and hands it out incrementally.
//!
//! Epochs: the *group epoch* rises with every change of membership, subscription
//! or subscribed topics' metadata; the *target assignment* is computed by the
//! assignor for the group epoch (its epoch is the *assignment epoch*); each
//! member has a *member epoch*, the assignment epoch it has reconciled to.
//!
//! Reconciliation (Kafka's `CurrentAssignmentBuilder`): a member whose current
//! partitions are not all in its target first gets an assignment without them
//! (state `UnrevokedPartitions`, epoch unchanged) and must acknowledge, in a
//! heartbeat whose owned partitions no longer list them, that it revoked them;
//! then it moves to the assignment epoch and gets the target's partitions that
//! no other member still holds (`UnreleasedPartitions` until it has all of them,
//! then `Stable`). A partition therefore never has two owners: it is given to its
//! new owner only after its previous owner gave it up (or was fenced).
//!
//! Plain synchronous data like the classic `coordinator.rs`: callers pass the
//! current time and a view of the cluster's topics; the owning shard drives
//! `next_deadline` / `expire` and persists the group when `take_dirty` says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use regex::Regex;

use super::assignor::{self, Assignment, ASSIGNORS, UNIFORM};
use super::error::GroupError;
use crate::metadata::{ConsumerGroupMeta, StoredConsumerMember};

/// Broker settings of consumer-protocol groups (Kafka's `group.consumer.*`).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `group.consumer.session.timeout.ms`: a member silent this long is fenced.
    pub session_timeout: Duration,
    /// `group.consumer.heartbeat.interval.ms`, returned in every heartbeat.
    pub heartbeat_interval: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            session_timeout: Duration::from_millis(45_000),
            heartbeat_interval: Duration::from_millis(5_000),
        }
    }
}

/// What the coordinator needs to know about topics: partition counts by name,
/// and every name (for regex subscriptions).
pub trait TopicView {
    fn partitions(&self, topic: &str) -> Option<i32>;
    fn names(&self) -> Vec<String>;
    /// Changes whenever the set of topics may have changed, so that regexes
    /// are matched again only then.
    fn revision(&self) -> i64;
}

impl TopicView for crate::metadata::Cluster {
    fn partitions(&self, topic: &str) -> Option<i32> {
        self.topic(topic).map(|t| t.partitions)
    }
    fn names(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }
    fn revision(&self) -> i64 {
        self.revision
    }
}

impl TopicView for BTreeMap<String, i32> {
    fn partitions(&self, topic: &str) -> Option<i32> {
        self.get(topic).copied()
    }
    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
    fn revision(&self) -> i64 {
        self.len() as i64
    }
}

/// Where a member is in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// At the assignment epoch with every partition of its target.
    Stable,
    /// Must revoke `revoking` before it moves on.
    UnrevokedPartitions,
    /// At the assignment epoch, waiting for partitions other members still hold.
    UnreleasedPartitions,
}

impl MemberState {
    fn code(self) -> u8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }
    fn from_code(c: u8) -> Self {
        match c {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub rebalance_timeout_ms: i32,
    pub topic_names: Vec<String>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    /// Partitions the member may use now.
    pub assigned: Assignment,
    /// Partitions it must give up before it moves on.
    pub revoking: Assignment,
    /// A static member that left with epoch -2: its partitions stay reserved
    /// for the same instance id until its session ends.
    pub left: bool,
    /// Topics its regex matched when last resolved.
    regex_matches: BTreeSet<String>,
    compiled: Option<Regex>,
    session_deadline: Instant,
    revoke_deadline: Option<Instant>,
}

impl ConsumerMember {
    fn new(id: String, now: Instant, session: Duration) -> Self {
        ConsumerMember {
            id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            rebalance_timeout_ms: 300_000,
            topic_names: Vec::new(),
            regex: None,
            assignor: None,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            left: false,
            regex_matches: BTreeSet::new(),
            compiled: None,
            session_deadline: now + session,
            revoke_deadline: None,
        }
    }

    /// The topics the member subscribes to: its names and its regex's matches.
    pub fn subscription(&self) -> BTreeSet<String> {
        self.topic_names
            .iter()
            .cloned()
            .chain(self.regex_matches.iter().cloned())
            .collect()
    }
}

/// A ConsumerGroupHeartbeat, decoded; owned partitions by topic name (ids the
/// cluster does not know are left out by the handler).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatParams {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub topic_names: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatOk {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Present when the member must (re)learn its assignment.
    pub assignment: Option<Assignment>,
}

#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub assignment_epoch: i32,
    /// The assignor of the last target assignment.
    pub assignor: String,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// Partition counts of the subscribed topics when the group epoch was last set.
    subscribed: BTreeMap<String, i32>,
    /// group.instance.id -> member id.
    statics: HashMap<String, String>,
    /// The topic revision the members' regexes were last matched against.
    regex_revision: Option<i64>,
    dirty: bool,
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|bs| ps.is_subset(bs)))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|bs| !ps.is_disjoint(bs)))
}

fn normalize(mut a: Assignment) -> Assignment {
    a.retain(|_, ps| !ps.is_empty());
    a
}

impl ConsumerGroup {
    pub fn new(id: &str) -> Self {
        ConsumerGroup {
            id: id.to_string(),
            epoch: 0,
            assignment_epoch: 0,
            assignor: UNIFORM.to_string(),
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed: BTreeMap::new(),
            statics: HashMap::new(),
            regex_revision: None,
            dirty: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The state as ConsumerGroupDescribe and ListGroups name it.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The earliest time `expire` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.members
            .values()
            .flat_map(|m| std::iter::once(m.session_deadline).chain(m.revoke_deadline))
            .min()
    }

    /// Fences members whose session ended, or who did not revoke partitions
    /// within their rebalance timeout; their partitions go to the others.
    pub fn expire(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline <= now || m.revoke_deadline.is_some_and(|d| d <= now))
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id);
        }
        if !gone.is_empty() {
            self.bump_epoch();
            self.compute_target();
        }
    }

    fn bump_epoch(&mut self) {
        self.epoch += 1;
        self.dirty = true;
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(iid) = &m.instance_id {
                if self.statics.get(iid).is_some_and(|x| x == id) {
                    self.statics.remove(iid);
                }
            }
            self.target.remove(id);
            self.dirty = true;
        }
    }

    /// The assignor the group uses: the one most members ask for (ties by
    /// name), else `uniform`, Kafka's default.
    fn preferred_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(a, _)| a.to_string())
            .unwrap_or_else(|| UNIFORM.to_string())
    }

    /// Recomputes the target assignment for the group epoch.
    fn compute_target(&mut self) {
        let members: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| {
                let subs = m
                    .subscription()
                    .into_iter()
                    .filter(|t| self.subscribed.contains_key(t))
                    .collect();
                (m.id.clone(), subs)
            })
            .collect();
        self.assignor = self.preferred_assignor();
        let input = assignor::Input {
            members: &members,
            partitions: &self.subscribed,
            previous: &self.target,
        };
        self.target = assignor::assign(&self.assignor, &input)
            .into_iter()
            .map(|(m, a)| (m, normalize(a)))
            .collect();
        self.assignment_epoch = self.epoch;
        self.dirty = true;
    }

    /// Re-reads the partition counts of every subscribed topic, and matches the
    /// regexes again (every member's when the topics changed, else `member`'s, whose
    /// regex may be new); a change bumps the group epoch.
    fn refresh_subscribed(&mut self, topics: &dyn TopicView, member: &str) -> bool {
        let mut changed = false;
        let all = self.regex_revision != Some(topics.revision());
        self.regex_revision = Some(topics.revision());
        let mut names: Option<Vec<String>> = None;
        for m in self.members.values_mut() {
            if !all && m.id != member {
                continue;
            }
            let matches: BTreeSet<String> = match &m.compiled {
                Some(re) => names
                    .get_or_insert_with(|| topics.names())
                    .iter()
                    .filter(|t| re.is_match(t))
                    .cloned()
                    .collect(),
                None => BTreeSet::new(),
            };
            if matches != m.regex_matches {
                m.regex_matches = matches;
                changed = true;
            }
        }
        let mut subscribed = BTreeMap::new();
        for m in self.members.values() {
            for t in m.subscription() {
                if let Some(n) = topics.partitions(&t) {
                    subscribed.insert(t, n);
                }
            }
        }
        if subscribed != self.subscribed {
            self.subscribed = subscribed;
            changed = true;
        }
        changed
    }

    /// Every partition some member other than `except` holds or still has to revoke.
    fn held_by_others(&self, except: &str) -> Assignment {
        let mut held = Assignment::new();
        for m in self.members.values().filter(|m| m.id != except) {
            for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
                held.entry(t.clone())
                    .or_default()
                    .extend(ps.iter().copied());
            }
        }
        held
    }

    /// Moves `id` towards its target (KIP-848 reconciliation). `owned`: the
    /// partitions the member reported holding, when it reported them.
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) {
        let held = self.held_by_others(id);
        let target = self.target.get(id).cloned().unwrap_or_default();
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        if m.state == MemberState::UnrevokedPartitions {
            match owned {
                Some(o) if !intersects(o, &m.revoking) => {
                    m.revoking.clear();
                    m.revoke_deadline = None;
                    m.state = MemberState::Stable;
                }
                _ => return,
            }
        } else if m.state == MemberState::Stable && m.epoch == assignment_epoch {
            return;
        }
        let mut keep = Assignment::new();
        let mut revoke = Assignment::new();
        for (t, ps) in &m.assigned {
            let want = target.get(t);
            for &p in ps {
                if want.is_some_and(|w| w.contains(&p)) {
                    keep.entry(t.clone()).or_default().insert(p);
                } else {
                    revoke.entry(t.clone()).or_default().insert(p);
                }
            }
        }
        if !revoke.is_empty() {
            m.assigned = keep;
            m.revoking = revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revoke_deadline =
                Some(now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64));
            return;
        }
        let mut waiting = false;
        for (t, ps) in &target {
            for &p in ps {
                if keep.get(t).is_some_and(|k| k.contains(&p)) {
                    continue;
                }
                if held.get(t).is_some_and(|h| h.contains(&p)) {
                    waiting = true;
                } else {
                    keep.entry(t.clone()).or_default().insert(p);
                }
            }
        }
        m.assigned = keep;
        if m.epoch != assignment_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
        m.state = if waiting {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }

    /// Handles a ConsumerGroupHeartbeat.
    pub fn heartbeat(
        &mut self,
        p: HeartbeatParams,
        now: Instant,
        cfg: &ConsumerConfig,
        topics: &dyn TopicView,
    ) -> Result<HeartbeatOk, GroupError> {
        let interval = cfg.heartbeat_interval.as_millis() as i32;
        if p.member_epoch == -1 || p.member_epoch == -2 {
            return self.leave(p, now, cfg, interval);
        }
        if let Some(a) = &p.assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return Err(GroupError::UnsupportedAssignor(a.clone()));
            }
        }
        let compiled = match p.regex.as_deref() {
            Some(r) if !r.is_empty() => Some(
                Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| GroupError::InvalidRegularExpression(e.to_string()))?,
            ),
            _ => None,
        };
        let mut bump = false;
        // A static member's new process takes over without a rebalance; any
        // other join changes the membership and so the group epoch.
        let (id, joined) = if p.member_epoch == 0 {
            let (id, takeover) = self.join(&p, now, cfg)?;
            (id, !takeover)
        } else {
            self.check_epoch(&p)?;
            (p.member_id.clone(), false)
        };
        let m_before = self
            .members
            .get(&id)
            .map(|m| self.stored(m))
            .ok_or(GroupError::UnknownMemberId)?;
        let before = (m_before.member_epoch, m_before.assigned.clone());
        let Some(m) = self.members.get_mut(&id) else {
            return Err(GroupError::UnknownMemberId);
        };
        m.session_deadline = now + cfg.session_timeout;
        m.left = false;
        if p.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        }
        if p.rack_id.is_some() {
            m.rack_id = p.rack_id.clone().filter(|r| !r.is_empty());
        }
        if !p.client_id.is_empty() {
            m.client_id = p.client_id.clone();
        }
        if !p.client_host.is_empty() {
            m.client_host = p.client_host.clone();
        }
        if let Some(names) = &p.topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            if names != m.topic_names {
                m.topic_names = names;
                bump = true;
            }
        }
        if let Some(r) = &p.regex {
            let r = Some(r.clone()).filter(|r| !r.is_empty());
            if r != m.regex {
                m.regex = r;
                m.compiled = compiled;
                bump = true;
            }
        }
        if let Some(a) = &p.assignor {
            if m.assignor.as_ref() != Some(a) {
                m.assignor = Some(a.clone());
                bump = true;
            }
        }
        if joined {
            bump = true;
        }
        if self.refresh_subscribed(topics, &id) {
            bump = true;
        }
        if bump {
            self.bump_epoch();
        }
        if self.epoch > self.assignment_epoch {
            self.compute_target();
        }
        self.reconcile(&id, p.owned.as_ref(), now);
        let m = self.members.get(&id).ok_or(GroupError::UnknownMemberId)?;
        let changed = before != (m.epoch, m.assigned.clone());
        // Only what the store keeps marks the group dirty, not a session renewal.
        if self.stored(m) != m_before {
            self.dirty = true;
        }
        let send = p.owned.is_some() || p.member_epoch == 0 || changed;
        Ok(HeartbeatOk {
            member_id: id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment: send.then(|| m.assigned.clone()),
        })
    }

    /// A member joining (epoch 0): a new member, a member that was fenced and
    /// rejoins with its id (it starts over, without partitions), or a static
    /// member's new process taking over its instance id (the `bool`: true
    /// for such a takeover).
    fn join(
        &mut self,
        p: &HeartbeatParams,
        now: Instant,
        cfg: &ConsumerConfig,
    ) -> Result<(String, bool), GroupError> {
        if p.topic_names.is_none() && p.regex.is_none() {
            return Err(GroupError::InvalidRequest(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in the first request"
                    .into(),
            ));
        }
        let id = if p.member_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            p.member_id.clone()
        };
        if let Some(iid) = &p.instance_id {
            if let Some(old) = self.statics.get(iid).cloned() {
                if old != id {
                    let old_left = self.members.get(&old).is_some_and(|m| m.left);
                    if !old_left {
                        return Err(GroupError::UnreleasedInstanceId);
                    }
                    // The new process inherits the old one's epoch and partitions.
                    if let Some(mut m) = self.members.remove(&old) {
                        m.id = id.clone();
                        if let Some(t) = self.target.remove(&old) {
                            self.target.insert(id.clone(), t);
                        }
                        self.members.insert(id.clone(), m);
                    }
                    self.statics.insert(iid.clone(), id.clone());
                    self.dirty = true;
                    return Ok((id, true));
                }
            }
        }
        let mut m = ConsumerMember::new(id.clone(), now, cfg.session_timeout);
        if let Some(old) = self.members.get(&id) {
            // A rejoin after being fenced: the client dropped its partitions.
            m.instance_id = old.instance_id.clone();
        }
        if let Some(iid) = &p.instance_id {
            m.instance_id = Some(iid.clone());
            self.statics.insert(iid.clone(), id.clone());
        }
        self.members.insert(id.clone(), m);
        self.dirty = true;
        Ok((id, false))
    }

    /// Kafka's epoch rules: a member may be one epoch behind only if the
    /// previous heartbeat's answer was lost and it owns nothing it should not.
    fn check_epoch(&self, p: &HeartbeatParams) -> Result<(), GroupError> {
        if p.member_id.is_empty() {
            return Err(GroupError::InvalidRequest(
                "MemberId can't be empty.".into(),
            ));
        }
        let m = self
            .members
            .get(&p.member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if let Some(iid) = &p.instance_id {
            if self.statics.get(iid).is_some_and(|x| *x != p.member_id) {
                return Err(GroupError::FencedInstanceId);
            }
        }
        if p.member_epoch > m.epoch {
            return Err(GroupError::FencedMemberEpoch);
        }
        if p.member_epoch < m.epoch {
            let owned_ok = p.owned.as_ref().is_none_or(|o| is_subset(o, &m.assigned));
            if p.member_epoch != m.previous_epoch || !owned_ok {
                return Err(GroupError::FencedMemberEpoch);
            }
        }
        Ok(())
    }

    /// Epoch -1: the member leaves and its partitions are reassigned. Epoch -2:
    /// a static member leaves for a while; its partitions wait for its instance
    /// id until its session ends.
    fn leave(
        &mut self,
        p: HeartbeatParams,
        now: Instant,
        cfg: &ConsumerConfig,
        interval: i32,
    ) -> Result<HeartbeatOk, GroupError> {
        let id = match (&p.instance_id, p.member_id.is_empty()) {
            (Some(iid), true) => self
                .statics
                .get(iid)
                .cloned()
                .ok_or(GroupError::UnknownMemberId)?,
            _ => p.member_id.clone(),
        };
        if !self.members.contains_key(&id) {
            return Err(GroupError::UnknownMemberId);
        }
        if let Some(iid) = &p.instance_id {
            if self.statics.get(iid).is_some_and(|x| *x != id) {
                return Err(GroupError::FencedInstanceId);
            }
        }
        let is_static = self
            .members
            .get(&id)
            .is_some_and(|m| m.instance_id.is_some());
        if p.member_epoch == -2 && is_static {
            if let Some(m) = self.members.get_mut(&id) {
                m.left = true;
                m.session_deadline = now + cfg.session_timeout;
                m.revoke_deadline = None;
            }
            self.dirty = true;
        } else {
            self.remove_member(&id);
            self.bump_epoch();
            self.compute_target();
        }
        Ok(HeartbeatOk {
            member_id: id,
            member_epoch: p.member_epoch,
            heartbeat_interval_ms: interval,
            assignment: None,
        })
    }

    /// Checks an OffsetCommit (or an OffsetFetch with a member) of this group:
    /// from outside the group (epoch < 0, no member) only while it has no
    /// members; otherwise the member must exist and be at the given epoch.
    pub fn validate_offsets(&self, member_id: &str, epoch: i32) -> Result<(), GroupError> {
        if epoch < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        let m = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if epoch != m.epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Every topic some member subscribes to (OffsetDelete refuses to delete
    /// offsets of those while the group has members).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscription())
            .collect()
    }

    /// The persisted form.
    pub fn to_meta(&self) -> ConsumerGroupMeta {
        ConsumerGroupMeta {
            group_epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
            subscribed: self.subscribed.clone(),
            members: self.members.values().map(|m| self.stored(m)).collect(),
        }
    }

    fn stored(&self, m: &ConsumerMember) -> StoredConsumerMember {
        StoredConsumerMember {
            member_id: m.id.clone(),
            instance_id: m.instance_id.clone(),
            rack_id: m.rack_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            member_epoch: m.epoch,
            previous_member_epoch: m.previous_epoch,
            state: m.state.code(),
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            topic_names: m.topic_names.clone(),
            regex: m.regex.clone(),
            assignor: m.assignor.clone(),
            assigned: m.assigned.clone(),
            revoking: m.revoking.clone(),
            target: self.target.get(&m.id).cloned().unwrap_or_default(),
            left: m.left,
            regex_matches: m.regex_matches.iter().cloned().collect(),
        }
    }

    /// Rebuilds the group on a new coordinator (restart or failover). Members keep
    /// their epochs and partitions; their sessions start again, so members that
    /// are still alive carry on with their next heartbeat.
    pub fn from_meta(
        id: &str,
        meta: ConsumerGroupMeta,
        now: Instant,
        cfg: &ConsumerConfig,
    ) -> Self {
        let mut g = ConsumerGroup::new(id);
        g.epoch = meta.group_epoch;
        g.assignment_epoch = meta.assignment_epoch;
        g.assignor = if meta.assignor.is_empty() {
            UNIFORM.to_string()
        } else {
            meta.assignor
        };
        g.subscribed = meta.subscribed;
        for s in meta.members {
            let mut m = ConsumerMember::new(s.member_id.clone(), now, cfg.session_timeout);
            m.instance_id = s.instance_id;
            m.rack_id = s.rack_id;
            m.client_id = s.client_id;
            m.client_host = s.client_host;
            m.epoch = s.member_epoch;
            m.previous_epoch = s.previous_member_epoch;
            m.state = MemberState::from_code(s.state);
            m.rebalance_timeout_ms = s.rebalance_timeout_ms;
            m.topic_names = s.topic_names;
            m.compiled = s
                .regex
                .as_deref()
                .and_then(|r| Regex::new(&format!("^(?:{r})$")).ok());
            m.regex = s.regex;
            m.assignor = s.assignor;
            m.assigned = s.assigned;
            m.revoking = s.revoking;
            m.left = s.left;
            m.regex_matches = s.regex_matches.into_iter().collect();
            if m.state == MemberState::UnrevokedPartitions {
                m.revoke_deadline =
                    Some(now + Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64));
            }
            if let Some(iid) = &m.instance_id {
                g.statics.insert(iid.clone(), m.id.clone());
            }
            g.target.insert(m.id.clone(), s.target);
            g.members.insert(m.id.clone(), m);
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(ts: &[(&str, i32)]) -> BTreeMap<String, i32> {
        ts.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn asg(parts: &[(&str, &[i32])]) -> Assignment {
        parts
            .iter()
            .filter(|(_, ps)| !ps.is_empty())
            .map(|(t, ps)| (t.to_string(), ps.iter().copied().collect()))
            .collect()
    }

    fn join(id: &str, names: &[&str]) -> HeartbeatParams {
        HeartbeatParams {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            topic_names: Some(names.iter().map(|s| s.to_string()).collect()),
            owned: Some(Assignment::new()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            ..Default::default()
        }
    }

    fn hb(id: &str, epoch: i32, owned: Option<Assignment>) -> HeartbeatParams {
        HeartbeatParams {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned,
            ..Default::default()
        }
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(|p| p.len()).sum()
    }

    /// Every partition is held (assigned or being revoked) by at most one member.
    fn no_double_owner(g: &ConsumerGroup) {
        let mut seen = BTreeSet::new();
        for m in g.members.values() {
            for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
                for p in ps {
                    assert!(seen.insert((t.clone(), *p)), "{t}-{p} owned twice");
                }
            }
        }
    }

    fn cfg() -> ConsumerConfig {
        ConsumerConfig::default()
    }

    #[test]
    fn a_lone_member_gets_every_partition_at_epoch_1() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 6)]);
        let now = Instant::now();
        let ok = g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        assert_eq!(ok.member_epoch, 1);
        assert_eq!(ok.heartbeat_interval_ms, 5000);
        assert_eq!(count(ok.assignment.as_ref().unwrap()), 6);
        assert_eq!(g.state_name(), "Stable");
        // A steady heartbeat carries no assignment.
        let ok = g.heartbeat(hb("a", 1, None), now, &cfg(), &t).unwrap();
        assert_eq!(ok.assignment, None);
        assert_eq!(ok.member_epoch, 1);
    }

    #[test]
    fn a_new_member_gets_partitions_only_after_the_old_owner_revoked_them() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 6)]);
        let now = Instant::now();
        let a1 = g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        let a_all = a1.assignment.unwrap();
        let b1 = g.heartbeat(join("b", &["t"]), now, &cfg(), &t).unwrap();
        // b is at the new epoch but gets nothing yet: a still holds everything.
        assert_eq!(b1.member_epoch, 2);
        assert_eq!(count(b1.assignment.as_ref().unwrap()), 0);
        assert_eq!(g.state_name(), "Reconciling");
        no_double_owner(&g);
        // a is told to keep three partitions (revoke the rest), epoch unchanged.
        let a2 = g.heartbeat(hb("a", 1, None), now, &cfg(), &t).unwrap();
        assert_eq!(a2.member_epoch, 1);
        let a_keep = a2.assignment.unwrap();
        assert_eq!(count(&a_keep), 3);
        assert!(is_subset(&a_keep, &a_all));
        // b still waits while a has not acknowledged.
        let b2 = g.heartbeat(hb("b", 2, None), now, &cfg(), &t).unwrap();
        assert_eq!(b2.assignment, None);
        no_double_owner(&g);
        // a acknowledges by reporting what it owns: it moves to epoch 2.
        let a3 = g
            .heartbeat(hb("a", 1, Some(a_keep.clone())), now, &cfg(), &t)
            .unwrap();
        assert_eq!(a3.member_epoch, 2);
        assert_eq!(a3.assignment.unwrap(), a_keep);
        // Now b gets the three released partitions.
        let b3 = g.heartbeat(hb("b", 2, None), now, &cfg(), &t).unwrap();
        let b_parts = b3.assignment.unwrap();
        assert_eq!(count(&b_parts), 3);
        assert!(!intersects(&b_parts, &a_keep));
        assert_eq!(g.state_name(), "Stable");
        no_double_owner(&g);
    }

    #[test]
    fn a_member_still_listing_revoked_partitions_does_not_advance() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 4)]);
        let now = Instant::now();
        let all = g
            .heartbeat(join("a", &["t"]), now, &cfg(), &t)
            .unwrap()
            .assignment
            .unwrap();
        g.heartbeat(join("b", &["t"]), now, &cfg(), &t).unwrap();
        g.heartbeat(hb("a", 1, None), now, &cfg(), &t).unwrap();
        let still = g.heartbeat(hb("a", 1, Some(all)), now, &cfg(), &t).unwrap();
        assert_eq!(still.member_epoch, 1);
        assert_eq!(g.members["a"].state, MemberState::UnrevokedPartitions);
        no_double_owner(&g);
    }

    #[test]
    fn leaving_gives_partitions_to_the_others() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 4)]);
        let now = Instant::now();
        g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        let a = g.heartbeat(hb("a", 1, None), now, &cfg(), &t).unwrap();
        assert_eq!(a.member_epoch, 1);
        g.heartbeat(join("b", &["t"]), now, &cfg(), &t).unwrap();
        let keep = g
            .heartbeat(hb("a", 1, None), now, &cfg(), &t)
            .unwrap()
            .assignment
            .unwrap();
        g.heartbeat(hb("a", 1, Some(keep)), now, &cfg(), &t)
            .unwrap();
        let b = g.heartbeat(hb("b", 2, None), now, &cfg(), &t).unwrap();
        assert_eq!(count(b.assignment.as_ref().unwrap()), 2);
        let left = g.heartbeat(hb("a", -1, None), now, &cfg(), &t).unwrap();
        assert_eq!(left.member_epoch, -1);
        assert!(!g.members.contains_key("a"));
        // Epochs: a joins (1), b joins (2), a leaves (3).
        let b = g.heartbeat(hb("b", 2, None), now, &cfg(), &t).unwrap();
        assert_eq!(b.member_epoch, 3);
        assert_eq!(count(b.assignment.as_ref().unwrap()), 4);
    }

    #[test]
    fn session_expiry_fences_the_member_and_frees_its_partitions() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 2)]);
        let now = Instant::now();
        g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        let later = now + Duration::from_secs(30);
        g.heartbeat(join("b", &["t"]), later, &cfg(), &t).unwrap();
        assert_eq!(g.next_deadline(), Some(now + Duration::from_secs(45)));
        g.expire(now + Duration::from_secs(46));
        assert!(!g.members.contains_key("a"));
        assert_eq!(
            g.heartbeat(hb("a", 1, None), later, &cfg(), &t),
            Err(GroupError::UnknownMemberId)
        );
        let b = g.heartbeat(hb("b", 2, None), later, &cfg(), &t).unwrap();
        assert_eq!(count(b.assignment.as_ref().unwrap()), 2);
    }

    #[test]
    fn not_revoking_within_the_rebalance_timeout_fences() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 2)]);
        let now = Instant::now();
        g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        g.heartbeat(join("b", &["t"]), now, &cfg(), &t).unwrap();
        g.heartbeat(hb("a", 1, None), now, &cfg(), &t).unwrap();
        assert_eq!(g.members["a"].state, MemberState::UnrevokedPartitions);
        g.expire(now + Duration::from_secs(31));
        assert!(!g.members.contains_key("a"));
    }

    #[test]
    fn epochs_ahead_or_too_far_behind_are_fenced() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 2)]);
        let now = Instant::now();
        g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        assert_eq!(
            g.heartbeat(hb("a", 5, None), now, &cfg(), &t),
            Err(GroupError::FencedMemberEpoch)
        );
        let all = asg(&[("t", &[0, 1])]);
        g.heartbeat(join("b", &["t"]), now, &cfg(), &t).unwrap();
        let keep = g
            .heartbeat(hb("a", 1, None), now, &cfg(), &t)
            .unwrap()
            .assignment
            .unwrap();
        assert_eq!(count(&keep), 1);
        let moved = g
            .heartbeat(hb("a", 1, Some(keep.clone())), now, &cfg(), &t)
            .unwrap();
        assert_eq!(moved.member_epoch, 2);
        // The answer was lost: one epoch behind, owning nothing it should not, is fine.
        let again = g
            .heartbeat(hb("a", 1, Some(keep)), now, &cfg(), &t)
            .unwrap();
        assert_eq!(again.member_epoch, 2);
        // One behind but still owning what it gave up: fenced.
        assert_eq!(
            g.heartbeat(hb("a", 1, Some(all)), now, &cfg(), &t),
            Err(GroupError::FencedMemberEpoch)
        );
        // Two behind: fenced.
        g.heartbeat(join("c", &["t"]), now, &cfg(), &t).unwrap();
        g.heartbeat(hb("a", 2, None), now, &cfg(), &t).unwrap();
        let owned = g.members["a"].assigned.clone();
        g.heartbeat(hb("a", 2, Some(owned)), now, &cfg(), &t)
            .unwrap();
        assert_eq!(g.members["a"].epoch, 3);
        assert_eq!(
            g.heartbeat(hb("a", 1, None), now, &cfg(), &t),
            Err(GroupError::FencedMemberEpoch)
        );
        // A rejoin with epoch 0 and the same id starts over, with no partitions
        // carried from before, at a new group epoch.
        let epoch = g.epoch;
        let rejoined = g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        assert_eq!(rejoined.member_epoch, epoch + 1);
        no_double_owner(&g);
    }

    #[test]
    fn unknown_assignor_and_bad_regex_are_refused() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 2)]);
        let now = Instant::now();
        let mut p = join("a", &["t"]);
        p.assignor = Some("sticky".into());
        assert!(matches!(
            g.heartbeat(p, now, &cfg(), &t),
            Err(GroupError::UnsupportedAssignor(_))
        ));
        let mut p = join("a", &[]);
        p.topic_names = None;
        p.regex = Some("(".into());
        assert!(matches!(
            g.heartbeat(p, now, &cfg(), &t),
            Err(GroupError::InvalidRegularExpression(_))
        ));
        let mut p = join("a", &[]);
        p.topic_names = None;
        assert!(matches!(
            g.heartbeat(p, now, &cfg(), &t),
            Err(GroupError::InvalidRequest(_))
        ));
    }

    #[test]
    fn range_assignor_when_members_ask_for_it() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 4)]);
        let now = Instant::now();
        let mut p = join("a", &["t"]);
        p.assignor = Some("range".into());
        g.heartbeat(p, now, &cfg(), &t).unwrap();
        assert_eq!(g.assignor, "range");
        assert_eq!(g.target["a"], asg(&[("t", &[0, 1, 2, 3])]));
    }

    #[test]
    fn regex_subscription_follows_new_topics() {
        let mut g = ConsumerGroup::new("g");
        let mut t = topics(&[("orders-1", 1), ("other", 1)]);
        let now = Instant::now();
        let mut p = join("a", &[]);
        p.topic_names = None;
        p.regex = Some("orders-.*".into());
        let ok = g.heartbeat(p, now, &cfg(), &t).unwrap();
        assert_eq!(ok.assignment.unwrap(), asg(&[("orders-1", &[0])]));
        t.insert("orders-2".into(), 2);
        let ok = g
            .heartbeat(hb(&ok.member_id, 1, None), now, &cfg(), &t)
            .unwrap();
        assert_eq!(ok.member_epoch, 2);
        assert_eq!(
            ok.assignment.unwrap(),
            asg(&[("orders-1", &[0]), ("orders-2", &[0, 1])])
        );
    }

    #[test]
    fn new_partitions_bump_the_group_epoch() {
        let mut g = ConsumerGroup::new("g");
        let mut t = topics(&[("t", 1)]);
        let now = Instant::now();
        g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        t.insert("t".into(), 3);
        let ok = g.heartbeat(hb("a", 1, None), now, &cfg(), &t).unwrap();
        assert_eq!(ok.member_epoch, 2);
        assert_eq!(ok.assignment.unwrap(), asg(&[("t", &[0, 1, 2])]));
    }

    #[test]
    fn static_member_leaving_keeps_its_partitions_for_its_next_process() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 2)]);
        let now = Instant::now();
        let mut p = join("a", &["t"]);
        p.instance_id = Some("i1".into());
        let a = g.heartbeat(p, now, &cfg(), &t).unwrap();
        let mut leave = hb("a", -2, None);
        leave.instance_id = Some("i1".into());
        assert_eq!(
            g.heartbeat(leave, now, &cfg(), &t).unwrap().member_epoch,
            -2
        );
        assert_eq!(g.epoch, 1, "no rebalance for a static member's restart");
        let mut p = join("a2", &["t"]);
        p.instance_id = Some("i1".into());
        let back = g.heartbeat(p, now, &cfg(), &t).unwrap();
        assert_eq!(back.member_epoch, a.member_epoch);
        assert_eq!(back.assignment, a.assignment);
        // While a2 is active, another process with the same instance id is refused.
        let mut p = join("a3", &["t"]);
        p.instance_id = Some("i1".into());
        assert_eq!(
            g.heartbeat(p, now, &cfg(), &t),
            Err(GroupError::UnreleasedInstanceId)
        );
    }

    #[test]
    fn offsets_need_the_members_current_epoch() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 2)]);
        let now = Instant::now();
        assert_eq!(g.validate_offsets("", -1), Ok(()));
        g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        assert_eq!(g.validate_offsets("a", 1), Ok(()));
        assert_eq!(
            g.validate_offsets("a", 0),
            Err(GroupError::StaleMemberEpoch)
        );
        assert_eq!(g.validate_offsets("x", 1), Err(GroupError::UnknownMemberId));
        assert_eq!(g.validate_offsets("", -1), Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn stored_form_round_trips() {
        let mut g = ConsumerGroup::new("g");
        let t = topics(&[("t", 4)]);
        let now = Instant::now();
        g.heartbeat(join("a", &["t"]), now, &cfg(), &t).unwrap();
        g.heartbeat(join("b", &["t"]), now, &cfg(), &t).unwrap();
        g.heartbeat(hb("a", 1, None), now, &cfg(), &t).unwrap();
        let back = ConsumerGroup::from_meta("g", g.to_meta(), now, &cfg());
        assert_eq!(back.to_meta(), g.to_meta());
        assert_eq!(back.members["a"].state, MemberState::UnrevokedPartitions);
    }
}
