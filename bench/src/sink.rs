//! `sink`: a Kafka-protocol server that answers ApiVersions, Metadata,
//! CreateTopics and Produce with success and throws the data away. It is the
//! ceiling any broker can reach with the same client on the same machine.
//!
//! It is kept cheap on purpose: frames are split zero-copy, a Produce request is
//! decoded by the generated structs (its record batches stay undecoded byte
//! slices) and only the batch headers are read to count records. Responses to the
//! requests of one read are written together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafscale_codec::batch::Batches;
use kafscale_codec::frame::{header_prefix, peek_frame_len, split_frame, SIZE_PREFIX};
use kafscale_codec::kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafscale_codec::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafscale_codec::kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use kafscale_codec::kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestKind, ResponseKind, TopicName,
};
use kafscale_codec::kafka_protocol::protocol::StrBytes;
use kafscale_codec::request::{decode_request, encode_response, DecodeError};
use kafscale_codec::{versions, ApiKey, KafkaError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::SinkArgs;
use crate::error::{BenchError, Result};
use crate::report::SinkReport;
use crate::stats::mb_per_sec;

/// The APIs the sink answers (at the broker's versions).
const APIS: [ApiKey; 4] = [
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::CreateTopics,
    ApiKey::Produce,
];
/// Largest request frame accepted (as the broker's default).
const MAX_FRAME: usize = 100 << 20;

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    produce_requests: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    /// µs after start of the first and the last Produce (first is 0 until one came).
    first_produce_us: AtomicU64,
    last_produce_us: AtomicU64,
    next_offset: AtomicU64,
}

/// Topics the clients created or asked for, and the shared counters.
pub struct Sink {
    started: Instant,
    default_partitions: i32,
    advertise: Option<(String, i32)>,
    topics: Mutex<HashMap<String, i32>>,
    c: Counters,
}

impl Sink {
    pub fn new(default_partitions: i32, advertise: Option<(String, i32)>) -> Sink {
        Sink {
            started: Instant::now(),
            default_partitions: default_partitions.max(1),
            advertise,
            topics: Mutex::new(HashMap::new()),
            c: Counters::default(),
        }
    }

    pub fn report(&self) -> SinkReport {
        let c = &self.c;
        let bytes = c.bytes.load(Ordering::Relaxed);
        let first = c.first_produce_us.load(Ordering::Relaxed);
        let last = c.last_produce_us.load(Ordering::Relaxed);
        let secs = last.saturating_sub(first) as f64 / 1e6;
        SinkReport {
            connections: c.connections.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            produce_requests: c.produce_requests.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            bytes,
            seconds: secs,
            mb_per_sec: mb_per_sec(bytes, secs),
        }
    }

    /// Partition count of `name`, creating it with the default if it is new.
    fn topic(&self, name: &str) -> i32 {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        *t.entry(name.to_string()).or_insert(self.default_partitions)
    }

    /// The answer to one request frame (without its size prefix), or `None` when
    /// the request takes no answer (`acks=0` produce). `local` is the address the
    /// client connected to, advertised unless `--advertise` was given.
    pub fn respond(
        &self,
        frame: Bytes,
        local: SocketAddr,
    ) -> std::result::Result<Option<Bytes>, String> {
        self.c.requests.fetch_add(1, Ordering::Relaxed);
        let prefix = header_prefix(&frame).map_err(|e| e.to_string())?;
        let api = ApiKey::try_from(prefix.api_key)
            .map_err(|_| format!("unknown API key {}", prefix.api_key))?;
        if !APIS.contains(&api) {
            return Err(format!("{api:?} is not answered by the sink"));
        }
        let req = match decode_request(frame) {
            Ok(r) => r,
            // Kafka answers an ApiVersions it does not know in v0 with its ranges.
            Err(DecodeError::UnsupportedVersion {
                api: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                let body =
                    ResponseKind::ApiVersions(api_versions(KafkaError::UnsupportedVersion.code()));
                return encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
            Err(e) => return Err(e.to_string()),
        };
        let body = match req.body {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(0)),
            RequestKind::Metadata(m) => {
                ResponseKind::Metadata(self.metadata(m, req.version, local))
            }
            RequestKind::CreateTopics(c) => ResponseKind::CreateTopics(self.create_topics(c)),
            RequestKind::Produce(p) => {
                let acks = p.acks;
                let resp = self.produce(p);
                if acks == 0 {
                    return Ok(None);
                }
                ResponseKind::Produce(resp)
            }
            _ => return Err(format!("{api:?} is not answered by the sink")),
        };
        encode_response(req.api, req.version, req.header.correlation_id, &body)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn metadata(&self, req: MetadataRequest, version: i16, local: SocketAddr) -> MetadataResponse {
        let (host, port) = self
            .advertise
            .clone()
            .unwrap_or_else(|| (local.ip().to_string(), i32::from(local.port())));
        let mut resp = MetadataResponse::default();
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(0);
        b.host = StrBytes::from_string(host);
        b.port = port;
        resp.brokers = vec![b];
        resp.cluster_id = Some(StrBytes::from_static_str("kafscale-bench-sink"));
        resp.controller_id = BrokerId(0);
        // v0 has no null topic list: an empty list means all topics.
        let names: Vec<String> = match req.topics {
            Some(t) if !(version == 0 && t.is_empty()) => t
                .into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
            _ => {
                let t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
                let mut all: Vec<String> = t.keys().cloned().collect();
                all.sort();
                all
            }
        };
        resp.topics = names
            .into_iter()
            .map(|name| {
                let n = self.topic(&name);
                let mut t = MetadataResponseTopic::default();
                t.topic_id = topic_id(&name);
                t.name = Some(TopicName(StrBytes::from_string(name)));
                t.partitions = (0..n)
                    .map(|i| {
                        let mut p = MetadataResponsePartition::default();
                        p.partition_index = i;
                        p.leader_id = BrokerId(0);
                        p.replica_nodes = vec![BrokerId(0)];
                        p.isr_nodes = vec![BrokerId(0)];
                        p
                    })
                    .collect();
                t
            })
            .collect();
        resp
    }

    fn create_topics(&self, req: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut resp = CreateTopicsResponse::default();
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        resp.topics = req
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let mut r = CreatableTopicResult::default();
                r.topic_id = topic_id(&name);
                r.replication_factor = 1;
                match topics.get(&name) {
                    Some(&n) => {
                        r.error_code = KafkaError::TopicAlreadyExists.code();
                        r.num_partitions = n;
                    }
                    None => {
                        let n = if t.num_partitions > 0 {
                            t.num_partitions
                        } else {
                            self.default_partitions
                        };
                        topics.insert(name, n);
                        r.num_partitions = n;
                    }
                }
                r.name = t.name;
                r
            })
            .collect();
        resp
    }

    fn produce(&self, req: ProduceRequest) -> ProduceResponse {
        let c = &self.c;
        let now = (self.started.elapsed().as_micros() as u64).max(1);
        let _ = c
            .first_produce_us
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        c.last_produce_us.fetch_max(now, Ordering::Relaxed);
        c.produce_requests.fetch_add(1, Ordering::Relaxed);
        let mut resp = ProduceResponse::default();
        resp.responses = req
            .topic_data
            .into_iter()
            .map(|t| {
                let mut tr = TopicProduceResponse::default();
                tr.name = t.name;
                tr.topic_id = t.topic_id;
                tr.partition_responses = t
                    .partition_data
                    .into_iter()
                    .map(|p| {
                        let data = p.records.unwrap_or_default();
                        // Only the batch headers are read: the count of records.
                        let records: u64 = Batches::new(&data)
                            .map_while(|b| b.ok())
                            .map(|(h, _)| h.record_count.max(0) as u64)
                            .sum();
                        c.records.fetch_add(records, Ordering::Relaxed);
                        c.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = p.index;
                        // Offsets are not kept per partition: nothing can read them back.
                        pr.base_offset = c.next_offset.fetch_add(records, Ordering::Relaxed) as i64;
                        pr.log_append_time_ms = -1;
                        pr
                    })
                    .collect();
                tr
            })
            .collect();
        resp
    }
}

/// The broker's own ApiVersions table, APIs the sink does not answer included:
/// librdkafka derives features from it (record-batch format v2 needs Fetch v4 to
/// be advertised, for one), and the client must behave as it does against the broker.
fn api_versions(error_code: i16) -> ApiVersionsResponse {
    versions::api_versions_response(error_code)
}

/// A stable, non-zero id per topic name (clients of newer versions expect one).
fn topic_id(name: &str) -> uuid::Uuid {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let a = h.finish();
    uuid::Uuid::from_u64_pair(a | 1, a.rotate_left(17))
}

async fn serve(sink: Arc<Sink>, mut stream: TcpStream) -> std::result::Result<(), String> {
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut out = BytesMut::new();
    loop {
        // Room for the whole next frame when its length is known, so a large
        // Produce is read with few calls and no re-copying.
        let want = match peek_frame_len(&buf, MAX_FRAME).map_err(|e| e.to_string())? {
            Some(len) => (SIZE_PREFIX + len).saturating_sub(buf.len()),
            None => 64 << 10,
        };
        buf.reserve(want.max(64 << 10));
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        while let Some(frame) = split_frame(&mut buf, MAX_FRAME).map_err(|e| e.to_string())? {
            if let Some(r) = sink.respond(frame, local)? {
                out.extend_from_slice(&r);
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            out.clear();
        }
    }
}

fn parse_advertise(s: &str) -> Result<(String, i32)> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| BenchError::Invalid(format!("--advertise {s}: expected host:port")))?;
    let port = p
        .parse::<u16>()
        .map_err(|_| BenchError::Invalid(format!("--advertise {s}: bad port")))?;
    Ok((h.to_string(), i32::from(port)))
}

pub fn run(a: &SinkArgs) -> Result<SinkReport> {
    let advertise = a.advertise.as_deref().map(parse_advertise).transpose()?;
    let sink = Arc::new(Sink::new(a.partitions, advertise));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(&a.listen).await?;
        eprintln!(
            "kafscale-bench sink listening on {}",
            listener.local_addr()?
        );
        let accept = {
            let sink = sink.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    sink.c.connections.fetch_add(1, Ordering::Relaxed);
                    let sink = sink.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(sink, stream).await {
                            eprintln!("kafscale-bench sink: connection closed: {e}");
                        }
                    });
                }
            }
        };
        let progress = {
            let sink = sink.clone();
            async move {
                let mut last = 0;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let r = sink.report();
                    if r.records != last {
                        eprintln!(
                            "[{:>5.1}s] sink records {} (+{}/s)",
                            sink.started.elapsed().as_secs_f64(),
                            r.records,
                            r.records - last
                        );
                        last = r.records;
                    }
                }
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let duration = a.duration;
        let stop = async move {
            match duration {
                Some(d) => tokio::time::sleep(Duration::from_secs_f64(d.max(0.0))).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = progress => {}
            _ = stop => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<(), BenchError>(())
    })?;
    // Open connections are not waited for: the totals are what arrived until now.
    rt.shutdown_background();
    Ok(sink.report())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::build_batch;
    use kafscale_codec::kafka_protocol::messages::produce_request::{
        PartitionProduceData, TopicProduceData,
    };
    use kafscale_codec::kafka_protocol::messages::{
        ApiVersionsRequest, RequestHeader, ResponseHeader,
    };
    use kafscale_codec::kafka_protocol::protocol::{Decodable, Encodable};

    fn frame(api: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = api as i16;
        h.request_api_version = version;
        h.correlation_id = 7;
        let mut buf = BytesMut::new();
        h.encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn decode(api: ApiKey, version: i16, mut resp: Bytes) -> ResponseKind {
        let _len = resp.split_to(4);
        let h = ResponseHeader::decode(&mut resp, api.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, 7);
        ResponseKind::decode(api, &mut resp, version).unwrap()
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:4321".parse().unwrap()
    }

    fn produce_frame(acks: i16, batches: Vec<Vec<u8>>) -> Bytes {
        let mut p = PartitionProduceData::default();
        p.index = 2;
        p.records = Some(Bytes::from(batches.concat()));
        let mut t = TopicProduceData::default();
        t.name = TopicName(StrBytes::from_static_str("t"));
        t.partition_data = vec![p];
        let mut req = ProduceRequest::default();
        req.acks = acks;
        req.timeout_ms = 1000;
        req.topic_data = vec![t];
        frame(ApiKey::Produce, 9, &RequestKind::Produce(req))
    }

    #[test]
    fn answers_produce_and_counts_records_without_keeping_them() {
        let s = Sink::new(1, None);
        let b1 = build_batch(0, 0, &[b"a", b"bb", b"ccc"]);
        let b2 = build_batch(0, 0, &[b"dddd"]);
        let bytes = (b1.len() + b2.len()) as u64;
        let r = s
            .respond(produce_frame(-1, vec![b1, b2]), addr())
            .unwrap()
            .unwrap();
        let ResponseKind::Produce(p) = decode(ApiKey::Produce, 9, r) else {
            panic!()
        };
        let pr = &p.responses[0].partition_responses[0];
        assert_eq!((pr.index, pr.error_code, pr.base_offset), (2, 0, 0));
        let rep = s.report();
        assert_eq!(
            (rep.records, rep.bytes, rep.produce_requests),
            (4, bytes, 1)
        );
        // acks=0 takes no answer, but is counted.
        assert!(s
            .respond(produce_frame(0, vec![build_batch(0, 0, &[b"x"])]), addr())
            .unwrap()
            .is_none());
        assert_eq!(s.report().records, 5);
    }

    #[test]
    fn api_versions_is_the_brokers_table() {
        let s = Sink::new(1, None);
        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        let r = s
            .respond(frame(ApiKey::ApiVersions, 3, &body), addr())
            .unwrap()
            .unwrap();
        let ResponseKind::ApiVersions(v) = decode(ApiKey::ApiVersions, 3, r) else {
            panic!()
        };
        assert_eq!(v, versions::api_versions_response(0));
        // An unknown ApiVersions version is answered in v0 with UNSUPPORTED_VERSION.
        // A version from the future: the header as v3 says, with the version patched.
        let mut f = frame(ApiKey::ApiVersions, 3, &body).to_vec();
        f[3] = 9;
        let r = s.respond(Bytes::from(f), addr()).unwrap().unwrap();
        let ResponseKind::ApiVersions(v) = decode(ApiKey::ApiVersions, 0, r) else {
            panic!()
        };
        assert_eq!(v.error_code, KafkaError::UnsupportedVersion.code());
        // Anything else closes the connection.
        let fetch = frame(ApiKey::Fetch, 4, &RequestKind::Fetch(Default::default()));
        assert!(s.respond(fetch, addr()).is_err());
    }

    #[test]
    fn created_topics_keep_their_partitions_in_metadata() {
        use kafscale_codec::kafka_protocol::messages::create_topics_request::CreatableTopic;
        use kafscale_codec::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let s = Sink::new(3, Some(("sink.example".into(), 9999)));
        let mut t = CreatableTopic::default();
        t.name = TopicName(StrBytes::from_static_str("big"));
        t.num_partitions = 64;
        let mut c = CreateTopicsRequest::default();
        c.topics = vec![t.clone()];
        let body = RequestKind::CreateTopics(c);
        let r = s
            .respond(frame(ApiKey::CreateTopics, 7, &body), addr())
            .unwrap()
            .unwrap();
        let ResponseKind::CreateTopics(cr) = decode(ApiKey::CreateTopics, 7, r) else {
            panic!()
        };
        assert_eq!(
            (cr.topics[0].error_code, cr.topics[0].num_partitions),
            (0, 64)
        );
        let r = s
            .respond(frame(ApiKey::CreateTopics, 7, &body), addr())
            .unwrap()
            .unwrap();
        let ResponseKind::CreateTopics(cr) = decode(ApiKey::CreateTopics, 7, r) else {
            panic!()
        };
        assert_eq!(
            cr.topics[0].error_code,
            KafkaError::TopicAlreadyExists.code()
        );

        let mut m = MetadataRequest::default();
        m.topics = Some(
            ["big", "other"]
                .iter()
                .map(|n| {
                    let mut t = MetadataRequestTopic::default();
                    t.name = Some(TopicName(StrBytes::from_static_str(n)));
                    t
                })
                .collect(),
        );
        let r = s
            .respond(
                frame(ApiKey::Metadata, 12, &RequestKind::Metadata(m)),
                addr(),
            )
            .unwrap()
            .unwrap();
        let ResponseKind::Metadata(md) = decode(ApiKey::Metadata, 12, r) else {
            panic!()
        };
        assert_eq!(
            (md.brokers[0].host.as_str(), md.brokers[0].port),
            ("sink.example", 9999)
        );
        let parts: Vec<usize> = md.topics.iter().map(|t| t.partitions.len()).collect();
        assert_eq!(parts, vec![64, 3]);
        assert!(md
            .topics
            .iter()
            .all(|t| !t.topic_id.is_nil() && t.error_code == 0));
    }

    #[test]
    fn advertise_is_host_and_port() {
        assert_eq!(parse_advertise("h:1").unwrap(), ("h".to_string(), 1));
        assert!(parse_advertise("h").is_err());
        assert!(parse_advertise("h:99999").is_err());
    }
}
