//! Starting and stopping a broker: the I/O runtime, the object and metadata
//! stores, the HTTP and gRPC endpoints, and one pinned executor per shard. The
//! binary (`main.rs`) calls `run`; in-process tests call `Broker::start` (several
//! brokers may run in one process) and `Broker::shutdown`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use kafscale_segstore::{
    build_object_store, FaultControl, FaultyStore, InstrumentedStore, S3Config, SegmentStore,
    StoreConfig, StoreStats,
};
use object_store::ObjectStore;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::metadata::embedded::EmbeddedStore;
use crate::metadata::etcd::{BrokerInfo as EtcdBroker, EtcdConfig, EtcdStore};
use crate::metadata::{Cluster, MetadataStore};
use crate::runtime::ForeignTx;
use crate::server::{shard_main, ShardBoot};
use crate::shard::{Shard, Shared};
use crate::start_error::{BindError, Listener, StartError};
use crate::{control, http, io, metadata, placement, runtime, shard};

/// What an embedding program (a test) can set beyond the settings.
#[derive(Default)]
pub struct StartOptions {
    /// The object store to use instead of the one the settings describe (an
    /// `object_store` `InMemory`, or one wrapped in a `FaultyStore`).
    pub object_store: Option<Arc<dyn ObjectStore>>,
    /// Fault injection for tests: shard `.0` installs every new cluster snapshot
    /// `.1` late, as a busy core would.
    pub snapshot_delay: Option<(usize, Duration)>,
    /// The clock the broker's timers and deadlines follow (`clock.rs`); the
    /// system clock when None. Tests pass a `ManualClock`'s clock to drive time.
    pub clock: Option<Clock>,
}

/// A running broker.
pub struct Broker {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    control_addr: SocketAddr,
    rt: tokio::runtime::Runtime,
    stops: Vec<oneshot::Sender<()>>,
    runner: std::thread::JoinHandle<std::io::Result<()>>,
    etcd: Option<Arc<EtcdStore>>,
    /// Every shard's inbox, by shard id.
    inboxes: Vec<ForeignTx<Shard>>,
}

/// Runs a broker until SIGINT or SIGTERM, then drains it. Any panic ends the
/// process (see `abort_on_panic`).
pub fn run(cfg: Config) -> Result<(), StartError> {
    abort_on_panic();
    let broker = Broker::start(cfg, StartOptions::default())?;
    if let Some(shard) = testing_panic_shard() {
        tracing::warn!(
            shard,
            "{PANIC_SHARD_VAR} is set: that shard panics now (testing only)"
        );
        broker.run_on_shard_for_testing(shard, move || {
            panic!("{PANIC_SHARD_VAR}: shard {shard} panics on purpose")
        });
    }
    broker.wait_for_signal();
    broker.shutdown()
}

/// Hidden, for the end-to-end test of `abort_on_panic`: the shard that panics
/// right after start-up. Not a setting (`--help` does not list it); see
/// docs/testing.md.
const PANIC_SHARD_VAR: &str = "KAFSCALE_TESTING_PANIC_SHARD";

fn testing_panic_shard() -> Option<usize> {
    let v = std::env::var(PANIC_SHARD_VAR).ok()?;
    match v.trim().parse() {
        Ok(shard) => Some(shard),
        Err(_) => {
            tracing::warn!(value = %v, "{PANIC_SHARD_VAR} is not a shard number; ignored");
            None
        }
    }
}

/// Makes every panic end the process. A shard is one thread: if its panic only
/// ended that thread, the other shards, the HTTP endpoint and the gRPC endpoint
/// would go on without it (its partitions, groups and connections gone) and the
/// broker would look alive. The hook logs which shard (or thread) panicked, where
/// and why, at error level, lets the standard hook print the panic (and a
/// backtrace with `RUST_BACKTRACE`) on stderr, and aborts, so the process
/// supervisor restarts the broker and recovery rebuilds the state from the store.
/// It is an equivalent of `panic = "abort"` that keeps unwinding (and the test
/// harness's panic capture) for the tests, which run in the release profile;
/// only the binary's `run` installs it, not brokers embedded by tests.
fn abort_on_panic() {
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let shard = match runtime::current_shard() {
            Some(i) => format!("shard {i}"),
            None => "no shard".to_string(),
        };
        let location = info
            .location()
            .map(|l| l.to_string())
            .unwrap_or_else(|| "an unknown location".into());
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        tracing::error!(
            %shard,
            thread,
            %location,
            "panic in {shard} (thread {thread}) at {location}: {message}; aborting the process"
        );
        standard(info);
        std::process::abort();
    }));
}

/// Stored topics beyond the limits (written before the limits existed, or by a
/// broker with higher ones) are loaded and served: refusing to start would
/// take the data offline. The broker says so, and creates nothing more until
/// the cluster is below its limits again.
fn warn_over_limits(state: &metadata::ClusterState, limits: &crate::settings::ResourceLimits) {
    let topics = state.topics.len();
    let partitions: usize = state
        .topics
        .iter()
        .map(|t| t.partitions.max(0) as usize)
        .sum();
    let widest = state.topics.iter().max_by_key(|t| t.partitions);
    if topics > limits.max_topics || partitions > limits.max_partitions {
        warn!(
            topics,
            partitions,
            max_topics = limits.max_topics,
            max_partitions = limits.max_partitions,
            "stored metadata exceeds KAFSCALE_MAX_TOPICS or KAFSCALE_MAX_PARTITIONS; loaded as stored, new topics and partitions are refused"
        );
    }
    if let Some(t) = widest.filter(|t| t.partitions > limits.max_partitions_per_topic) {
        warn!(
            topic = %t.name,
            partitions = t.partitions,
            max = limits.max_partitions_per_topic,
            "stored topic has more partitions than KAFSCALE_MAX_PARTITIONS_PER_TOPIC; loaded as stored"
        );
    }
}

/// Reads the security records (SCRAM credentials, ACLs) before any client can
/// connect, adds the users of KAFSCALE_SASL_USERS_FILE that lack credentials,
/// and follows the records for as long as the broker runs.
fn load_security(
    rt: &tokio::runtime::Runtime,
    meta: &Arc<dyn MetadataStore>,
    security: &crate::security::SecuritySettings,
    users: &[(String, String)],
    iterations: u32,
) -> Result<(), StartError> {
    use futures::StreamExt;
    let creds = security.sasl.credentials.clone();
    let m = meta.clone();
    let mut stream = rt
        .block_on(async move { m.watch_security().await })
        .map_err(StartError::SecurityRecords)?;
    if let Some(first) = rt.block_on(stream.next()) {
        security.install(&first);
    }
    let changes = crate::security::credentials::bootstrap(&creds.snapshot(), users, iterations);
    if !changes.is_empty() {
        let m = meta.clone();
        rt.block_on(async move { m.put_security(changes).await })
            .map_err(StartError::SecurityRecords)?;
        // The change comes back through the watch: serve it from the start.
        if let Some(next) = rt.block_on(stream.next()) {
            security.install(&next);
        }
    }
    rt.spawn(crate::security::follow(
        stream,
        creds,
        security.authorizer.clone(),
    ));
    Ok(())
}

fn store_config(cfg: &Config) -> StoreConfig {
    let s = &cfg.s3;
    StoreConfig {
        data_dir: cfg.data_dir.clone(),
        use_memory: cfg.use_memory_s3,
        s3: s.s3_bucket.clone().map(|bucket| S3Config {
            bucket,
            region: s.s3_region.clone(),
            endpoint: s.s3_endpoint.clone(),
            path_style: s.s3_path_style,
            access_key: s.s3_access_key.clone(),
            secret_key: s.s3_secret_key.clone(),
            session_token: s.s3_session_token.clone(),
            kms_arn: s.s3_kms_arn.clone(),
            read_bucket: s.s3_read_bucket.clone(),
            read_region: s.s3_read_region.clone(),
            read_endpoint: s.s3_read_endpoint.clone(),
            unsigned_payload: s.s3_unsigned_payload,
        }),
    }
}

/// The shards' own writer of the local directory store, when
/// KAFSCALE_LOCAL_IO=uring asks for it and the store is a local directory.
/// Fault injection wraps the object store, so it keeps the thread path.
fn local_uring(
    cfg: &Config,
    local_dir_store: bool,
    stats: &Arc<StoreStats>,
) -> Option<crate::partition::LocalUringConfig> {
    if cfg.local_io != crate::config::LocalIo::Uring || !local_dir_store {
        return None;
    }
    if cfg.faults_file.is_some() {
        tracing::warn!("KAFSCALE_LOCAL_IO=uring is ignored with fault injection: segments go through the I/O threads");
        return None;
    }
    let dir = cfg.data_dir.join("objects");
    match std::fs::canonicalize(&dir) {
        Ok(root) => Some(crate::partition::LocalUringConfig {
            root,
            namespace: cfg.s3.s3_namespace.clone(),
            stats: stats.clone(),
        }),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "KAFSCALE_LOCAL_IO=uring: cannot resolve the store's directory; using the I/O threads");
            None
        }
    }
}

/// The commit logs' directory when KAFSCALE_LOCAL_COMMIT=log applies: the
/// local directory store written by the I/O threads, with embedded metadata
/// (a broker tracking partition state in etcd commits each segment's next
/// offset there, per object; docs/configuration.md, "Local commit log").
fn commit_log_dir(
    cfg: &Config,
    local_dir_store: bool,
    uring: bool,
    tracks_partition_state: bool,
) -> Option<std::path::PathBuf> {
    if cfg.local_commit != crate::config::LocalCommit::Log {
        return None;
    }
    let why = if !local_dir_store {
        "the store is not the local directory"
    } else if uring {
        "KAFSCALE_LOCAL_IO=uring"
    } else if tracks_partition_state {
        "metadata is in etcd"
    } else {
        info!("acks=all commits go through each shard's commit log");
        return Some(crate::partition::commit_log_dir(&cfg.data_dir));
    };
    tracing::warn!(
        reason = why,
        "KAFSCALE_LOCAL_COMMIT=log is ignored: each commit writes its own files"
    );
    None
}

/// Shards bind with SO_REUSEPORT, which would let a second broker on the same
/// address bind too and take half the connections. A plain bind first fails if
/// anything already listens there. A broker killed a moment ago can still hold
/// its listener for a few milliseconds (the kernel tears down its io_uring, which
/// owns a pending accept, after the process is gone), so the check retries
/// briefly before giving up.
fn check_port_free(addr: std::net::SocketAddr) -> Result<(), BindError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(BindError::bind(Listener::Kafka, addr, e)),
        }
    }
}

/// With port 0, shards binding one by one (SO_REUSEPORT) would each get a port
/// of their own: pick one free port first. The port stays held by a socket that
/// is bound but not listening (so no connection lands on it; SO_REUSEPORT and
/// SO_REUSEADDR as the shards set them, so their binds succeed) until every
/// shard listens. A port picked and let go at once could be taken by another
/// process before the shards bind it, which tests running side by side hit as
/// AddrInUse.
fn reserve_port(addr: SocketAddr) -> Result<Option<(SocketAddr, socket2::Socket)>, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() != 0 {
        return Ok(None);
    }
    let err = |e| BindError::bind(Listener::Kafka, addr, e);
    let sk =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    sk.set_reuse_address(true).map_err(err)?;
    sk.set_reuse_port(true).map_err(err)?;
    sk.bind(&addr.into()).map_err(err)?;
    let bound = sk
        .local_addr()
        .map_err(err)?
        .as_socket()
        .ok_or_else(|| err(std::io::Error::other("not an IP address")))?;
    Ok(Some((bound, sk)))
}

impl Broker {
    /// The Kafka listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP endpoint's address (metrics, health, console).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The BrokerControl gRPC address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Testing only: runs `f` on shard `shard`'s thread, in the middle of its
    /// inbox (it blocks that shard until it returns). `false` if there is no such
    /// shard or it has stopped.
    #[doc(hidden)]
    pub fn run_on_shard_for_testing(
        &self,
        shard: usize,
        f: impl FnOnce() + Send + 'static,
    ) -> bool {
        let Some(tx) = self.inboxes.get(shard) else {
            return false;
        };
        let job: runtime::Job<Shard> = Box::new(move |_| {
            f();
            Box::pin(async {})
        });
        tx.unbounded_send(job).is_ok()
    }

    /// Blocks until SIGINT or SIGTERM.
    pub fn wait_for_signal(&self) {
        self.rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => info!("SIGTERM: shutting down"),
            }
        });
    }

    /// Stops accepting, makes everything buffered durable, answers waiting
    /// producers, and stops the shards.
    pub fn shutdown(self) -> Result<(), StartError> {
        for s in self.stops {
            let _ = s.send(());
        }
        match self.runner.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartError::ShardRuntime(e)),
            Err(_) => return Err(StartError::ShardPanicked),
        }
        if let Some(etcd) = self.etcd {
            self.rt.block_on(etcd.shutdown());
        }
        info!("all shards flushed; exiting");
        Ok(())
    }

    /// Starts a broker and returns once every shard listens.
    pub fn start(cfg: Config, opts: StartOptions) -> Result<Broker, StartError> {
        let cpus = runtime::allowed_cpus();
        let shards = cfg.shards.unwrap_or(cpus.len()).max(1);
        if shards > cpus.len() {
            tracing::warn!(
                shards,
                cpus = cpus.len(),
                "more shards than CPUs: shards will share cores"
            );
        }
        runtime::preflight(shards)?;
        let mut cfg = cfg;
        let mut listeners =
            cfg.security
                .listeners(cfg.broker_addr, cfg.broker_host.as_deref(), cfg.broker_port)?;
        // Dropped once every shard listens (below).
        let mut reserved = Vec::new();
        for l in &mut listeners {
            match reserve_port(l.bind)? {
                Some((bound, socket)) => {
                    l.bind = bound;
                    reserved.push(socket);
                }
                None => check_port_free(l.bind)?,
            }
        }
        cfg.security.check_exposure(
            &listeners,
            &[
                ("KAFSCALE_METRICS_ADDR", cfg.metrics_addr),
                ("KAFSCALE_CONTROL_ADDR", cfg.control_addr),
            ],
        )?;
        let security = cfg.security.settings(listeners)?;
        let users = cfg.security.users()?;
        // The first listener is the broker's address where one address is
        // asked for (Broker::addr, the registration's host and port).
        let primary = security.listeners[0].clone();
        cfg.broker_addr = primary.bind;
        let (advertised_host, advertised_port) =
            (primary.advertised_host.clone(), primary.advertised_port());

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.io_threads)
            .thread_name("kafscale-io")
            .enable_all()
            .build()
            .map_err(StartError::IoRuntime)?;
        let io = io::Io::new(rt.handle().clone());

        let local_dir_store =
            opts.object_store.is_none() && !cfg.use_memory_s3 && cfg.s3.s3_bucket.is_none();
        let mut object_store = match opts.object_store {
            Some(s) => s,
            None => build_object_store(&store_config(&cfg)).map_err(StartError::ObjectStore)?,
        };
        if let Some(path) = &cfg.faults_file {
            tracing::warn!(path = %path.display(), "object-store fault injection is enabled (testing only)");
            object_store = Arc::new(FaultyStore::new(
                object_store,
                FaultControl::File(path.clone()),
            ));
        }
        // Outermost, so that injected faults count as the errors they simulate.
        let store_stats = Arc::new(StoreStats::new(cfg.s3_health.config()));
        let object_store = Arc::new(InstrumentedStore::new(object_store, store_stats.clone()));
        let store = SegmentStore::new(object_store, &cfg.s3.s3_namespace);
        let local_uring = local_uring(&cfg, local_dir_store, &store_stats);
        // The endpoint starts before metadata loads so that /healthz answers during
        // start-up and /readyz says what it is waiting for.
        let endpoint = http::Endpoint::new(store_stats.clone(), store.clone());
        let metrics_listener = http::server::bind(cfg.metrics_addr)?;
        // The bound address, so that port 0 (any free port) is logged as the real one.
        let metrics_addr = metrics_listener.local_addr().unwrap_or(cfg.metrics_addr);
        rt.spawn(http::server::serve(metrics_listener, endpoint.clone()));
        rt.spawn(http::health::probe_store(endpoint.clone()));
        let control = control::Control::new(cfg.broker_id);
        let control_listener = control::bind(cfg.control_addr)?;
        let control_addr = control_listener.local_addr().unwrap_or(cfg.control_addr);
        rt.spawn(control::serve(control_listener, control.clone()));
        let endpoints = cfg.etcd.endpoints();
        let mut etcd = None;
        let meta: Arc<dyn MetadataStore> = if endpoints.is_empty() {
            Arc::new(EmbeddedStore::open(&cfg.data_dir).map_err(StartError::MetadataStore)?)
        } else {
            let ecfg = EtcdConfig {
                endpoints: endpoints.clone(),
                username: cfg.etcd.etcd_username.clone(),
                password: cfg.etcd.etcd_password.clone(),
                timeout: std::time::Duration::from_millis(cfg.etcd.etcd_timeout_ms),
                lease_ttl_secs: cfg.etcd.etcd_lease_ttl_sec,
                tls: cfg.security.etcd_tls()?,
            };
            let me = EtcdBroker {
                id: cfg.broker_id,
                host: advertised_host.clone(),
                port: advertised_port,
                listeners: security
                    .listeners
                    .iter()
                    .map(|l| {
                        (
                            l.name.clone(),
                            l.advertised_host.clone(),
                            l.advertised_port(),
                        )
                    })
                    .collect(),
            };
            let store = rt
                .block_on(EtcdStore::connect(ecfg, me))
                .map_err(|source| StartError::EtcdConnect {
                    endpoints: endpoints.join(","),
                    source,
                })?;
            info!(endpoints = %endpoints.join(","), "metadata in etcd");
            etcd = Some(store.clone());
            Arc::new(metadata::etcd::EtcdHandle(store))
        };
        let m = meta.clone();
        let state = rt
            .block_on(async move { m.load().await })
            .map_err(StartError::LoadMetadata)?;
        warn_over_limits(&state, &cfg.settings().limits);
        let commit_log = commit_log_dir(
            &cfg,
            local_dir_store,
            local_uring.is_some(),
            meta.tracks_partition_state(),
        );
        if local_dir_store {
            // Before any shard serves: what a crash left only in the logs goes
            // to the store's files, where partitions load from. Whatever the
            // mode now: the broker may have run with the log before.
            let dir = crate::partition::commit_log_dir(&cfg.data_dir);
            let ids: std::collections::HashMap<String, [u8; 16]> = state
                .topics
                .iter()
                .filter(|t| !t.deleting)
                .map(|t| (t.name.clone(), *t.id.as_bytes()))
                .collect();
            let store = store.clone();
            rt.block_on(async move {
                crate::partition::replay_commit_log(&dir, &store, |name| ids.get(name).copied())
                    .await
            })
            .map_err(StartError::CommitLog)?;
        }
        load_security(&rt, &meta, &security, &users, cfg.security.scram_iterations)?;
        // In a cluster nothing is owned until the live view arrives.
        let live = metadata::Live {
            clustered: meta.tracks_ownership(),
            ..Default::default()
        };
        let cluster = Arc::new(
            Cluster::new(
                &state,
                cfg.broker_id,
                advertised_host.clone(),
                advertised_port,
            )
            .with_live(Arc::new(live)),
        );
        let m = meta.clone();
        let stored_groups = if meta.tracks_ownership() {
            // In a cluster a broker reads a group when it becomes its
            // coordinator (`groups::follow_coordination`), not at start.
            Vec::new()
        } else {
            rt.block_on(async move { m.load_groups().await })
                .map_err(StartError::LoadGroups)?
        };
        endpoint.set_metadata_loaded();
        info!(cluster_id = %cluster.cluster_id, topics = cluster.topics.len(), groups = stored_groups.len(), "metadata loaded");
        let mut groups_by_shard: Vec<Vec<metadata::StoredGroup>> =
            (0..shards).map(|_| Vec::new()).collect();
        for g in stored_groups {
            groups_by_shard[placement::group_shard(&g.group_id, shards)].push(g);
        }

        let cfg = Arc::new(cfg);
        let mut settings = cfg.settings();
        let listeners = security.listeners.clone();
        settings.security = Arc::new(security);
        let admission = Arc::new(crate::admission::Admission::new(settings.admission));
        let shared = Arc::new(Shared {
            settings: Arc::new(settings),
            admission,
            io,
            store,
            meta,
            store_stats,
            snapshot_delay: opts.snapshot_delay,
            clock: opts.clock.unwrap_or_default(),
            flushed: Default::default(),
            local_uring,
            commit_log,
        });
        let mesh = runtime::mesh::<shard::Shard>(shards);
        // The HTTP and gRPC endpoints hand their jobs to the metadata shard's inbox.
        let foreign_tx = mesh
            .first()
            .and_then(|(tx, _)| tx.foreign(placement::METADATA_SHARD))
            .ok_or(StartError::NoShards)?;
        let inboxes: Vec<ForeignTx<Shard>> = mesh
            .first()
            .map(|(tx, _)| (0..shards).filter_map(|i| tx.foreign(i)).collect())
            .unwrap_or_default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut stops = Vec::new();
        let mut boots = Vec::new();
        for (id, (groups, mesh)) in groups_by_shard.into_iter().zip(mesh).enumerate() {
            let (tx, rx) = oneshot::channel();
            stops.push(tx);
            boots.push(std::sync::Mutex::new(Some(ShardBoot {
                id,
                count: shards,
                listeners: listeners.clone(),
                shared: shared.clone(),
                cluster: cluster.clone(),
                groups,
                mesh,
                shutdown: rx,
                ready: ready_tx.clone(),
            })));
        }
        drop(ready_tx);
        let boots = Arc::new(boots);
        let shard_cpus: Vec<usize> = (0..shards).map(|i| cpus[i % cpus.len()]).collect();
        let runner = std::thread::Builder::new()
            .name("kafscale-shards".into())
            .spawn(move || {
                runtime::run_shards(shard_cpus, move |i| {
                    let boot = boots[i].lock().ok().and_then(|mut b| b.take());
                    async move {
                        if let Some(boot) = boot {
                            shard_main(boot).await;
                        }
                    }
                })
            })
            .map_err(StartError::ShardThread)?;

        let broker = Broker {
            addr: cfg.broker_addr,
            metrics_addr,
            control_addr,
            rt,
            stops,
            runner,
            etcd,
            inboxes: inboxes.clone(),
        };
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let _ = broker.shutdown();
                    return Err(e.into());
                }
                Err(_) => break,
            }
        }
        drop(reserved);
        control.set_shards(foreign_tx.clone());
        endpoint.set_shards(foreign_tx, inboxes);
        let described: Vec<String> = listeners
            .iter()
            .map(|l| {
                format!(
                    "{}://{} (advertised {}:{}, {})",
                    l.name,
                    l.bind,
                    l.advertised_host,
                    l.advertised_port(),
                    l.protocol.name()
                )
            })
            .collect();
        info!(addr = %cfg.broker_addr, metrics = %metrics_addr, control = %control_addr, shards, advertised = %format!("{advertised_host}:{advertised_port}"), listeners = %described.join(", "), "listening");

        Ok(broker)
    }
}
