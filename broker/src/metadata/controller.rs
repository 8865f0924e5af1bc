//! The controller: one broker, elected through etcd, writes which broker should
//! own each partition (`/kafscale/assignments/{topic}`), following the live set
//! and the topics. Why a controller and not placement computed by every broker:
//! docs/cluster.md, "Ownership".
//!
//! The assignment is a target. Safety does not depend on it: a broker owns a
//! partition only through its claim transaction, so a deposed controller (whose
//! writes also compare its claim on the controller key) can delay a move but
//! never make two owners.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use kafscale_proto::metadata as pb;
use kafscale_proto::snapshot;
use kafscale_proto::Message;
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use super::assign::assign;
use super::etcd::EtcdStore;
use super::mirror::{self, Mirrored};
use super::{keys, GROUPS_TOPIC, GROUP_SLOTS};

type Rx = watch::Receiver<Arc<Mirrored>>;

/// Ids of the live brokers that take work: registered and not drained.
pub(super) fn live_ids(brokers: &Mirrored) -> Vec<i32> {
    brokers
        .entries
        .values()
        .filter_map(|e| pb::BrokerRegistration::decode(e.value.as_slice()).ok())
        .filter(|r| !r.draining)
        .map(|r| r.node_id)
        .collect()
}

/// Topic name → (id, partition count) of the topics to assign (those being
/// deleted get none), plus the coordinators' slot space; and the snapshot's mod
/// revision they were read at.
fn topics(snap: &Mirrored) -> (BTreeMap<String, (Uuid, usize)>, i64) {
    let mut out = BTreeMap::new();
    out.insert(GROUPS_TOPIC.to_string(), (Uuid::nil(), GROUP_SLOTS));
    let mut revision = 0;
    if let Some(e) = snap.entries.get(keys::SNAPSHOT) {
        revision = e.mod_revision;
        if let Ok(s) = snapshot::decode(&e.value) {
            for t in s.topics.into_iter().filter(|t| !t.deleting) {
                let id = Uuid::from_slice(&t.topic_id).unwrap_or_default();
                out.insert(t.name, (id, t.partitions.max(0) as usize));
            }
        }
    }
    (out, revision)
}

impl EtcdStore {
    /// Campaigns for the controller key whenever nobody holds it, and while
    /// holding it keeps the assignments current. Ends when `stop` is set.
    pub(super) async fn controller_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let t = self.timeout;
        let mut brokers = mirror::spawn(self.client.clone(), keys::BROKERS, t);
        let mut assignments = mirror::spawn(self.client.clone(), keys::ASSIGNMENTS, t);
        let mut ctrl = mirror::spawn(self.client.clone(), keys::CONTROLLER, t);
        let mut snap = mirror::spawn(self.client.clone(), keys::SNAPSHOT, t);
        let mut lease = self.lease.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            let held = !mirror::first(&mut ctrl).await.entries.is_empty();
            let current_lease = *lease.borrow_and_update();
            if let (false, Some(l)) = (held, current_lease) {
                match self.campaign(l).await {
                    Ok(Some(token)) => {
                        info!(broker = self.broker_id, "elected controller");
                        self.lead(
                            token,
                            &mut brokers,
                            &mut assignments,
                            &mut ctrl,
                            &mut snap,
                            &mut stop,
                        )
                        .await;
                        info!(broker = self.broker_id, "no longer the controller");
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "controller campaign failed"),
                }
            }
            tokio::select! {
                _ = ctrl.changed() => {}
                _ = lease.changed() => {}
                _ = stop.changed() => {}
                // A lost answer to a campaign that did succeed shows up here.
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Tries to create the controller key under `lease`; the token (its create
    /// revision) when this broker won.
    async fn campaign(&self, lease: i64) -> Result<Option<i64>, super::MetaError> {
        let mut c = self.client.clone();
        let value = pb::ControllerClaim {
            broker_id: self.broker_id,
            lease,
        }
        .encode_to_vec();
        let txn = Txn::new()
            .when([Compare::create_revision(
                keys::CONTROLLER,
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                keys::CONTROLLER,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = self.timed("controller campaign", c.txn(txn)).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// The controller's work while it holds the key with `token`.
    async fn lead(
        &self,
        token: i64,
        brokers: &mut Rx,
        assignments: &mut Rx,
        ctrl: &mut Rx,
        snap: &mut Rx,
        stop: &mut watch::Receiver<bool>,
    ) {
        loop {
            if *stop.borrow() {
                return;
            }
            let c = ctrl.borrow_and_update().clone();
            let mine = c.entries.get(keys::CONTROLLER).map(|e| e.create_revision);
            if c.revision >= token && mine != Some(token) {
                return; // the key is gone or another's: deposed
            }
            let live = live_ids(&brokers.borrow_and_update());
            let current = assignments.borrow_and_update().clone();
            let (wanted, snap_rev) = topics(&snap.borrow_and_update());
            match self
                .write_assignments(token, &live, &current, &wanted, snap_rev)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    warn!(error = %e, "writing assignments failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            tokio::select! {
                _ = brokers.changed() => {}
                _ = assignments.changed() => {}
                _ = ctrl.changed() => {}
                _ = snap.changed() => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Brings every topic's assignment to `assign`'s answer and removes those of
    /// deleted topics. False when this broker turned out not to be the controller.
    async fn write_assignments(
        &self,
        token: i64,
        live: &[i32],
        current: &Mirrored,
        wanted: &BTreeMap<String, (Uuid, usize)>,
        snap_rev: i64,
    ) -> Result<bool, super::MetaError> {
        if live.is_empty() {
            return Ok(true);
        }
        let mut c = self.client.clone();
        for (name, (id, partitions)) in wanted {
            let key = keys::assignment(name);
            let old = current.entries.get(&key);
            let parsed = old.and_then(|e| pb::Assignment::decode(e.value.as_slice()).ok());
            let (prev, generation) = match &parsed {
                Some(a) if a.topic_id == id.as_bytes() => (a.owners.clone(), a.generation),
                Some(a) => (Vec::new(), a.generation),
                None => (Vec::new(), 0),
            };
            let next = assign(*partitions, live, &prev);
            if next == prev && parsed.is_some() {
                continue;
            }
            let value = pb::Assignment {
                topic_id: id.as_bytes().to_vec(),
                owners: next.clone(),
                generation: generation + 1,
            }
            .encode_to_vec();
            let mod_rev = old.map_or(0, |e| e.mod_revision);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(keys::CONTROLLER, CompareOp::Equal, token),
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_rev),
                    // Written from the snapshot as read: never an assignment for a
                    // topic that has meanwhile been marked for deletion (its marking
                    // removed the assignment, and claims need one).
                    Compare::mod_revision(keys::SNAPSHOT, CompareOp::Equal, snap_rev),
                ])
                .and_then([TxnOp::put(key.as_str(), value, None)])
                .or_else([TxnOp::get(keys::CONTROLLER, None)]);
            let resp = self.timed("write assignment", c.txn(txn)).await?;
            if !resp.succeeded() {
                return Ok(self.still_controller(token).await);
            }
            info!(topic = %name, owners = ?next, "assignment written");
        }
        for key in current.entries.keys() {
            let Some(name) = keys::parse_assignment(key) else {
                continue;
            };
            if wanted.contains_key(&name) {
                continue;
            }
            let txn = Txn::new()
                .when([Compare::create_revision(
                    keys::CONTROLLER,
                    CompareOp::Equal,
                    token,
                )])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            let resp = self.timed("delete assignment", c.txn(txn)).await?;
            if !resp.succeeded() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn still_controller(&self, token: i64) -> bool {
        let mut c = self.client.clone();
        match self
            .timed("read controller", c.get(keys::CONTROLLER, None))
            .await
        {
            Ok(r) => r.kvs().first().map(|kv| kv.create_revision()) == Some(token),
            // Unknown: assume so; the next write's compare decides.
            Err(_) => true,
        }
    }
}
