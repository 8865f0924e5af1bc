//! Idempotent producers: per partition, the last sequence number and the last
//! five batches of every producer id, so that a retried batch is answered with
//! its original offsets instead of being written twice, and a gap in sequence
//! numbers is refused (`OUT_OF_ORDER_SEQUENCE_NUMBER`) as Kafka does.
//!
//! The state lives in memory; a partition's load (after a restart, or when
//! another broker takes it over) rebuilds it from the batches of the newest
//! segment (`recovery::producers_from`). A producer the partition does not know
//! is accepted at any sequence, so only a producer whose last batch lies in an
//! older segment could get a retried batch written twice (at-least-once).
//!
//! A producer that writes nothing for `producer.id.expiration.ms`
//! (`KAFSCALE_PRODUCER_ID_EXPIRATION_MS`) is forgotten, as in Kafka, so that
//! clients that come and go (every restart of an idempotent producer takes a
//! new id) do not grow a partition's state for ever. The sweep runs as batches
//! are recorded, at most once per sweep interval: state only grows by writes.

use std::collections::{HashMap, VecDeque};

use kafscale_codec::batch::BatchHeader;

use crate::errors::KafkaError;

/// Batches remembered per producer: Kafka clients keep at most five in flight.
const RECENT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recent {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug)]
struct ProducerState {
    epoch: i16,
    last_seq: i32,
    recent: VecDeque<Recent>,
    /// When its last batch was recorded (the broker clock, ms since the epoch).
    last_ms: i64,
}

/// The longest wait between two sweeps for expired producers.
const SWEEP_EVERY_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// Already appended: answer with these offsets.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// Refuse the batch with this error code.
    Reject(KafkaError),
}

#[derive(Debug, Default)]
pub struct Producers {
    by_id: HashMap<i64, ProducerState>,
    last_sweep_ms: i64,
}

/// Sequence numbers wrap from `i32::MAX` to 0.
fn seq_add(seq: i32, n: i32) -> i32 {
    ((seq as i64 + n as i64) % (i32::MAX as i64 + 1)) as i32
}

impl Producers {
    pub fn check(&self, h: &BatchHeader) -> SeqCheck {
        if h.producer_id < 0 {
            return SeqCheck::Append;
        }
        let first = h.base_sequence;
        let last = seq_add(first, h.last_offset_delta);
        match self.by_id.get(&h.producer_id) {
            None => SeqCheck::Append,
            Some(s) if h.producer_epoch < s.epoch => {
                SeqCheck::Reject(KafkaError::InvalidProducerEpoch)
            }
            Some(s) if h.producer_epoch > s.epoch => SeqCheck::Append,
            Some(s) => {
                if let Some(r) = s
                    .recent
                    .iter()
                    .find(|r| r.first_seq == first && r.last_seq == last)
                {
                    SeqCheck::Duplicate {
                        base_offset: r.base_offset,
                        last_offset: r.last_offset,
                    }
                } else if first == seq_add(s.last_seq, 1) {
                    SeqCheck::Append
                } else {
                    SeqCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
                }
            }
        }
    }

    /// Records an appended batch at `now_ms`, forgetting producers idle for
    /// `expire_ms` or longer (swept at most every `SWEEP_EVERY_MS`).
    pub fn record(
        &mut self,
        h: &BatchHeader,
        base_offset: i64,
        last_offset: i64,
        now_ms: i64,
        expire_ms: i64,
    ) {
        if h.producer_id < 0 {
            return;
        }
        if now_ms.saturating_sub(self.last_sweep_ms) >= SWEEP_EVERY_MS.min(expire_ms) {
            self.expire(now_ms, expire_ms);
        }
        let last_seq = seq_add(h.base_sequence, h.last_offset_delta);
        let s = self.by_id.entry(h.producer_id).or_insert(ProducerState {
            epoch: h.producer_epoch,
            last_seq,
            recent: VecDeque::with_capacity(RECENT),
            last_ms: now_ms,
        });
        s.last_ms = now_ms;
        if h.producer_epoch != s.epoch {
            s.epoch = h.producer_epoch;
            s.recent.clear();
        }
        s.last_seq = last_seq;
        if s.recent.len() == RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back(Recent {
            first_seq: h.base_sequence,
            last_seq,
            base_offset,
            last_offset,
        });
    }
}

impl Producers {
    /// Forgets producers whose last batch is `expire_ms` or more before `now_ms`.
    pub fn expire(&mut self, now_ms: i64, expire_ms: i64) {
        self.last_sweep_ms = now_ms;
        self.by_id
            .retain(|_, s| now_ms.saturating_sub(s.last_ms) < expire_ms);
    }

    /// Producers whose state is kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Each known producer's newest batch: id → its base offset (the log
    /// cleaner keeps that batch, so the state survives a cleaning).
    pub fn last_batches(&self) -> HashMap<i64, i64> {
        self.by_id
            .iter()
            .filter_map(|(id, s)| s.recent.back().map(|r| (*id, r.base_offset)))
            .collect()
    }

    /// The idempotent producers this partition knows (DescribeProducers), by id:
    /// (producer id, epoch, last sequence, when its last batch was appended).
    pub fn describe(&self) -> Vec<(i64, i16, i32, i64)> {
        let mut out: Vec<_> = self
            .by_id
            .iter()
            .map(|(id, s)| (*id, s.epoch, s.last_seq, s.last_ms))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_codec::batch::build_batch;

    const DAY: i64 = 86_400_000;

    fn header(pid: i64, epoch: i16, seq: i32, n: usize) -> BatchHeader {
        let values: Vec<&[u8]> = (0..n).map(|_| &b"v"[..]).collect();
        let mut h = BatchHeader::parse(&build_batch(0, 0, &values)).unwrap();
        h.producer_id = pid;
        h.producer_epoch = epoch;
        h.base_sequence = seq;
        h
    }

    #[test]
    fn in_sequence_duplicates_and_gaps() {
        let mut p = Producers::default();
        let a = header(7, 0, 0, 3);
        assert_eq!(p.check(&a), SeqCheck::Append);
        p.record(&a, 100, 102, 0, DAY);
        assert_eq!(
            p.check(&a),
            SeqCheck::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        let b = header(7, 0, 3, 2);
        assert_eq!(p.check(&b), SeqCheck::Append);
        p.record(&b, 103, 104, 0, DAY);
        assert_eq!(
            p.check(&header(7, 0, 9, 1)),
            SeqCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            p.check(&header(7, -1, 5, 1)),
            SeqCheck::Reject(KafkaError::InvalidProducerEpoch)
        );
        assert_eq!(p.check(&header(7, 1, 0, 1)), SeqCheck::Append);
        assert_eq!(p.check(&header(-1, -1, -1, 1)), SeqCheck::Append);
        assert_eq!(
            p.check(&header(8, 0, 55, 1)),
            SeqCheck::Append,
            "unknown producers are accepted"
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut p = Producers::default();
        for i in 0..6 {
            let h = header(1, 0, i, 1);
            p.record(&h, i as i64, i as i64, 0, DAY);
        }
        assert_eq!(
            p.check(&header(1, 0, 0, 1)),
            SeqCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
        );
        assert!(matches!(
            p.check(&header(1, 0, 1, 1)),
            SeqCheck::Duplicate { .. }
        ));
        assert_eq!(seq_add(i32::MAX, 1), 0);
        let mut q = Producers::default();
        q.record(&header(2, 0, i32::MAX - 1, 2), 0, 1, 0, DAY);
        assert_eq!(q.check(&header(2, 0, 0, 1)), SeqCheck::Append);
        assert_eq!(
            q.check(&header(2, 0, 1, 1)),
            SeqCheck::Reject(KafkaError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn idle_producers_expire() {
        let mut p = Producers::default();
        let t0 = 1_000_000;
        p.record(&header(1, 0, 0, 1), 0, 0, t0, DAY);
        p.record(&header(2, 0, 0, 1), 1, 1, t0 + DAY / 2, DAY);
        assert_eq!(p.len(), 2);
        // Producer 1 is idle for a day when producer 2 writes again: forgotten,
        // so its next batch is accepted at any sequence (as after a restart).
        p.record(&header(2, 0, 1, 1), 2, 2, t0 + DAY, DAY);
        assert_eq!(p.len(), 1);
        assert_eq!(p.check(&header(1, 0, 42, 1)), SeqCheck::Append);
        assert!(matches!(
            p.check(&header(2, 0, 1, 1)),
            SeqCheck::Duplicate { .. }
        ));
        // Many short-lived producers, one a second with a one-minute expiry: the
        // state holds only those of the last expiry plus one sweep interval.
        for id in 10..1010 {
            p.record(&header(id, 0, 0, 1), id, id, t0 + DAY + id * 1000, 60_000);
        }
        assert!(p.len() <= 121, "{} producers kept", p.len());
    }
}
