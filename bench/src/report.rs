//! What each command reports, as a sentence (default) or one JSON object (`--json`).

use serde::Serialize;

use crate::error::Result;
use crate::stats::Percentiles;

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ProduceReport {
    pub messages: u64,
    pub errors: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    /// Send → delivery report, as the producer sees it.
    pub latency: Percentiles,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ConsumeReport {
    pub messages: u64,
    pub bytes: u64,
    /// From the first message received to the last.
    pub seconds: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct E2eReport {
    pub produced: ProduceReport,
    /// Messages of this run the consumer received.
    pub received: u64,
    /// Timestamp written into the message at send → consumer poll.
    pub e2e_latency: Percentiles,
}

#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct SinkReport {
    pub connections: u64,
    pub requests: u64,
    pub produce_requests: u64,
    pub records: u64,
    /// Record-batch bytes received in Produce requests.
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_sec: f64,
}

/// A result that can print itself.
pub trait Report: Serialize {
    fn text(&self) -> String;
}

fn lat(l: &Percentiles) -> String {
    format!(
        "p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
    )
}

impl Report for ProduceReport {
    fn text(&self) -> String {
        format!(
            "produced {} msgs ({} errors) in {:.2} s: {:.0} msg/s, {:.1} MB/s; latency {}",
            self.messages,
            self.errors,
            self.seconds,
            self.msgs_per_sec,
            self.mb_per_sec,
            lat(&self.latency)
        )
    }
}

impl Report for ConsumeReport {
    fn text(&self) -> String {
        format!(
            "consumed {} msgs in {:.2} s: {:.0} msg/s, {:.1} MB/s",
            self.messages, self.seconds, self.msgs_per_sec, self.mb_per_sec
        )
    }
}

impl Report for E2eReport {
    fn text(&self) -> String {
        format!(
            "{}\nreceived {} of them; end-to-end latency {}",
            self.produced.text(),
            self.received,
            lat(&self.e2e_latency)
        )
    }
}

impl Report for SinkReport {
    fn text(&self) -> String {
        format!(
            "sink: {} connections, {} requests ({} produce), {} records, {} bytes in {:.2} s ({:.1} MB/s)",
            self.connections,
            self.requests,
            self.produce_requests,
            self.records,
            self.bytes,
            self.seconds,
            self.mb_per_sec
        )
    }
}

/// The report as printed: one JSON line with `json`, else the sentence.
pub fn render<R: Report>(r: &R, json: bool) -> Result<String> {
    Ok(if json {
        serde_json::to_string(r)?
    } else {
        r.text()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce() -> ProduceReport {
        ProduceReport {
            messages: 1000,
            errors: 2,
            bytes: 1_024_000,
            seconds: 2.0,
            msgs_per_sec: 500.0,
            mb_per_sec: 0.512,
            latency: Percentiles {
                p50_ms: 1.5,
                p90_ms: 2.25,
                p99_ms: 10.0,
                p999_ms: 12.5,
                max_ms: 13.0,
            },
        }
    }

    #[test]
    fn produce_text() {
        assert_eq!(
            produce().text(),
            "produced 1000 msgs (2 errors) in 2.00 s: 500 msg/s, 0.5 MB/s; \
             latency p50 1.50 p90 2.25 p99 10.00 p99.9 12.50 max 13.00 ms"
        );
    }

    #[test]
    fn produce_json_has_every_field() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&produce(), true).unwrap()).unwrap();
        assert_eq!(v["messages"], 1000);
        assert_eq!(v["errors"], 2);
        assert_eq!(v["bytes"], 1_024_000);
        assert_eq!(v["mb_per_sec"], 0.512);
        assert_eq!(v["latency"]["p99_ms"], 10.0);
        assert_eq!(v["latency"]["p999_ms"], 12.5);
        assert!(!render(&produce(), true).unwrap().contains('\n'));
    }

    #[test]
    fn consume_e2e_and_sink() {
        let c = ConsumeReport {
            messages: 10,
            bytes: 20_000_000,
            seconds: 4.0,
            msgs_per_sec: 2.5,
            mb_per_sec: 5.0,
        };
        assert_eq!(
            render(&c, false).unwrap(),
            "consumed 10 msgs in 4.00 s: 2 msg/s, 5.0 MB/s"
        );
        let v: serde_json::Value = serde_json::from_str(&render(&c, true).unwrap()).unwrap();
        assert_eq!(
            (v["messages"].as_u64(), v["mb_per_sec"].as_f64()),
            (Some(10), Some(5.0))
        );

        let e = E2eReport {
            produced: produce(),
            received: 998,
            e2e_latency: Percentiles {
                p50_ms: 100.0,
                ..Percentiles::default()
            },
        };
        let t = e.text();
        assert!(t.starts_with("produced 1000 msgs"), "{t}");
        assert!(t.ends_with("received 998 of them; end-to-end latency p50 100.00 p90 0.00 p99 0.00 p99.9 0.00 max 0.00 ms"), "{t}");
        let v: serde_json::Value = serde_json::from_str(&render(&e, true).unwrap()).unwrap();
        assert_eq!(v["produced"]["messages"], 1000);
        assert_eq!(v["received"], 998);
        assert_eq!(v["e2e_latency"]["p50_ms"], 100.0);

        let s = SinkReport {
            connections: 3,
            requests: 40,
            produce_requests: 30,
            records: 600,
            bytes: 700_000,
            seconds: 1.0,
            mb_per_sec: 0.7,
        };
        assert_eq!(
            s.text(),
            "sink: 3 connections, 40 requests (30 produce), 600 records, 700000 bytes in 1.00 s (0.7 MB/s)"
        );
        let v: serde_json::Value = serde_json::from_str(&render(&s, true).unwrap()).unwrap();
        assert_eq!(
            (v["records"].as_u64(), v["produce_requests"].as_u64()),
            (Some(600), Some(30))
        );
    }
}
