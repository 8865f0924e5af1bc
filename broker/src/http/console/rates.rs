//! Live rates: the difference of the shards' real counters between two
//! gatherings, divided by the time between them. Nothing is estimated: with one
//! sample there is no rate yet, and the state says so (`rates: null`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::obs::metrics::Snapshot;

/// Two gatherings closer than this reuse the last rates instead of dividing a
/// tiny difference by a tiny interval (several viewers, or a page load right
/// after an event).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// The counters the rates are taken from, summed over the shards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub produce_requests: u64,
    pub fetch_requests: u64,
    pub produce_bytes: BTreeMap<String, u64>,
    pub fetch_bytes: BTreeMap<String, u64>,
    pub open_connections: u64,
    /// Object-store `(operation, requests, errors)`.
    pub store: Vec<(&'static str, u64, u64)>,
}

impl Counters {
    /// The one place that reads the shard metrics, so a change of the metrics
    /// representation touches only this function.
    pub fn from_snapshot(s: &Snapshot) -> Self {
        let count = |api: kafka_protocol::messages::ApiKey| {
            s.apis.get(&(api as i16)).map_or(0, |a| a.count)
        };
        Counters {
            produce_requests: count(kafka_protocol::messages::ApiKey::Produce),
            fetch_requests: count(kafka_protocol::messages::ApiKey::Fetch),
            produce_bytes: s.produce_bytes.clone(),
            fetch_bytes: s.fetch_bytes.clone(),
            open_connections: s.open_connections,
            store: Vec::new(),
        }
    }

    pub fn merge(&mut self, o: Counters) {
        self.produce_requests += o.produce_requests;
        self.fetch_requests += o.fetch_requests;
        for (t, n) in o.produce_bytes {
            *self.produce_bytes.entry(t).or_default() += n;
        }
        for (t, n) in o.fetch_bytes {
            *self.fetch_bytes.entry(t).or_default() += n;
        }
        self.open_connections += o.open_connections;
        self.store.extend(o.store);
    }
}

/// Per-second rates over `interval_sec`, with the raw differences they come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub interval_sec: f64,
    pub produce_requests_per_sec: f64,
    pub fetch_requests_per_sec: f64,
    pub produce_bytes_per_sec: f64,
    pub fetch_bytes_per_sec: f64,
    pub topics: Vec<TopicRate>,
    pub store: Vec<StoreRate>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicRate {
    pub topic: String,
    /// Bytes appended by Produce during the interval.
    pub produce_bytes: u64,
    /// Bytes returned by Fetch during the interval.
    pub fetch_bytes: u64,
    pub produce_bytes_per_sec: f64,
    pub fetch_bytes_per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreRate {
    pub operation: &'static str,
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
}

fn diff(now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, topic: &str) -> u64 {
    now.get(topic)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(topic).copied().unwrap_or(0))
}

/// Rates between two samples taken `dt` apart.
pub fn between(before: &Counters, now: &Counters, dt: Duration) -> Rates {
    let secs = dt.as_secs_f64().max(f64::EPSILON);
    let per_sec = |n: u64| n as f64 / secs;
    let topics: Vec<TopicRate> = now
        .produce_bytes
        .keys()
        .chain(now.fetch_bytes.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|t| {
            let produce_bytes = diff(&now.produce_bytes, &before.produce_bytes, t);
            let fetch_bytes = diff(&now.fetch_bytes, &before.fetch_bytes, t);
            TopicRate {
                topic: t.clone(),
                produce_bytes,
                fetch_bytes,
                produce_bytes_per_sec: per_sec(produce_bytes),
                fetch_bytes_per_sec: per_sec(fetch_bytes),
            }
        })
        .collect();
    let store = now
        .store
        .iter()
        .map(|(op, req, err)| {
            let (breq, berr) = before
                .store
                .iter()
                .find(|(o, _, _)| o == op)
                .map_or((0, 0), |(_, r, e)| (*r, *e));
            StoreRate {
                operation: op,
                requests_per_sec: per_sec(req.saturating_sub(breq)),
                errors_per_sec: per_sec(err.saturating_sub(berr)),
            }
        })
        .collect();
    Rates {
        interval_sec: secs,
        produce_requests_per_sec: per_sec(
            now.produce_requests.saturating_sub(before.produce_requests),
        ),
        fetch_requests_per_sec: per_sec(now.fetch_requests.saturating_sub(before.fetch_requests)),
        produce_bytes_per_sec: per_sec(topics.iter().map(|t| t.produce_bytes).sum()),
        fetch_bytes_per_sec: per_sec(topics.iter().map(|t| t.fetch_bytes).sum()),
        topics,
        store,
    }
}

struct Last {
    at: Instant,
    counters: Counters,
    rates: Option<Rates>,
}

/// The last sample, shared by every viewer of the console.
#[derive(Default)]
pub struct Tracker {
    last: Mutex<Option<Last>>,
}

impl Tracker {
    /// Records a sample and returns the rates since the previous one.
    pub fn sample(&self, counters: Counters) -> Option<Rates> {
        self.sample_at(counters, Instant::now())
    }

    fn sample_at(&self, counters: Counters, at: Instant) -> Option<Rates> {
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match last.as_ref() {
            Some(l) if at.saturating_duration_since(l.at) < MIN_INTERVAL => l.rates.clone(),
            prev => {
                let rates = prev.map(|l| between(&l.counters, &counters, at - l.at));
                *last = Some(Last {
                    at,
                    counters,
                    rates: rates.clone(),
                });
                rates
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(produce: u64, fetch: u64, reqs: u64) -> Counters {
        Counters {
            produce_requests: reqs,
            fetch_requests: 2 * reqs,
            produce_bytes: [("t".to_string(), produce)].into(),
            fetch_bytes: [("t".to_string(), fetch), ("u".to_string(), 7)].into(),
            open_connections: 1,
            store: vec![("put", reqs, 1)],
        }
    }

    #[test]
    fn rates_are_counter_differences_over_time() {
        let tr = Tracker::default();
        let t0 = Instant::now();
        assert_eq!(tr.sample_at(counters(100, 50, 1), t0), None);
        let r = tr
            .sample_at(counters(300, 450, 5), t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(r.interval_sec, 2.0);
        assert_eq!(r.produce_bytes_per_sec, 100.0);
        assert_eq!(r.fetch_bytes_per_sec, 200.0);
        assert_eq!(r.produce_requests_per_sec, 2.0);
        assert_eq!(r.fetch_requests_per_sec, 4.0);
        assert_eq!(r.topics[0].produce_bytes, 200);
        assert_eq!(r.topics[1].topic, "u");
        assert_eq!(r.topics[1].fetch_bytes, 0);
        assert_eq!(r.store[0].requests_per_sec, 2.0);
        assert_eq!(r.store[0].errors_per_sec, 0.0);
        // Too soon after: the same rates, and the sample is not replaced.
        let again = tr.sample_at(counters(900, 900, 9), t0 + Duration::from_millis(2100));
        assert_eq!(again.as_ref(), Some(&r));
        let r2 = tr
            .sample_at(counters(400, 450, 5), t0 + Duration::from_secs(3))
            .unwrap();
        assert_eq!(r2.produce_bytes_per_sec, 100.0);
    }
}
