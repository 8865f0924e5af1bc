//! Consumer groups (classic protocol) and committed offsets: the state of the
//! groups one shard owns, their timers and their persistence.
//!
//! Each group lives on one shard, `placement::group_shard(group)`. The Kafka
//! handlers (`handlers/groups/`, one file per API) forward a request there; the
//! owner runs the state machine (`coordinator.rs`) on its own `RefCell` state,
//! with no locks, and never holds a borrow across an `.await`.
//!
//! Timers: a group arms one timer task on its shard for its earliest deadline
//! (`Group::next_deadline`: a session, a pending member id, the initial delay or
//! the rebalance timeout) and re-arms it after every change; nothing polls.
//! Timers and the "now" handed to the state machine come from the broker's
//! `Clock`, so a test with a manual clock drives sessions and rebalances.
//!
//! Persistence: group metadata is written in the background after each change
//! (latest state wins, one write at a time per group); committed offsets are
//! answered only once the store has them durably.

pub mod assignor;
pub mod consumer;
pub mod coordinator;
pub mod error;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use uuid::Uuid;

use crate::clock::Clock;
use crate::io::{CallError, Io};
use crate::metadata::{
    group_slot, Claim, Cluster, MetaError, MetadataStore, OffsetMeta, StoredGroup, GROUPS_TOPIC,
    GROUP_SLOTS,
};
use crate::runtime::{sleep, spawn_detached, Backoff};
use consumer::{ConsumerConfig, ConsumerGroup};
use coordinator::{Group, GroupConfig};
use error::GroupError;

/// One group on its owning shard.
pub struct GroupSlot {
    pub id: String,
    pub group: RefCell<Group>,
    /// Set while the group is a consumer-protocol (KIP-848) group; the classic
    /// `group` is then empty. A group is one or the other, as in Kafka.
    pub consumer: RefCell<Option<ConsumerGroup>>,
    pub offsets: RefCell<HashMap<(String, i32), OffsetMeta>>,
    /// Serialises the group's store writes (offset commits and metadata), so that a
    /// commit is never overtaken by an older write of the same group.
    pub(crate) write_lock: futures::lock::Mutex<()>,
    timer_at: Cell<Option<Instant>>,
    writer_running: Cell<bool>,
    meta_dirty: Cell<bool>,
}

impl GroupSlot {
    /// A group as the store had it: metadata (members, generation) and offsets.
    fn from_stored(sg: StoredGroup, now: Instant, cfg: &ConsumerConfig) -> Self {
        let (group, consumer) = match sg.meta {
            Some(mut meta) => match meta.consumer.take() {
                Some(c) => (
                    Group::new(&sg.group_id),
                    Some(ConsumerGroup::from_meta(&sg.group_id, c, now, cfg)),
                ),
                None => (Group::from_stored(&sg.group_id, meta, now), None),
            },
            None => (Group::new(&sg.group_id), None),
        };
        let slot = GroupSlot::new(group);
        *slot.consumer.borrow_mut() = consumer;
        *slot.offsets.borrow_mut() = sg
            .offsets
            .into_iter()
            .map(|(t, p, o)| ((t, p), o))
            .collect();
        slot
    }

    fn new(group: Group) -> Self {
        GroupSlot {
            id: group.id.clone(),
            group: RefCell::new(group),
            consumer: RefCell::new(None),
            offsets: RefCell::new(HashMap::new()),
            write_lock: futures::lock::Mutex::new(()),
            timer_at: Cell::new(None),
            writer_running: Cell::new(false),
            meta_dirty: Cell::new(false),
        }
    }
}

/// The groups a shard owns.
pub struct Groups {
    slots: RefCell<HashMap<String, Rc<GroupSlot>>>,
    /// Background metadata writes in flight, waited for at shutdown.
    pub(crate) writes_in_flight: Cell<usize>,
    config: GroupConfig,
    pub(crate) io: Io,
    pub(crate) meta: Arc<dyn MetadataStore>,
    clock: Clock,
    /// Coordinator slots this broker just gained whose groups are being read
    /// from the store (clusters): their requests wait (COORDINATOR_LOAD_IN_PROGRESS).
    loading: RefCell<HashSet<i32>>,
    /// This broker's claims on the coordinator slots it serves (clusters): every
    /// group write compares the slot's claim, so a deposed coordinator cannot
    /// store a commit or a membership change.
    claims: RefCell<HashMap<i32, Claim>>,
}

impl Groups {
    /// The shard's share of the stored groups.
    pub fn restore(
        stored: Vec<StoredGroup>,
        config: GroupConfig,
        io: Io,
        meta: Arc<dyn MetadataStore>,
        clock: Clock,
    ) -> Self {
        let now = clock.now();
        let groups = Groups {
            slots: RefCell::new(HashMap::new()),
            writes_in_flight: Cell::new(0),
            config,
            io,
            meta,
            clock,
            loading: RefCell::new(HashSet::new()),
            claims: RefCell::new(HashMap::new()),
        };
        for sg in stored {
            let slot = GroupSlot::from_stored(sg, now, &groups.config.consumer);
            groups
                .slots
                .borrow_mut()
                .insert(slot.id.clone(), Rc::new(slot));
        }
        groups
    }

    /// The current time on the broker's clock, for the state machine.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Session timeout bounds and the initial rebalance delay.
    pub fn config(&self) -> GroupConfig {
        self.config.clone()
    }

    pub fn get(&self, id: &str) -> Option<Rc<GroupSlot>> {
        self.slots.borrow().get(id).cloned()
    }

    /// Every group slot of the shard.
    pub fn all(&self) -> Vec<Rc<GroupSlot>> {
        self.slots.borrow().values().cloned().collect()
    }

    /// Forgets a group (DeleteGroups).
    pub fn remove(&self, id: &str) -> Option<Rc<GroupSlot>> {
        self.slots.borrow_mut().remove(id)
    }

    pub fn get_or_create(&self, id: &str) -> Rc<GroupSlot> {
        self.slots
            .borrow_mut()
            .entry(id.to_string())
            .or_insert_with(|| Rc::new(GroupSlot::new(Group::new(id))))
            .clone()
    }

    /// The claim group writes of `group` must carry: the slot's, in a cluster
    /// (NOT_COORDINATOR without one); none for a broker alone.
    pub fn claim_for(&self, group: &str) -> Result<Claim, GroupError> {
        if !self.meta.tracks_ownership() {
            return Ok(Claim::default());
        }
        self.claims
            .borrow()
            .get(&group_slot(group))
            .copied()
            .ok_or(GroupError::NotCoordinator)
    }

    /// Whether the groups of `slot` are still being loaded after a takeover.
    pub fn loading(&self, slot: i32) -> bool {
        self.loading.borrow().contains(&slot)
    }

    /// Replaces the groups of the shard with their stored state.
    fn install_stored(groups: &Rc<Groups>, stored: Vec<StoredGroup>) {
        let now = groups.clock.now();
        for sg in stored {
            let slot = Rc::new(GroupSlot::from_stored(sg, now, &groups.config.consumer));
            let old = groups
                .slots
                .borrow_mut()
                .insert(slot.id.clone(), slot.clone());
            if let Some(old) = old {
                old.group
                    .borrow_mut()
                    .release_waiters(GroupError::NotCoordinator);
            }
            settle(groups, &slot);
        }
    }

    /// Starts the timers of restored groups (their static members' sessions).
    pub fn start(groups: &Rc<Groups>) {
        for slot in groups.all() {
            settle(groups, &slot);
        }
    }
}

/// Coordination moved between brokers (clusters; docs/cluster.md, "Consumer
/// groups"): groups of slots this broker lost are dropped from memory (their
/// waiting members are told NOT_COORDINATOR); groups of slots it gained are read
/// again from the store, since their previous coordinator changed them, and
/// their requests wait until that is done. `shard`/`shards` pick this shard's share.
pub fn follow_coordination(
    groups: &Rc<Groups>,
    prev: &Cluster,
    next: &Cluster,
    shard: usize,
    shards: usize,
) {
    let me = next.broker_id;
    let (mut gained, mut lost) = (HashSet::new(), HashSet::new());
    for slot in 0..GROUP_SLOTS as i32 {
        let (was, is) = (
            prev.slot_owner(slot) == Some(me),
            next.slot_owner(slot) == Some(me),
        );
        if is && !was {
            gained.insert(slot);
        } else if was && !is {
            lost.insert(slot);
        }
    }
    if !lost.is_empty() {
        let gone: Vec<Rc<GroupSlot>> = groups
            .all()
            .into_iter()
            .filter(|g| lost.contains(&group_slot(&g.id)))
            .collect();
        for g in gone {
            g.group
                .borrow_mut()
                .release_waiters(GroupError::NotCoordinator);
            groups.slots.borrow_mut().remove(&g.id);
        }
        // A slot lost while it was still being claimed or loaded: that work stops.
        groups.loading.borrow_mut().retain(|s| !lost.contains(s));
        let released: Vec<(i32, Claim)> = lost
            .iter()
            .filter_map(|s| groups.claims.borrow_mut().remove(s).map(|c| (*s, c)))
            .collect();
        if !released.is_empty() {
            let meta = groups.meta.clone();
            let io = groups.io.clone();
            spawn_detached(async move {
                for (slot, claim) in released {
                    let m = meta.clone();
                    // Best effort: without it the claim ends with the lease.
                    let _ = io
                        .call(async move { m.release_partition(GROUPS_TOPIC, slot, claim).await })
                        .await;
                }
            });
        }
    }
    if gained.is_empty() {
        return;
    }
    groups.loading.borrow_mut().extend(gained.iter().copied());
    let groups = groups.clone();
    spawn_detached(async move {
        let mut backoff = LOAD_BACKOFF;
        // Claim every gained slot first (the previous coordinator may still
        // hold one until it lets go or its lease runs out); a slot lost again
        // meanwhile is given up.
        for &slot in &gained {
            loop {
                if !groups.loading.borrow().contains(&slot) {
                    break;
                }
                let meta = groups.meta.clone();
                match groups
                    .io
                    .call(
                        async move { meta.claim_partition(GROUPS_TOPIC, Uuid::nil(), slot).await },
                    )
                    .await
                {
                    Ok(claim) if groups.loading.borrow().contains(&slot) => {
                        groups.claims.borrow_mut().insert(slot, claim);
                        break;
                    }
                    Ok(claim) => {
                        // Lost again while claiming: give it straight back.
                        let meta = groups.meta.clone();
                        let _ =
                            groups
                                .io
                                .call(async move {
                                    meta.release_partition(GROUPS_TOPIC, slot, claim).await
                                })
                                .await;
                        break;
                    }
                    Err(e) => {
                        debug!(slot, error = %e, "coordinator slot not claimed yet; retrying");
                        sleep(backoff.next()).await;
                    }
                }
            }
        }
        backoff.reset();
        let stored = loop {
            let meta = groups.meta.clone();
            match groups
                .io
                .call(async move { meta.load_groups().await })
                .await
            {
                Ok(all) => break all,
                Err(e) => {
                    warn!(error = %e, "loading the groups of newly coordinated slots failed; retrying");
                    sleep(backoff.next()).await;
                }
            }
        };
        // Slots lost meanwhile are not installed (nor their loading ended:
        // a later gain of the same slot runs its own load).
        let still: HashSet<i32> = gained
            .into_iter()
            .filter(|s| {
                groups.loading.borrow().contains(s) && groups.claims.borrow().contains_key(s)
            })
            .collect();
        let mine: Vec<StoredGroup> = stored
            .into_iter()
            .filter(|g| {
                still.contains(&group_slot(&g.group_id))
                    && crate::placement::group_shard(&g.group_id, shards) == shard
            })
            .collect();
        // Groups created here meanwhile cannot exist: their requests waited.
        Groups::install_stored(&groups, mine);
        let mut loading = groups.loading.borrow_mut();
        for s in &still {
            loading.remove(s);
        }
    });
}

/// Back-off of the group load after a coordinator takeover (real time).
const LOAD_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// At shutdown: members waiting on a rebalance are told to look for the
/// coordinator again (NOT_COORDINATOR) rather than held until the process exits.
pub fn release_all(groups: &Groups) {
    for slot in groups.all() {
        slot.group
            .borrow_mut()
            .release_waiters(GroupError::NotCoordinator);
    }
}

/// After any change to a group: persist it if its stored form changed, and make
/// sure a timer is armed for its next deadline.
pub fn settle(groups: &Rc<Groups>, slot: &Rc<GroupSlot>) {
    let consumer_dirty = slot
        .consumer
        .borrow_mut()
        .as_mut()
        .is_some_and(|c| c.take_dirty());
    if slot.group.borrow_mut().take_dirty() | consumer_dirty {
        slot.meta_dirty.set(true);
        if !slot.writer_running.get() {
            slot.writer_running.set(true);
            groups
                .writes_in_flight
                .set(groups.writes_in_flight.get() + 1);
            spawn_detached(write_meta(groups.clone(), slot.clone()));
        }
    }
    let Some(deadline) = slot.next_deadline() else {
        return;
    };
    if slot.timer_at.get().is_some_and(|t| t <= deadline) {
        return;
    }
    slot.timer_at.set(Some(deadline));
    let (groups, slot) = (groups.clone(), slot.clone());
    spawn_detached(async move {
        groups.clock.sleep_until(deadline).await;
        // A later change armed an earlier timer, which has taken over.
        if slot.timer_at.get() != Some(deadline) {
            return;
        }
        slot.timer_at.set(None);
        let now = groups.clock.now();
        slot.group.borrow_mut().expire(now);
        if let Some(c) = slot.consumer.borrow_mut().as_mut() {
            c.expire(now);
        }
        settle(&groups, &slot);
    });
}

/// Writes the group's metadata until the stored form is the latest one. Every write
/// takes the state at that moment, so a burst of changes costs one or two writes.
async fn write_meta(groups: Rc<Groups>, slot: Rc<GroupSlot>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    while slot.meta_dirty.replace(false) {
        let _w = slot.write_lock.lock().await;
        let (meta, forget) = {
            let g = slot.group.borrow();
            let c = slot.consumer.borrow();
            let meta = match c.as_ref() {
                Some(c) => crate::metadata::GroupMeta {
                    protocol_type: "consumer".into(),
                    generation: c.epoch,
                    consumer: Some(c.to_meta()),
                    ..Default::default()
                },
                None => g.to_meta(),
            };
            (
                meta,
                !slot.has_members() && slot.offsets.borrow().is_empty(),
            )
        };
        let Ok(claim) = groups.claim_for(&slot.id) else {
            // No longer this broker's group: its new coordinator writes it.
            break;
        };
        let store = groups.meta.clone();
        let id = slot.id.clone();
        let res = groups
            .io
            .call(async move {
                if forget {
                    // No members and no offsets: nothing worth keeping on disk.
                    store.delete_group(&id, claim).await
                } else {
                    store.put_group(&id, meta, claim).await
                }
            })
            .await;
        match res {
            Ok(()) => backoff.reset(),
            Err(CallError::Failed(e @ MetaError::Fenced { .. })) => {
                warn!(group = %slot.id, error = %e, "group moved to another coordinator; not stored here");
                break;
            }
            Err(CallError::Failed(e)) => {
                warn!(group = %slot.id, error = %e, "storing group metadata failed; retrying");
                slot.meta_dirty.set(true);
                // Real time: a retry towards the metadata store, not a group timer.
                sleep(backoff.next()).await;
            }
            Err(CallError::Gone(e)) => {
                warn!(group = %slot.id, error = %e, "storing group metadata failed");
                break;
            }
        }
    }
    slot.writer_running.set(false);
    groups
        .writes_in_flight
        .set(groups.writes_in_flight.get().saturating_sub(1));
}

/// Drops every group's committed offsets of a deleted topic on this shard, so
/// that a topic re-created under the same name starts without them (as in Kafka).
pub async fn forget_topic(groups: Rc<Groups>, topic: String) {
    for slot in groups.all() {
        let has = slot.offsets.borrow().keys().any(|(t, _)| *t == topic);
        if !has {
            continue;
        }
        let _w = slot.write_lock.lock().await;
        let Ok(claim) = groups.claim_for(&slot.id) else {
            continue;
        };
        let store = groups.meta.clone();
        let (g, t) = (slot.id.clone(), topic.clone());
        match groups
            .io
            .call(async move { store.delete_topic_offsets(&g, &t, claim).await })
            .await
        {
            Ok(()) => slot.offsets.borrow_mut().retain(|(t, _), _| *t != topic),
            Err(e) => {
                warn!(group = %slot.id, topic, error = %e, "removing offsets of a deleted topic failed")
            }
        }
    }
}

impl GroupSlot {
    /// Whether the group exists for the admin APIs: it has members (or members
    /// joining) or committed offsets. A slot left behind by, say, an OffsetFetch
    /// of an unknown group does not count, as in Kafka (such a group is Dead).
    pub fn exists(&self) -> bool {
        self.has_members() || !self.offsets.borrow().is_empty()
    }

    /// Whether the group has members of either protocol (or classic members joining).
    pub fn has_members(&self) -> bool {
        !self.group.borrow().is_empty()
            || self
                .consumer
                .borrow()
                .as_ref()
                .is_some_and(|c| !c.is_empty())
    }

    /// Whether this is a consumer-protocol (KIP-848) group.
    pub fn is_consumer(&self) -> bool {
        self.consumer.borrow().is_some()
    }

    /// The earliest deadline of either protocol's state machine.
    fn next_deadline(&self) -> Option<Instant> {
        let classic = self.group.borrow().next_deadline();
        let consumer = self
            .consumer
            .borrow()
            .as_ref()
            .and_then(|c| c.next_deadline());
        classic.into_iter().chain(consumer).min()
    }
}

/// A non-empty group id, as JoinGroup, SyncGroup, Heartbeat and LeaveGroup require.
pub fn check_group_id(id: &str) -> Result<(), GroupError> {
    if id.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else {
        Ok(())
    }
}

/// A request's `group.instance.id`: clients send null or an empty string for a
/// dynamic member, and both mean "not static".
pub(crate) fn instance_id(id: &Option<kafka_protocol::protocol::StrBytes>) -> Option<String> {
    id.as_ref().map(|s| s.to_string()).filter(|s| !s.is_empty())
}
