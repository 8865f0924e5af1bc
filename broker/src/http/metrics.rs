//! Per-shard counters and their Prometheus text rendering.
//!
//! Counters live in each shard as plain `Cell`s, touched only by that shard's
//! thread, so recording is a few non-atomic adds. A scrape asks every shard for a
//! `Snapshot` (a `Send` copy) and sums them; nothing is shared on the hot path.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kafka API keys counted; keys at or above this are not recorded (none exist today).
pub const MAX_API_KEY: usize = 96;
/// Upper bounds of the request latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const NB: usize = LATENCY_BUCKETS.len();

/// One API's request count and latency histogram (non-cumulative buckets; the
/// last slot counts requests slower than the largest bound).
#[derive(Default)]
struct ApiCells {
    count: Cell<u64>,
    sum_micros: Cell<u64>,
    buckets: [Cell<u64>; NB + 1],
}

/// Requests per second over a sliding window: one slot per second, each tagged
/// with the second it counts, so stale slots are recognised without a timer.
struct RateWindow {
    slots: Box<[(Cell<u64>, Cell<u64>)]>,
}

impl RateWindow {
    fn new(window_sec: u64) -> Self {
        RateWindow {
            slots: (0..window_sec.max(1))
                .map(|_| (Cell::new(u64::MAX), Cell::new(0)))
                .collect(),
        }
    }

    fn record(&self, sec: u64) {
        let (tag, n) = &self.slots[(sec % self.slots.len() as u64) as usize];
        if tag.get() != sec {
            tag.set(sec);
            n.set(0);
        }
        n.set(n.get() + 1);
    }

    /// Requests counted in the window ending at second `now` (inclusive).
    fn total(&self, now: u64) -> u64 {
        let w = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(|(tag, _)| tag.get() <= now && now - tag.get() < w)
            .map(|(_, n)| n.get())
            .sum()
    }
}

/// The counters of one shard.
pub struct ShardMetrics {
    started: Instant,
    window_sec: u64,
    apis: Box<[ApiCells]>,
    produce_bytes: RefCell<HashMap<Arc<str>, Cell<u64>>>,
    fetch_bytes: RefCell<HashMap<Arc<str>, Cell<u64>>>,
    produce_rate: RateWindow,
    fetch_rate: RateWindow,
    pub cache_hits: Cell<u64>,
    pub cache_misses: Cell<u64>,
    pub open_connections: Cell<u64>,
}

fn add_topic(map: &RefCell<HashMap<Arc<str>, Cell<u64>>>, topic: &Arc<str>, n: u64) {
    let mut m = map.borrow_mut();
    // Lookup by &str: a topic seen before costs no allocation and no refcount.
    match m.get(topic.as_ref()) {
        Some(c) => c.set(c.get() + n),
        None => {
            m.insert(topic.clone(), Cell::new(n));
        }
    }
}

impl ShardMetrics {
    pub fn new(window_sec: u64) -> Self {
        ShardMetrics {
            started: Instant::now(),
            window_sec: window_sec.max(1),
            apis: (0..MAX_API_KEY).map(|_| ApiCells::default()).collect(),
            produce_bytes: RefCell::new(HashMap::new()),
            fetch_bytes: RefCell::new(HashMap::new()),
            produce_rate: RateWindow::new(window_sec),
            fetch_rate: RateWindow::new(window_sec),
            cache_hits: Cell::new(0),
            cache_misses: Cell::new(0),
            open_connections: Cell::new(0),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    /// Records one handled request of API `api` that took `took`, finished at `now`.
    pub fn record_request(&self, api: i16, took: Duration, now: Instant) {
        let Some(a) = usize::try_from(api).ok().and_then(|i| self.apis.get(i)) else {
            return;
        };
        a.count.set(a.count.get() + 1);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        a.sum_micros.set(a.sum_micros.get().saturating_add(micros));
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(NB);
        a.buckets[i].set(a.buckets[i].get() + 1);
        let sec = self.second(now);
        if api == kafka_protocol::messages::ApiKey::Produce as i16 {
            self.produce_rate.record(sec);
        } else if api == kafka_protocol::messages::ApiKey::Fetch as i16 {
            self.fetch_rate.record(sec);
        }
    }

    pub fn add_produce_bytes(&self, topic: &Arc<str>, n: u64) {
        add_topic(&self.produce_bytes, topic, n);
    }

    pub fn add_fetch_bytes(&self, topic: &Arc<str>, n: u64) {
        add_topic(&self.fetch_bytes, topic, n);
    }

    /// A `Send` copy of the counters; `gauges` are the shard's current levels.
    pub fn snapshot(&self, gauges: ShardGauges) -> Snapshot {
        let now = self.second(Instant::now());
        let topics = |m: &RefCell<HashMap<Arc<str>, Cell<u64>>>| {
            m.borrow()
                .iter()
                .map(|(k, v)| (k.to_string(), v.get()))
                .collect()
        };
        Snapshot {
            apis: self
                .apis
                .iter()
                .enumerate()
                .filter(|(_, a)| a.count.get() > 0)
                .map(|(i, a)| {
                    (
                        i as i16,
                        ApiSnapshot {
                            count: a.count.get(),
                            sum_micros: a.sum_micros.get(),
                            buckets: a.buckets.iter().map(Cell::get).collect(),
                        },
                    )
                })
                .collect(),
            produce_bytes: topics(&self.produce_bytes),
            fetch_bytes: topics(&self.fetch_bytes),
            produce_in_window: self.produce_rate.total(now),
            fetch_in_window: self.fetch_rate.total(now),
            window_sec: self.window_sec,
            cache_hits: self.cache_hits.get(),
            cache_misses: self.cache_misses.get(),
            open_connections: self.open_connections.get(),
            shards: vec![gauges],
        }
    }
}

/// Levels a shard reports alongside its counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShardGauges {
    pub shard: usize,
    pub buffered_bytes: u64,
    pub upload_queue: u64,
    pub uploads_in_flight: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiSnapshot {
    pub count: u64,
    pub sum_micros: u64,
    pub buckets: Vec<u64>,
}

/// Counters of one shard, or the sum of several.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub apis: BTreeMap<i16, ApiSnapshot>,
    pub produce_bytes: BTreeMap<String, u64>,
    pub fetch_bytes: BTreeMap<String, u64>,
    pub produce_in_window: u64,
    pub fetch_in_window: u64,
    pub window_sec: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub open_connections: u64,
    pub shards: Vec<ShardGauges>,
}

impl Snapshot {
    /// Adds another shard's counters to these.
    pub fn merge(&mut self, o: Snapshot) {
        for (k, a) in o.apis {
            let e = self.apis.entry(k).or_default();
            e.count += a.count;
            e.sum_micros = e.sum_micros.saturating_add(a.sum_micros);
            if e.buckets.len() < a.buckets.len() {
                e.buckets.resize(a.buckets.len(), 0);
            }
            for (x, y) in e.buckets.iter_mut().zip(a.buckets) {
                *x += y;
            }
        }
        for (t, n) in o.produce_bytes {
            *self.produce_bytes.entry(t).or_default() += n;
        }
        for (t, n) in o.fetch_bytes {
            *self.fetch_bytes.entry(t).or_default() += n;
        }
        self.produce_in_window += o.produce_in_window;
        self.fetch_in_window += o.fetch_in_window;
        self.window_sec = self.window_sec.max(o.window_sec);
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
        self.open_connections += o.open_connections;
        self.shards.extend(o.shards);
    }
}

/// Escapes a label value for the text exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => key.to_string(),
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the summed shard counters and the object-store counters
/// (`(operation, requests, errors)`) in the Prometheus text format 0.0.4.
pub fn render(s: &Snapshot, store: &[(&'static str, u64, u64)]) -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "kafscale_requests_total",
        "counter",
        "Kafka requests handled, by API.",
    );
    for (k, a) in &s.apis {
        let _ = writeln!(
            out,
            "kafscale_requests_total{{api=\"{}\"}} {}",
            api_name(*k),
            a.count
        );
    }
    header(
        &mut out,
        "kafscale_request_duration_seconds",
        "histogram",
        "Time from decoding a request to having its response, by API.",
    );
    for (k, a) in &s.apis {
        let api = api_name(*k);
        let mut cum = 0u64;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cum += a.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "kafscale_request_duration_seconds_bucket{{api=\"{api}\",le=\"{bound}\"}} {cum}"
            );
        }
        let _ = writeln!(
            out,
            "kafscale_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {}",
            a.count
        );
        let _ = writeln!(
            out,
            "kafscale_request_duration_seconds_sum{{api=\"{api}\"}} {}",
            a.sum_micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "kafscale_request_duration_seconds_count{{api=\"{api}\"}} {}",
            a.count
        );
    }
    for (name, help, map) in [
        (
            "kafscale_produce_bytes_total",
            "Record-batch bytes appended by Produce, by topic.",
            &s.produce_bytes,
        ),
        (
            "kafscale_fetch_bytes_total",
            "Record-batch bytes returned by Fetch, by topic.",
            &s.fetch_bytes,
        ),
    ] {
        header(&mut out, name, "counter", help);
        for (t, n) in map {
            let _ = writeln!(out, "{name}{{topic=\"{}\"}} {n}", label(t));
        }
    }
    let w = s.window_sec.max(1) as f64;
    for (name, what, n) in [
        ("kafscale_produce_rps", "Produce", s.produce_in_window),
        ("kafscale_fetch_rps", "Fetch", s.fetch_in_window),
    ] {
        header(
            &mut out,
            name,
            "gauge",
            &format!(
                "{what} requests per second over the last {} s (KAFSCALE_THROUGHPUT_WINDOW_SEC).",
                s.window_sec
            ),
        );
        let _ = writeln!(out, "{name} {}", n as f64 / w);
    }
    header(
        &mut out,
        "kafscale_object_store_requests_total",
        "counter",
        "Object-store requests, by operation.",
    );
    for (op, n, _) in store {
        let _ = writeln!(
            out,
            "kafscale_object_store_requests_total{{operation=\"{op}\"}} {n}"
        );
    }
    header(
        &mut out,
        "kafscale_object_store_errors_total",
        "counter",
        "Object-store requests that failed, by operation.",
    );
    for (op, _, n) in store {
        let _ = writeln!(
            out,
            "kafscale_object_store_errors_total{{operation=\"{op}\"}} {n}"
        );
    }
    let mut shards = s.shards.clone();
    shards.sort_by_key(|g| g.shard);
    for (name, help, get) in [
        (
            "kafscale_upload_queue_depth",
            "Segment uploads waiting for an upload slot, by shard.",
            (|g: &ShardGauges| g.upload_queue) as fn(&ShardGauges) -> u64,
        ),
        (
            "kafscale_uploads_in_flight",
            "Segment uploads in progress, by shard.",
            |g: &ShardGauges| g.uploads_in_flight,
        ),
        (
            "kafscale_buffered_bytes",
            "Bytes appended but not yet durable in the object store, by shard.",
            |g: &ShardGauges| g.buffered_bytes,
        ),
    ] {
        header(&mut out, name, "gauge", help);
        for g in &shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", g.shard, get(g));
        }
    }
    for (name, kind, help, n) in [
        (
            "kafscale_read_cache_hits_total",
            "counter",
            "Segment reads served from the read cache.",
            s.cache_hits,
        ),
        (
            "kafscale_read_cache_misses_total",
            "counter",
            "Segment reads that went to the object store.",
            s.cache_misses,
        ),
        (
            "kafscale_open_connections",
            "gauge",
            "Open Kafka client connections.",
            s.open_connections,
        ),
        (
            "kafscale_shards",
            "gauge",
            "Shards that answered this scrape.",
            s.shards.len() as u64,
        ),
    ] {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges(shard: usize) -> ShardGauges {
        ShardGauges {
            shard,
            buffered_bytes: 10 * shard as u64,
            upload_queue: 0,
            uploads_in_flight: 1,
        }
    }

    #[test]
    fn shards_sum_and_render() {
        let produce = kafka_protocol::messages::ApiKey::Produce as i16;
        let t: Arc<str> = Arc::from("orders");
        let a = ShardMetrics::new(60);
        let b = ShardMetrics::new(60);
        let now = Instant::now();
        a.record_request(produce, Duration::from_micros(300), now);
        a.record_request(produce, Duration::from_millis(3), now);
        b.record_request(produce, Duration::from_secs(20), now);
        b.record_request(-1, Duration::from_secs(1), now);
        b.record_request(i16::MAX, Duration::from_secs(1), now);
        a.add_produce_bytes(&t, 100);
        b.add_produce_bytes(&t, 50);
        b.add_fetch_bytes(&Arc::from("a\"b"), 7);
        a.cache_hits.set(3);
        b.cache_misses.set(2);
        b.open_connections.set(4);
        let mut s = a.snapshot(gauges(0));
        s.merge(b.snapshot(gauges(1)));
        assert_eq!(s.apis.len(), 1);
        assert_eq!(s.apis[&produce].count, 3);
        assert_eq!(s.produce_bytes["orders"], 150);
        assert_eq!(s.produce_in_window, 3);

        let text = render(&s, &[("put", 4, 1), ("get", 2, 0)]);
        let has = |line: &str| {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            )
        };
        has("kafscale_requests_total{api=\"Produce\"} 3");
        has("kafscale_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0005\"} 1");
        has("kafscale_request_duration_seconds_bucket{api=\"Produce\",le=\"0.005\"} 2");
        has("kafscale_request_duration_seconds_bucket{api=\"Produce\",le=\"10\"} 2");
        has("kafscale_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 3");
        has("kafscale_request_duration_seconds_count{api=\"Produce\"} 3");
        has("kafscale_produce_bytes_total{topic=\"orders\"} 150");
        has("kafscale_fetch_bytes_total{topic=\"a\\\"b\"} 7");
        has("kafscale_produce_rps 0.05");
        has("kafscale_fetch_rps 0");
        has("kafscale_object_store_requests_total{operation=\"put\"} 4");
        has("kafscale_object_store_errors_total{operation=\"put\"} 1");
        has("kafscale_buffered_bytes{shard=\"1\"} 10");
        has("kafscale_uploads_in_flight{shard=\"0\"} 1");
        has("kafscale_read_cache_hits_total 3");
        has("kafscale_read_cache_misses_total 2");
        has("kafscale_open_connections 4");
        has("kafscale_shards 2");
    }

    #[test]
    fn rate_window_forgets_old_seconds() {
        let w = RateWindow::new(3);
        w.record(0);
        w.record(1);
        w.record(1);
        assert_eq!(w.total(1), 3);
        assert_eq!(w.total(2), 3);
        assert_eq!(w.total(3), 2);
        w.record(4); // reuses slot of second 1
        assert_eq!(w.total(4), 1);
        assert_eq!(w.total(10), 0);
    }
}
