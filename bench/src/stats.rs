//! Latency histograms and throughput arithmetic, kept apart from the clients so
//! they can be unit-tested.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded, in microseconds (60 s); longer ones count as 60 s.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// Latency in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Records one latency, clamped into the histogram's range so that an outlier
/// (or a clock step between sender and receiver) is counted, not dropped.
pub fn record_us(h: &mut Histogram<u64>, us: u64) {
    // In range by construction, so recording cannot fail.
    let _ = h.record(us.clamp(1, MAX_LATENCY_US));
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Percentiles in milliseconds; all zero for an empty histogram.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_sec(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / 1e6 / secs
    }
}

pub fn per_sec(n: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        n as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            record_us(&mut h, us * 10);
        }
        let p = percentiles(&h);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p90_ms - 9.0).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.p999_ms - 9.99).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn a_single_tail_value_shows_only_in_the_tail() {
        let mut h = latency_histogram();
        for _ in 0..999 {
            record_us(&mut h, 1_000);
        }
        record_us(&mut h, 250_000);
        let p = percentiles(&h);
        assert!((p.p99_ms - 1.0).abs() < 0.01, "{p:?}");
        // 3 significant digits: within 0.1% of the recorded value.
        assert!((p.max_ms - 250.0).abs() < 0.25, "{p:?}");
        assert!((p.p999_ms - 1.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn merged_histograms_count_every_sample() {
        let (mut a, mut b) = (latency_histogram(), latency_histogram());
        for _ in 0..100 {
            record_us(&mut a, 2_000);
            record_us(&mut b, 4_000);
        }
        a.add(&b).unwrap();
        assert_eq!(a.len(), 200);
        let p = percentiles(&a);
        assert!((p.p50_ms - 2.0).abs() < 0.01, "{p:?}");
        assert!((p.p90_ms - 4.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = latency_histogram();
        record_us(&mut h, 0);
        record_us(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!((percentiles(&h).max_ms - 60_000.0).abs() < 60.0);
        assert_eq!(percentiles(&latency_histogram()), Percentiles::default());
    }

    #[test]
    fn rates() {
        assert_eq!(mb_per_sec(5_000_000, 2.0), 2.5);
        assert_eq!(mb_per_sec(5, 0.0), 0.0);
        assert_eq!(per_sec(10, 0.0), 0.0);
        assert_eq!(per_sec(300, 1.5), 200.0);
    }
}
