//! The object store's health as the broker sees it: `healthy`, `degraded` or
//! `unavailable`, computed from the requests the broker really makes (segment
//! uploads, reads, listings, deletions and the readiness probe's LIST).
//!
//! Two signals, as in the Go Kafscale:
//! - a window of the last `window` seconds (one slot per second): the share of
//!   failed requests and their average latency, compared with a warning and a
//!   critical threshold each. Rated only once the window holds `min_samples`
//!   requests, so that one failure on a quiet broker does not flip the state;
//! - a failure streak: `failure_streak` requests of one operation failing in a row
//!   (no success of that operation in between) make the store unavailable at once.
//!   This is the "sustained failure" case (the store is down, uploads keep
//!   failing) that a long window would only notice late. When that operation
//!   succeeds again, the outage is over and the window restarts, so the broker
//!   recovers with the store instead of a window later.
//!
//! An answer that is not a failure of the store (an object not found, a
//! conditional PUT refused) counts as a success. The state is kept in an atomic,
//! so a shard reads it on every produce request with one relaxed load.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// The operations tracked, by index; the same order as `STORE_OPS`.
const OPS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum HealthState {
    Healthy = 0,
    Degraded = 1,
    Unavailable = 2,
}

impl HealthState {
    pub const ALL: [HealthState; 3] = [
        HealthState::Healthy,
        HealthState::Degraded,
        HealthState::Unavailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unavailable => "unavailable",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => HealthState::Healthy,
            1 => HealthState::Degraded,
            _ => HealthState::Unavailable,
        }
    }
}

/// Thresholds (the broker reads them from `KAFSCALE_S3_*`, see docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthConfig {
    pub window: Duration,
    pub latency_warn: Duration,
    pub latency_crit: Duration,
    pub error_rate_warn: f64,
    pub error_rate_crit: f64,
    pub failure_streak: u32,
    pub min_samples: u64,
}

impl Default for HealthConfig {
    /// The Go Kafscale's defaults, plus the streak and the minimum sample count.
    fn default() -> Self {
        HealthConfig {
            window: Duration::from_secs(60),
            latency_warn: Duration::from_millis(500),
            latency_crit: Duration::from_millis(3000),
            error_rate_warn: 0.2,
            error_rate_crit: 0.6,
            failure_streak: 3,
            min_samples: 10,
        }
    }
}

/// One second of the window.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The second (since `S3Health::started`) this slot counts; stale otherwise.
    sec: u64,
    requests: u64,
    failures: u64,
    latency_micros: u64,
}

#[derive(Debug)]
struct Inner {
    slots: Vec<Slot>,
    streaks: [u32; OPS],
    state: HealthState,
    since: Instant,
}

/// What /metrics and /readyz show.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot {
    pub state: HealthState,
    /// Why the store is not healthy (empty when it is).
    pub reason: String,
    pub requests: u64,
    pub error_rate: f64,
    pub latency_avg_ms: f64,
    pub state_duration: Duration,
}

#[derive(Debug)]
pub struct S3Health {
    cfg: HealthConfig,
    started: Instant,
    state: AtomicU8,
    inner: Mutex<Inner>,
}

impl Default for S3Health {
    fn default() -> Self {
        S3Health::new(HealthConfig::default())
    }
}

/// `(requests, failures, latency_micros)` of the slots inside the window ending at `now`.
fn window_sums(slots: &[Slot], now: u64) -> (u64, u64, u64) {
    let w = slots.len() as u64;
    slots
        .iter()
        .filter(|s| s.requests > 0 && s.sec <= now && now - s.sec < w)
        .fold((0, 0, 0), |(r, f, l), s| {
            (r + s.requests, f + s.failures, l + s.latency_micros)
        })
}

impl S3Health {
    pub fn new(cfg: HealthConfig) -> Self {
        let now = Instant::now();
        let secs = cfg.window.as_secs().max(1) as usize;
        S3Health {
            cfg,
            started: now,
            state: AtomicU8::new(HealthState::Healthy as u8),
            inner: Mutex::new(Inner {
                slots: vec![Slot::default(); secs],
                streaks: [0; OPS],
                state: HealthState::Healthy,
                since: now,
            }),
        }
    }

    /// The current state: one relaxed atomic load (read on every produce request).
    pub fn state(&self) -> HealthState {
        HealthState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    /// Records one finished (or abandoned) request of operation `op` (an index
    /// into `STORE_OPS`).
    pub fn record(&self, op: usize, latency: Duration, failed: bool) {
        self.record_at(op, latency, failed, Instant::now());
    }

    fn record_at(&self, op: usize, latency: Duration, failed: bool, at: Instant) {
        let sec = self.second(at);
        let mut g = self.lock();
        let n = g.slots.len() as u64;
        let slot = &mut g.slots[(sec % n) as usize];
        if slot.sec != sec {
            *slot = Slot {
                sec,
                ..Slot::default()
            };
        }
        slot.requests += 1;
        slot.latency_micros = slot
            .latency_micros
            .saturating_add(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        if failed {
            slot.failures += 1;
        }
        if let Some(streak) = g.streaks.get_mut(op) {
            if failed {
                *streak = streak.saturating_add(1);
            } else {
                let ended_outage = *streak >= self.cfg.failure_streak;
                *streak = 0;
                if ended_outage {
                    // The store answers again: the failures of the outage say nothing
                    // about it now, so rate it from here on.
                    for s in g.slots.iter_mut() {
                        if s.sec != sec {
                            *s = Slot::default();
                        }
                    }
                    let keep = Slot {
                        sec,
                        requests: 1,
                        failures: 0,
                        latency_micros: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                    };
                    g.slots[(sec % n) as usize] = keep;
                }
            }
        }
        self.update(&mut g, at);
    }

    /// Re-rates the window as time passes (old failures age out); called about
    /// once a second by the broker's store probe.
    pub fn refresh(&self) {
        let now = Instant::now();
        let mut g = self.lock();
        self.update(&mut g, now);
    }

    fn evaluate(&self, g: &Inner, now: Instant) -> (HealthState, String, u64, f64, f64) {
        let (requests, failures, micros) = window_sums(&g.slots, self.second(now));
        let rate = if requests == 0 {
            0.0
        } else {
            failures as f64 / requests as f64
        };
        let avg_ms = if requests == 0 {
            0.0
        } else {
            micros as f64 / requests as f64 / 1000.0
        };
        let c = &self.cfg;
        if let Some((op, n)) = g
            .streaks
            .iter()
            .enumerate()
            .find(|(_, n)| **n >= c.failure_streak)
        {
            let name = crate::instrumented::STORE_OPS[op];
            return (
                HealthState::Unavailable,
                format!("the last {n} {name} requests failed"),
                requests,
                rate,
                avg_ms,
            );
        }
        let (state, reason) = if requests < c.min_samples {
            (HealthState::Healthy, String::new())
        } else {
            let lat = Duration::from_secs_f64(avg_ms / 1000.0);
            let secs = c.window.as_secs();
            let why = |what: &str| {
                format!(
                    "{what} over the last {secs} s: {:.0}% of {requests} requests failed, {avg_ms:.0} ms average latency",
                    rate * 100.0
                )
            };
            if rate >= c.error_rate_crit || lat >= c.latency_crit {
                (HealthState::Unavailable, why("critical"))
            } else if rate >= c.error_rate_warn || lat >= c.latency_warn {
                (HealthState::Degraded, why("warning"))
            } else {
                (HealthState::Healthy, String::new())
            }
        };
        (state, reason, requests, rate, avg_ms)
    }

    fn update(&self, g: &mut Inner, now: Instant) {
        let (state, reason, ..) = self.evaluate(g, now);
        if state != g.state {
            let from = g.state;
            g.state = state;
            g.since = now;
            self.state.store(state as u8, Ordering::Relaxed);
            match state {
                HealthState::Healthy => {
                    info!(from = from.name(), to = state.name(), "object store health")
                }
                _ => {
                    warn!(from = from.name(), to = state.name(), %reason, "object store health")
                }
            }
        }
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let now = Instant::now();
        let mut g = self.lock();
        self.update(&mut g, now);
        let (state, reason, requests, error_rate, latency_avg_ms) = self.evaluate(&g, now);
        HealthSnapshot {
            state,
            reason,
            requests,
            error_rate,
            latency_avg_ms,
            state_duration: now.saturating_duration_since(g.since),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUT: usize = 0;
    const LIST: usize = 2;

    fn cfg() -> HealthConfig {
        HealthConfig {
            window: Duration::from_secs(10),
            min_samples: 4,
            ..HealthConfig::default()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_failure_streak_makes_the_store_unavailable_and_its_end_recovers_it() {
        let h = S3Health::new(cfg());
        let t = h.started;
        for i in 0..20 {
            h.record_at(LIST, ms(5), false, t + Duration::from_millis(100 * i));
        }
        assert_eq!(h.state(), HealthState::Healthy);
        h.record_at(PUT, ms(5), true, t + ms(2000));
        h.record_at(PUT, ms(5), true, t + ms(2100));
        // Other operations succeeding do not end the uploads' streak.
        h.record_at(LIST, ms(5), false, t + ms(2150));
        assert_eq!(h.state(), HealthState::Healthy);
        h.record_at(PUT, ms(5), true, t + ms(2200));
        assert_eq!(h.state(), HealthState::Unavailable);
        assert!(h.evaluate(&h.lock(), t + ms(2200)).1.contains("3 put"));
        h.record_at(LIST, ms(5), false, t + ms(2300));
        assert_eq!(h.state(), HealthState::Unavailable);
        // One successful upload ends the outage, and its failures are forgotten.
        h.record_at(PUT, ms(5), false, t + ms(2400));
        assert_eq!(h.state(), HealthState::Healthy);
        assert_eq!(window_sums(&h.lock().slots, 2).1, 0);
    }

    #[test]
    fn error_rate_and_latency_rate_the_window() {
        let h = S3Health::new(cfg());
        let t = h.started;
        // Below min_samples nothing is rated, even all failures (no streak: mixed ops).
        h.record_at(PUT, ms(5), true, t);
        h.record_at(LIST, ms(5), true, t);
        assert_eq!(h.state(), HealthState::Healthy);
        // Every operation succeeds once (no streak left); 2 failures of 8: 25% >= 20%.
        for op in [0, 1, 2, 3, 1, 1] {
            h.record_at(op, ms(5), false, t + ms(10));
        }
        assert_eq!(h.state(), HealthState::Degraded);
        // Never three failures of one operation in a row, but 2 of 3 requests fail.
        for _ in 0..6 {
            for op in 0..4 {
                h.record_at(op, ms(5), true, t + ms(20));
                h.record_at(op, ms(5), true, t + ms(20));
                h.record_at(op, ms(5), false, t + ms(20));
            }
        }
        assert!(h.evaluate(&h.lock(), t + ms(20)).3 >= 0.6);
        assert_eq!(h.state(), HealthState::Unavailable);
        // Ten seconds later the window has forgotten them.
        let later = t + Duration::from_secs(11);
        {
            let mut g = h.lock();
            h.update(&mut g, later);
        }
        assert_eq!(h.state(), HealthState::Healthy);
        // Slow answers: 600 ms on average is above the 500 ms warning.
        for i in 0..4 {
            h.record_at(1, ms(600), false, later + ms(i));
        }
        assert_eq!(h.state(), HealthState::Degraded);
        for i in 0..8 {
            h.record_at(1, ms(9000), false, later + ms(10 + i));
        }
        assert_eq!(h.state(), HealthState::Unavailable);
    }
}
