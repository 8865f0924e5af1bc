//! The broker's clock: where the time comes from for everything in the broker's
//! logic that reads it (request deadlines, the flush tick, retention, group
//! session and rebalance timers, offset-commit timestamps).
//!
//! Two kinds. The system clock is std time with the shard's own timers
//! (`runtime::timer`); matching on the kind is all it adds to a hot path. The
//! manual clock is for tests: time stands still until the test calls
//! `ManualClock::advance`, which wakes every sleeper whose deadline has passed,
//! so a test drives a session timeout or a flush tick without sleeping.
//!
//! What deliberately stays on real time (see docs/architecture.md, "Time"):
//! latency and throughput measurements (they measure real elapsed time), retry
//! back-offs towards the object store and the metadata store (they pace calls
//! to something that recovers in real time), shutdown's drain waits, and the
//! tokio side (HTTP, gRPC, etcd).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::runtime::{timer, Timer};

/// A clock: cheap to clone, shared by every shard of a broker.
#[derive(Clone, Default)]
pub struct Clock(Kind);

#[derive(Clone, Default)]
enum Kind {
    #[default]
    System,
    Manual(Arc<Manual>),
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::System => write!(f, "Clock::System"),
            Kind::Manual(m) => write!(f, "Clock::Manual(+{:?})", m.elapsed()),
        }
    }
}

impl Clock {
    /// Real time: `Instant::now`, `SystemTime::now` and the shard's timers.
    pub fn system() -> Clock {
        Clock(Kind::System)
    }

    /// The current time, for deadlines and durations.
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.0 {
            Kind::System => Instant::now(),
            Kind::Manual(m) => m.now(),
        }
    }

    /// Milliseconds since the Unix epoch: what retention compares record
    /// timestamps with, what stored timestamps carry, and what the flush tick
    /// aligns to.
    pub fn wall_ms(&self) -> i64 {
        match &self.0 {
            Kind::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            Kind::Manual(m) => m.start_wall_ms + m.elapsed().as_millis() as i64,
        }
    }

    /// Resolves once `d` has passed on this clock. The system clock's sleep is a
    /// shard timer, so it must be polled on a shard.
    pub fn sleep(&self, d: Duration) -> Sleep {
        match &self.0 {
            Kind::System => Sleep(SleepKind::System(timer(d))),
            Kind::Manual(m) => Sleep(SleepKind::Manual(ManualSleep {
                clock: m.clone(),
                deadline: m.now() + d,
                id: None,
            })),
        }
    }

    /// Resolves once this clock reaches `deadline` (at once if it has).
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        match &self.0 {
            Kind::System => Sleep(SleepKind::System(timer(
                deadline.saturating_duration_since(Instant::now()),
            ))),
            Kind::Manual(m) => Sleep(SleepKind::Manual(ManualSleep {
                clock: m.clone(),
                deadline,
                id: None,
            })),
        }
    }
}

/// The future of `Clock::sleep` and `Clock::sleep_until`.
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep(SleepKind);

enum SleepKind {
    System(Timer),
    Manual(ManualSleep),
}

impl Future for Sleep {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            SleepKind::System(t) => Pin::new(t).poll(cx).map(|_| ()),
            SleepKind::Manual(s) => s.poll(cx),
        }
    }
}

/// A clock whose time moves only when the test says so. Clones share the time.
#[derive(Clone)]
pub struct ManualClock(Arc<Manual>);

impl ManualClock {
    /// A clock standing at `start_wall_ms` (milliseconds since the Unix epoch).
    pub fn new(start_wall_ms: i64) -> ManualClock {
        ManualClock(Arc::new(Manual {
            origin: Instant::now(),
            start_wall_ms,
            elapsed_nanos: AtomicU64::new(0),
            sleepers: Mutex::new(Sleepers::default()),
        }))
    }

    /// The `Clock` to hand to the broker (`StartOptions::clock`).
    pub fn clock(&self) -> Clock {
        Clock(Kind::Manual(self.0.clone()))
    }

    /// Moves time forward by `d` and wakes every sleeper whose deadline has
    /// passed. Wakers are woken from the caller's thread: a shard's task is
    /// queued to its own executor (glommio's foreign-wake path, the one the I/O
    /// runtime's answers take), so the woken tasks run after this returns.
    pub fn advance(&self, d: Duration) {
        let due = {
            let mut sleepers = self.0.lock();
            let elapsed = self.0.elapsed() + d;
            self.0
                .elapsed_nanos
                .store(elapsed.as_nanos() as u64, Ordering::Release);
            let now = self.0.origin + elapsed;
            // Everything at or before `now` (the id part of the key is at most u64::MAX).
            let later = sleepers.by_deadline.split_off(&(now, u64::MAX));
            std::mem::replace(&mut sleepers.by_deadline, later)
        };
        for (_, w) in due {
            w.wake();
        }
    }

    /// Time moved so far.
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    /// Milliseconds since the Unix epoch on this clock.
    pub fn wall_ms(&self) -> i64 {
        self.clock().wall_ms()
    }

    /// How many sleeps are waiting for the clock to move (they need not have
    /// reached their deadline).
    pub fn sleepers(&self) -> usize {
        self.0.lock().by_deadline.len()
    }
}

struct Manual {
    /// The real instant the clock was made at: `now()` is this plus the time moved.
    origin: Instant,
    start_wall_ms: i64,
    /// Written under the `sleepers` lock, read without it.
    elapsed_nanos: AtomicU64,
    sleepers: Mutex<Sleepers>,
}

#[derive(Default)]
struct Sleepers {
    next_id: u64,
    by_deadline: BTreeMap<(Instant, u64), Waker>,
}

impl Manual {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire))
    }

    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, Sleepers> {
        // A test that panicked while holding the lock poisons it; the data is
        // still consistent (every update is a single insert or split).
        self.sleepers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct ManualSleep {
    clock: Arc<Manual>,
    deadline: Instant,
    /// Set while registered.
    id: Option<u64>,
}

impl ManualSleep {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // The check and the registration happen under the lock `advance` takes,
        // so an advance cannot slip between them and leave the waker asleep.
        let mut sleepers = self.clock.lock();
        if self.clock.now() >= self.deadline {
            if let Some(id) = self.id.take() {
                sleepers.by_deadline.remove(&(self.deadline, id));
            }
            return Poll::Ready(());
        }
        let id = *self.id.get_or_insert_with(|| {
            sleepers.next_id += 1;
            sleepers.next_id
        });
        match sleepers.by_deadline.get_mut(&(self.deadline, id)) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => *w = cx.waker().clone(),
            None => {
                sleepers
                    .by_deadline
                    .insert((self.deadline, id), cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.clock.lock().by_deadline.remove(&(self.deadline, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn manual_time_moves_only_when_advanced_and_wakes_due_sleepers() {
        let m = ManualClock::new(1_000_000);
        let c = m.clock();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        assert_eq!(c.wall_ms(), 1_000_000);

        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut short = c.sleep(Duration::from_millis(100));
        let mut long = c.sleep_until(t0 + Duration::from_secs(10));
        assert!(Pin::new(&mut short).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut long).poll(&mut cx).is_pending());
        assert_eq!(m.sleepers(), 2);

        m.advance(Duration::from_millis(99));
        assert!(!flag.0.load(Ordering::SeqCst), "nothing is due yet");
        assert!(Pin::new(&mut short).poll(&mut cx).is_pending());

        m.advance(Duration::from_millis(1));
        assert!(
            flag.0.swap(false, Ordering::SeqCst),
            "the due sleeper is woken"
        );
        assert!(Pin::new(&mut short).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut long).poll(&mut cx).is_pending());
        assert_eq!(c.now(), t0 + Duration::from_millis(100));
        assert_eq!(c.wall_ms(), 1_000_100);

        // A dropped sleep leaves nothing behind.
        drop(long);
        assert_eq!(m.sleepers(), 0);
        // A deadline already passed is ready at once.
        let mut past = c.sleep_until(t0);
        assert!(Pin::new(&mut past).poll(&mut cx).is_ready());
        assert_eq!(m.sleepers(), 0);
    }
}
