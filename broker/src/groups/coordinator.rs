//! The classic group state machine, as Apache Kafka's GroupCoordinator runs it:
//!
//! ```text
//!            join                     all joined / rebalance timeout
//!   Empty ─────────► PreparingRebalance ───────────────────────────► CompletingRebalance
//!     ▲                  ▲        │ (no member left)                   │ leader's SyncGroup
//!     └──────────────────┼────────┘                                    ▼
//!                        └──── join, leave, session expiry ──────── Stable
//! ```
//!
//! It is plain data and synchronous: callers pass the current time, and replies that
//! have to wait for other members (JoinGroup until the rebalance completes, a
//! follower's SyncGroup until the leader's) are oneshot channels the state machine
//! answers later. The owning shard drives the timers from `next_deadline` and
//! `expire`, and persists the group when `take_dirty` says so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;

use super::error::GroupError;
use crate::metadata::{GroupMeta, StoredMember};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The state's name as DescribeGroups and ListGroups report it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Groups of the consumer protocol (KIP-848).
    pub consumer: super::consumer::ConsumerConfig,
}

/// A JoinGroup request, decoded and version-normalised.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinOk {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member's subscription for the chosen protocol.
    pub members: Vec<JoinMember>,
    /// A static leader rejoining a stable group keeps the current assignment (KIP-814).
    pub skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncOk {
    pub protocol_type: String,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

pub type JoinResult = Result<JoinOk, GroupError>;
pub type SyncResult = Result<SyncOk, GroupError>;

/// An answer now, or a channel the state machine answers once other members act.
pub enum Reply<T> {
    Now(Result<T, GroupError>),
    Later(oneshot::Receiver<Result<T, GroupError>>),
}

impl<T> Reply<T> {
    pub async fn wait(self) -> Result<T, GroupError> {
        match self {
            Reply::Now(r) => r,
            // The waiter was replaced by a newer request of the same member.
            Reply::Later(rx) => rx.await.unwrap_or(Err(GroupError::RebalanceInProgress)),
        }
    }
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Join order, so that the first member becomes leader and ties break stably.
    order: u64,
    session_deadline: Instant,
    awaiting_join: Option<oneshot::Sender<JoinResult>>,
    awaiting_sync: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub(crate) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Members waiting on the coordinator are kept alive: the wait is the
    /// coordinator's doing, not a sign the client is gone.
    fn expired(&self, now: Instant) -> bool {
        self.awaiting_join.is_none() && self.awaiting_sync.is_none() && self.session_deadline <= now
    }
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: HashMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pending: HashMap<String, Instant>,
    /// group.instance.id -> member id of the static member holding it.
    statics: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    initial_delay_until: Option<Instant>,
    next_order: u64,
    dirty: bool,
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Group {
    pub fn new(id: &str) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            next_order: 0,
            dirty: false,
        }
    }

    /// Rebuilds a group after a restart. Dynamic members are forgotten (their clients
    /// get UNKNOWN_MEMBER_ID and rejoin); static members keep their ids and
    /// assignments, so they carry on without a rebalance when they are the whole group.
    pub fn from_stored(id: &str, meta: GroupMeta, now: Instant) -> Self {
        let mut g = Group::new(id);
        g.generation = meta.generation;
        g.protocol_type = Some(meta.protocol_type).filter(|t| !t.is_empty());
        let had_dynamic = meta.members.iter().any(|m| m.instance_id.is_none());
        for m in meta.members {
            let Some(iid) = m.instance_id.clone() else {
                continue;
            };
            let session = Duration::from_millis(m.session_timeout_ms.max(0) as u64);
            let protocols = match &meta.protocol {
                Some(p) => vec![(p.clone(), Bytes::from(m.subscription))],
                None => Vec::new(),
            };
            g.statics.insert(iid, m.member_id.clone());
            g.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: session,
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    protocols,
                    assignment: Bytes::from(m.assignment),
                    order: g.next_order,
                    session_deadline: now + session,
                    awaiting_join: None,
                    awaiting_sync: None,
                },
            );
            g.next_order += 1;
        }
        if g.members.is_empty() || meta.protocol.is_none() {
            g.members.clear();
            g.statics.clear();
            return g;
        }
        g.protocol = meta.protocol;
        g.leader = meta.leader.filter(|l| g.members.contains_key(l));
        if g.leader.is_none() {
            g.leader = g.first_member();
        }
        g.state = GroupState::Stable;
        if had_dynamic {
            // The static members' assignment no longer covers what the forgotten
            // members owned: everyone has to rejoin.
            g.prepare_rebalance(now, Duration::ZERO);
        }
        g
    }

    /// The persisted form of the group.
    pub fn to_meta(&self) -> GroupMeta {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.order);
        GroupMeta {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: members
                .into_iter()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    subscription: self
                        .protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p).to_vec())
                        .unwrap_or_default(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
            consumer: None,
        }
    }

    /// Whether the persisted form changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    fn first_member(&self) -> Option<String> {
        self.members
            .values()
            .min_by_key(|m| m.order)
            .map(|m| m.id.clone())
    }

    /// The earliest time `expire` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .map(|m| m.session_deadline);
        let rebalance = match self.state {
            GroupState::PreparingRebalance => self
                .initial_delay_until
                .into_iter()
                .chain(self.rebalance_deadline)
                .min(),
            _ => None,
        };
        sessions
            .chain(self.pending.values().copied())
            .chain(rebalance)
            .min()
    }

    fn check_session(&self, p: &JoinParams, cfg: &GroupConfig) -> Result<(), GroupError> {
        if p.session_timeout_ms < cfg.min_session_timeout_ms
            || p.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        Ok(())
    }

    /// Whether a member with these protocols can be in the group: same protocol
    /// type, and one protocol every other member supports too.
    fn supports(&self, p: &JoinParams) -> bool {
        if p.protocol_type.is_empty() || p.protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.id != p.member_id)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(p.protocol_type.as_str()) {
            return false;
        }
        p.protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Kafka's protocol selection: among the protocols every member supports, each
    /// member votes for the first in its own preference order; most votes win, ties
    /// going to the earliest member's preference.
    pub fn select_protocol(&self) -> Option<String> {
        let mut members: Vec<&Member> = self.members.values().collect();
        members.sort_by_key(|m| m.order);
        let first = members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| {
                members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == n))
            })
            .collect();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in &members {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for c in candidates {
            let v = votes.get(c).copied().unwrap_or(0);
            if best.is_none_or(|(_, bv)| v > bv) {
                best = Some((c, v));
            }
        }
        best.map(|(c, _)| c.to_string())
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Handles a JoinGroup.
    pub fn join(&mut self, p: JoinParams, now: Instant, cfg: &GroupConfig) -> Reply<JoinOk> {
        if let Err(e) = self.check_session(&p, cfg) {
            return Reply::Now(Err(e));
        }
        if !self.supports(&p) {
            return Reply::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        if p.member_id.is_empty() {
            if let Some(iid) = p.instance_id.clone() {
                if let Some(old) = self.statics.get(&iid).cloned() {
                    return self.replace_static(old, p, now, cfg);
                }
                let id = new_member_id(&iid);
                return self.add_member(id, p, now, cfg);
            }
            let id = new_member_id(if p.client_id.is_empty() {
                "member"
            } else {
                &p.client_id
            });
            if p.require_known_member_id {
                self.pending.insert(
                    id.clone(),
                    now + Duration::from_millis(p.session_timeout_ms as u64),
                );
                return Reply::Now(Err(GroupError::MemberIdRequired(id)));
            }
            return self.add_member(id, p, now, cfg);
        }
        if let Some(iid) = &p.instance_id {
            if self.statics.get(iid).is_some_and(|m| *m != p.member_id) {
                return Reply::Now(Err(GroupError::FencedInstanceId));
            }
        }
        if self.pending.remove(&p.member_id).is_some() {
            return self.add_member(p.member_id.clone(), p, now, cfg);
        }
        let Some(member) = self.members.get(&p.member_id) else {
            return Reply::Now(Err(GroupError::UnknownMemberId));
        };
        let unchanged = member.same_protocols(&p.protocols);
        let is_leader = self.leader.as_deref() == Some(p.member_id.as_str());
        match self.state {
            GroupState::CompletingRebalance if unchanged => {
                // A retried join of this generation: answer it again.
                Reply::Now(Ok(self.join_ok(&p.member_id, is_leader, false)))
            }
            GroupState::Stable if unchanged && !is_leader => {
                self.touch(&p.member_id, now);
                Reply::Now(Ok(self.join_ok(&p.member_id, false, false)))
            }
            _ => {
                let id = p.member_id.clone();
                self.update_member(&id, p);
                if self.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(now, cfg.initial_rebalance_delay);
                }
                let rx = self.await_join(&id);
                self.maybe_complete_join(now);
                Reply::Later(rx)
            }
        }
    }

    fn update_member(&mut self, id: &str, p: JoinParams) {
        if let Some(m) = self.members.get_mut(id) {
            m.rebalance_timeout = rebalance_timeout(&p);
            m.session_timeout = Duration::from_millis(p.session_timeout_ms as u64);
            m.protocols = p.protocols;
            m.client_id = p.client_id;
            m.client_host = p.client_host;
        }
    }

    fn await_join(&mut self, id: &str) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(id) {
            m.awaiting_join = Some(tx);
        }
        rx
    }

    fn touch(&mut self, id: &str, now: Instant) {
        if let Some(m) = self.members.get_mut(id) {
            m.session_deadline = now + m.session_timeout;
        }
    }

    fn join_ok(&self, member_id: &str, with_members: bool, skip_assignment: bool) -> JoinOk {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if with_members {
            let mut ms: Vec<&Member> = self.members.values().collect();
            ms.sort_by_key(|m| m.order);
            ms.into_iter()
                .map(|m| JoinMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOk {
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment,
        }
    }

    fn add_member(
        &mut self,
        id: String,
        p: JoinParams,
        now: Instant,
        cfg: &GroupConfig,
    ) -> Reply<JoinOk> {
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        if let Some(iid) = &p.instance_id {
            self.statics.insert(iid.clone(), id.clone());
        }
        let session = Duration::from_millis(p.session_timeout_ms as u64);
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: p.instance_id.clone(),
                client_id: p.client_id.clone(),
                client_host: p.client_host.clone(),
                session_timeout: session,
                rebalance_timeout: rebalance_timeout(&p),
                protocols: p.protocols,
                assignment: Bytes::new(),
                order: self.next_order,
                session_deadline: now + session,
                awaiting_join: None,
                awaiting_sync: None,
            },
        );
        self.next_order += 1;
        self.dirty = true;
        match self.state {
            GroupState::PreparingRebalance => {
                // Kafka's initial delay: each new member of a group that was empty
                // pushes the end of the wait, up to the rebalance timeout.
                if self.initial_delay_until.is_some() {
                    let until = now + cfg.initial_rebalance_delay;
                    self.initial_delay_until = Some(match self.rebalance_deadline {
                        Some(d) => until.min(d),
                        None => until,
                    });
                }
            }
            _ => self.prepare_rebalance(now, cfg.initial_rebalance_delay),
        }
        let rx = self.await_join(&id);
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    /// A static member came back with a new process (empty member id, known
    /// instance id): the new member id replaces the old one, which is fenced.
    fn replace_static(
        &mut self,
        old: String,
        p: JoinParams,
        now: Instant,
        cfg: &GroupConfig,
    ) -> Reply<JoinOk> {
        let Some(iid) = p.instance_id.clone() else {
            return Reply::Now(Err(GroupError::UnknownMemberId));
        };
        let Some(mut m) = self.members.remove(&old) else {
            self.statics.remove(&iid);
            return self.add_member(new_member_id(&iid), p, now, cfg);
        };
        if let Some(tx) = m.awaiting_join.take() {
            let _ = tx.send(Err(GroupError::FencedInstanceId));
        }
        if let Some(tx) = m.awaiting_sync.take() {
            let _ = tx.send(Err(GroupError::FencedInstanceId));
        }
        let id = new_member_id(&iid);
        m.id = id.clone();
        m.session_deadline = now + Duration::from_millis(p.session_timeout_ms as u64);
        self.members.insert(id.clone(), m);
        self.statics.insert(iid, id.clone());
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(id.clone());
        }
        self.update_member(&id, p);
        self.dirty = true;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol {
            // Same protocol next generation: no rebalance, the member keeps its
            // assignment (SyncGroup hands it out again).
            return Reply::Now(Ok(self.join_ok(&id, is_leader, is_leader)));
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, cfg.initial_rebalance_delay);
        }
        let rx = self.await_join(&id);
        self.maybe_complete_join(now);
        Reply::Later(rx)
    }

    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        self.initial_delay_until = if self.state == GroupState::Empty && !initial_delay.is_zero() {
            Some(now + initial_delay)
        } else {
            None
        };
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + self.max_rebalance_timeout());
        if let Some(d) = self.initial_delay_until {
            self.initial_delay_until = self.rebalance_deadline.map(|r| r.min(d));
        }
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay_until.is_some_and(|t| now < t) {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some());
        let timed_out = self.rebalance_deadline.is_some_and(|d| d <= now);
        if all_joined || timed_out {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending.clear();
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        self.dirty = true;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.first_member();
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let ok = self.join_ok(&id, is_leader, false);
            if let Some(m) = self.members.get_mut(&id) {
                m.assignment = Bytes::new();
                m.session_deadline = now + m.session_timeout;
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(Ok(ok));
                }
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(iid) = &m.instance_id {
                if self.statics.get(iid).is_some_and(|x| x == id) {
                    self.statics.remove(iid);
                }
            }
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(Err(GroupError::UnknownMemberId));
            }
            if self.leader.as_deref() == Some(id) {
                self.leader = None;
            }
            self.dirty = true;
        }
    }

    /// After members went away: the rest must rebalance (or the rebalance in
    /// progress may now be complete).
    fn after_removal(&mut self, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, Duration::ZERO)
            }
            GroupState::PreparingRebalance | GroupState::Empty => {}
        }
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now);
        }
    }

    /// Common checks of SyncGroup, Heartbeat and OffsetCommit: the member exists,
    /// is not fenced, and is in the current generation.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if let Some(iid) = instance_id {
            if self.statics.get(iid).is_some_and(|m| m != member_id) {
                return Err(GroupError::FencedInstanceId);
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles a SyncGroup. `protocol_type` and `protocol_name` are checked when
    /// the client sends them (v5+).
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Reply<SyncOk> {
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Reply::Now(Err(e));
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return Reply::Now(Err(GroupError::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::Empty => Reply::Now(Err(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => Reply::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::Stable => {
                self.touch(member_id, now);
                let assignment = self
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Reply::Now(Ok(self.sync_ok(assignment)))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = Some(tx);
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                    let (ptype, pname) = (
                        self.protocol_type.clone().unwrap_or_default(),
                        self.protocol.clone(),
                    );
                    let sync_ok = |a: Bytes| SyncOk {
                        protocol_type: ptype.clone(),
                        protocol_name: pname.clone(),
                        assignment: a,
                    };
                    let mut answers = Vec::new();
                    for m in self.members.values_mut() {
                        m.assignment = by_member.remove(&m.id).unwrap_or_default();
                        m.session_deadline = now + m.session_timeout;
                        if let Some(tx) = m.awaiting_sync.take() {
                            answers.push((tx, m.assignment.clone()));
                        }
                    }
                    let answers: Vec<_> = answers
                        .into_iter()
                        .map(|(tx, a)| (tx, sync_ok(a)))
                        .collect();
                    for (tx, ok) in answers {
                        let _ = tx.send(Ok(ok));
                    }
                    self.state = GroupState::Stable;
                    self.dirty = true;
                }
                Reply::Later(rx)
            }
        }
    }

    fn sync_ok(&self, assignment: Bytes) -> SyncOk {
        SyncOk {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    /// Handles a Heartbeat: keeps the member's session alive and tells it whether
    /// to rejoin.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, instance_id, generation)?;
        self.touch(member_id, now);
        match self.state {
            GroupState::Empty => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// Handles a LeaveGroup of one or more members (batch from v3); one result per
    /// member, in order.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now: Instant,
    ) -> Vec<Result<(), GroupError>> {
        let mut removed = false;
        let results = leaving
            .iter()
            .map(|(member_id, instance_id)| {
                let id = match (member_id.is_empty(), instance_id) {
                    (true, Some(iid)) => match self.statics.get(iid) {
                        Some(m) => m.clone(),
                        None => return Err(GroupError::UnknownMemberId),
                    },
                    _ => member_id.clone(),
                };
                if let Some(iid) = instance_id {
                    if self.statics.get(iid).is_some_and(|m| *m != id) {
                        return Err(GroupError::FencedInstanceId);
                    }
                }
                if self.pending.remove(&id).is_some() {
                    return Ok(());
                }
                if !self.members.contains_key(&id) {
                    return Err(GroupError::UnknownMemberId);
                }
                self.remove_member(&id);
                removed = true;
                Ok(())
            })
            .collect();
        if removed {
            self.after_removal(now);
        } else {
            self.maybe_complete_join(now);
        }
        results
    }

    /// Checks an OffsetCommit against the group, and counts it as a heartbeat.
    /// A commit without member id and generation (-1) comes from a consumer that
    /// assigns partitions itself; it is allowed while the group has no members.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), GroupError> {
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.check_member(member_id, instance_id, generation)?;
            if self.state == GroupState::CompletingRebalance {
                return Err(GroupError::RebalanceInProgress);
            }
            self.touch(member_id, now);
            Ok(())
        } else if !self.members.is_empty() {
            Err(GroupError::UnknownMemberId)
        } else {
            Ok(())
        }
    }

    /// Answers every waiting JoinGroup and SyncGroup with `err`, so that clients go
    /// and find the coordinator again instead of waiting on a broker that stops.
    pub fn release_waiters(&mut self, err: GroupError) {
        for m in self.members.values_mut() {
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(Err(err.clone()));
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(Err(err.clone()));
            }
        }
    }

    /// Acts on every deadline that has passed: expired sessions, pending member
    /// ids never used, the end of the initial delay or of the rebalance timeout.
    pub fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, d| *d > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.expired(now))
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id);
        }
        if !expired.is_empty() {
            self.after_removal(now);
        } else {
            self.maybe_complete_join(now);
        }
    }
}

/// v0 has no rebalance timeout: Kafka uses the session timeout.
fn rebalance_timeout(p: &JoinParams) -> Duration {
    let ms = if p.rebalance_timeout_ms > 0 {
        p.rebalance_timeout_ms
    } else {
        p.session_timeout_ms
    };
    Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(delay_ms: u64) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(delay_ms),
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 300_000,
            consumer: Default::default(),
        }
    }

    fn params(member_id: &str, protocols: &[&str]) -> JoinParams {
        JoinParams {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("subscription-{p}"))))
                .collect(),
            require_known_member_id: false,
        }
    }

    /// The reply if it has been answered.
    fn ready<T>(r: &mut Reply<T>) -> Option<Result<T, GroupError>> {
        match r {
            Reply::Now(res) => Some(std::mem::replace(res, Err(GroupError::UnknownMemberId))),
            Reply::Later(rx) => rx.try_recv().ok().flatten(),
        }
    }

    fn joined<T: std::fmt::Debug>(mut r: Reply<T>) -> T {
        ready(&mut r).expect("answered").expect("success")
    }

    /// A group with members `a` (leader) and `b`, Stable at generation 2.
    fn stable_pair(g: &mut Group, t0: Instant) -> (String, String) {
        let c = cfg(0);
        let a = joined(g.join(params("", &["range"]), t0, &c)).member_id;
        let mut jb = g.join(params("", &["range"]), t0, &c);
        assert!(ready(&mut jb).is_none(), "b waits for a to rejoin");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&a, None, 1, t0),
            Err(GroupError::RebalanceInProgress)
        );
        let ja = joined(g.join(params(&a, &["range"]), t0, &c));
        let jb = ready(&mut jb).unwrap().unwrap();
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!(ja.leader, a);
        assert_eq!(ja.members.len(), 2);
        assert!(jb.members.is_empty());
        let b = jb.member_id;
        let mut sb = g.sync(&b, None, 2, None, None, vec![], t0);
        assert!(ready(&mut sb).is_none(), "follower waits for the leader");
        let sa = joined(g.sync(
            &a,
            None,
            2,
            Some("consumer"),
            Some("range"),
            vec![(a.clone(), Bytes::from("A")), (b.clone(), Bytes::from("B"))],
            t0,
        ));
        assert_eq!(sa.assignment, Bytes::from("A"));
        assert_eq!(
            ready(&mut sb).unwrap().unwrap().assignment,
            Bytes::from("B")
        );
        assert_eq!(g.state, GroupState::Stable);
        (a, b)
    }

    #[test]
    fn join_sync_and_assignment_pass_through() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let (a, b) = stable_pair(&mut g, t0);
        assert!(g.take_dirty());
        assert_eq!(g.heartbeat(&a, None, 2, t0), Ok(()));
        // A follower rejoining unchanged in Stable gets the current generation back.
        let again = joined(g.join(params(&b, &["range"]), t0, &cfg(0)));
        assert_eq!((again.generation, g.state), (2, GroupState::Stable));
        let s = joined(g.sync(&b, None, 2, None, None, vec![], t0));
        assert_eq!(s.assignment, Bytes::from("B"));
        let meta = g.to_meta();
        assert_eq!(meta.members.len(), 2);
        assert_eq!(meta.members[1].assignment, b"B".to_vec());
    }

    #[test]
    fn member_id_required_then_join() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let mut p = params("", &["range"]);
        p.require_known_member_id = true;
        let id = match ready(&mut g.join(p.clone(), t0, &cfg(0))) {
            Some(Err(GroupError::MemberIdRequired(id))) => id,
            other => panic!("{other:?}"),
        };
        assert_eq!(g.state, GroupState::Empty);
        p.member_id = id.clone();
        let ok = joined(g.join(p, t0, &cfg(0)));
        assert_eq!((ok.member_id, ok.generation), (id, 1));
        // An id the coordinator never issued is refused.
        assert_eq!(
            ready(&mut g.join(params("made-up", &["range"]), t0, &cfg(0))),
            Some(Err(GroupError::UnknownMemberId))
        );
    }

    #[test]
    fn fencing_by_generation_and_member() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let (a, _b) = stable_pair(&mut g, t0);
        assert_eq!(
            g.heartbeat(&a, None, 1, t0),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.heartbeat("nobody", None, 2, t0),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            ready(&mut g.sync(&a, None, 7, None, None, vec![], t0)),
            Some(Err(GroupError::IllegalGeneration))
        );
        assert_eq!(
            ready(&mut g.sync(&a, None, 2, Some("connect"), None, vec![], t0)),
            Some(Err(GroupError::InconsistentGroupProtocol))
        );
        assert_eq!(
            g.validate_commit(&a, None, 1, t0),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(g.validate_commit(&a, None, 2, t0), Ok(()));
        // A simple (non-member) commit is refused while the group has members.
        assert_eq!(
            g.validate_commit("", None, -1, t0),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(Group::new("e").validate_commit("", None, -1, t0), Ok(()));
    }

    #[test]
    fn leave_triggers_rebalance_and_batch_errors() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let (a, b) = stable_pair(&mut g, t0);
        let r = g.leave(&[(b.clone(), None), ("ghost".into(), None)], t0);
        assert_eq!(r, vec![Ok(()), Err(GroupError::UnknownMemberId)]);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&a, None, 2, t0),
            Err(GroupError::RebalanceInProgress)
        );
        let ok = joined(g.join(params(&a, &["range"]), t0, &cfg(0)));
        assert_eq!((ok.generation, ok.members.len()), (3, 1));
        // The last member leaving empties the group and ends the generation.
        assert_eq!(g.leave(&[(a, None)], t0), vec![Ok(())]);
        assert_eq!((g.state, g.generation), (GroupState::Empty, 4));
    }

    #[test]
    fn session_expiry_and_rebalance_timeout_evict() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let (a, b) = stable_pair(&mut g, t0);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(g.heartbeat(&a, None, 2, t1), Ok(()));
        assert_eq!(g.next_deadline(), Some(t0 + Duration::from_secs(10)));
        let t2 = t0 + Duration::from_secs(10);
        g.expire(t2);
        assert!(!g.members.contains_key(&b), "b's session expired");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let ok = joined(g.join(params(&a, &["range"]), t2, &cfg(0)));
        assert_eq!((ok.generation, ok.members.len()), (3, 1));

        // A member that does not rejoin within the rebalance timeout is dropped.
        let mut g = Group::new("g");
        let (a, b) = stable_pair(&mut g, t0);
        let mut ja = g.join(params(&a, &["range"]), t0, &cfg(0));
        assert!(ready(&mut ja).is_none());
        g.heartbeat(&b, None, 2, t0 + Duration::from_secs(15)).ok();
        g.expire(t0 + Duration::from_secs(19));
        assert!(ready(&mut ja).is_none());
        assert!(g.members.contains_key(&b), "b's session is still alive");
        g.expire(t0 + Duration::from_secs(20));
        let ok = ready(&mut ja).unwrap().unwrap();
        assert_eq!((ok.generation, ok.members.len()), (3, 1));
        assert!(!g.members.contains_key(&b));
    }

    #[test]
    fn initial_delay_waits_for_more_members() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let c = cfg(3000);
        let mut ja = g.join(params("", &["range"]), t0, &c);
        assert!(ready(&mut ja).is_none());
        assert_eq!(g.next_deadline(), Some(t0 + Duration::from_secs(3)));
        let t1 = t0 + Duration::from_secs(2);
        let mut jb = g.join(params("", &["range"]), t1, &c);
        g.expire(t0 + Duration::from_secs(3));
        assert!(
            ready(&mut ja).is_none(),
            "the second join extended the delay"
        );
        g.expire(t1 + Duration::from_secs(3));
        let (a, b) = (
            ready(&mut ja).unwrap().unwrap(),
            ready(&mut jb).unwrap().unwrap(),
        );
        assert_eq!((a.generation, b.generation), (1, 1));
        assert_eq!(a.members.len(), 2);
    }

    #[test]
    fn protocol_selection_and_consistency() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let c = cfg(1000);
        let _ = g.join(params("", &["range", "roundrobin"]), t0, &c);
        let _ = g.join(params("", &["roundrobin", "range"]), t0, &c);
        let _ = g.join(params("", &["roundrobin", "range", "sticky"]), t0, &c);
        assert_eq!(g.select_protocol().as_deref(), Some("roundrobin"));
        assert_eq!(
            ready(&mut g.join(params("", &["sticky"]), t0, &c)),
            Some(Err(GroupError::InconsistentGroupProtocol))
        );
        let mut other_type = params("", &["range"]);
        other_type.protocol_type = "connect".into();
        assert_eq!(
            ready(&mut g.join(other_type, t0, &c)),
            Some(Err(GroupError::InconsistentGroupProtocol))
        );
        let mut short = params("", &["range"]);
        short.session_timeout_ms = 100;
        assert_eq!(
            ready(&mut g.join(short, t0, &c)),
            Some(Err(GroupError::InvalidSessionTimeout))
        );
        let _ = g.join(params("", &["range"]), t0, &c);
        g.expire(t0 + Duration::from_secs(1));
        assert_eq!(g.protocol.as_deref(), Some("range"));
    }

    #[test]
    fn static_member_rejoin_keeps_assignment_and_fences_old_id() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        let c = cfg(0);
        let mut ps = params("", &["range"]);
        ps.instance_id = Some("i-1".into());
        let s1 = joined(g.join(ps.clone(), t0, &c)).member_id;
        let mut jd = g.join(params("", &["range"]), t0, &c);
        let ok = joined(g.join(
            JoinParams {
                member_id: s1.clone(),
                ..ps.clone()
            },
            t0,
            &c,
        ));
        let d = ready(&mut jd).unwrap().unwrap().member_id;
        assert_eq!(ok.generation, 2);
        let _ = g.sync(&d, None, 2, None, None, vec![], t0);
        let _ = g.sync(
            &s1,
            Some("i-1"),
            2,
            None,
            None,
            vec![
                (s1.clone(), Bytes::from("S")),
                (d.clone(), Bytes::from("D")),
            ],
            t0,
        );
        assert_eq!(g.state, GroupState::Stable);
        // The process restarts: empty member id, same instance id.
        let again = joined(g.join(ps, t0, &c));
        assert_ne!(again.member_id, s1);
        assert_eq!((again.generation, g.state), (2, GroupState::Stable));
        assert!(
            again.skip_assignment,
            "the static leader keeps the assignment"
        );
        let s = joined(g.sync(&again.member_id, Some("i-1"), 2, None, None, vec![], t0));
        assert_eq!(s.assignment, Bytes::from("S"));
        assert_eq!(
            g.heartbeat(&s1, Some("i-1"), 2, t0),
            Err(GroupError::FencedInstanceId)
        );
        assert_eq!(g.heartbeat(&d, None, 2, t0), Ok(()));
        // The static member survives a restart of the broker; the dynamic one does not.
        let back = Group::from_stored("g", g.to_meta(), t0);
        assert_eq!(back.state, GroupState::PreparingRebalance);
        assert_eq!(back.members.len(), 1);
        assert!(back.members.contains_key(&again.member_id));
        assert_eq!(back.statics.get("i-1"), Some(&again.member_id));
    }

    #[test]
    fn restored_group_without_static_members_is_empty() {
        let mut g = Group::new("g");
        let t0 = Instant::now();
        stable_pair(&mut g, t0);
        let back = Group::from_stored("g", g.to_meta(), t0);
        assert_eq!((back.state, back.generation), (GroupState::Empty, 2));
        assert!(back.members.is_empty());
    }
}
