//! What the broker admits from its clients, broker-wide: how many connections
//! (in all and per client address) and how many bytes of requests it holds at
//! once (read from sockets and not yet answered, like Kafka's
//! `queued.max.request.bytes`). Shared by every shard: a connection is charged
//! on the shard that accepted it and released there, so the counters are the
//! only thing shards touch together (atomics, and a lock on connect/close only).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The limits, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Open connections in all (`KAFSCALE_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Open connections from one client address (`KAFSCALE_MAX_CONNECTIONS_PER_IP`).
    pub max_connections_per_ip: usize,
    /// Bytes of requests held at once (`KAFSCALE_QUEUED_MAX_REQUEST_BYTES`).
    pub queued_max_request_bytes: usize,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the broker holds KAFSCALE_MAX_CONNECTIONS connections")]
    TooManyConnections,
    #[error("this client address holds KAFSCALE_MAX_CONNECTIONS_PER_IP connections")]
    TooManyFromAddress,
}

pub struct Admission {
    limits: AdmissionLimits,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    request_bytes: AtomicUsize,
    /// Times a connection paused reading because the byte budget was spent.
    memory_waits: AtomicU64,
}

/// How long a connection waits before it looks at the byte budget again. The
/// bytes are freed on other shards; waking waiters across shards would cost
/// every release a lock, and the budget is only ever spent when the broker is
/// overloaded, where a few milliseconds of pause are the point.
const BUDGET_POLL: Duration = Duration::from_millis(5);

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            limits,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            request_bytes: AtomicUsize::new(0),
            memory_waits: AtomicU64::new(0),
        }
    }

    /// Counts a new connection from `ip`, or refuses it; the permit gives the
    /// place back when dropped.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionPermit, Refused> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::TooManyConnections);
        }
        if let Some(ip) = ip {
            let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(ip).or_insert(0);
            if *n >= self.limits.max_connections_per_ip {
                if *n == 0 {
                    m.remove(&ip);
                }
                drop(m);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::TooManyFromAddress);
            }
            *n += 1;
        }
        Ok(ConnectionPermit {
            admission: self.clone(),
            ip,
        })
    }

    /// Takes `n` bytes of the budget if they fit. When nothing is held at all,
    /// any size fits: one request larger than the budget must still be served.
    pub fn try_reserve(&self, n: usize) -> bool {
        let limit = self.limits.queued_max_request_bytes;
        let mut cur = self.request_bytes.load(Ordering::Acquire);
        loop {
            if cur > 0 && cur.saturating_add(n) > limit {
                return false;
            }
            match self.request_bytes.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Takes `n` bytes of the budget, waiting (real time) until they fit.
    pub async fn reserve(&self, n: usize) {
        if n == 0 || self.try_reserve(n) {
            return;
        }
        self.memory_waits.fetch_add(1, Ordering::Relaxed);
        while !self.try_reserve(n) {
            crate::runtime::sleep(BUDGET_POLL).await;
        }
    }

    /// Charges `n` bytes that are in memory already, whether or not they fit.
    pub fn charge(&self, n: usize) {
        if n > 0 {
            self.request_bytes.fetch_add(n, Ordering::AcqRel);
        }
    }

    pub fn release(&self, n: usize) {
        if n > 0 {
            let _ = self
                .request_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    Some(c.saturating_sub(n))
                });
        }
    }

    /// Bytes of requests held now, all shards together.
    pub fn request_bytes(&self) -> usize {
        self.request_bytes.load(Ordering::Acquire)
    }

    pub fn memory_waits(&self) -> u64 {
        self.memory_waits.load(Ordering::Relaxed)
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// A connection's place under the limits; dropping it frees the place.
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut m = self
                .admission
                .per_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_ip: usize, bytes: usize) -> Arc<Admission> {
        Arc::new(Admission::new(AdmissionLimits {
            max_connections: max,
            max_connections_per_ip: per_ip,
            queued_max_request_bytes: bytes,
        }))
    }

    #[test]
    fn connections_are_limited_in_all_and_per_address() {
        let a = admission(3, 2, 0);
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let c1 = a.admit(Some(ip1)).unwrap();
        let _c2 = a.admit(Some(ip1)).unwrap();
        assert_eq!(a.admit(Some(ip1)).err(), Some(Refused::TooManyFromAddress));
        let _c3 = a.admit(Some(ip2)).unwrap();
        assert_eq!(a.admit(Some(ip2)).err(), Some(Refused::TooManyConnections));
        drop(c1);
        assert_eq!(a.open_connections(), 2);
        let _c4 = a.admit(Some(ip1)).unwrap();
        assert_eq!(a.open_connections(), 3);
    }

    #[test]
    fn the_byte_budget_admits_one_request_of_any_size() {
        let a = admission(1, 1, 100);
        assert!(a.try_reserve(1000));
        assert!(!a.try_reserve(1));
        a.release(1000);
        assert!(a.try_reserve(60));
        assert!(a.try_reserve(40));
        assert!(!a.try_reserve(1));
        a.release(100);
        assert_eq!(a.request_bytes(), 0);
    }
}
