//! Everything that knows glommio lives here: pinned executors, the shard-to-shard
//! channel mesh, local tasks, timers and sockets. The data path uses only these
//! wrappers and `futures` traits, so another thread-per-core runtime (monoio,
//! compio) could replace glommio by rewriting this file alone.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::clock::Clock;

pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::Task;

/// A unit of work sent to another shard: runs there, with that shard's state.
pub type Job<S> = Box<dyn FnOnce(Rc<S>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Spawns a task on the current shard. glommio polls a new task at once, inside
/// this call, up to its first pending await; only then does the caller go on.
pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(fut)
}

/// Spawns a task on the current shard that runs to completion on its own.
pub fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

/// Sleeps on the current shard's timer wheel, in real time. The broker's logic
/// sleeps on its `Clock` (`clock.rs`) instead; this is for what must follow real
/// time whatever clock the broker runs on (retry back-offs towards the stores,
/// shutdown's drain).
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Exponential back-off between retries: each `next` delay is twice the last,
/// from `first` up to `cap`. Pure arithmetic; callers sleep the delay in real
/// time (`sleep` on a shard, tokio's sleep on the I/O runtime), never on the
/// broker's `Clock`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            current: first,
        }
    }

    /// The delay before the next attempt; the one after it is twice as long, up
    /// to the cap.
    pub fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (d * 2).min(self.cap);
        d
    }

    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

/// A real-time timer on the current shard's timer wheel (the system clock's
/// sleep); must be created and polled on a shard.
pub type Timer = glommio::timer::Timer;

/// A timer that fires `d` from now.
pub fn timer(d: Duration) -> Timer {
    glommio::timer::Timer::new(d)
}

/// Binds the Kafka port on the current shard. glommio sets `SO_REUSEPORT`, so
/// every shard binds the same address and the kernel spreads connections.
///
/// `SO_REUSEADDR` as well: connections a killed broker left behind (TIME_WAIT,
/// FIN_WAIT) inherit it, so they do not block the restarted broker's start-up
/// check in `main`, which binds without `SO_REUSEPORT` to find a live listener.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())?;
    sk.listen(1024)?;
    // SAFETY: the fd is a bound, listening TCP socket whose ownership moves here.
    Ok(unsafe { TcpListener::from_raw_fd(sk.into_raw_fd()) })
}

/// Sending side of the full mesh: one inbox sender per shard, indexed by shard id.
///
/// The mesh is built before any executor starts, so no shard waits for another to
/// join it. (glommio's own `MeshBuilder::join` is a rendezvous of all executors
/// through its shared channels; under load it sometimes never completed and a
/// broker hung at start-up.) The inboxes are `futures` channels: their wakers are
/// thread-safe, and glommio queues a wake from another thread to the task's own
/// executor and rings its eventfd.
pub struct MeshTx<S: 'static> {
    senders: Vec<ForeignTx<S>>,
}

/// Receiving side: this shard's inbox, fed by other shards and by threads outside
/// the shards (the HTTP and gRPC endpoints).
pub struct MeshRx<S: 'static> {
    inbox: ForeignRx<S>,
}

/// Builds the mesh for `shards` shards: every shard's sending side and its inbox.
pub fn mesh<S: 'static>(shards: usize) -> Vec<(MeshTx<S>, MeshRx<S>)> {
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..shards)
        .map(|_| futures::channel::mpsc::unbounded())
        .unzip();
    inboxes
        .into_iter()
        .map(|inbox| {
            (
                MeshTx {
                    senders: senders.clone(),
                },
                MeshRx { inbox },
            )
        })
        .collect()
}

impl<S: 'static> MeshTx<S> {
    /// Sends a job to shard `to` (never the current shard: call it directly).
    /// Jobs one sender sends to one shard are taken out in the order sent.
    pub fn send(&self, to: usize, job: Job<S>) -> Result<(), ()> {
        self.senders
            .get(to)
            .ok_or(())?
            .unbounded_send(job)
            .map_err(|_| ())
    }

    /// A sender into shard `to`'s inbox for a thread outside the shards.
    pub fn foreign(&self, to: usize) -> Option<ForeignTx<S>> {
        self.senders.get(to).cloned()
    }
}

impl<S: 'static> MeshRx<S> {
    /// Runs every job that arrives in this shard's inbox as its own local task.
    pub fn serve(self, state: Rc<S>) {
        use futures::StreamExt;
        let mut inbox = self.inbox;
        spawn_detached(async move {
            while let Some(job) = inbox.next().await {
                // `job(..)` runs the job's synchronous part now, in inbox order
                // (see `Shard::on`); the future it returns runs as its own task.
                spawn_detached(job(state.clone()));
            }
        });
    }
}

thread_local! {
    /// The shard this thread runs (set by `run_shards`).
    static SHARD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The shard the current thread runs; `None` outside the shards (the I/O
/// runtime, the main thread). glommio names a shard's thread `shard-<i>-<n>`,
/// where `n` is its own executor count, so the thread name alone is ambiguous.
pub fn current_shard() -> Option<usize> {
    SHARD.with(|s| s.get())
}

/// io_uring memory glommio registers per executor. Shards do no file I/O through
/// glommio, so the minimum is enough; the default (10 MiB) would exceed common
/// `RLIMIT_MEMLOCK` settings (8 MiB) with a single shard.
const IO_MEMORY: usize = 128 << 10;
/// Locked memory one executor needs (rings and I/O memory), measured.
pub const MEMLOCK_PER_SHARD: u64 = 512 << 10;

/// Starts `cpus.len()` executors, shard `i` pinned to `cpus[i]`, each running
/// `main(i)`. Returns when all have finished.
pub fn run_shards<F, Fut>(cpus: Vec<usize>, main: F) -> io::Result<()>
where
    F: Fn(usize) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut handles = Vec::new();
    for (i, cpu) in cpus.into_iter().enumerate() {
        let main = main.clone();
        let h = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{i}"))
            .io_memory(IO_MEMORY)
            .preempt_timer(Duration::from_millis(10))
            .spawn(move || {
                SHARD.with(|s| s.set(Some(i)));
                main(i)
            })
            .map_err(|e| io::Error::other(format!("starting shard {i} on CPU {cpu}: {e}")))?;
        handles.push(h);
    }
    for h in handles {
        h.join().map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}

/// CPUs this process may run on (respects cgroup cpusets and taskset).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    (0..std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1))
        .collect()
}

/// What glommio needs and the machine does not give; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("io_uring is disabled by the kernel (kernel.io_uring_disabled = {value}); set it to 0 with `sysctl -w kernel.io_uring_disabled=0`")]
    IoUringDisabled {
        /// The sysctl's value, trimmed.
        value: String,
    },
    /// `io_uring_setup` answered ENOSYS: an old kernel, or a seccomp profile
    /// whose default answer is ENOSYS (Podman's is).
    #[error("io_uring is not available: Linux 5.8 or newer is required, and the container's seccomp profile must allow io_uring_setup, io_uring_enter and io_uring_register (the Helm chart ships one)")]
    IoUringMissing,
    /// `io_uring_setup` answered EPERM.
    #[error("io_uring_setup is not permitted: the container's seccomp profile blocks io_uring_* syscalls; run with a profile that allows io_uring_setup, io_uring_enter and io_uring_register (the Helm chart ships one)")]
    IoUringBlocked,
    #[error("io_uring_setup failed: {0}")]
    IoUringSetup(#[source] io::Error),
    #[error("RLIMIT_MEMLOCK is {} KiB but {shards} shard(s) need {} KiB: raise it (`ulimit -l {}`, or memlock in the pod's security settings) or lower KAFSCALE_SHARDS", .limit >> 10, .need >> 10, .need >> 10)]
    Memlock {
        /// The soft limit, in bytes.
        limit: u64,
        /// What the shards need, in bytes.
        need: u64,
        shards: usize,
    },
}

/// Checks what glommio needs before starting it, so that a missing permission is
/// reported with what to change instead of an opaque executor error.
pub fn preflight(shards: usize) -> Result<(), PreflightError> {
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if s.trim() != "0" {
            return Err(PreflightError::IoUringDisabled {
                value: s.trim().to_string(),
            });
        }
    }
    // SAFETY: io_uring_setup with a zeroed params struct and 2 entries only creates a
    // ring fd, which we close at once; the struct is larger than the kernel's.
    unsafe {
        let mut params = [0u8; 256];
        let fd = libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr());
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOSYS) => PreflightError::IoUringMissing,
                Some(libc::EPERM) => PreflightError::IoUringBlocked,
                _ => PreflightError::IoUringSetup(e),
            });
        }
        libc::close(fd as i32);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // With CAP_IPC_LOCK the registered memory is not charged to the limit, so a
    // low limit is no obstacle (the operator's `ipcLock` pods).
    // SAFETY: getrlimit writes into the struct we pass.
    if !has_ipc_lock()
        && unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
    {
        let need = MEMLOCK_PER_SHARD * shards as u64;
        if lim.rlim_cur < need {
            return Err(PreflightError::Memlock {
                limit: lim.rlim_cur,
                need,
                shards,
            });
        }
    }
    Ok(())
}

/// linux/capability.h (the libc crate has no capability numbers).
const CAP_IPC_LOCK: u32 = 14;

/// Whether CAP_IPC_LOCK is in this process's effective set.
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Sending side of a shard's inbox, for threads outside the shards (the tokio I/O
/// runtime's HTTP and gRPC endpoints) as well as other shards.
pub type ForeignTx<S> = futures::channel::mpsc::UnboundedSender<Job<S>>;
/// A shard's inbox.
pub type ForeignRx<S> = futures::channel::mpsc::UnboundedReceiver<Job<S>>;

/// Runs `f` on the shard behind `tx` from a thread outside the shards (the HTTP
/// and gRPC endpoints) and returns its result; `None` when the shard is gone.
/// Callers bound the wait themselves.
pub async fn ask<S, R, F, Fut>(tx: &ForeignTx<S>, f: F) -> Option<R>
where
    S: 'static,
    F: FnOnce(Rc<S>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let (done, answer) = futures::channel::oneshot::channel();
    let job: Job<S> = Box::new(move |sh| {
        Box::pin(async move {
            let _ = done.send(f(sh).await);
        })
    });
    tx.unbounded_send(job).ok()?;
    answer.await.ok()
}

/// Waits until `ready()` holds (true) or the deadline passes on `clock` (false),
/// checking again each time a sender pushed onto `waiters` is fired.
pub async fn wait_until(
    clock: &Clock,
    deadline: std::time::Instant,
    waiters: &std::cell::RefCell<Vec<futures::channel::oneshot::Sender<()>>>,
    ready: impl Fn() -> bool,
) -> bool {
    loop {
        if ready() {
            return true;
        }
        if clock.now() >= deadline {
            return false;
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        {
            // Waits that ended (deadline, or their request dropped) leave their
            // sender behind; drop those here, so a list nobody fires for a while
            // does not grow with every wait.
            let mut w = waiters.borrow_mut();
            w.retain(|s| !s.is_canceled());
            w.push(tx);
        }
        let timeout = clock.sleep_until(deadline);
        futures::pin_mut!(timeout);
        let _ = futures::future::select(rx, timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(50 * MS, 1000 * MS);
        let delays: Vec<_> = (0..8).map(|_| b.next()).collect();
        assert_eq!(
            delays,
            [50, 100, 200, 400, 800, 1000, 1000, 1000].map(|ms| ms * MS)
        );
    }

    #[test]
    fn backoff_cap_that_is_no_doubling_of_the_first() {
        let mut b = Backoff::new(100 * MS, 250 * MS);
        assert_eq!(b.next(), 100 * MS);
        assert_eq!(b.next(), 200 * MS);
        assert_eq!(b.next(), 250 * MS);
        assert_eq!(b.next(), 250 * MS);
    }

    /// A task's last waker dropped on another thread while the shard drops the
    /// task's `JoinHandle`: glommio 0.9.0 brought the count to zero and only then
    /// took a new reference to send the task home, and a handle dropped in between
    /// freed the task under it (a double free under load, seen in the broker as
    /// `free(): double free detected in tcache 2`). third_party/glommio.patch
    /// sends the last reference itself, so the count only reaches zero on the
    /// shard. The other thread drops each waker just as the handle goes, with a
    /// varying head start; unpatched, this test crashed (SIGSEGV or SIGABRT)
    /// within 4 s in each of 8 runs, mostly within 0.3 s.
    #[test]
    fn last_waker_dropped_on_another_thread_as_the_handle_drops() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Poll, Waker};

        const ROUNDS: usize = 400_000;
        // Spins, and gives the core away now and then: on a busy machine the
        // other side may not be running.
        fn spin_until(ready: impl Fn() -> bool) {
            let mut spins = 0u32;
            while !ready() {
                spins += 1;
                if spins.is_multiple_of(1024) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        struct Round {
            waker: Waker,
            go: Arc<AtomicBool>,
            wait: usize,
        }
        let armed = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<Round>();
        let other = {
            let armed = armed.clone();
            std::thread::spawn(move || {
                let mut dropped = 0usize;
                for r in rx {
                    armed.fetch_add(1, Ordering::AcqRel);
                    spin_until(|| r.go.load(Ordering::Acquire));
                    for _ in 0..r.wait {
                        std::hint::spin_loop();
                    }
                    drop(r.waker);
                    dropped += 1;
                }
                dropped
            })
        };
        let done = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let mut finished = 0usize;
                for i in 0..ROUNDS {
                    let go = Arc::new(AtomicBool::new(false));
                    let (tx2, go2) = (tx.clone(), go.clone());
                    let mut sent = false;
                    // Completes on its first poll (inside `spawn`), leaving its
                    // waker with the other thread as the only reference.
                    let h = spawn(futures::future::poll_fn(move |cx| {
                        if !sent {
                            sent = true;
                            let _ = tx2.send(Round {
                                waker: cx.waker().clone(),
                                go: go2.clone(),
                                wait: (i / 32) % 32,
                            });
                        }
                        Poll::Ready(i)
                    }));
                    spin_until(|| armed.load(Ordering::Acquire) > i);
                    go.store(true, Ordering::Release);
                    for _ in 0..(i % 32) {
                        std::hint::spin_loop();
                    }
                    drop(h);
                    finished += 1;
                    // Lets the executor take in the wakes sent home.
                    futures_lite::future::yield_now().await;
                }
                drop(tx);
                finished
            })
            .expect("executor")
            .join()
            .expect("executor ran");
        assert_eq!(done, ROUNDS);
        assert_eq!(other.join().expect("other thread"), ROUNDS);
    }

    #[test]
    fn backoff_reset_starts_from_the_first_delay() {
        let mut b = Backoff::new(50 * MS, 5000 * MS);
        for _ in 0..10 {
            b.next();
        }
        assert_eq!(b.next(), 5000 * MS);
        b.reset();
        assert_eq!(b.next(), 50 * MS);
        assert_eq!(b.next(), 100 * MS);
    }
}
