//! The etcd metadata store, for clusters (`KAFSCALE_ETCD_ENDPOINTS`). Keys are in
//! `kafscale_proto::keys`, values are the protobuf messages of `kafscale-proto`, and
//! docs/metadata.md describes both.
//!
//! - Topics live in one snapshot document that every broker watches. Create and
//!   delete are read-modify-write transactions that compare the snapshot's mod
//!   revision (`kafscale_proto::snapshot`, which the operator uses too), so two
//!   brokers (or a broker and the operator) never lose each other's changes: the
//!   loser re-reads and tries again.
//! - Every call has a deadline (`KAFSCALE_ETCD_TIMEOUT_MS`): while etcd is away,
//!   callers get `MetaError::Unavailable` quickly instead of hanging, and retry.
//! - The snapshot watch and the broker registration run as tasks on the I/O
//!   runtime that re-establish themselves after errors.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, WatchOptions,
};
use futures::channel::mpsc;
use futures::StreamExt;
use kafscale_proto::metadata as pb;
use kafscale_proto::snapshot::{self, Change, SnapshotError, Snapshots};
use kafscale_proto::Message;
use tracing::{info, warn};
use uuid::Uuid;

use super::keys;
use super::mirror::{self, Mirrored};
use super::{
    Claim, ClusterState, Committed, CompactedRange, ConsumerGroupMeta, GroupMeta, Live, LiveStream,
    Manifest, MetaError, MetadataStore, OffsetMeta, OwnerSeen, SnapshotStream,
    StoredConsumerMember, StoredGroup, StoredMember, TopicAssignment, TopicMeta, TopicPartitionSet,
};
use crate::runtime::Backoff;

/// etcd refuses transactions with more operations than `--max-txn-ops` (128 by
/// default); offset commits are split into transactions of at most this many puts.
const MAX_TXN_OPS: usize = 64;
/// Back-off between attempts to register again and to re-establish the watch.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Deadline of every unary etcd call.
    pub timeout: Duration,
    /// TTL of the broker registration's lease.
    pub lease_ttl_secs: i64,
    /// TLS towards etcd (`https://` endpoints), with a client certificate when
    /// etcd asks for one.
    pub tls: Option<EtcdTls>,
}

/// PEM contents (read at start-up) for TLS towards etcd.
#[derive(Clone)]
pub struct EtcdTls {
    /// CA bundle that signed etcd's certificate (None: the system's roots are not
    /// used, so this is required in practice).
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key (etcd's --client-cert-auth).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to check etcd's certificate against (default: the endpoint's host).
    pub domain: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("domain", &self.domain)
            .finish()
    }
}

/// This broker, as registered under `/kafscale/brokers/{id}`.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    /// Every listener: (name, advertised host, advertised port).
    pub listeners: Vec<(String, String, i32)>,
}

pub struct EtcdStore {
    pub(super) client: Client,
    /// The snapshot key, read and changed with the shared compare-and-swap loop.
    snapshots: Snapshots,
    /// This broker's id, recorded with its partition-state commits.
    pub(super) broker_id: i32,
    pub(super) timeout: Duration,
    lease_ttl_secs: i64,
    /// The lease this broker's registration (and its claims) live under; None
    /// while it registers again.
    pub(super) lease: tokio::sync::watch::Sender<Option<i64>>,
    /// Writes are accepted while `origin.elapsed()` is below this many ms: the
    /// send time of the last answered keep-alive plus the TTL minus the safety
    /// margin (docs/cluster.md, "Leases and the safety margin").
    writable_until_ms: AtomicU64,
    origin: Instant,
    /// The registration value (re-registrations write it again; `ctl drain`
    /// changes it).
    registration_value: std::sync::Mutex<Vec<u8>>,
    /// Stops the registration task, which then revokes its lease.
    stop: tokio::sync::watch::Sender<bool>,
    /// The registration task, awaited (with the deadline) at shutdown.
    registration: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Real time, not the broker's `Clock`: informational timestamps in etcd records
/// (a broker's start, a partition state's last update), written from the I/O
/// runtime; nothing in the broker's logic reads them back.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sorts etcd errors into retriable (the cluster is unreachable or busy) and not.
fn classify(what: &str, e: etcd_client::Error) -> MetaError {
    use etcd_client::Error as E;
    use tonic::Code;
    let retriable = match &e {
        E::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Unknown
                | Code::Internal
        ),
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        _ => false,
    };
    if retriable {
        MetaError::Unavailable(format!("etcd {what}: {e}"))
    } else {
        MetaError::Refused(format!("etcd {what}: {e}"))
    }
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(format!("etcd key {key}: {e}"))
}

impl From<SnapshotError> for MetaError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Etcd { what, source } => classify(what, source),
            SnapshotError::Corrupt { .. } => MetaError::Corrupt(e.to_string()),
            SnapshotError::Timeout { .. } | SnapshotError::Contended { .. } => {
                MetaError::Unavailable(e.to_string())
            }
        }
    }
}

fn topic_to_pb(t: &TopicMeta) -> pb::TopicConfig {
    pb::TopicConfig {
        name: t.name.clone(),
        topic_id: t.id.as_bytes().to_vec(),
        partitions: t.partitions,
        configs: t.configs.clone().into_iter().collect(),
        created_ms: 0,
        deleting: t.deleting,
    }
}

fn topic_from_pb(t: &pb::TopicConfig) -> Result<TopicMeta, MetaError> {
    Ok(TopicMeta {
        name: t.name.clone(),
        id: snapshot::topic_id(t)?,
        partitions: t.partitions,
        configs: t.configs.clone().into_iter().collect(),
        deleting: t.deleting,
    })
}

fn state_from_pb(s: &pb::ClusterSnapshot, revision: i64) -> Result<ClusterState, MetaError> {
    Ok(ClusterState {
        cluster_id: s.cluster_id.clone(),
        topics: s
            .topics
            .iter()
            .map(topic_from_pb)
            .collect::<Result<_, _>>()?,
        revision,
    })
}

pub(crate) fn group_to_pb(group: &str, g: &GroupMeta) -> pb::GroupMetadata {
    pb::GroupMetadata {
        group_id: group.to_string(),
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        generation: g.generation,
        leader: g.leader.clone(),
        members: g
            .members
            .iter()
            .map(|m| pb::GroupMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                subscription: m.subscription.clone(),
                assignment: m.assignment.clone(),
            })
            .collect(),
        consumer: g.consumer.as_ref().map(consumer_to_pb),
    }
}

fn tps_to_pb(a: &TopicPartitionSet) -> Vec<pb::TopicPartitionList> {
    a.iter()
        .map(|(t, ps)| pb::TopicPartitionList {
            topic: t.clone(),
            partitions: ps.iter().copied().collect(),
        })
        .collect()
}

fn tps_from_pb(a: Vec<pb::TopicPartitionList>) -> TopicPartitionSet {
    let mut out = TopicPartitionSet::new();
    for t in a {
        out.entry(t.topic).or_default().extend(t.partitions);
    }
    out
}

fn consumer_to_pb(c: &ConsumerGroupMeta) -> pb::ConsumerGroupState {
    pb::ConsumerGroupState {
        group_epoch: c.group_epoch,
        assignment_epoch: c.assignment_epoch,
        assignor: c.assignor.clone(),
        subscribed: c.subscribed.iter().map(|(t, n)| (t.clone(), *n)).collect(),
        members: c
            .members
            .iter()
            .map(|m| pb::ConsumerGroupMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                member_epoch: m.member_epoch,
                previous_member_epoch: m.previous_member_epoch,
                state: u32::from(m.state),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                topic_names: m.topic_names.clone(),
                regex: m.regex.clone(),
                assignor: m.assignor.clone(),
                assigned: tps_to_pb(&m.assigned),
                revoking: tps_to_pb(&m.revoking),
                target: tps_to_pb(&m.target),
                left: m.left,
                regex_matches: m.regex_matches.clone(),
            })
            .collect(),
    }
}

fn consumer_from_pb(c: pb::ConsumerGroupState) -> ConsumerGroupMeta {
    ConsumerGroupMeta {
        group_epoch: c.group_epoch,
        assignment_epoch: c.assignment_epoch,
        assignor: c.assignor,
        subscribed: c.subscribed.into_iter().collect(),
        members: c
            .members
            .into_iter()
            .map(|m| StoredConsumerMember {
                member_id: m.member_id,
                instance_id: m.instance_id,
                rack_id: m.rack_id,
                client_id: m.client_id,
                client_host: m.client_host,
                member_epoch: m.member_epoch,
                previous_member_epoch: m.previous_member_epoch,
                state: u8::try_from(m.state).unwrap_or(0),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                topic_names: m.topic_names,
                regex: m.regex,
                assignor: m.assignor,
                assigned: tps_from_pb(m.assigned),
                revoking: tps_from_pb(m.revoking),
                target: tps_from_pb(m.target),
                left: m.left,
                regex_matches: m.regex_matches,
            })
            .collect(),
    }
}

pub(crate) fn group_from_pb(g: pb::GroupMetadata) -> GroupMeta {
    GroupMeta {
        protocol_type: g.protocol_type,
        protocol: g.protocol,
        generation: g.generation,
        leader: g.leader,
        members: g
            .members
            .into_iter()
            .map(|m| StoredMember {
                member_id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                subscription: m.subscription,
                assignment: m.assignment,
            })
            .collect(),
        consumer: g.consumer.map(consumer_from_pb),
    }
}

pub(crate) fn offset_to_pb(o: &OffsetMeta) -> pb::CommittedOffset {
    pb::CommittedOffset {
        offset: o.offset,
        leader_epoch: o.leader_epoch,
        metadata: o.metadata.clone(),
        commit_ms: o.commit_ms,
    }
}

pub(crate) fn offset_from_pb(o: pb::CommittedOffset) -> OffsetMeta {
    OffsetMeta {
        offset: o.offset,
        leader_epoch: o.leader_epoch,
        metadata: o.metadata,
        commit_ms: o.commit_ms,
    }
}

/// This broker's registration key and value.
fn registration(broker: &BrokerInfo) -> (String, Vec<u8>) {
    let value = pb::BrokerRegistration {
        node_id: broker.id,
        host: broker.host.clone(),
        port: broker.port,
        started_ms: now_ms(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        draining: false,
        listeners: broker
            .listeners
            .iter()
            .map(|(name, host, port)| pb::BrokerListener {
                name: name.clone(),
                host: host.clone(),
                port: *port,
            })
            .collect(),
    }
    .encode_to_vec();
    (keys::broker(broker.id), value)
}

impl EtcdStore {
    /// Connects (and authenticates, with a username) within the call deadline, and
    /// registers this broker under a lease that a background task keeps alive.
    pub async fn connect(cfg: EtcdConfig, broker: BrokerInfo) -> Result<Arc<Self>, MetaError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.timeout)
            // HTTP/2 pings notice a dead etcd (or network) while the watch is idle.
            .with_keep_alive(Duration::from_secs(5), cfg.timeout)
            .with_keep_alive_while_idle(true)
            // Auth tokens expire (etcd's --auth-token-ttl); fetch a new one then.
            .with_auto_token_refresh(true);
        if let Some(user) = &cfg.username {
            opts = opts.with_user(user.clone(), cfg.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &cfg.tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            if let Some(d) = &tls.domain {
                t = t.domain_name(d.clone());
            }
            opts = opts.with_tls(t);
        }
        let client = match tokio::time::timeout(
            cfg.timeout,
            Client::connect(cfg.endpoints.clone(), Some(opts)),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(classify("connect", e)),
            Err(_) => {
                return Err(MetaError::Unavailable(format!(
                    "etcd connect: no answer from {:?} within {:?}",
                    cfg.endpoints, cfg.timeout
                )))
            }
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let store = Arc::new(EtcdStore {
            snapshots: Snapshots::new(client.kv_client(), cfg.timeout),
            client,
            broker_id: broker.id,
            timeout: cfg.timeout,
            lease_ttl_secs: cfg.lease_ttl_secs.max(2),
            lease: tokio::sync::watch::channel(None).0,
            writable_until_ms: AtomicU64::new(0),
            origin: Instant::now(),
            registration_value: std::sync::Mutex::new(Vec::new()),
            stop,
            registration: std::sync::Mutex::new(None),
        });
        // The first registration happens before start-up goes on, so a broker
        // whose id a live broker holds refuses to start.
        let (key, value) = registration(&broker);
        *store
            .registration_value
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = value.clone();
        let lease = store.claim_registration(&broker, &key, &value).await?;
        let task = tokio::spawn(
            store
                .clone()
                .register(broker, key, value, lease, stopped.clone()),
        );
        *store.registration.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tokio::spawn(store.clone().controller_loop(stopped));
        Ok(store)
    }

    /// The safety margin before a lease could expire: max(2 s, TTL/5), at most
    /// half the TTL.
    fn margin(ttl: Duration) -> Duration {
        Duration::from_secs(2).max(ttl / 5).min(ttl / 2)
    }

    /// Notes that the lease was granted or renewed by a request sent at `sent`
    /// with `ttl_secs` left: etcd cannot expire it before `sent + ttl`.
    fn renewed(&self, lease: i64, sent: Instant, ttl_secs: i64) {
        let ttl = Duration::from_secs(ttl_secs.max(0) as u64);
        let until = (sent + ttl - Self::margin(ttl)).saturating_duration_since(self.origin);
        self.writable_until_ms
            .store(until.as_millis() as u64, Ordering::Relaxed);
        self.lease.send_if_modified(|l| {
            let changed = *l != Some(lease);
            *l = Some(lease);
            changed
        });
    }

    fn lease_lost(&self) {
        self.writable_until_ms.store(0, Ordering::Relaxed);
        self.lease.send_replace(None);
    }

    pub(super) fn writable(&self) -> bool {
        (self.origin.elapsed().as_millis() as u64) < self.writable_until_ms.load(Ordering::Relaxed)
    }

    /// Runs an etcd call with the deadline.
    pub(super) async fn timed<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, MetaError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(what, e)),
            Err(_) => Err(MetaError::Unavailable(format!(
                "etcd {what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Read-modify-write of the snapshot: `change` edits it and names the other
    /// operations of the same transaction; it is applied again to a fresh copy
    /// whenever another writer got in between. Returns the stored state.
    async fn update_snapshot(
        &self,
        what: &'static str,
        mut change: impl FnMut(&mut pb::ClusterSnapshot) -> Result<Vec<TxnOp>, MetaError>,
    ) -> Result<ClusterState, MetaError> {
        let updated = self
            .snapshots
            .update(what, |snap| {
                Ok::<_, MetaError>(Change::Write(change(snap)?, ()))
            })
            .await?;
        state_from_pb(&updated.snapshot, updated.revision)
    }

    /// Keeps `/kafscale/brokers/{id}` alive under a lease until `stop`; after any
    /// failure (etcd away, lease expired) grants a new lease and registers again.
    async fn register(
        self: Arc<Self>,
        broker: BrokerInfo,
        key: String,
        value: Vec<u8>,
        first_lease: i64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff = BACKOFF;
        let mut lease_id: Option<i64> = Some(first_lease);
        loop {
            if *stop.borrow() {
                break;
            }
            let current = self
                .registration_value
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let value = if current.is_empty() {
                value.clone()
            } else {
                current
            };
            match self
                .register_once(&broker, &key, &value, &mut lease_id, &mut stop)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    warn!(broker = broker.id, error = %e, "broker registration in etcd lost; registering again");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next()) => {}
                _ = stop.changed() => {}
            }
        }
        self.lease_lost();
        if let Some(id) = lease_id {
            let mut c = self.client.clone();
            // Best effort: the key goes now instead of after the TTL.
            let _ = self.timed("lease revoke", c.lease_revoke(id)).await;
        }
    }

    /// Creates `/kafscale/brokers/{id}` under a new lease, only if no live broker
    /// holds it; returns the lease. A registration with this broker's own
    /// advertised address is its previous incarnation (a crash, then a restart
    /// before the lease ran out): its lease is revoked, which also frees whatever
    /// else it held, and the claim is tried again.
    async fn claim_registration(
        &self,
        broker: &BrokerInfo,
        key: &str,
        value: &[u8],
    ) -> Result<i64, MetaError> {
        let mut c = self.client.clone();
        for _ in 0..8 {
            let sent = Instant::now();
            let granted = self
                .timed("lease grant", c.lease_grant(self.lease_ttl_secs, None))
                .await?;
            let (lease, ttl) = (granted.id(), granted.ttl());
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    value.to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key, None)]);
            let resp = self.timed("register broker", c.txn(txn)).await?;
            if resp.succeeded() {
                info!(
                    key,
                    lease,
                    ttl_secs = self.lease_ttl_secs,
                    "registered in etcd"
                );
                self.renewed(lease, sent, ttl);
                return Ok(lease);
            }
            // Not needed after all; it would expire anyway.
            let _ = self.timed("lease revoke", c.lease_revoke(lease)).await;
            let holder = resp.op_responses().into_iter().find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let Some(kv) = holder else {
                continue; // gone in between: claim again
            };
            let reg = pb::BrokerRegistration::decode(kv.value()).map_err(|e| corrupt(key, e))?;
            if reg.host != broker.host || reg.port != broker.port {
                return Err(MetaError::BrokerIdTaken {
                    id: broker.id,
                    host: reg.host,
                    port: reg.port,
                });
            }
            warn!(
                key,
                lease = kv.lease(),
                started_ms = reg.started_ms,
                "a previous incarnation of this broker is still registered; revoking its lease"
            );
            if kv.lease() != 0 {
                // NotFound means it expired meanwhile: the next claim succeeds.
                let _ = self.timed("lease revoke", c.lease_revoke(kv.lease())).await;
            } else {
                self.timed("register broker", c.delete(key, None)).await?;
            }
        }
        Err(MetaError::Unavailable(format!(
            "registering {key}: the key kept changing"
        )))
    }

    /// One registration: claim (unless `lease_id` holds a fresh claim), keep
    /// alive. Ok only when asked to stop.
    async fn register_once(
        &self,
        broker: &BrokerInfo,
        key: &str,
        value: &[u8],
        lease_id: &mut Option<i64>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), MetaError> {
        let mut c = self.client.clone();
        let lease = match lease_id.take() {
            Some(id) => id,
            None => self.claim_registration(broker, key, value).await?,
        };
        *lease_id = Some(lease);
        let (mut keeper, mut stream) = self
            .timed("lease keep-alive", c.lease_keep_alive(lease))
            .await?;
        let every = Duration::from_secs((self.lease_ttl_secs / 3).max(1) as u64);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return Ok(()),
            }
            let sent = Instant::now();
            let answered = async {
                self.timed("lease keep-alive", keeper.keep_alive()).await?;
                self.timed("lease keep-alive", stream.message()).await
            };
            match answered.await {
                Ok(Some(r)) if r.ttl() > 0 => self.renewed(lease, sent, r.ttl()),
                Ok(_) => {
                    self.lease_lost();
                    *lease_id = None;
                    return Err(MetaError::Unavailable(format!("lease {lease} expired")));
                }
                // The lease may still be alive: writes stop on their own once
                // the margin is reached, and the next keep-alive may succeed.
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `ops` for `group` in one transaction that requires this broker's
    /// claim on the group's coordinator slot (docs/cluster.md, "Consumer
    /// groups"), so a deposed coordinator cannot write; `Fenced` otherwise.
    async fn fenced(
        &self,
        group: &str,
        claim: Claim,
        what: &str,
        ops: Vec<TxnOp>,
    ) -> Result<(), MetaError> {
        let slot = super::group_slot(group);
        let txn = Txn::new()
            .when([holds(super::GROUPS_TOPIC, slot, claim)])
            .and_then(ops);
        let mut c = self.client.clone();
        let resp = self.timed(what, c.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(MetaError::Fenced {
                topic: super::GROUPS_TOPIC.to_string(),
                partition: slot,
            });
        }
        Ok(())
    }

    /// Stops the registration and revokes its lease (graceful shutdown).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .registration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            // Bounded: with etcd away the lease simply expires after its TTL.
            let _ = tokio::time::timeout(self.timeout * 2, task).await;
        }
    }

    /// Sends every snapshot change after `from` to `tx` until the receiver is gone,
    /// re-establishing the watch after errors from the last revision seen.
    async fn watch_loop(self: Arc<Self>, from: i64, tx: mpsc::UnboundedSender<ClusterState>) {
        let mut next = from + 1;
        let mut backoff = BACKOFF;
        while !tx.is_closed() {
            let mut c = self.client.clone();
            let opts = WatchOptions::new()
                .with_start_revision(next)
                .with_progress_notify();
            match self
                .timed("watch", c.watch(keys::SNAPSHOT, Some(opts)))
                .await
            {
                Ok(mut stream) => {
                    loop {
                        match stream.message().await {
                            Ok(Some(resp)) => {
                                backoff.reset();
                                if resp.compact_revision() > 0 || resp.canceled() {
                                    // History up to `next` is gone: read the current
                                    // snapshot instead, then watch on from there.
                                    warn!(
                                        compact_revision = resp.compact_revision(),
                                        reason = resp.cancel_reason(),
                                        "snapshot watch cancelled; resynchronising"
                                    );
                                    match self.snapshots.read().await {
                                        Ok((snap, rev)) if rev >= next => {
                                            match state_from_pb(&snap, rev) {
                                                Ok(s) => {
                                                    let _ = tx.unbounded_send(s);
                                                }
                                                Err(e) => warn!(error = %e, "snapshot unreadable"),
                                            }
                                            next = rev + 1;
                                        }
                                        Ok(_) => {}
                                        Err(e) => warn!(error = %e, "snapshot resync failed"),
                                    }
                                    break;
                                }
                                for ev in resp.events() {
                                    let Some(kv) = ev.kv() else { continue };
                                    next = next.max(kv.mod_revision() + 1);
                                    if ev.event_type() != EventType::Put {
                                        warn!("the metadata snapshot was deleted; keeping the last one");
                                        continue;
                                    }
                                    let state = snapshot::decode(kv.value())
                                        .map_err(MetaError::from)
                                        .and_then(|s| state_from_pb(&s, kv.mod_revision()));
                                    match state {
                                        Ok(s) => {
                                            if tx.unbounded_send(s).is_err() {
                                                return;
                                            }
                                        }
                                        Err(e) => {
                                            warn!(error = %e, "ignoring an unreadable snapshot")
                                        }
                                    }
                                }
                            }
                            Ok(None) => {
                                warn!("snapshot watch ended; re-establishing");
                                break;
                            }
                            Err(e) => {
                                warn!(error = %e, "snapshot watch failed; re-establishing");
                                break;
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "starting the snapshot watch failed; retrying"),
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }
}

/// The compare that makes a write fenced: the partition's owner key is still
/// the one `claim` created (its create revision is the claim's token).
fn holds(topic: &str, partition: i32, claim: Claim) -> Compare {
    Compare::create_revision(keys::owner(topic, partition), CompareOp::Equal, claim.token)
}

/// Folds the owner keys into what was seen before: present keys update their
/// partition, keys gone keep their epoch with no broker.
fn merge_owners(seen: &mut HashMap<String, HashMap<i32, OwnerSeen>>, owners: &Mirrored) {
    for o in seen.values_mut().flat_map(|m| m.values_mut()) {
        o.broker = None;
    }
    for (k, e) in &owners.entries {
        let Some((topic, p)) = keys::parse_owner(k) else {
            continue;
        };
        let Ok(v) = pb::PartitionOwner::decode(e.value.as_slice()) else {
            continue;
        };
        let topic_id = Uuid::from_slice(&v.topic_id).unwrap_or_default();
        let entry = seen
            .entry(topic)
            .or_default()
            .entry(p)
            .or_insert(OwnerSeen {
                topic_id,
                broker: None,
                epoch: 0,
            });
        if entry.topic_id != topic_id {
            entry.epoch = 0;
            entry.topic_id = topic_id;
        }
        entry.broker = Some(v.broker_id);
        entry.epoch = entry.epoch.max(v.leader_epoch);
    }
}

/// The live set, controller and assignments from their mirrored keys.
fn live_view(brokers: &Mirrored, assignments: &Mirrored, ctrl: &Mirrored) -> Live {
    let mut live = Live {
        clustered: true,
        ..Default::default()
    };
    for e in brokers.entries.values() {
        if let Ok(r) = pb::BrokerRegistration::decode(e.value.as_slice()) {
            live.listeners.insert(
                r.node_id,
                r.listeners
                    .into_iter()
                    .map(|l| (l.name, l.host, l.port))
                    .collect(),
            );
            live.brokers.insert(r.node_id, (r.host, r.port));
        }
    }
    for (k, e) in &assignments.entries {
        let (Some(name), Ok(a)) = (
            keys::parse_assignment(k),
            pb::Assignment::decode(e.value.as_slice()),
        ) else {
            continue;
        };
        live.assignments.insert(
            name,
            TopicAssignment {
                topic_id: Uuid::from_slice(&a.topic_id).unwrap_or_default(),
                owners: a.owners,
            },
        );
    }
    live.controller = ctrl
        .entries
        .get(keys::CONTROLLER)
        .and_then(|e| pb::ControllerClaim::decode(e.value.as_slice()).ok())
        .map(|c| c.broker_id);
    live
}

/// The store as the trait object the broker uses, sharing the connection.
pub struct EtcdHandle(pub Arc<EtcdStore>);

#[async_trait::async_trait]
impl MetadataStore for EtcdHandle {
    async fn load(&self) -> Result<ClusterState, MetaError> {
        let (snap, rev) = self.0.snapshots.read().await?;
        if rev != 0 && !snap.cluster_id.is_empty() {
            return state_from_pb(&snap, rev);
        }
        // First broker of a new cluster: store the snapshot with a cluster id.
        self.0
            .update_snapshot("init snapshot", |_| Ok(Vec::new()))
            .await
    }

    async fn create_topic(&self, topic: TopicMeta) -> Result<ClusterState, MetaError> {
        let mut stored = topic_to_pb(&topic);
        stored.created_ms = now_ms();
        let config = stored.encode_to_vec();
        self.0
            .update_snapshot("create topic", |snap| {
                if snap.topics.iter().any(|t| t.name == topic.name) {
                    return Err(MetaError::TopicExists(topic.name.clone()));
                }
                snap.topics.push(stored.clone());
                snap.topics.sort_by(|a, b| a.name.cmp(&b.name));
                // Partition state of an earlier topic of this name was deleted with
                // it, and carries that topic's id, so none is seeded here (etcd
                // also refuses a delete and a put of the same key in one txn).
                Ok(vec![TxnOp::put(
                    keys::topic_config(&topic.name),
                    config.clone(),
                    None,
                )])
            })
            .await
    }

    async fn mark_deleting(&self, name: &str) -> Result<(ClusterState, Uuid), MetaError> {
        let updated = self
            .0
            .snapshots
            .update("mark topic deleted", |snap| {
                let Some(t) = snap.topics.iter_mut().find(|t| t.name == name) else {
                    return Err(MetaError::UnknownTopic(name.to_string()));
                };
                let id = snapshot::topic_id(t)?;
                if t.deleting {
                    return Ok(Change::Keep(id));
                }
                t.deleting = true;
                // The assignment goes in the same transaction: every claim compares
                // it, so from this revision on nobody can claim the topic's
                // partitions, and the owners seen now are the last ones.
                Ok(Change::Write(
                    vec![TxnOp::delete(keys::assignment(name), None)],
                    id,
                ))
            })
            .await?;
        Ok((
            state_from_pb(&updated.snapshot, updated.revision)?,
            updated.value,
        ))
    }

    async fn claim_deletion(&self, name: &str, id: Uuid) -> Result<bool, MetaError> {
        let Some(lease) = *self.0.lease.borrow() else {
            return Err(MetaError::Unavailable(
                "this broker's lease is being renewed".into(),
            ));
        };
        let key = keys::deletion(name);
        let value = pb::ControllerClaim {
            broker_id: self.0.broker_id,
            lease,
        };
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                value.encode_to_vec(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let mut c = self.0.client.clone();
        let resp = self.0.timed("claim topic deletion", c.txn(txn)).await?;
        if resp.succeeded() {
            info!(topic = name, %id, "finishing the topic's deletion");
            return Ok(true);
        }
        let held = resp.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        // Held by this very incarnation: a retry of a deletion it is running.
        Ok(held.is_some_and(|kv| {
            pb::ControllerClaim::decode(kv.value())
                .is_ok_and(|c| c.lease == lease && c.broker_id == self.0.broker_id)
        }))
    }

    async fn owners_left(&self, name: &str) -> Result<usize, MetaError> {
        let mut c = self.0.client.clone();
        let resp = self
            .0
            .timed(
                "count partition owners",
                c.get(
                    keys::owners_prefix(name),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            )
            .await?;
        Ok(usize::try_from(resp.count()).unwrap_or(usize::MAX))
    }

    async fn delete_topic(&self, name: &str, id: Uuid) -> Result<ClusterState, MetaError> {
        self.0
            .update_snapshot("delete topic", |snap| {
                let before = snap.topics.len();
                snap.topics
                    .retain(|t| !(t.name == name && t.topic_id == id.as_bytes()));
                if snap.topics.len() == before {
                    return Err(MetaError::UnknownTopic(name.to_string()));
                }
                // Owner keys are gone already (the deleter waited for them);
                // whatever is left of them, of the states and of the deletion
                // claim goes with the topic.
                Ok(vec![
                    TxnOp::delete(
                        keys::topic_prefix(name),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                    TxnOp::delete(
                        keys::owners_prefix(name),
                        Some(DeleteOptions::new().with_prefix()),
                    ),
                    TxnOp::delete(keys::deletion(name), None),
                ])
            })
            .await
    }

    async fn update_topic(&self, topic: TopicMeta) -> Result<ClusterState, MetaError> {
        self.0
            .update_snapshot("update topic", |snap| {
                let Some(t) = snap
                    .topics
                    .iter_mut()
                    .find(|t| t.name == topic.name && !t.deleting)
                else {
                    return Err(MetaError::UnknownTopic(topic.name.clone()));
                };
                let mut stored = topic_to_pb(&topic);
                stored.created_ms = t.created_ms;
                *t = stored.clone();
                Ok(vec![TxnOp::put(
                    keys::topic_config(&topic.name),
                    stored.encode_to_vec(),
                    None,
                )])
            })
            .await
    }

    async fn watch(&self, revision: i64) -> Result<SnapshotStream, MetaError> {
        let (tx, rx) = mpsc::unbounded();
        tokio::spawn(self.0.clone().watch_loop(revision, tx));
        Ok(rx.boxed())
    }

    fn tracks_partition_state(&self) -> bool {
        true
    }

    async fn partition_state(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<Committed>, MetaError> {
        let key = keys::partition(topic, partition);
        let mut c = self.0.client.clone();
        let resp = self
            .0
            .timed("get partition state", c.get(key.as_str(), None))
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let st = pb::PartitionState::decode(kv.value()).map_err(|e| corrupt(&key, e))?;
        // State of an earlier topic with the same name says nothing about this one.
        if st.topic_id != topic_id.as_bytes() {
            return Ok(None);
        }
        Ok(Some(Committed {
            next_offset: st.next_offset,
            log_start: st.log_start_offset,
        }))
    }

    async fn commit_partition(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        next_offset: i64,
        log_start: i64,
        claim: Claim,
    ) -> Result<(), MetaError> {
        let st = pb::PartitionState {
            topic_id: topic_id.as_bytes().to_vec(),
            next_offset,
            broker_id: self.0.broker_id,
            updated_ms: now_ms(),
            leader_epoch: claim.epoch,
            log_start_offset: log_start,
        };
        let txn = Txn::new()
            .when([holds(topic, partition, claim)])
            .and_then([TxnOp::put(
                keys::partition(topic, partition),
                st.encode_to_vec(),
                None,
            )]);
        let mut c = self.0.client.clone();
        let resp = self.0.timed("commit partition state", c.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(MetaError::Fenced {
                topic: topic.to_string(),
                partition,
            });
        }
        Ok(())
    }

    async fn compaction(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Option<Manifest>, MetaError> {
        let key = keys::compaction(topic, partition);
        let mut c = self.0.client.clone();
        let resp = self
            .0
            .timed("get compaction manifest", c.get(key.as_str(), None))
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let m = pb::CompactionManifest::decode(kv.value()).map_err(|e| corrupt(&key, e))?;
        if m.topic_id != topic_id.as_bytes() {
            return Ok(None);
        }
        Ok(Some(Manifest {
            ranges: m
                .ranges
                .iter()
                .map(|r| CompactedRange {
                    base: r.base,
                    last: r.last,
                    gen: r.gen,
                    bytes: r.bytes,
                })
                .collect(),
            horizon_ms: m.horizon_ms,
        }))
    }

    async fn commit_compaction(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
        manifest: &Manifest,
        claim: Claim,
    ) -> Result<(), MetaError> {
        let m = pb::CompactionManifest {
            topic_id: topic_id.as_bytes().to_vec(),
            ranges: manifest
                .ranges
                .iter()
                .map(|r| pb::CompactedRange {
                    base: r.base,
                    last: r.last,
                    gen: r.gen,
                    bytes: r.bytes,
                })
                .collect(),
            horizon_ms: manifest.horizon_ms,
            broker_id: self.0.broker_id,
            updated_ms: now_ms(),
        };
        let txn = Txn::new()
            .when([holds(topic, partition, claim)])
            .and_then([TxnOp::put(
                keys::compaction(topic, partition),
                m.encode_to_vec(),
                None,
            )]);
        let mut c = self.0.client.clone();
        let resp = self
            .0
            .timed("commit compaction manifest", c.txn(txn))
            .await?;
        if !resp.succeeded() {
            return Err(MetaError::Fenced {
                topic: topic.to_string(),
                partition,
            });
        }
        Ok(())
    }

    fn tracks_ownership(&self) -> bool {
        true
    }

    async fn claim_partition(
        &self,
        topic: &str,
        topic_id: Uuid,
        partition: i32,
    ) -> Result<Claim, MetaError> {
        let owner_key = keys::owner(topic, partition);
        let state_key = keys::partition(topic, partition);
        let assignment_key = keys::assignment(topic);
        let mut c = self.0.client.clone();
        for _ in 0..8 {
            let Some(lease) = *self.0.lease.borrow() else {
                return Err(MetaError::Unavailable(
                    "this broker's lease is being renewed".into(),
                ));
            };
            // Three plain reads, not one read-only transaction: etcd 3.5.0-3.5.4
            // panics (etcd-io/etcd#14110) when a read-only transaction's context is
            // cancelled, which is what a broker killed mid-read does. The claim below
            // compares all three keys, so reading them one by one loses nothing.
            let (mut c2, mut c3) = (c.clone(), c.clone());
            let (owner, state, assignment) = tokio::try_join!(
                self.0
                    .timed("read partition owner", c.get(owner_key.as_str(), None)),
                self.0
                    .timed("read partition state", c2.get(state_key.as_str(), None)),
                self.0.timed(
                    "read topic assignment",
                    c3.get(assignment_key.as_str(), None)
                ),
            )?;
            let (owner, state, assignment) = (
                owner.kvs().first().cloned(),
                state.kvs().first().cloned(),
                assignment.kvs().first().cloned(),
            );
            // No claim without the topic's assignment: DeleteTopics removes it in
            // the transaction that marks the topic, so that the owners it then
            // waits for are the last ones.
            let assigned = assignment.as_ref().filter(|kv| {
                pb::Assignment::decode(kv.value()).is_ok_and(|a| a.topic_id == topic_id.as_bytes())
            });
            let Some(assigned) = assigned else {
                return Err(MetaError::Unassigned {
                    topic: topic.to_string(),
                    partition,
                });
            };
            let assigned_rev = assigned.create_revision();
            if let Some(kv) = &owner {
                let o =
                    pb::PartitionOwner::decode(kv.value()).map_err(|e| corrupt(&owner_key, e))?;
                if o.lease == lease
                    && o.broker_id == self.0.broker_id
                    && o.topic_id == topic_id.as_bytes()
                {
                    // Claimed earlier by this incarnation (the partition was reopened).
                    return Ok(Claim {
                        token: kv.create_revision(),
                        epoch: o.leader_epoch,
                    });
                }
                return Err(MetaError::NotOwner {
                    topic: topic.to_string(),
                    partition,
                    owner: o.broker_id,
                });
            }
            let (mut st, state_rev) = match &state {
                Some(kv) => (
                    pb::PartitionState::decode(kv.value()).map_err(|e| corrupt(&state_key, e))?,
                    kv.mod_revision(),
                ),
                None => (pb::PartitionState::default(), 0),
            };
            if st.topic_id != topic_id.as_bytes() {
                // State of an earlier topic of this name: start over, epochs too.
                st = pb::PartitionState {
                    topic_id: topic_id.as_bytes().to_vec(),
                    ..Default::default()
                };
            }
            let epoch = st.leader_epoch + 1;
            st.leader_epoch = epoch;
            st.broker_id = self.0.broker_id;
            st.updated_ms = now_ms();
            let value = pb::PartitionOwner {
                broker_id: self.0.broker_id,
                lease,
                leader_epoch: epoch,
                topic_id: topic_id.as_bytes().to_vec(),
            };
            let txn = Txn::new()
                .when([
                    Compare::create_revision(owner_key.as_str(), CompareOp::Equal, 0),
                    Compare::mod_revision(state_key.as_str(), CompareOp::Equal, state_rev),
                    Compare::create_revision(
                        assignment_key.as_str(),
                        CompareOp::Equal,
                        assigned_rev,
                    ),
                ])
                .and_then([
                    TxnOp::put(
                        owner_key.as_str(),
                        value.encode_to_vec(),
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                    TxnOp::put(state_key.as_str(), st.encode_to_vec(), None),
                ]);
            let resp = self.0.timed("claim partition", c.txn(txn)).await?;
            if resp.succeeded() {
                let token = resp.header().map_or(0, |h| h.revision());
                info!(topic, partition, epoch, "partition claimed");
                return Ok(Claim { token, epoch });
            }
        }
        Err(MetaError::Unavailable(format!(
            "claiming {topic}-{partition}: its keys kept changing"
        )))
    }

    async fn release_partition(
        &self,
        topic: &str,
        partition: i32,
        claim: Claim,
    ) -> Result<(), MetaError> {
        let txn = Txn::new()
            .when([holds(topic, partition, claim)])
            .and_then([TxnOp::delete(keys::owner(topic, partition), None)]);
        let mut c = self.0.client.clone();
        self.0.timed("release partition", c.txn(txn)).await?;
        info!(topic, partition, "partition released");
        Ok(())
    }

    fn writable(&self) -> bool {
        self.0.writable()
    }

    async fn resign(&self) {
        self.0.shutdown().await;
    }

    async fn set_draining(&self, on: bool) -> Result<(), MetaError> {
        let value = {
            let mut v = self
                .0
                .registration_value
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut reg = pb::BrokerRegistration::decode(v.as_slice())
                .map_err(|e| corrupt("registration", e))?;
            reg.draining = on;
            *v = reg.encode_to_vec();
            v.clone()
        };
        let Some(lease) = *self.0.lease.borrow() else {
            // Re-registering: it writes the new value.
            return Ok(());
        };
        let mut c = self.0.client.clone();
        self.0
            .timed(
                "mark broker drained",
                c.put(
                    keys::broker(self.0.broker_id),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await?;
        info!(draining = on, "broker registration updated");
        Ok(())
    }

    async fn watch_live(&self) -> Result<LiveStream, MetaError> {
        let t = self.0.timeout;
        let mut brokers = mirror::spawn(self.0.client.clone(), keys::BROKERS, t);
        let mut assignments = mirror::spawn(self.0.client.clone(), keys::ASSIGNMENTS, t);
        let mut ctrl = mirror::spawn(self.0.client.clone(), keys::CONTROLLER, t);
        let mut owners = mirror::spawn(self.0.client.clone(), keys::OWNERS, t);
        mirror::first(&mut brokers).await;
        mirror::first(&mut assignments).await;
        mirror::first(&mut ctrl).await;
        mirror::first(&mut owners).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Live>>();
        tokio::spawn(async move {
            let mut last: Option<Live> = None;
            let mut seen: HashMap<String, HashMap<i32, OwnerSeen>> = HashMap::new();
            loop {
                let mut live = live_view(
                    &brokers.borrow_and_update(),
                    &assignments.borrow_and_update(),
                    &ctrl.borrow_and_update(),
                );
                merge_owners(&mut seen, &owners.borrow_and_update());
                live.owners = seen.clone();
                if last.as_ref() != Some(&live) {
                    if tx.send(Arc::new(live.clone())).is_err() {
                        return;
                    }
                    last = Some(live);
                }
                let r = tokio::select! {
                    r = brokers.changed() => r,
                    r = assignments.changed() => r,
                    r = ctrl.changed() => r,
                    r = owners.changed() => r,
                    _ = tx.closed() => return,
                };
                if r.is_err() {
                    return;
                }
                // A failover changes many keys at once: take them as one view.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
                .boxed(),
        )
    }

    async fn watch_security(&self) -> Result<super::SecurityStream, MetaError> {
        let mut m = mirror::spawn(self.0.client.clone(), keys::SECURITY, self.0.timeout);
        mirror::first(&mut m).await;
        m.mark_changed();
        Ok(futures::stream::unfold(m, |mut m| async move {
            m.changed().await.ok()?;
            let records = m
                .borrow_and_update()
                .entries
                .iter()
                .filter_map(|(k, e)| {
                    Some((k.strip_prefix(keys::SECURITY)?.to_string(), e.value.clone()))
                })
                .collect();
            Some((Arc::new(records), m))
        })
        .boxed())
    }

    async fn put_security(&self, changes: Vec<(String, Option<Vec<u8>>)>) -> Result<(), MetaError> {
        // Credentials and ACLs are small keys; a request may change many (a
        // DeleteAcls filter of ANY), so they go in transactions of at most
        // MAX_TXN_OPS, each atomic on its own.
        for chunk in changes.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(k, v)| {
                    let key = format!("{}{k}", keys::SECURITY);
                    match v {
                        Some(v) => TxnOp::put(key, v.clone(), None),
                        None => TxnOp::delete(key, None),
                    }
                })
                .collect();
            let mut c = self.0.client.clone();
            self.0
                .timed("put security records", c.txn(Txn::new().and_then(ops)))
                .await?;
        }
        Ok(())
    }

    async fn load_groups(&self) -> Result<Vec<StoredGroup>, MetaError> {
        let mut c = self.0.client.clone();
        let resp = self
            .0
            .timed(
                "load groups",
                c.get(keys::CONSUMERS, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut groups: std::collections::BTreeMap<String, StoredGroup> = Default::default();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            match keys::parse_consumer_key(key) {
                Some(keys::ConsumerKey::Meta { group }) => {
                    let m = pb::GroupMetadata::decode(kv.value()).map_err(|e| corrupt(key, e))?;
                    let g = groups.entry(group.clone()).or_default();
                    g.group_id = group;
                    g.meta = Some(group_from_pb(m));
                }
                Some(keys::ConsumerKey::Offset {
                    group,
                    topic,
                    partition,
                }) => {
                    let o = pb::CommittedOffset::decode(kv.value()).map_err(|e| corrupt(key, e))?;
                    let g = groups.entry(group.clone()).or_default();
                    g.group_id = group;
                    g.offsets.push((topic, partition, offset_from_pb(o)));
                }
                None => warn!(key, "skipping an unknown key under /kafscale/consumers/"),
            }
        }
        Ok(groups.into_values().collect())
    }

    async fn put_group(&self, group: &str, meta: GroupMeta, claim: Claim) -> Result<(), MetaError> {
        let value = group_to_pb(group, &meta).encode_to_vec();
        self.0
            .fenced(
                group,
                claim,
                "put group",
                vec![TxnOp::put(keys::group_meta(group), value, None)],
            )
            .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, OffsetMeta)>,
        claim: Claim,
    ) -> Result<(), MetaError> {
        // One transaction per chunk: a commit of many partitions stays within
        // etcd's operation limit; each chunk is atomic and fenced.
        for chunk in offsets.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(t, p, o)| {
                    TxnOp::put(
                        keys::offset(group, t, *p),
                        offset_to_pb(o).encode_to_vec(),
                        None,
                    )
                })
                .collect();
            self.0.fenced(group, claim, "commit offsets", ops).await?;
        }
        Ok(())
    }

    async fn delete_topic_offsets(
        &self,
        group: &str,
        topic: &str,
        claim: Claim,
    ) -> Result<(), MetaError> {
        let op = TxnOp::delete(
            keys::group_topic_offsets(group, topic),
            Some(DeleteOptions::new().with_prefix()),
        );
        self.0
            .fenced(group, claim, "delete offsets", vec![op])
            .await
    }

    async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
        claim: Claim,
    ) -> Result<(), MetaError> {
        let ops = partitions
            .iter()
            .map(|(t, p)| TxnOp::delete(keys::offset(group, t, *p), None))
            .collect();
        self.0.fenced(group, claim, "delete offsets", ops).await
    }

    async fn delete_group(&self, group: &str, claim: Claim) -> Result<(), MetaError> {
        let op = TxnOp::delete(
            keys::group_prefix(group),
            Some(DeleteOptions::new().with_prefix()),
        );
        self.0.fenced(group, claim, "delete group", vec![op]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_the_snapshot() {
        let t = TopicMeta {
            name: "orders".into(),
            id: Uuid::new_v4(),
            partitions: 6,
            configs: [("retention.ms".to_string(), "60000".to_string())].into(),
            deleting: true,
        };
        let snap = pb::ClusterSnapshot {
            cluster_id: "c".into(),
            brokers: Vec::new(),
            topics: vec![topic_to_pb(&t)],
        };
        let back = pb::ClusterSnapshot::decode(&snap.encode_to_vec()[..]).unwrap();
        let st = state_from_pb(&back, 17).unwrap();
        assert_eq!((st.cluster_id.as_str(), st.revision), ("c", 17));
        assert_eq!(st.topics, vec![t]);
    }

    #[test]
    fn a_bad_topic_id_is_corruption_not_a_panic() {
        let snap = pb::ClusterSnapshot {
            cluster_id: "c".into(),
            brokers: Vec::new(),
            topics: vec![pb::TopicConfig {
                name: "t".into(),
                topic_id: vec![1, 2, 3],
                ..Default::default()
            }],
        };
        assert!(matches!(
            state_from_pb(&snap, 1),
            Err(MetaError::Corrupt(_))
        ));
    }

    #[test]
    fn groups_and_offsets_round_trip() {
        let meta = GroupMeta {
            protocol_type: "consumer".into(),
            protocol: Some("range".into()),
            generation: 4,
            leader: Some("m1".into()),
            members: vec![StoredMember {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 20_000,
                subscription: vec![0, 1, 255],
                assignment: vec![9, 8],
            }],
            consumer: Some(crate::metadata::sample_consumer_meta()),
        };
        let b = group_to_pb("g", &meta).encode_to_vec();
        let back = pb::GroupMetadata::decode(&b[..]).unwrap();
        assert_eq!(back.group_id, "g");
        assert_eq!(group_from_pb(back), meta);
        let empty = GroupMeta {
            protocol_type: "consumer".into(),
            ..Default::default()
        };
        let b = group_to_pb("g", &empty).encode_to_vec();
        assert_eq!(
            group_from_pb(pb::GroupMetadata::decode(&b[..]).unwrap()),
            empty
        );

        for metadata in [None, Some(String::new()), Some("m".into())] {
            let o = OffsetMeta {
                offset: 42,
                leader_epoch: -1,
                metadata,
                commit_ms: 7,
            };
            let b = offset_to_pb(&o).encode_to_vec();
            assert_eq!(
                offset_from_pb(pb::CommittedOffset::decode(&b[..]).unwrap()),
                o
            );
        }
    }
}
