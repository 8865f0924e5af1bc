//! Per-shard counters and their exposition with `prometheus-client`.
//!
//! Counters live in each shard as plain `Cell`s, touched only by that shard's
//! thread, so recording is a few non-atomic adds. A scrape asks every shard for a
//! `Snapshot` (a `Send` copy of its counters and levels) and merges them; nothing
//! is shared on the hot path. The merged snapshot is then encoded by a
//! `prometheus_client` `Collector` registered in a registry built for that scrape
//! (`render`), in the OpenMetrics text format.

use std::time::Duration;

use kafscale_segstore::{HealthSnapshot, HealthState, OpStats, STORE_LATENCY_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::obs::admin::is_admin;
pub use crate::obs::metrics::Snapshot;
use crate::obs::metrics::{
    ApiSnapshot, CloseReason, GroupLevels, PartitionLevels, ShardGauges, LATENCY_BUCKETS,
};
fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => key.to_string(),
    }
}

/// Everything one scrape shows, encoded by `prometheus_client` (see `render`).
#[derive(Debug)]
struct Exposition {
    shards: Snapshot,
    store: Vec<OpStats>,
    health: HealthSnapshot,
    uptime: Duration,
}

type Fmt = Result<(), std::fmt::Error>;

/// A counter family: one series per label set.
fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge family: one series per label set (integer values print as integers).
fn gauges<L: EncodeLabelSet, N: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, N)>,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Fmt {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge<N: EncodeGaugeValue>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> Fmt {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// A histogram family from non-cumulative bucket counts (`counts[i]` for
/// `bounds[i]`, one more slot for +Inf).
fn histograms<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    bounds: &[f64],
    series: impl IntoIterator<Item = (L, f64, u64, Vec<u64>)>,
) -> Fmt {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, sum, count, counts) in series {
        let buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts.iter().copied().chain(std::iter::repeat(0)))
            .collect();
        m.encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

type PartKey<'a> = (&'a str, i32);
/// `(name, help, value)` of a gauge with one series per item.
type Level<T, N> = (&'static str, &'static str, fn(&T) -> N);

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Fmt {
        let s = &self.shards;
        let e = &mut enc;
        let apis: Vec<(String, &ApiSnapshot)> =
            s.apis.iter().map(|(k, a)| (api_name(*k), a)).collect();
        counters(
            e,
            "kafscale_requests",
            "Kafka requests handled, by API.",
            apis.iter().map(|(n, a)| ([("api", n.as_str())], a.count)),
        )?;
        histograms(
            e,
            "kafscale_request_duration_seconds",
            "Time from decoding a request to having its response, by API.",
            &LATENCY_BUCKETS,
            apis.iter().map(|(n, a)| {
                (
                    [("api", n.as_str())],
                    a.sum_micros as f64 / 1e6,
                    a.count,
                    a.buckets.clone(),
                )
            }),
        )?;
        let admin: Vec<&(String, &ApiSnapshot)> = s
            .apis
            .keys()
            .zip(apis.iter())
            .filter(|(k, _)| is_admin(**k))
            .map(|(_, a)| a)
            .collect();
        counters(
            e,
            "kafscale_admin_requests",
            "Admin API requests (topics, configs, groups), by API.",
            admin.iter().map(|(n, a)| ([("api", n.as_str())], a.count)),
        )?;
        counters(
            e,
            "kafscale_admin_request_errors",
            "Admin API requests answered with an error code, by API.",
            admin.iter().map(|(n, a)| ([("api", n.as_str())], a.errors)),
        )?;
        gauges(
            e,
            "kafscale_admin_request_latency_ms_avg",
            "Average admin API latency since the broker started, in milliseconds, by API.",
            admin.iter().map(|(n, a)| {
                (
                    [("api", n.as_str())],
                    a.sum_micros as f64 / 1000.0 / a.count.max(1) as f64,
                )
            }),
        )?;
        counters(
            e,
            "kafscale_produce_bytes",
            "Record-batch bytes appended by Produce, by topic.",
            s.produce_bytes
                .iter()
                .map(|(t, n)| ([("topic", t.as_str())], *n)),
        )?;
        counters(
            e,
            "kafscale_fetch_bytes",
            "Record-batch bytes returned by Fetch, by topic.",
            s.fetch_bytes
                .iter()
                .map(|(t, n)| ([("topic", t.as_str())], *n)),
        )?;
        let w = s.window_sec.max(1) as f64;
        for (name, what, n) in [
            ("kafscale_produce_rps", "Produce", s.produce_in_window),
            ("kafscale_fetch_rps", "Fetch", s.fetch_in_window),
        ] {
            let help = format!(
                "{what} requests per second over the last {} s (KAFSCALE_THROUGHPUT_WINDOW_SEC).",
                s.window_sec
            );
            gauge(e, name, &help, n as f64 / w)?;
        }

        let ops = &self.store;
        counters(
            e,
            "kafscale_object_store_requests",
            "Object-store requests, by operation.",
            ops.iter()
                .map(|o| ([("operation", o.operation)], o.requests)),
        )?;
        counters(
            e,
            "kafscale_object_store_errors",
            "Object-store requests that failed, by operation.",
            ops.iter().map(|o| ([("operation", o.operation)], o.errors)),
        )?;
        histograms(
            e,
            "kafscale_object_store_request_duration_seconds",
            "Object-store request latency, by operation.",
            &STORE_LATENCY_BUCKETS,
            ops.iter().map(|o| {
                (
                    [("operation", o.operation)],
                    o.latency_sum.as_secs_f64(),
                    o.buckets.iter().sum(),
                    o.buckets.clone(),
                )
            }),
        )?;
        let h = &self.health;
        gauges(
            e,
            "kafscale_s3_health_state",
            "1 for the object store's current health state (healthy, degraded, unavailable), 0 for the others.",
            HealthState::ALL
                .iter()
                .map(|st| ([("state", st.name())], i64::from(*st == h.state))),
        )?;
        gauge(
            e,
            "kafscale_s3_latency_ms_avg",
            "Average object-store request latency over the health window (KAFSCALE_S3_HEALTH_WINDOW_SEC), in milliseconds.",
            h.latency_avg_ms,
        )?;
        gauge(
            e,
            "kafscale_s3_error_rate",
            "Share of failed object-store requests over the health window.",
            h.error_rate,
        )?;
        gauge(
            e,
            "kafscale_s3_state_duration_seconds",
            "Seconds the object store has been in its current health state.",
            h.state_duration.as_secs_f64(),
        )?;

        let mut shards = s.shards.clone();
        shards.sort_by_key(|g| g.shard);
        let per_shard: [Level<ShardGauges, u64>; 5] = [
            (
                "kafscale_upload_queue_depth",
                "Partitions waiting for one of the shard's upload slots (KAFSCALE_UPLOAD_CONCURRENCY).",
                |g| g.upload_queue,
            ),
            (
                "kafscale_uploads_in_flight",
                "Segment uploads in progress, by shard.",
                |g| g.uploads_in_flight,
            ),
            (
                "kafscale_upload_queue_segments",
                "Sealed segments not yet durable (queued or uploading), by shard.",
                |g| g.pending_segments,
            ),
            (
                "kafscale_upload_queue_bytes",
                "Bytes of sealed segments not yet durable (queued or uploading), by shard.",
                |g| g.pending_bytes,
            ),
            (
                "kafscale_buffered_bytes",
                "Bytes appended but not yet durable in the object store, by shard.",
                |g| g.buffered_bytes,
            ),
        ];
        for (name, help, get) in per_shard {
            gauges(
                e,
                name,
                help,
                shards
                    .iter()
                    .map(|g| ([("shard", g.shard.to_string())], get(g))),
            )?;
        }
        counter(
            e,
            "kafscale_read_cache_hits",
            "Segment reads served from the read cache.",
            s.cache_hits,
        )?;
        counter(
            e,
            "kafscale_read_cache_misses",
            "Segment reads not in the read cache.",
            s.cache_misses,
        )?;
        for (name, help, v) in [
            (
                "kafscale_log_cleaner_bytes_read",
                "Segment bytes the log cleaner read (compacted topics).",
                s.cleaner[0],
            ),
            (
                "kafscale_log_cleaner_bytes_written",
                "Segment bytes the log cleaner wrote.",
                s.cleaner[1],
            ),
            (
                "kafscale_log_cleaner_segments_rewritten",
                "Segments the log cleaner replaced.",
                s.cleaner[2],
            ),
            (
                "kafscale_log_cleaner_runs",
                "Cleanings committed.",
                s.cleaner[3],
            ),
        ] {
            counter(e, name, help, v)?;
        }
        gauge(
            e,
            "kafscale_open_connections",
            "Open Kafka client connections.",
            s.open_connections,
        )?;
        counter(
            e,
            "kafscale_connections_accepted",
            "Kafka client connections accepted since the broker started.",
            s.connections_accepted,
        )?;
        counters(
            e,
            "kafscale_connections_closed",
            "Kafka client connections the broker closed or refused, by reason.",
            CloseReason::ALL.iter().map(|r| {
                (
                    [("reason", r.label())],
                    s.connections_closed.get(*r as usize).copied().unwrap_or(0),
                )
            }),
        )?;
        gauge(
            e,
            "kafscale_request_bytes_queued",
            "Bytes of requests read and not yet answered, broker-wide (KAFSCALE_QUEUED_MAX_REQUEST_BYTES bounds it).",
            s.request_bytes,
        )?;
        counter(
            e,
            "kafscale_request_memory_waits",
            "Times a connection paused reading because the request byte budget was spent.",
            s.request_memory_waits,
        )?;

        let mut parts: Vec<&PartitionLevels> = s.partitions.iter().collect();
        parts.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let labels = |p: &PartitionLevels| {
            [
                ("topic", p.topic.clone()),
                ("partition", p.partition.to_string()),
            ]
        };
        let per_partition: [Level<PartitionLevels, i64>; 4] = [
            (
                "kafscale_partition_high_watermark",
                "One past the last durable offset, by open partition.",
                |p| p.high_watermark,
            ),
            (
                "kafscale_partition_log_end_offset",
                "The next offset to assign, by open partition.",
                |p| p.log_end,
            ),
            (
                "kafscale_partition_log_start_offset",
                "The first offset still in the log, by open partition.",
                |p| p.log_start,
            ),
            (
                "kafscale_high_watermark_lag",
                "Offsets appended but not yet durable (log end minus high watermark), by open partition.",
                |p| p.log_end - p.high_watermark,
            ),
        ];
        for (name, help, get) in per_partition {
            gauges(e, name, help, parts.iter().map(|p| (labels(p), get(p))))?;
        }

        let hw: std::collections::HashMap<PartKey, i64> = s
            .partitions
            .iter()
            .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
            .collect();
        let mut groups: Vec<&GroupLevels> = s.groups.iter().collect();
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        let mut committed: Vec<(&str, &str, i32, i64)> = groups
            .iter()
            .flat_map(|g| {
                g.committed
                    .iter()
                    .map(|(t, p, o)| (g.group.as_str(), t.as_str(), *p, *o))
            })
            .collect();
        committed.sort();
        let glabels = |g: &str, t: &str, p: i32| {
            [
                ("group", g.to_string()),
                ("topic", t.to_string()),
                ("partition", p.to_string()),
            ]
        };
        gauges(
            e,
            "kafscale_consumer_group_members",
            "Members of each consumer group this broker coordinates.",
            groups
                .iter()
                .map(|g| ([("group", g.group.as_str())], g.members)),
        )?;
        gauges(
            e,
            "kafscale_consumer_group_committed_offset",
            "Committed offset of each group, topic and partition.",
            committed.iter().map(|(g, t, p, o)| (glabels(g, t, *p), *o)),
        )?;
        // Lag where the partition's high watermark is known (the partition is open here).
        let lags: Vec<_> = committed
            .iter()
            .filter_map(|(g, t, p, o)| {
                hw.get(&(*t, *p))
                    .map(|hw| (glabels(g, t, *p), (hw - o).max(0)))
            })
            .collect();
        let max_lag = lags.iter().map(|(_, l)| *l).max().unwrap_or(0);
        gauges(
            e,
            "kafscale_consumer_group_lag",
            "High watermark minus committed offset, by group, topic and partition.",
            lags,
        )?;
        gauge(
            e,
            "kafscale_consumer_lag_max",
            "The largest kafscale_consumer_group_lag.",
            max_lag,
        )?;
        gauge(
            e,
            "kafscale_shards",
            "Shards that answered this scrape.",
            s.shards.len() as u64,
        )?;
        gauge(
            e,
            "kafscale_broker_uptime_seconds",
            "Seconds since the broker started.",
            self.uptime.as_secs_f64(),
        )
    }
}

/// Content type of `render`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes the merged shard snapshot, the object-store counters and the store's
/// health in the OpenMetrics text format (ending with `# EOF`).
pub fn render(
    shards: Snapshot,
    store: Vec<OpStats>,
    health: HealthSnapshot,
    uptime: Duration,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        shards,
        store,
        health,
        uptime,
    }));
    let mut out = String::with_capacity(16 << 10);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::metrics::ShardMetrics;
    use std::sync::Arc;
    use std::time::Instant;

    fn levels(shard: usize) -> ShardGauges {
        ShardGauges {
            shard,
            buffered_bytes: 10 * shard as u64,
            upload_queue: 0,
            uploads_in_flight: 1,
            pending_segments: 2,
            pending_bytes: 300,
        }
    }

    fn op(operation: &'static str, requests: u64, errors: u64) -> OpStats {
        let mut buckets = vec![0; STORE_LATENCY_BUCKETS.len() + 1];
        buckets[0] = requests;
        OpStats {
            operation,
            requests,
            errors,
            latency_sum: Duration::from_micros(500 * requests),
            buckets,
        }
    }

    #[test]
    fn shards_merge_and_render() {
        use kafka_protocol::messages::ApiKey;
        let produce = ApiKey::Produce as i16;
        let create = ApiKey::CreateTopics as i16;
        let t: Arc<str> = Arc::from("orders");
        let a = ShardMetrics::new(60);
        let b = ShardMetrics::new(60);
        let now = Instant::now();
        a.record_request(produce, Duration::from_micros(300), now, false);
        a.record_request(produce, Duration::from_millis(3), now, false);
        b.record_request(produce, Duration::from_secs(20), now, false);
        b.record_request(-1, Duration::from_secs(1), now, false);
        b.record_request(i16::MAX, Duration::from_secs(1), now, false);
        a.record_request(create, Duration::from_millis(2), now, false);
        b.record_request(create, Duration::from_millis(4), now, true);
        a.add_produce_bytes(&t, 100);
        b.add_produce_bytes(&t, 50);
        b.add_fetch_bytes(&Arc::from("a\"b"), 7);
        a.cache_hits.set(3);
        b.cache_misses.set(2);
        b.open_connections.set(4);
        b.connections_accepted.set(9);
        let part = |p: i32, hw: i64| PartitionLevels {
            topic: "orders".into(),
            partition: p,
            log_start: 0,
            log_end: hw + 5,
            high_watermark: hw,
        };
        let group = GroupLevels {
            group: "g1".into(),
            members: 2,
            committed: vec![
                ("orders".into(), 0, 40),
                ("orders".into(), 1, 100),
                ("gone".into(), 0, 3),
            ],
        };
        let mut s = a.snapshot(levels(0), vec![part(0, 100)], vec![group]);
        s.merge(b.snapshot(levels(1), vec![part(1, 90)], vec![]));
        assert_eq!(s.apis.len(), 2);
        assert_eq!(s.apis[&produce].count, 3);
        assert_eq!(s.produce_bytes["orders"], 150);
        assert_eq!(s.produce_in_window, 3);

        let health = HealthSnapshot {
            state: HealthState::Degraded,
            reason: "slow".into(),
            requests: 10,
            error_rate: 0.25,
            latency_avg_ms: 12.5,
            state_duration: Duration::from_secs(3),
        };
        let text = render(
            s,
            vec![op("put", 4, 1), op("get", 2, 0)],
            health,
            Duration::from_secs(7),
        )
        .unwrap();
        let has = |line: &str| {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            )
        };
        has("# TYPE kafscale_requests counter");
        has("kafscale_requests_total{api=\"Produce\"} 3");
        has("kafscale_request_duration_seconds_bucket{le=\"0.0005\",api=\"Produce\"} 1");
        has("kafscale_request_duration_seconds_bucket{le=\"0.005\",api=\"Produce\"} 2");
        has("kafscale_request_duration_seconds_bucket{le=\"10.0\",api=\"Produce\"} 2");
        has("kafscale_request_duration_seconds_bucket{le=\"+Inf\",api=\"Produce\"} 3");
        has("kafscale_request_duration_seconds_count{api=\"Produce\"} 3");
        has("kafscale_admin_requests_total{api=\"CreateTopics\"} 2");
        has("kafscale_admin_request_errors_total{api=\"CreateTopics\"} 1");
        has("kafscale_admin_request_latency_ms_avg{api=\"CreateTopics\"} 3.0");
        has("kafscale_produce_bytes_total{topic=\"orders\"} 150");
        has("kafscale_fetch_bytes_total{topic=\"a\\\"b\"} 7");
        has("kafscale_produce_rps 0.05");
        has("kafscale_fetch_rps 0.0");
        has("kafscale_object_store_requests_total{operation=\"put\"} 4");
        has("kafscale_object_store_errors_total{operation=\"put\"} 1");
        has("kafscale_object_store_request_duration_seconds_count{operation=\"put\"} 4");
        has("kafscale_object_store_request_duration_seconds_bucket{le=\"0.001\",operation=\"get\"} 2");
        has("kafscale_s3_health_state{state=\"healthy\"} 0");
        has("kafscale_s3_health_state{state=\"degraded\"} 1");
        has("kafscale_s3_error_rate 0.25");
        has("kafscale_s3_latency_ms_avg 12.5");
        has("kafscale_buffered_bytes{shard=\"1\"} 10");
        has("kafscale_uploads_in_flight{shard=\"0\"} 1");
        has("kafscale_upload_queue_bytes{shard=\"0\"} 300");
        has("kafscale_read_cache_hits_total 3");
        has("kafscale_read_cache_misses_total 2");
        has("kafscale_open_connections 4");
        has("kafscale_connections_accepted_total 9");
        has("kafscale_partition_high_watermark{topic=\"orders\",partition=\"1\"} 90");
        has("kafscale_high_watermark_lag{topic=\"orders\",partition=\"0\"} 5");
        has("kafscale_consumer_group_members{group=\"g1\"} 2");
        has("kafscale_consumer_group_lag{group=\"g1\",topic=\"orders\",partition=\"0\"} 60");
        // Committed beyond the high watermark: no negative lag.
        has("kafscale_consumer_group_lag{group=\"g1\",topic=\"orders\",partition=\"1\"} 0");
        has("kafscale_consumer_group_committed_offset{group=\"g1\",topic=\"gone\",partition=\"0\"} 3");
        assert!(!text.contains("kafscale_consumer_group_lag{group=\"g1\",topic=\"gone\""));
        has("kafscale_consumer_lag_max 60");
        has("kafscale_shards 2");
        has("kafscale_broker_uptime_seconds 7.0");
        assert_eq!(text.lines().last(), Some("# EOF"));
    }
}
