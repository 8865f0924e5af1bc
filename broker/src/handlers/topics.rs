//! CreateTopics and DeleteTopics, auto-creation, and the shared path of every
//! change to an existing topic (configs, partition count). Every change runs on the
//! metadata shard, one at a time: persist to the metadata store, then install
//! the new snapshot on every shard. Deletion marks the topic (every broker stops
//! it and gives its partitions up), then deletes its objects, then its metadata,
//! so a topic re-created under the same name never finds the old segments
//! (docs/cluster.md, "Topics across brokers").
//!
//! Changes made elsewhere (another broker sharing etcd, the operator) arrive
//! through the store's snapshot watch (`follow_store`) and are installed the same
//! way. Every installed snapshot carries the store revision it was read at, and a
//! shard only ever moves forward: an older snapshot arriving late is ignored.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::Either;
use futures::StreamExt;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::errors::*;
use crate::io::CallError;
use crate::metadata::{valid_topic_name, Cluster, ClusterState, MetaError, TopicMeta};
use crate::placement::METADATA_SHARD;
use crate::shard::Shard;

struct Outcome {
    error: i16,
    message: Option<String>,
    topic: Option<TopicMeta>,
}

impl Outcome {
    fn err(error: i16, message: impl Into<String>) -> Self {
        Outcome {
            error,
            message: Some(message.into()),
            topic: None,
        }
    }
}

/// Creates topics that a Metadata or Produce request named, with the default
/// partition count. Errors are left for the caller's lookup to report.
pub async fn auto_create(shard: &Rc<Shard>, names: Vec<String>) {
    let partitions = shard.settings.auto_create_partitions;
    let _ = shard
        .on(METADATA_SHARD, move |sh| async move {
            for name in names {
                let o = create_one(&sh, name.clone(), partitions, BTreeMap::new(), false).await;
                if o.error == NONE {
                    info!(topic = %name, partitions, "topic auto-created");
                    wait_for_leaders(&sh, &name).await;
                }
            }
        })
        .await;
}

/// How long a topic creation waits for the controller to assign the new
/// partitions (clusters), so that the client's first Metadata finds leaders.
const LEADERS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (bounded) until every partition of `topic` has a live leader in this
/// shard's view; at once for a broker alone. Clients cope with a partition
/// without a leader (LEADER_NOT_AVAILABLE, retried), so the wait only spares
/// them a round of retries; it holds no lock.
async fn wait_for_leaders(sh: &Rc<Shard>, topic: &str) {
    let deadline = sh.clock().now() + LEADERS_WAIT;
    loop {
        let cluster = sh.cluster();
        let done = match cluster.topic(topic) {
            Some(t) => (0..t.partitions).all(|p| cluster.leader(t, p).is_some()),
            None => true,
        };
        if done || sh.clock().now() >= deadline {
            return;
        }
        sh.clock().sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Installs `next` on every shard.
async fn publish(sh: &Rc<Shard>, next: Cluster) {
    let next = Arc::new(next);
    sh.on_all(move |s| {
        let next = next.clone();
        async move { s.apply_cluster(next).await }
    })
    .await;
}

/// Installs a stored state on every shard if it is newer than the one in use;
/// the caller holds the admin lock. Topics that disappeared also lose their
/// groups' committed offsets, as when they are deleted here.
async fn install(sh: &Rc<Shard>, state: ClusterState) {
    let cur = sh.cluster();
    if state.revision <= cur.revision {
        return;
    }
    let gone: Vec<String> = cur
        .topics
        .values()
        .filter(|t| {
            !state
                .topics
                .iter()
                .any(|n| n.name == t.name && n.id == t.id && !n.deleting)
        })
        .map(|t| t.name.clone())
        .collect();
    publish(
        sh,
        Cluster::new(&state, cur.broker_id, cur.host.clone(), cur.port).with_live(cur.live.clone()),
    )
    .await;
    for name in gone {
        sh.on_all(move |s| crate::groups::forget_topic(s.groups.clone(), name.clone()))
            .await;
    }
}

/// The Kafka code for a failed metadata-store call: retriable when the store is
/// only unreachable for now.
fn store_error_code(e: &MetaError) -> i16 {
    if e.is_retriable() {
        REQUEST_TIMED_OUT
    } else {
        KAFKA_STORAGE_ERROR
    }
}

/// Follows the store's snapshot watch on the metadata shard for as long as the
/// broker runs, so topics created, deleted or grown elsewhere show up here
/// without a restart.
pub fn follow_store(shard: &Rc<Shard>) {
    let sh = shard.clone();
    crate::runtime::spawn_detached(async move {
        let meta = sh.meta.clone();
        let from = sh.cluster().revision;
        // A deletion this broker (alone) or a predecessor left half-way.
        resume_deletions(&sh);
        let mut stream = match sh.io.call(async move { meta.watch(from).await }).await {
            Ok(s) => s,
            Err(CallError::Failed(e)) => {
                error!(error = %e, "cannot watch the metadata store; topic changes made elsewhere need a restart");
                return;
            }
            Err(CallError::Gone(e)) => {
                error!(error = %e, "cannot watch the metadata store");
                return;
            }
        };
        while let Some(state) = stream.next().await {
            if sh.is_shutting_down() {
                break;
            }
            let _guard = sh.admin_lock.lock().await;
            let (before, revision) = (sh.cluster().topics.len(), state.revision);
            if revision > sh.cluster().revision {
                install(&sh, state).await;
                info!(
                    revision,
                    topics_before = before,
                    topics = sh.cluster().topics.len(),
                    "metadata snapshot changed in the store; installed"
                );
            }
            resume_deletions(&sh);
        }
    });
}

/// Follows the live brokers, the controller and the assignments (clusters) on
/// the metadata shard, installing each change on every shard with the topics
/// kept: partitions assigned elsewhere are handed over there (`partition::logs`),
/// Metadata lists the new leaders.
pub fn follow_live(shard: &Rc<Shard>) {
    let sh = shard.clone();
    crate::runtime::spawn_detached(async move {
        let meta = sh.meta.clone();
        let mut stream = match sh.io.call(async move { meta.watch_live().await }).await {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot follow the live brokers and assignments");
                return;
            }
        };
        while let Some(live) = stream.next().await {
            if sh.is_shutting_down() {
                break;
            }
            let _guard = sh.admin_lock.lock().await;
            let cur = sh.cluster();
            // Membership and the controller change rarely; claims (owner keys)
            // change in bursts at every failover and are not worth an info line each.
            if live.brokers != cur.live.brokers || live.controller != cur.live.controller {
                info!(
                    brokers = ?live.brokers.keys().collect::<Vec<_>>(),
                    controller = ?live.controller,
                    "live brokers or controller changed"
                );
            } else {
                tracing::debug!("assignments or claims changed");
            }
            let next = Cluster::new(&cur.state(), cur.broker_id, cur.host.clone(), cur.port)
                .with_live(live);
            publish(&sh, next).await;
            resume_deletions(&sh);
        }
    });
}

/// Changes an existing topic on the metadata shard, one change at a time:
/// `change` computes the new metadata from the current one (or refuses with a
/// Kafka code and message); the result is persisted with
/// `MetadataStore::update_topic` and installed on every shard, unless
/// `validate_only`. The topic's name and id cannot change.
pub(crate) async fn update_topic<F>(
    shard: &Rc<Shard>,
    name: String,
    validate_only: bool,
    change: F,
) -> Result<(), (i16, String)>
where
    F: FnOnce(&TopicMeta) -> Result<TopicMeta, (i16, String)> + Send + 'static,
{
    shard
        .on(METADATA_SHARD, move |sh| async move {
            let _guard = sh.admin_lock.lock().await;
            let Some(current) = sh.cluster().topic(&name).cloned() else {
                return Err((
                    UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name} does not exist"),
                ));
            };
            let mut next = change(&current)?;
            next.name = current.name.clone();
            next.id = current.id;
            if validate_only || next == *current {
                return Ok(());
            }
            let meta = sh.meta.clone();
            let t = next.clone();
            let state = match sh.io.call(async move { meta.update_topic(t).await }).await {
                Ok(state) => state,
                Err(CallError::Failed(MetaError::UnknownTopic(_))) => {
                    return Err((
                        UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} does not exist"),
                    ))
                }
                Err(CallError::Failed(e)) => {
                    error!(topic = %name, error = %e, "updating topic failed");
                    return Err((store_error_code(&e), e.to_string()));
                }
                Err(CallError::Gone(e)) => return Err((KAFKA_STORAGE_ERROR, e.to_string())),
            };
            info!(topic = %name, partitions = next.partitions, configs = ?next.configs, "topic updated");
            install(&sh, state).await;
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err((NOT_LEADER_OR_FOLLOWER, e.to_string())))
}

/// Whether one more topic of `partitions` partitions fits the limits on what
/// the cluster stores (every broker loads all of it at start, and Metadata
/// answers list it). Checked under the admin lock, against the installed view.
fn within_limits(sh: &Shard, partitions: i32) -> Result<(), Outcome> {
    let limits = sh.settings.limits;
    if partitions > limits.max_partitions_per_topic {
        return Err(Outcome::err(
            INVALID_PARTITIONS,
            format!(
                "at most {} partitions per topic (KAFSCALE_MAX_PARTITIONS_PER_TOPIC)",
                limits.max_partitions_per_topic
            ),
        ));
    }
    let cluster = sh.cluster();
    if cluster.topics.len() >= limits.max_topics {
        return Err(Outcome::err(
            POLICY_VIOLATION,
            format!(
                "the cluster holds {} topics (KAFSCALE_MAX_TOPICS)",
                cluster.topics.len()
            ),
        ));
    }
    let total: usize = cluster
        .topics
        .values()
        .map(|t| t.partitions.max(0) as usize)
        .sum();
    if total.saturating_add(partitions as usize) > limits.max_partitions {
        return Err(Outcome::err(
            POLICY_VIOLATION,
            format!(
                "the cluster holds {total} partitions; {partitions} more exceed KAFSCALE_MAX_PARTITIONS ({})",
                limits.max_partitions
            ),
        ));
    }
    Ok(())
}

async fn create_one(
    sh: &Rc<Shard>,
    name: String,
    partitions: i32,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Outcome {
    let _guard = sh.admin_lock.lock().await;
    if !valid_topic_name(&name) {
        return Outcome::err(
            INVALID_TOPIC_EXCEPTION,
            format!("invalid topic name {name:?}"),
        );
    }
    if sh.cluster().topic(&name).is_some() {
        return Outcome::err(TOPIC_ALREADY_EXISTS, format!("topic {name} already exists"));
    }
    if sh.cluster().deleting.contains_key(&name) {
        // Kafka's answer while a deletion is under way; the client retries.
        return Outcome::err(
            TOPIC_ALREADY_EXISTS,
            format!("topic {name} is marked for deletion"),
        );
    }
    if partitions < 1 {
        return Outcome::err(
            INVALID_PARTITIONS,
            "number of partitions must be at least 1",
        );
    }
    if let Err(o) = within_limits(sh, partitions) {
        return o;
    }
    let topic = TopicMeta {
        name: name.clone(),
        id: Uuid::new_v4(),
        partitions,
        configs,
        deleting: false,
    };
    if validate_only {
        return Outcome {
            error: NONE,
            message: None,
            topic: Some(topic),
        };
    }
    let meta = sh.meta.clone();
    let t = topic.clone();
    match sh.io.call(async move { meta.create_topic(t).await }).await {
        Ok(state) => install(sh, state).await,
        Err(CallError::Failed(MetaError::TopicExists(_))) => {
            // Created elsewhere and not seen here yet: take the store's state now
            // rather than wait for the watch, so the caller can use the topic.
            let meta = sh.meta.clone();
            if let Ok(state) = sh.io.call(async move { meta.load().await }).await {
                install(sh, state).await;
            }
            return Outcome::err(TOPIC_ALREADY_EXISTS, format!("topic {name} already exists"));
        }
        Err(CallError::Failed(e)) => {
            error!(topic = %name, error = %e, "creating topic failed");
            return Outcome::err(store_error_code(&e), e.to_string());
        }
        Err(CallError::Gone(e)) => return Outcome::err(KAFKA_STORAGE_ERROR, e.to_string()),
    }
    if sh.cluster().topic(&name).is_none_or(|t| t.id != topic.id) {
        // Cannot happen while the admin lock is held (nothing newer can have been
        // installed); said loudly because clients would see the topic missing.
        warn!(topic = %name, "created topic is not in the installed snapshot");
    }
    Outcome {
        error: NONE,
        message: None,
        topic: Some(topic),
    }
}

/// DeleteTopics of one topic, on the metadata shard: marks it for deletion
/// (every broker stops serving it and gives its partitions up), then finishes
/// the deletion (`finish_deletion`) in the background and waits for it until
/// `timeout`. A client that gets REQUEST_TIMED_OUT may retry: the deletion goes
/// on meanwhile, and the retry waits for the same one.
async fn delete_one(sh: &Rc<Shard>, name: String, timeout: Duration) -> i16 {
    let deadline = sh.clock().now() + timeout;
    let id = {
        let _guard = sh.admin_lock.lock().await;
        let cur = sh.cluster();
        if cur.topic(&name).is_none() && !cur.deleting.contains_key(&name) {
            return UNKNOWN_TOPIC_OR_PARTITION;
        }
        let meta = sh.meta.clone();
        let n = name.clone();
        match sh
            .io
            .call(async move { meta.mark_deleting(&n).await })
            .await
        {
            Ok((state, id)) => {
                info!(topic = %name, %id, "topic marked for deletion");
                install(sh, state).await;
                id
            }
            Err(CallError::Failed(MetaError::UnknownTopic(_))) => {
                return UNKNOWN_TOPIC_OR_PARTITION
            }
            Err(CallError::Failed(e)) => {
                error!(topic = %name, error = %e, "marking the topic for deletion failed; topic kept");
                return store_error_code(&e);
            }
            Err(CallError::Gone(_)) => return KAFKA_STORAGE_ERROR,
        }
    };
    if let Some(done) = spawn_finish(sh, name.clone(), id) {
        let timer = sh.clock().sleep_until(deadline);
        futures::pin_mut!(timer);
        match futures::future::select(done, timer).await {
            Either::Left((Ok(Finished::Done), _)) => return NONE,
            Either::Left((Ok(Finished::Elsewhere), _)) => {}
            Either::Left((Err(_), _)) | Either::Right(_) => return REQUEST_TIMED_OUT,
        }
    }
    // Another broker finishes it: answer once its removal reaches this one.
    loop {
        let cur = sh.cluster();
        if cur.deleting.get(&name).is_none_or(|t| t.id != id) {
            return NONE;
        }
        if sh.clock().now() >= deadline {
            return REQUEST_TIMED_OUT;
        }
        sh.clock().sleep(Duration::from_millis(20)).await;
    }
}

/// How a `finish_deletion` ended.
enum Finished {
    /// The topic's objects and metadata are gone.
    Done,
    /// Another broker holds the deletion and finishes it.
    Elsewhere,
}

/// Starts finishing the deletion of topic `id` unless this broker already is;
/// the receiver gets the outcome.
fn spawn_finish(
    sh: &Rc<Shard>,
    name: String,
    id: Uuid,
) -> Option<futures::channel::oneshot::Receiver<Finished>> {
    if !sh.deletions.borrow_mut().insert(name.clone()) {
        return None;
    }
    let (tx, rx) = futures::channel::oneshot::channel();
    let sh = sh.clone();
    crate::runtime::spawn_detached(async move {
        let outcome = finish_deletion(&sh, &name, id).await;
        sh.deletions.borrow_mut().remove(&name);
        if let Some(outcome) = outcome {
            let _ = tx.send(outcome);
        }
    });
    Some(rx)
}

/// Finishes deleting a topic marked for deletion: takes the deletion (one
/// broker at a time, under its lease), waits until no broker holds a claim on
/// any of its partitions (each gives its claims up once its uploads are over;
/// a dead broker's go with its lease), deletes the topic's objects, and only
/// then removes the topic from the metadata store, so its name can be created
/// again. Each step is retried until it succeeds; None when the broker shuts
/// down first. The order is what keeps a re-created topic's objects safe:
/// nothing of the old topic is written after its prefix is emptied, and nothing
/// of the new topic exists before.
async fn finish_deletion(sh: &Rc<Shard>, name: &str, id: Uuid) -> Option<Finished> {
    let mut backoff =
        crate::runtime::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut retry = |what: &str, detail: &dyn std::fmt::Display| {
        let delay = backoff.next();
        warn!(topic = name, error = %detail, retry_ms = delay.as_millis() as u64, "{what}; retrying");
        delay
    };
    loop {
        if sh.is_shutting_down() {
            return None;
        }
        let (meta, n) = (sh.meta.clone(), name.to_string());
        match sh
            .io
            .call(async move { meta.claim_deletion(&n, id).await })
            .await
        {
            Ok(true) => break,
            Ok(false) => return Some(Finished::Elsewhere),
            Err(e) => {
                let d = retry("taking the topic's deletion failed", &e);
                crate::runtime::sleep(d).await;
            }
        }
    }
    // Polled: the partitions' owners give their claims up on their own, each
    // when its last upload is over; a dead one's vanish with its lease.
    let mut waited_logged = false;
    let started = std::time::Instant::now();
    loop {
        if sh.is_shutting_down() {
            return None;
        }
        let (meta, n) = (sh.meta.clone(), name.to_string());
        match sh.io.call(async move { meta.owners_left(&n).await }).await {
            Ok(0) => break,
            Ok(left) => {
                if !waited_logged && started.elapsed() > Duration::from_secs(5) {
                    waited_logged = true;
                    info!(
                        topic = name,
                        partitions = left,
                        "deleted topic: waiting for its partitions' owners to let go"
                    );
                }
                crate::runtime::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                let d = retry("counting the deleted topic's owners failed", &e);
                crate::runtime::sleep(d).await;
            }
        }
    }
    let count = loop {
        if sh.is_shutting_down() {
            return None;
        }
        if !sh.meta.writable() {
            // Its lease may lapse: another broker may be taking the deletion over.
            crate::runtime::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let (store, n) = (sh.store().clone(), name.to_string());
        match sh
            .io
            .call(async move { store.delete_topic(&n).await })
            .await
        {
            Ok(count) => break count,
            Err(e) => {
                let d = retry("deleting the topic's objects failed", &e);
                crate::runtime::sleep(d).await;
            }
        }
    };
    loop {
        if sh.is_shutting_down() {
            return None;
        }
        let (meta, n) = (sh.meta.clone(), name.to_string());
        match sh
            .io
            .call(async move { meta.delete_topic(&n, id).await })
            .await
        {
            Ok(state) => {
                let _guard = sh.admin_lock.lock().await;
                install(sh, state).await;
                info!(topic = name, %id, objects = count, "topic deleted");
                return Some(Finished::Done);
            }
            // Finished by another broker that took the deletion over.
            Err(CallError::Failed(MetaError::UnknownTopic(_))) => return Some(Finished::Done),
            Err(e) => {
                let d = retry("removing the deleted topic's metadata failed", &e);
                crate::runtime::sleep(d).await;
            }
        }
    }
}

/// Finishes the deletions nobody is finishing: those of a broker that stopped
/// half-way (its deletion claim went with its lease). Run by the controller (by
/// the broker itself when alone) whenever its view changes.
fn resume_deletions(sh: &Rc<Shard>) {
    let cur = sh.cluster();
    if cur.deleting.is_empty() || sh.is_shutting_down() {
        return;
    }
    if cur.live.clustered && cur.live.controller != Some(cur.broker_id) {
        return;
    }
    for t in cur.deleting.values() {
        let _ = spawn_finish(sh, t.name.clone(), t.id);
    }
}

pub async fn create(
    shard: &Rc<Shard>,
    req: CreateTopicsRequest,
    _version: i16,
) -> CreateTopicsResponse {
    let default_partitions = shard.settings.auto_create_partitions;
    let validate_only = req.validate_only;
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let partitions = if !t.assignments.is_empty() {
            t.assignments.len() as i32
        } else if t.num_partitions == -1 {
            default_partitions
        } else {
            t.num_partitions
        };
        let mut configs = BTreeMap::new();
        let mut bad = None;
        for c in &t.configs {
            let value = c.value.as_ref().map(|v| v.as_str());
            if let Err(e) = kafscale_proto::topic_config::check(&c.name, value) {
                bad = Some(e.to_string());
                break;
            }
            if let Some(v) = value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        let outcome = if t.replication_factor == 0 || t.replication_factor < -1 {
            Outcome::err(
                INVALID_REPLICATION_FACTOR,
                "replication factor must be -1 or at least 1",
            )
        } else if let Some(e) = bad {
            Outcome::err(INVALID_CONFIG, e)
        } else {
            let n = name.clone();
            let o = shard
                .on(METADATA_SHARD, move |sh| async move {
                    create_one(&sh, n, partitions, configs, validate_only).await
                })
                .await
                .unwrap_or_else(|e| Outcome::err(NOT_LEADER_OR_FOLLOWER, e.to_string()));
            if o.error == NONE && !validate_only {
                wait_for_leaders(shard, &name).await;
            }
            o
        };
        let mut r = CreatableTopicResult::default();
        r.name = t.name;
        r.error_code = outcome.error;
        r.error_message = outcome.message.map(StrBytes::from_string);
        if let Some(topic) = outcome.topic {
            r.topic_id = topic.id;
            r.num_partitions = topic.partitions;
            r.replication_factor = 1;
            r.configs = Some(Vec::new());
        } else {
            r.num_partitions = -1;
            r.replication_factor = -1;
        }
        resp.topics.push(r);
    }
    resp
}

pub async fn delete(
    shard: &Rc<Shard>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let cluster = shard.cluster();
    // v6 names topics by name or id; older versions by name only.
    let wanted: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    // Kafka's default when a client sends none (or nonsense).
    let timeout = Duration::from_millis(if req.timeout_ms > 0 {
        req.timeout_ms as u64
    } else {
        30_000
    });
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in wanted {
        // A topic already being deleted resolves too: the retry of a delete that
        // timed out waits for the same deletion.
        let resolved = match &name {
            Some(n) => cluster
                .topic(&n.0)
                .or_else(|| cluster.deleting.get(n.0.as_str()))
                .map(|t| (t.name.clone(), t.id)),
            None => cluster.by_id.get(&id).map(|t| (t.name.clone(), t.id)),
        };
        let mut r = DeletableTopicResult::default();
        r.name = name.clone();
        r.topic_id = id;
        match resolved {
            None => {
                r.error_code = if name.is_some() {
                    UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    UNKNOWN_TOPIC_ID
                }
            }
            Some((n, tid)) => {
                r.name = Some(TopicName(StrBytes::from_string(n.clone())));
                r.topic_id = tid;
                r.error_code = shard
                    .on(METADATA_SHARD, move |sh| async move {
                        delete_one(&sh, n, timeout).await
                    })
                    .await
                    .unwrap_or(NOT_LEADER_OR_FOLLOWER);
            }
        }
        resp.responses.push(r);
    }
    resp
}
