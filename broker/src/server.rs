//! A shard's life: join the mesh, bind the Kafka listeners, accept connections,
//! and on shutdown stop accepting, seal every buffer, and wait until all of it
//! is durable and every waiting producer has been answered.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use tracing::{info, warn};

use crate::groups::Groups;
use crate::metadata::{Cluster, StoredGroup};
use crate::partition;
use crate::runtime::{bind, sleep, spawn_detached, MeshRx, MeshTx};
use crate::security::Listener as KafkaListener;
use crate::shard::{Shard, Shared};
use crate::start_error::{BindError, Listener};

pub struct ShardBoot {
    pub id: usize,
    pub count: usize,
    /// The Kafka listeners (with concrete ports), every one bound by every shard.
    pub listeners: Vec<Arc<KafkaListener>>,
    pub shared: Arc<Shared>,
    pub cluster: Arc<Cluster>,
    /// This shard's share of the stored consumer groups.
    pub groups: Vec<StoredGroup>,
    /// This shard's sending side of the mesh and its inbox.
    pub mesh: (MeshTx<Shard>, MeshRx<Shard>),
    pub shutdown: oneshot::Receiver<()>,
    /// The shard's id once it listens, or why it could not bind the Kafka port.
    pub ready: std::sync::mpsc::Sender<Result<usize, BindError>>,
}

pub async fn shard_main(boot: ShardBoot) {
    let ShardBoot {
        id,
        count,
        listeners,
        shared,
        cluster,
        groups,
        mesh,
        shutdown,
        ready,
    } = boot;
    let (tx, rx) = mesh;
    let groups = Groups::restore(
        groups,
        shared.settings.groups.clone(),
        shared.io.clone(),
        shared.meta.clone(),
        shared.clock.clone(),
    );
    let shard = Rc::new(Shard::new(id, count, &shared, tx, cluster, groups));
    rx.serve(shard.clone());
    spawn_detached(partition::flush_ticker(shard.logs.clone()));
    spawn_detached(partition::group_commit(shard.logs.clone()));
    spawn_detached(partition::log_task(shard.logs.clone()));
    spawn_detached(partition::retention_ticker(shard.logs.clone()));
    spawn_detached(partition::cleaner_ticker(shard.logs.clone()));
    Groups::start(&shard.groups);
    if id == crate::placement::METADATA_SHARD {
        crate::handlers::topics::follow_store(&shard);
        if shard.meta.tracks_ownership() {
            crate::handlers::topics::follow_live(&shard);
        }
    }
    let mut bound = Vec::with_capacity(listeners.len());
    for l in listeners {
        match bind(l.bind) {
            Ok(socket) => bound.push((socket, l)),
            Err(e) => {
                let _ = ready.send(Err(BindError::bind(Listener::Kafka, l.bind, e)));
                return;
            }
        }
    }
    let _ = ready.send(Ok(id));
    let accept = futures::future::join_all(bound.into_iter().map(|(socket, l)| {
        let shard = shard.clone();
        async move {
            loop {
                match socket.accept().await {
                    Ok(stream) => {
                        spawn_detached(crate::connection::serve(shard.clone(), stream, l.clone()))
                    }
                    Err(e) => {
                        warn!(shard = id, listener = %l.name, error = %e, "accept failed");
                        // Real time: a pause before accepting again, not a timer.
                        sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }));
    futures::pin_mut!(accept);
    // Dropping the accept future closes the listener: no new connections.
    let _ = futures::future::select(accept, shutdown).await;
    drain(&shard).await;
}

/// Seals every partition and waits until everything is durable. Its waits are
/// in real time whatever the broker's clock: shutdown polls state that the I/O
/// runtime moves, and must end even when a test's manual clock stands still.
async fn drain(shard: &Rc<Shard>) {
    shard.logs.begin_shutdown();
    crate::groups::release_all(&shard.groups);
    let parts = shard.logs.open_partitions();
    for p in &parts {
        partition::seal(&shard.logs, p);
    }
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        let unflushed: usize = parts.iter().map(|p| p.unflushed_bytes()).sum();
        if unflushed == 0 {
            break;
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            warn!(
                shard = shard.id,
                unflushed, "shutdown waiting for segment uploads"
            );
            last_log = Instant::now();
        }
        sleep(Duration::from_millis(20)).await;
    }
    // Group metadata written in the background (offset commits are answered only
    // when durable, so they are covered by the in-flight request wait below).
    while shard.groups.writes_in_flight.get() > 0 && started.elapsed() < Duration::from_secs(10) {
        sleep(Duration::from_millis(10)).await;
    }
    // Everything this shard buffered is published: once every shard is there,
    // give the partitions up at once (clusters: the lease is revoked, so other
    // brokers claim them now instead of after the lease TTL).
    let done = shard
        .flushed
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
        + 1;
    if done == shard.count {
        let meta = shard.meta.clone();
        let _ = shard.io.run(async move { meta.resign().await }).await;
    }
    // Let connections write the answers that the last uploads released.
    let until = Instant::now() + Duration::from_secs(5);
    while shard.in_flight_requests.get() > 0 && Instant::now() < until {
        sleep(Duration::from_millis(10)).await;
    }
    sleep(Duration::from_millis(20)).await;
    info!(
        shard = shard.id,
        partitions = parts.len(),
        millis = started.elapsed().as_millis() as u64,
        "shard flushed and stopped"
    );
}
