//! One client connection on the shard that accepted it. The reader splits
//! frames and starts each request as its own task, so pipelined requests run
//! concurrently (a produce waiting for durability does not hold up a metadata
//! request behind it); the writer awaits those tasks in arrival order, because
//! Kafka requires responses in request order on a connection.
//!
//! When the peer closes, its fetches that are not answered yet are cancelled
//! (nobody reads the answers, and a long poll or a segment read from the store
//! would otherwise hold the connection until it ends); every other request runs
//! to its end, as in Kafka, where a produce that was read is appended even if
//! its producer has gone.
//!
//! On a TLS listener the handshake comes first (within the request read
//! timeout); on a SASL listener the connection's `Session` lets only
//! ApiVersions and the SASL requests through until the client is authenticated.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::{mpsc, oneshot};
use futures::future::Either;
use futures::future::{AbortHandle, AbortRegistration, Abortable};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::{SinkExt, StreamExt};
use kafscale_codec::frame::{peek_frame_len, FrameError, SIZE_PREFIX};
use tracing::{debug, info, warn};

use crate::admission::{Admission, Refused};
use crate::clock::Clock;
use crate::handlers::{handle_frame, sasl, Outcome};
use crate::obs::metrics::CloseReason;
use crate::partition::Order;
use crate::runtime::{spawn, Task, TcpStream};
use crate::security::sasl::Session;
use crate::security::{Listener, Principal};
use crate::shard::Shard;

/// Requests of one connection being handled at once; the reader stops reading
/// when this many wait for their turn to answer. `acks=all` answers wait for a
/// flush (up to the flush interval), so a producer without linger can have
/// thousands in flight; the byte budget below is what bounds memory.
const MAX_IN_FLIGHT: usize = 8192;
/// Request bytes of one connection held at once (one request may exceed it
/// alone). Clients pipeline deeply (librdkafka allows a million requests in
/// flight), so a count alone would not bound memory.
const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;
const READ_CHUNK: usize = 64 << 10;
/// Bytes of complete responses gathered into one write.
const WRITE_COALESCE: usize = 256 << 10;
/// Responses at least this large are written on their own rather than copied
/// into the gathering buffer.
const COPY_LIMIT: usize = 16 << 10;

/// Bytes of requests read but not yet answered, and the reader waiting for room.
/// The bytes are also the connection's share of the broker-wide budget, given
/// back as each request is answered, and all at once when the connection ends
/// (answers never written).
struct Budget {
    bytes: Cell<usize>,
    /// Requests read but not yet answered.
    requests: Cell<usize>,
    waiter: RefCell<Option<oneshot::Sender<()>>>,
    admission: Arc<Admission>,
}

impl Budget {
    fn new(admission: Arc<Admission>) -> Self {
        Budget {
            bytes: Cell::new(0),
            requests: Cell::new(0),
            waiter: RefCell::new(None),
            admission,
        }
    }

    async fn take(&self, n: usize) {
        self.requests.set(self.requests.get() + 1);
        while self.bytes.get() > 0 && self.bytes.get() + n > MAX_IN_FLIGHT_BYTES {
            let (tx, rx) = oneshot::channel();
            *self.waiter.borrow_mut() = Some(tx);
            if rx.await.is_err() {
                break;
            }
        }
        self.bytes.set(self.bytes.get() + n);
    }

    fn give(&self, n: usize) {
        self.requests.set(self.requests.get().saturating_sub(1));
        let n = n.min(self.bytes.get());
        self.bytes.set(self.bytes.get() - n);
        self.admission.release(n);
        if let Some(w) = self.waiter.borrow_mut().take() {
            let _ = w.send(());
        }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.admission.release(self.bytes.get());
    }
}

/// Counts a request as in flight on its shard until it is answered or dropped
/// (a closed connection drops the tasks it has not answered yet).
struct InFlight(Rc<Shard>);

impl InFlight {
    fn new(shard: &Rc<Shard>) -> Self {
        shard
            .in_flight_requests
            .set(shard.in_flight_requests.get() + 1);
        InFlight(shard.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight_requests
            .set(self.0.in_flight_requests.get().saturating_sub(1));
    }
}

/// The connection's fetches not answered yet, cancelled when the peer closes.
#[derive(Default)]
struct Fetches {
    next: Cell<u64>,
    running: RefCell<HashMap<u64, AbortHandle>>,
}

impl Fetches {
    /// Registers a fetch; it stays registered until the guard drops.
    fn register(self: &Rc<Self>) -> (FetchRegistered, AbortRegistration) {
        let (handle, registration) = AbortHandle::new_pair();
        let id = self.next.get();
        self.next.set(id + 1);
        self.running.borrow_mut().insert(id, handle);
        (FetchRegistered(self.clone(), id), registration)
    }

    /// Cancels every registered fetch: each ends at its next poll, dropping what
    /// it waited on (a high-watermark wait, its share of a segment GET).
    fn cancel_all(&self) {
        let handles: Vec<AbortHandle> = self.running.borrow_mut().drain().map(|(_, h)| h).collect();
        for h in handles {
            h.abort();
        }
    }
}

struct FetchRegistered(Rc<Fetches>, u64);

impl Drop for FetchRegistered {
    fn drop(&mut self) {
        self.0.running.borrow_mut().remove(&self.1);
    }
}

/// Received bytes `[..filled]` followed by zeroed scratch space for the next read,
/// so every byte is zero-filled once rather than on every read.
///
/// The buffer grows with the bytes that arrive, never to the size a frame's prefix
/// announces: a client that announces 100 MiB and stalls holds one read chunk,
/// not 100 MiB of zeroes. Each read asks for at most as much as the frame has
/// received so far (at least a chunk), so a large frame costs a doubling series of
/// reads and at most twice its size.
///
/// Growing never copies what arrived: once a frame's size is known, the buffer's
/// *capacity* is set to hold the whole frame (address space only: untouched
/// pages take no memory and nothing is charged for them), and it is then
/// zero-filled and charged chunk by chunk as above. Growing by reallocation
/// instead copied each large frame once more before its records were appended
/// (a profile of `acks=all` produce showed it as 3% of the broker's CPU).
///
/// Every byte of the buffer beyond its first chunk is charged to the broker-wide
/// request budget (`Admission`) before it is allocated; the first chunk is each
/// connection's own allowance (bounded by the connection limits), so that idle
/// connections do not spend the budget.
struct ReadBuf {
    buf: BytesMut,
    filled: usize,
    /// What of `buf` is charged to the budget.
    charged: usize,
}

/// The part of a buffer of `len` bytes that is charged to the budget.
fn chargeable(len: usize) -> usize {
    len.saturating_sub(READ_CHUNK)
}

impl ReadBuf {
    fn new() -> Self {
        ReadBuf {
            buf: BytesMut::new(),
            filled: 0,
            charged: 0,
        }
    }

    /// The next complete frame, zero-copy. The frame's bytes are charged to the
    /// budget until it is answered (`Budget::give`); the buffer keeps the charge
    /// for what is left of it.
    fn frame(
        &mut self,
        limits: &FrameLimits,
        admission: &Admission,
    ) -> Result<Option<Bytes>, FrameError> {
        match limits.peek(&self.buf[..self.filled])? {
            Some(len) if self.filled >= SIZE_PREFIX + len => {
                self.buf.advance(SIZE_PREFIX);
                self.filled -= SIZE_PREFIX + len;
                let frame = self.buf.split_to(len).freeze();
                let kept = chargeable(self.buf.len());
                // The frame's bytes are in memory already: charged whether or
                // not they fit (the budget then stops further reads).
                admission.charge(kept + len);
                admission.release(self.charged);
                self.charged = kept;
                Ok(Some(frame))
            }
            _ => Ok(None),
        }
    }

    /// Whether part of a frame has arrived.
    fn partial(&self) -> bool {
        self.filled > 0
    }

    /// Space to read into, charged to the budget first (waiting for room).
    async fn spare(&mut self, limits: &FrameLimits, admission: &Admission) -> &mut [u8] {
        let frame = match limits.peek(&self.buf[..self.filled]) {
            Ok(Some(len)) => Some(SIZE_PREFIX + len),
            _ => None,
        };
        let want = match frame {
            Some(total) => total
                .saturating_sub(self.filled)
                .min(self.filled.max(READ_CHUNK)),
            None => READ_CHUNK,
        };
        if self.buf.len() - self.filled < want {
            let new_len = self.filled + want;
            let charge = chargeable(new_len);
            if charge > self.charged {
                admission.reserve(charge - self.charged).await;
                self.charged = charge;
            }
            if let Some(total) = frame {
                self.buf.reserve(total.saturating_sub(self.buf.len()));
            }
            self.buf.resize(new_len, 0);
        }
        &mut self.buf[self.filled..]
    }
}

/// The frame sizes a connection accepts: any request up to the frame limit,
/// others than Produce up to a smaller one (they carry no records, and every
/// byte of them is decoded into structures several times larger).
struct FrameLimits {
    max: usize,
    max_non_produce: usize,
}

impl FrameLimits {
    fn peek(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(len) = peek_frame_len(buf, self.max)? else {
            return Ok(None);
        };
        if len > self.max_non_produce {
            // The API key follows the prefix; until it has arrived, the frame
            // is held to the larger limit.
            if let Some(key) = buf.get(SIZE_PREFIX..SIZE_PREFIX + 2) {
                if key != [0, 0] {
                    return Err(FrameError::TooLarge {
                        len,
                        max: self.max_non_produce,
                    });
                }
            }
        }
        Ok(Some(len))
    }
}

/// Counts a connection as open for as long as it is served, whichever way it ends.
struct OpenConnection(Rc<Shard>);

impl OpenConnection {
    fn new(shard: &Rc<Shard>) -> Self {
        let c = &shard.metrics.open_connections;
        c.set(c.get() + 1);
        let a = &shard.metrics.connections_accepted;
        a.set(a.get() + 1);
        OpenConnection(shard.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let c = &self.0.metrics.open_connections;
        c.set(c.get().saturating_sub(1));
    }
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream, listener: Arc<Listener>) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map(|a| a.to_string()).unwrap_or_default();
    let _permit = match shard.admission.admit(peer_addr.map(|a| a.ip())) {
        Ok(p) => p,
        Err(e) => {
            // Closed before a byte is read: the client sees a reset and retries
            // with back-off (librdkafka, the Java client), as with Kafka's limits.
            debug!(peer, error = %e, "connection refused");
            shard.metrics.connection_closed(match e {
                Refused::TooManyConnections => CloseReason::MaxConnections,
                Refused::TooManyFromAddress => CloseReason::MaxConnectionsPerIp,
            });
            return;
        }
    };
    let _open = OpenConnection::new(&shard);
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    if !listener.protocol.tls() {
        let session = Rc::new(Session::new(listener, Principal::anonymous()));
        return run(shard, stream, fd, peer, session).await;
    }
    let Some(tls) = shard.settings.security.tls.clone() else {
        // Start-up refuses a TLS listener without certificates.
        warn!(peer, "closing connection: no TLS configuration");
        return;
    };
    let clock = shard.clock().clone();
    let accept = futures_rustls::TlsAcceptor::from(tls.config()).accept(stream);
    let timer = clock.sleep(shard.settings.request_read_timeout);
    futures::pin_mut!(accept, timer);
    let stream = match futures::future::select(accept, timer).await {
        Either::Left((Ok(s), _)) => s,
        Either::Left((Err(e), _)) => {
            debug!(peer, error = %e, "closing connection: TLS handshake failed");
            return;
        }
        Either::Right(_) => {
            debug!(
                peer,
                "closing connection: TLS handshake not completed in time"
            );
            return;
        }
    };
    let principal = match stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    {
        Some(cert) => {
            let rules = &shard.settings.security.principal_rules;
            match crate::security::principal::certificate_subject(cert)
                .ok()
                .and_then(|s| rules.apply(&s))
            {
                Some(name) => {
                    let principal = Principal::user(name);
                    debug!(peer, listener = %listener.name, principal = %principal, "TLS client certificate accepted");
                    principal
                }
                None => {
                    warn!(peer, "closing connection: no principal mapping rule applies to the client certificate");
                    return;
                }
            }
        }
        None => Principal::anonymous(),
    };
    let session = Rc::new(Session::new(listener, principal));
    run(shard, stream, fd, peer, session).await
}

/// Serves requests on an established connection (plain or TLS) until it ends.
async fn run<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    shard: Rc<Shard>,
    stream: S,
    fd: i32,
    peer: String,
    session: Rc<Session>,
) {
    let (mut rd, wr) = stream.split();
    let (mut tx, rx) = mpsc::channel::<(usize, Task<Outcome>)>(MAX_IN_FLIGHT);
    let admission = shard.admission.clone();
    let budget = Rc::new(Budget::new(admission.clone()));
    let clock = shard.clock().clone();
    let last_active = Rc::new(Cell::new(clock.now()));
    let writer = spawn(write_loop(
        wr,
        rx,
        fd,
        (!session.listener.protocol.tls()).then_some(fd),
        budget.clone(),
        last_active.clone(),
        clock.clone(),
    ));
    let limits = FrameLimits {
        max: shard.settings.max_request_bytes,
        max_non_produce: shard.settings.max_non_produce_request_bytes,
    };
    let idle = shard.settings.connections_max_idle;
    let read_timeout = shard.settings.request_read_timeout;
    let mut buf = ReadBuf::new();
    // Produce requests take a turn in the order they were read; each holds it
    // until its partitions are handed to their owning shards (produce.rs), so a
    // connection's batches reach every partition in the order they were sent.
    let produce_order = Rc::new(Order::default());
    let fetches = Rc::new(Fetches::default());
    let mut peer_closed = false;
    // When the frame now arriving began to arrive: the rest of it is due within
    // the read timeout (a client that announces a request and trickles it, or
    // stalls, holds the connection and its buffer only that long).
    let mut frame_started = None;
    'conn: loop {
        loop {
            match buf.frame(&limits, &admission) {
                Ok(Some(frame)) => {
                    let size = frame.len();
                    frame_started = None;
                    // After SaslHandshake v0 the frames are raw SASL tokens, and
                    // whether the next frame is one depends on how this one ends:
                    // SaslHandshake and raw tokens are answered before the next
                    // frame is read (a client waits for those answers anyway).
                    let raw = session.raw_tokens();
                    if raw || api_key(&frame) == SASL_HANDSHAKE {
                        budget.take(size).await;
                        let outcome = if raw {
                            sasl::raw_token(&shard, &session, &frame, &peer).await
                        } else {
                            handle_frame(&shard, frame, &peer, None, &session).await
                        };
                        if tx
                            .send((size, spawn(async move { outcome })))
                            .await
                            .is_err()
                        {
                            break 'conn;
                        }
                        continue;
                    }
                    if !session.admits(api_key(&frame), clock.now()) {
                        // As Kafka: a request before SASL authentication (or after
                        // the session expired) closes the connection.
                        info!(peer, listener = %session.listener.name, api_key = api_key(&frame), "closing connection: request without an authenticated SASL session");
                        break 'conn;
                    }
                    budget.take(size).await;
                    let sh = shard.clone();
                    let p = peer.clone();
                    let guard = InFlight::new(&sh);
                    let sess = session.clone();
                    let task = if is_fetch(&frame) {
                        let (registered, abort) = fetches.register();
                        spawn(async move {
                            let _guard = guard;
                            let _registered = registered;
                            Abortable::new(handle_frame(&sh, frame, &p, None, &sess), abort)
                                .await
                                .unwrap_or(Outcome::Silent)
                        })
                    } else {
                        let turn = is_produce(&frame).then(|| produce_order.ticket());
                        spawn(async move {
                            let _guard = guard;
                            handle_frame(&sh, frame, &p, turn, &sess).await
                        })
                    };
                    if tx.send((size, task)).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(peer, error = %e, "closing connection: bad frame");
                    if matches!(e, FrameError::TooLarge { .. }) {
                        shard
                            .metrics
                            .connection_closed(CloseReason::RequestTooLarge);
                    }
                    break 'conn;
                }
            }
        }
        if buf.partial() {
            frame_started.get_or_insert_with(|| clock.now());
        }
        let spare = buf.spare(&limits, &admission).await;
        let read = rd.read(spare);
        futures::pin_mut!(read);
        // The read is kept across timer ticks (never dropped and restarted, which
        // could lose bytes it already took); only a close gives it up.
        let res = loop {
            let deadline = match frame_started {
                Some(t) => t + read_timeout,
                None => last_active.get() + idle,
            };
            let timer = clock.sleep_until(deadline);
            futures::pin_mut!(timer);
            match futures::future::select(read.as_mut(), timer).await {
                Either::Left((r, _)) => break r,
                Either::Right(_) => {
                    if frame_started.is_some() {
                        debug!(peer, "closing connection: request not received in time");
                        shard
                            .metrics
                            .connection_closed(CloseReason::RequestReadTimeout);
                        break 'conn;
                    }
                    // Idle: nothing read or answered for the idle time, and
                    // nothing being handled (a long poll or an `acks=all` produce
                    // still waiting keeps the connection).
                    if budget.requests.get() == 0 && clock.now() >= last_active.get() + idle {
                        debug!(peer, "closing idle connection");
                        shard.metrics.connection_closed(CloseReason::Idle);
                        break 'conn;
                    }
                    if budget.requests.get() > 0 {
                        last_active.set(clock.now());
                    }
                }
            }
        };
        match res {
            Ok(0) => {
                peer_closed = true;
                break;
            }
            Ok(n) => {
                buf.filled += n;
                last_active.set(clock.now());
                quick_ack(fd);
            }
            Err(e) => {
                debug!(peer, error = %e, "connection read failed");
                peer_closed = true;
                break;
            }
        }
    }
    if peer_closed {
        fetches.cancel_all();
    }
    admission.release(buf.charged);
    drop(buf);
    drop(tx);
    let _ = writer.await;
    debug!(peer, "connection closed");
}

const SASL_HANDSHAKE: i16 = 17;

/// A frame's API key (its first two bytes; -1 when it is shorter).
fn api_key(frame: &[u8]) -> i16 {
    match frame.get(..2) {
        Some(&[a, b]) => i16::from_be_bytes([a, b]),
        _ => -1,
    }
}

/// Whether a frame is a Produce request (API key 0 in its first two bytes).
fn is_produce(frame: &[u8]) -> bool {
    frame.get(..2) == Some(&[0, 0][..])
}

/// Whether a frame is a Fetch request (API key 1).
fn is_fetch(frame: &[u8]) -> bool {
    frame.get(..2) == Some(&[0, 1][..])
}

/// Acknowledges received segments at once instead of after Linux's delayed-ACK
/// timer (up to 40 ms). An `acks=all` answer waits for a flush, so no response
/// carries the ACK early, and a client with Nagle's algorithm on (librdkafka's
/// default) holds its next request until that ACK arrives. The kernel clears the
/// flag as it goes, so it is set again after every read.
fn quick_ack(fd: i32) {
    let one: libc::c_int = 1;
    // SAFETY: fd is the connection's open socket; the option value is a c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Writes `bufs` in order, with as few `sendmsg` calls as the socket buffer
/// allows: each is tried at once (`MSG_DONTWAIT`, as glommio's own writes are);
/// when the socket buffer is full, the stream writes part of the current buffer,
/// which waits until there is room. The stream keeps no buffer of its own, so
/// bytes sent either way stay in order.
async fn send_all<S: AsyncWrite + Unpin>(
    wr: &mut futures::io::WriteHalf<S>,
    fd: i32,
    bufs: &[&[u8]],
) -> std::io::Result<()> {
    let (mut i, mut off) = (0, 0);
    loop {
        while bufs.get(i).is_some_and(|b| b.len() == off) {
            i += 1;
            off = 0;
        }
        let Some(rest) = bufs.get(i..).filter(|r| !r.is_empty()) else {
            return Ok(());
        };
        let n = match send_vectored(fd, rest, off) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let first = rest.first().and_then(|b| b.get(off..)).unwrap_or_default();
                match wr.write(first).await? {
                    0 => return Err(std::io::ErrorKind::WriteZero.into()),
                    n => n,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Past what was sent: whole buffers, then into the next one.
        let mut left = n;
        while let Some(b) = bufs.get(i) {
            let remaining = b.len() - off;
            if left < remaining {
                off += left;
                break;
            }
            left -= remaining;
            i += 1;
            off = 0;
        }
    }
}

/// `iovec`s per `sendmsg` (Linux allows 1024; a fetch answer has two per
/// partition with data, and the kernel copies them all in one call).
const MAX_IOV: usize = 64;

/// One non-blocking `sendmsg` of `bufs` (the first from `off` on).
fn send_vectored(fd: i32, bufs: &[&[u8]], off: usize) -> std::io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    let mut n = 0;
    for (k, b) in bufs.iter().take(MAX_IOV).enumerate() {
        let b = if k == 0 {
            b.get(off..).unwrap_or_default()
        } else {
            b
        };
        if let Some(slot) = iov.get_mut(n) {
            *slot = libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            };
            n += 1;
        }
    }
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    // SAFETY: fd is the connection's open socket; the iovecs point into `bufs`,
    // which outlive the call; MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
    let sent = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Over TLS each buffer is written in turn (rustls copies them into its
/// records anyway).
async fn write_each<S: AsyncWrite + Unpin>(
    wr: &mut futures::io::WriteHalf<S>,
    first: &[u8],
    chunks: &[Bytes],
) -> std::io::Result<()> {
    if !first.is_empty() {
        wr.write_all(first).await?;
    }
    for c in chunks {
        wr.write_all(c).await?;
    }
    Ok(())
}

/// `vectored`: the socket to send on directly, for plaintext connections (a TLS
/// connection's bytes must go through its stream).
async fn write_loop<S: AsyncWrite + Unpin>(
    mut wr: futures::io::WriteHalf<S>,
    mut rx: mpsc::Receiver<(usize, Task<Outcome>)>,
    fd: i32,
    vectored: Option<i32>,
    budget: Rc<Budget>,
    last_active: Rc<Cell<Instant>>,
    clock: Clock,
) {
    // Answers that are already complete go out in one write: `acks=all`
    // responses finish together at a flush tick, and a syscall per response
    // would cost more than the response.
    let mut out: Vec<u8> = Vec::new();
    let mut next: Option<(usize, Task<Outcome>)> = None;
    'conn: loop {
        let (size, task) = match next.take() {
            Some(x) => x,
            None => match rx.next().await {
                Some(x) => x,
                None => break,
            },
        };
        let mut outcome = task.await;
        budget.give(size);
        loop {
            match outcome {
                Outcome::Respond(bytes) if bytes.len() >= COPY_LIMIT => {
                    // Fetch answers carry record data: written as they are, not copied.
                    if !out.is_empty() {
                        if wr.write_all(&out).await.is_err() {
                            break 'conn;
                        }
                        out.clear();
                    }
                    if wr.write_all(&bytes).await.is_err() {
                        break 'conn;
                    }
                }
                Outcome::Respond(bytes) => out.extend_from_slice(&bytes),
                Outcome::Chunks(chunks) => {
                    // What waits in `out` goes first, in the same send.
                    let written = match vectored {
                        Some(fd) => {
                            let mut bufs: Vec<&[u8]> = Vec::with_capacity(chunks.len() + 1);
                            bufs.push(&out);
                            bufs.extend(chunks.iter().map(|c| &c[..]));
                            send_all(&mut wr, fd, &bufs).await
                        }
                        None => write_each(&mut wr, &out, &chunks).await,
                    };
                    if written.is_err() {
                        break 'conn;
                    }
                    out.clear();
                }
                Outcome::Silent => {}
                Outcome::Close => {
                    let _ = wr.write_all(&out).await;
                    break 'conn;
                }
            }
            if out.len() >= WRITE_COALESCE {
                break;
            }
            let Ok((size, mut task)) = rx.try_recv() else {
                break;
            };
            match futures::poll!(&mut task) {
                std::task::Poll::Ready(o) => {
                    budget.give(size);
                    outcome = o;
                }
                std::task::Poll::Pending => {
                    next = Some((size, task));
                    break;
                }
            }
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        // A TLS stream accepts a write once rustls holds it, and sends the
        // records on only as far as the socket takes them without waiting:
        // what is left waits for the next write, which may never come (the
        // client is waiting for this answer). A plaintext socket holds nothing.
        if vectored.is_none() && wr.flush().await.is_err() {
            break;
        }
        last_active.set(clock.now());
    }
    let _ = wr.flush().await;
    // Wakes the reader if it is blocked on a connection we decided to close.
    // SAFETY: fd belongs to the stream, which is alive until both halves drop.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
