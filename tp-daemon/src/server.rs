//! The TCP front end: frames in, frames out, and the limits that keep one bad
//! client from hurting the others.
//!
//! Each frame is a 4-byte big-endian length and a versioned postcard message
//! (see `vtp_protocol::wire`). Per connection, requests are answered in
//! order. What can go wrong, and what happens:
//! - an undecodable frame: an `Error{Malformed}` response; the connection
//!   stays open (the framing is still intact);
//! - a frame longer than `max_frame_bytes`: an `Error{Malformed}` response if
//!   the socket takes it, then the connection is closed (the stream position
//!   is lost: the rest of that frame is never read);
//! - no complete first request frame within `first_frame_timeout_secs`
//!   (default 5 s) of the connection being accepted, or no complete request
//!   frame for `idle_timeout_secs` after that (or a response the client
//!   does not read for as long): the connection is closed. Each timeout
//!   bounds the whole frame from the moment the server starts waiting for
//!   it, so a client that dribbles a frame one byte at a time is cut off
//!   like one that sends nothing;
//! - [`MAX_BAD_FRAMES`] undecodable frames on one connection: after the
//!   error response to the last one, the connection is closed (garbage
//!   costs a client its connection, not the TP its CPU);
//! - a connection older than `max_connection_secs`: closed once its
//!   current request is answered, so no client holds a slot forever, even
//!   one that keeps sending valid requests slowly;
//! - more than `max_connections_per_ip` from one client address (IPv6: one
//!   /64): the extra connection gets one `Error{Busy}` frame and is closed
//!   (during a flood of more than [`MAX_REFUSING`] at once, closed without
//!   a frame);
//! - all `max_connections` slots taken: see *Admission when full* below;
//!   a connection that cannot be admitted is refused like the one above;
//! - an identity over its rate (`identity_rate_per_sec`,
//!   `identity_burst`): `Error{Busy}` for that request, the connection
//!   stays open (see [`crate::rate_limit`] for why forged requests in
//!   someone's name cannot use up that someone's budget).
//!
//! # Admission when full
//!
//! Idle connections cost an attacker nothing, and a TP that turns claimants
//! away until Bob's deadline passes has denied the claim. So a full table
//! of idle connections must not lock an honest claimant out. A connection
//! is *waiting* from its accept until its first request frame is complete,
//! and again from the moment each answer is ready until the next frame is
//! complete; it is *busy* only while its request is being handled. When a
//! new connection finds all `max_connections` slots taken:
//! 1. take the client addresses (as counted for `max_connections_per_ip`)
//!    that have at least one waiting connection, and among them the one
//!    holding the most slots (busy and waiting); ties: the one whose
//!    connection has waited longest;
//! 2. if that address holds more slots than the newcomer's address does,
//!    its longest-waiting connection is closed at once (no frame) and the
//!    newcomer takes the slot;
//! 3. otherwise (no address with a waiting connection holds more slots
//!    than the newcomer's, e.g. the newcomer's own address holds the most,
//!    or every connection is busy) the newcomer is refused with
//!    `Error{Busy}`.
//!
//! So attackers on any number of addresses can only push each other out:
//! a newcomer whose address holds fewer slots than some other address (an
//! honest client holds one or none) is admitted as long as one connection
//! of such an address is waiting. With more attacker addresses than slots,
//! each holds one and a newcomer evicts the connection that has waited
//! longest, so a client that sends its request at once (the `vtp` client
//! does) goes last. A request being handled is never cut off (its
//! connection is busy), and neither is a resolution whose client goes away
//! (see below). What no connection rule helps against is load that keeps
//! connections busy, i.e. requests that really use the device; the
//! per-identity rate limit and the device threads bound that. Choosing a
//! victim scans the addresses present (at most `max_connections`), and
//! only when the table is full. Evicted connections are counted in
//! `vtp_connections_dropped_total{reason="evicted"}`.
//!
//! The daemon raises its open-file soft limit (`RLIMIT_NOFILE`) up to the
//! hard limit as far as `max_connections` plus [`FD_RESERVE`] needs; if the
//! hard limit cannot hold that, it serves fewer connections at once (what
//! fits, at least one) and logs a warning naming both numbers, rather than
//! failing accepts with "too many open files" once the table fills (a
//! failing accept cannot evict anyone).
//!
//! A decoded request is handled in its own task, so a client that hangs up
//! mid-claim cannot cancel a resolution between the token and the journal.
//! On shutdown (SIGTERM) the listener closes, `/healthz` turns to
//! `draining`, each connection finishes the request it is working on and
//! sends its answer, and the server waits a bounded time
//! ([`SHUTDOWN_GRACE`]) for them; then it waits (up to
//! [`IN_FLIGHT_GRACE`]) for every request task still running, so a
//! resolution that reached the token is committed to the journal before the
//! process exits even if its client is gone. An answer is only ever sent
//! after its commit, so every answered claim is in the journal.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::codec::length_delimited::LengthDelimitedCodecError;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use vtp_protocol::wire::{decode_request, encode_response, ErrorCode, Response, WireError};

use crate::config::Limits;
use crate::metrics::Metrics;
use crate::rate_limit::{requester, RateLimiter};
use crate::service::{protocol_refusal, request_kind, Service};

/// How long shutdown waits for connections to finish their current request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown then waits for request tasks still running (a device
/// operation and a journal commit take milliseconds; this bounds a hung
/// token).
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(60);
/// Limit on a response frame. Responses are built by the daemon (a sender's
/// receipt list can outgrow the request limit), so only a sanity cap.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// After a fatal frame error or `Busy`: how long to keep reading (and
/// discarding) so the client sees our last frame instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// Undecodable frames one connection may send; the last is answered, then
/// the connection is closed.
pub const MAX_BAD_FRAMES: u32 = 16;
/// Refused connections being told `Busy` at once (each lingers up to
/// 2 × [`LINGER`]); beyond that, refused connections are closed without a
/// word, so a connection flood cannot pile up sockets.
const MAX_REFUSING: usize = 256;

/// The address a per-address connection limit counts: an IPv4 address
/// (IPv4-mapped IPv6 included), or the /64 of an IPv6 address (what one
/// host usually has to itself).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One connection's entry in the [`SlotTable`], unique for the server's life.
type ConnId = u64;

/// Who holds the `max_connections` slots, per client address, and which
/// connections are waiting (may be evicted). Pure bookkeeping: the
/// admission rule of the module doc is [`SlotTable::admit`], tested without
/// sockets.
#[derive(Default)]
struct SlotTable {
    next_id: ConnId,
    total: usize,
    addrs: HashMap<IpAddr, AddrSlots>,
}

/// The slots one client address (see [`client_key`]) holds.
#[derive(Default)]
struct AddrSlots {
    held: usize,
    /// Its waiting connections, longest-waiting first; cancelling the token
    /// closes the connection.
    waiting: BTreeMap<(Instant, ConnId), CancellationToken>,
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Its address already holds `max_connections_per_ip` slots.
    AddressFull,
    /// Every slot is taken and no address holding more slots than the
    /// newcomer's has a waiting connection.
    Full,
}

/// A new connection's slot: its id and the token that closes it.
struct Admitted {
    id: ConnId,
    evicted: CancellationToken,
    /// The address whose connection was evicted to make room, if any.
    evicted_from: Option<IpAddr>,
}

impl SlotTable {
    /// Admit a connection from `key` (already a [`client_key`]), waiting
    /// since `now`, evicting another one if the table is full and the rule
    /// in the module doc allows it.
    fn admit(
        &mut self,
        key: IpAddr,
        now: Instant,
        max_total: usize,
        max_per_addr: usize,
    ) -> Result<Admitted, Refusal> {
        let held = self.addrs.get(&key).map_or(0, |a| a.held);
        if held >= max_per_addr {
            return Err(Refusal::AddressFull);
        }
        let mut evicted_from = None;
        if self.total >= max_total {
            let (victim, since) = self.victim(held).ok_or(Refusal::Full)?;
            self.evict(victim, since);
            evicted_from = Some(victim);
        }
        let id = self.next_id;
        self.next_id += 1;
        let evicted = CancellationToken::new();
        let a = self.addrs.entry(key).or_default();
        a.held += 1;
        a.waiting.insert((now, id), evicted.clone());
        self.total += 1;
        Ok(Admitted {
            id,
            evicted,
            evicted_from,
        })
    }

    /// The connection to evict for a newcomer whose address holds
    /// `newcomer_held` slots: the longest-waiting one of the address that
    /// holds the most slots (more than the newcomer's) and has one waiting.
    fn victim(&self, newcomer_held: usize) -> Option<(IpAddr, (Instant, ConnId))> {
        self.addrs
            .iter()
            .filter(|(_, a)| a.held > newcomer_held)
            .filter_map(|(key, a)| {
                let oldest = *a.waiting.keys().next()?;
                Some((a.held, Reverse(oldest), *key))
            })
            .max()
            .map(|(_, Reverse(oldest), key)| (key, oldest))
    }

    /// Free a waiting connection's slot and tell it to close.
    fn evict(&mut self, key: IpAddr, since: (Instant, ConnId)) {
        if let Some(token) = self
            .addrs
            .get_mut(&key)
            .and_then(|a| a.waiting.remove(&since))
        {
            token.cancel();
            self.release(key);
        }
    }

    /// One slot of `key` is free.
    fn release(&mut self, key: IpAddr) {
        if let Some(a) = self.addrs.get_mut(&key) {
            a.held -= 1;
            if a.held == 0 {
                self.addrs.remove(&key);
            }
        }
        self.total -= 1;
    }

    /// The connection `(key, since)` has a request to handle: not waiting
    /// (not evictable) any more. False if it was evicted already.
    fn start_request(&mut self, key: IpAddr, since: (Instant, ConnId)) -> bool {
        self.addrs
            .get_mut(&key)
            .and_then(|a| a.waiting.remove(&since))
            .is_some()
    }

    /// The connection `id` of `key` waits again, from `now`.
    fn finish_request(
        &mut self,
        key: IpAddr,
        id: ConnId,
        now: Instant,
        evicted: &CancellationToken,
    ) {
        if let Some(a) = self.addrs.get_mut(&key) {
            a.waiting.insert((now, id), evicted.clone());
        }
    }
}

/// The shared [`SlotTable`] and the limits it enforces.
struct Slots {
    table: Mutex<SlotTable>,
    max_total: usize,
    max_per_addr: usize,
}

impl Slots {
    fn new(max_total: usize, max_per_addr: usize) -> Arc<Slots> {
        Arc::new(Slots {
            table: Mutex::new(SlotTable::default()),
            max_total,
            max_per_addr,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `ip`, or why not.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Slot, Option<IpAddr>), Refusal> {
        let key = client_key(ip);
        let now = Instant::now();
        let a = self
            .lock()
            .admit(key, now, self.max_total, self.max_per_addr)?;
        let slot = Slot {
            slots: Arc::clone(self),
            key,
            id: a.id,
            waiting_since: Some(now),
            evicted: a.evicted,
        };
        Ok((slot, a.evicted_from))
    }
}

/// A connection's slot in [`Slots`], freed when dropped (unless it was
/// evicted: then the evicting connection has it already).
struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
    id: ConnId,
    /// When the connection started waiting (`None`: handling a request).
    waiting_since: Option<Instant>,
    /// Cancelled when another connection evicts this one.
    evicted: CancellationToken,
}

impl Slot {
    /// A request frame is complete: the connection is busy, not evictable.
    /// False if it was evicted already (then it must close).
    fn start_request(&mut self) -> bool {
        let Some(since) = self.waiting_since.take() else {
            return true;
        };
        self.slots.lock().start_request(self.key, (since, self.id))
    }

    /// The answer is ready: the connection waits (is evictable) again.
    fn finish_request(&mut self) {
        if self.waiting_since.is_none() {
            let now = Instant::now();
            self.slots
                .lock()
                .finish_request(self.key, self.id, now, &self.evicted);
            self.waiting_since = Some(now);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        // Cancelled only under this lock, together with freeing the slot.
        if self.evicted.is_cancelled() {
            return;
        }
        if let Some(since) = self.waiting_since {
            t.start_request(self.key, (since, self.id));
        }
        t.release(self.key);
    }
}

/// File descriptors kept for everything but served connections: refused
/// connections still being told `Busy` (up to `MAX_REFUSING`, 256), the
/// listeners and metrics connections, the journal, the token's files, and
/// evicted connections' sockets while they close.
pub const FD_RESERVE: usize = MAX_REFUSING + 256;

/// How many connections an open-file limit of `nofile` holds next to
/// [`FD_RESERVE`]: `max_connections`, or what fits (at least one).
fn connections_within(nofile: u64, max_connections: usize) -> usize {
    let room = nofile.saturating_sub(FD_RESERVE as u64);
    let fit = usize::try_from(room).unwrap_or(usize::MAX);
    max_connections.min(fit).max(1)
}

/// Let this process hold `max_connections` sockets plus [`FD_RESERVE`]:
/// raise the soft `RLIMIT_NOFILE` towards the hard limit if it is lower
/// (a common default soft limit, 1024, is exactly `max_connections`'
/// default). Returns the connections to serve at once: `max_connections`,
/// or fewer, with a warning, if the hard limit cannot hold them (accepts
/// failing with "too many open files" would refuse everyone, honest
/// claimants included, and could not evict anybody).
fn fit_fd_limit(max_connections: usize) -> usize {
    let want = (max_connections as u64).saturating_add(FD_RESERVE as u64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        warn!(
            error = %std::io::Error::last_os_error(),
            "cannot read the open-file limit; assuming it holds max_connections"
        );
        return max_connections;
    }
    let (soft, hard): (u64, u64) = (lim.rlim_cur, lim.rlim_max);
    let mut have = soft;
    if soft < want && soft < hard {
        let raised = libc::rlimit {
            rlim_cur: want.min(hard),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit with a valid pointer to an rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            have = raised.rlim_cur;
            info!(
                from = soft,
                to = have,
                hard,
                "raised the open-file limit (RLIMIT_NOFILE) for max_connections"
            );
        } else {
            warn!(
                error = %std::io::Error::last_os_error(),
                soft, hard, "cannot raise the open-file limit"
            );
        }
    }
    let serve = connections_within(have, max_connections);
    if serve < max_connections {
        warn!(
            open_file_limit = have,
            max_connections,
            serving = serve,
            reserve = FD_RESERVE,
            "the open-file limit cannot hold max_connections; serving {serve} connections at \
             once (raise LimitNOFILE, or ulimit -n, above max_connections + {FD_RESERVE})"
        );
    }
    serve
}

/// Rate-limits one kind of warning: under a flood, one line per
/// connection would cost more than the connections.
struct Throttle {
    last: Option<Instant>,
    /// Events since the last line.
    suppressed: u64,
}

/// At most one line per [`Throttle`] this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Throttle {
    const fn new() -> Throttle {
        Throttle {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events not logged since the last line)` if this one is to be
    /// logged.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

fn error_frame(code: ErrorCode, message: impl Into<String>) -> Bytes {
    Bytes::from(encode_response(&Response::Error(WireError {
        code,
        message: message.into(),
    })))
}

/// A bound listener with its service.
pub struct Server {
    listener: TcpListener,
    service: Arc<Service>,
    limits: Limits,
    /// `max_connections`, or fewer if the open-file limit cannot hold it.
    max_connections: usize,
}

/// Decrements a gauge when dropped.
struct GaugeGuard<'m>(&'m Metrics, fn(&Metrics));

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        (self.1)(self.0)
    }
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        service: Arc<Service>,
        limits: Limits,
    ) -> std::io::Result<Server> {
        let max_connections = fit_fd_limit(limits.max_connections);
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            service,
            limits,
            max_connections,
        })
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes, then drain connections for at most
    /// [`SHUTDOWN_GRACE`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            service,
            limits,
            max_connections,
        } = self;
        let tracker = TaskTracker::new();
        let slots = Slots::new(max_connections, limits.max_connections_per_ip);
        let (mut full_log, mut addr_full_log, mut evict_log) =
            (Throttle::new(), Throttle::new(), Throttle::new());
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let refuse = |tasks: &mut JoinSet<()>, stream: TcpStream| {
            if let Ok(p) = Arc::clone(&refusing).try_acquire_owned() {
                tasks.spawn(async move {
                    refuse_busy(stream).await;
                    drop(p);
                });
            }
        };
        let rate = RateLimiter::new(
            f64::from(limits.identity_rate_per_sec),
            limits.identity_burst,
        )
        .map(Arc::new);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                // Reap finished connection tasks so the set stays small.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let metrics = service.metrics();
                        match slots.admit(peer.ip()) {
                            Ok((slot, evicted_from)) => {
                                if let Some(from) = evicted_from {
                                    metrics.connection_dropped("evicted");
                                    debug!(%peer, %from, "table full; evicted a waiting connection");
                                    if let Some(more) = evict_log.hit(Instant::now()) {
                                        warn!(%peer, %from, max = max_connections, also_since_last_line = more,
                                            "connection table full; evicted the longest-waiting connection of \
                                             the address holding the most");
                                    }
                                }
                                let conn = Connection {
                                    service: Arc::clone(&service),
                                    limits: limits.clone(),
                                    stop: stop_rx.clone(),
                                    peer,
                                    tracker: tracker.clone(),
                                    rate: rate.clone(),
                                    slot,
                                };
                                tasks.spawn(conn.run(stream));
                            }
                            Err(refusal) => {
                                metrics.refusal("connection", ErrorCode::Busy);
                                let now = Instant::now();
                                match refusal {
                                    Refusal::Full => if let Some(more) = full_log.hit(now) {
                                        warn!(%peer, max = max_connections, also_since_last_line = more,
                                            "too many connections, none of them evictable for this address; refusing");
                                    },
                                    Refusal::AddressFull => if let Some(more) = addr_full_log.hit(now) {
                                        warn!(%peer, max = limits.max_connections_per_ip, also_since_last_line = more,
                                            "too many connections from this address; refusing");
                                    },
                                }
                                refuse(&mut tasks, stream);
                            }
                        }
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: back off, keep serving.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        service.metrics().set_draining();
        let _ = stop_tx.send(true);
        info!(
            connections = tasks.len(),
            in_flight = tracker.len(),
            "shutting down: finishing requests in progress"
        );
        let drained = timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                connections = tasks.len(),
                "shutdown grace period over; closing the rest"
            );
            tasks.abort_all();
        }
        tracker.close();
        if !tracker.is_empty() {
            info!(
                in_flight = tracker.len(),
                "waiting for request tasks to finish (resolutions are committed before exit)"
            );
        }
        if timeout(IN_FLIGHT_GRACE, tracker.wait()).await.is_err() {
            warn!(
                in_flight = tracker.len(),
                "request tasks still running after the grace period; exiting anyway \
                 (nothing uncommitted was ever answered)"
            );
        }
        info!("server stopped");
    }
}

/// Tell a client we are full, then close.
async fn refuse_busy(stream: TcpStream) {
    let (r, w) = stream.into_split();
    let mut writer = FramedWrite::new(w, codec(MAX_RESPONSE));
    let frame = error_frame(
        ErrorCode::Busy,
        "the TP is serving too many connections; retry later",
    );
    if let Ok(Ok(())) = timeout(LINGER, writer.send(frame)).await {
        linger(r, writer.into_inner()).await;
    }
}

/// Half-close our side and discard what the client still sends for a short
/// while, so that closing does not reset the connection before the client
/// has read our last frame.
async fn linger(mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf) {
    let _ = w.shutdown().await;
    let _ = timeout(LINGER, async {
        let mut buf = [0u8; 8192];
        let mut total = 0;
        while total < LINGER_BYTES {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

struct Connection {
    service: Arc<Service>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
    /// Request tasks, waited for at shutdown.
    tracker: TaskTracker,
    /// Per-identity token buckets (`None`: off).
    rate: Option<Arc<RateLimiter>>,
    /// Its place among `max_connections` (and its address's share).
    slot: Slot,
}

impl Connection {
    /// Serve the connection until it ends or is evicted. Eviction drops
    /// whatever it is doing: it can only be chosen while the connection is
    /// waiting (not while a request is handled; the request task would run
    /// to its end anyway).
    async fn run(self, stream: TcpStream) {
        let evicted = self.slot.evicted.clone();
        let peer = self.peer;
        tokio::select! {
            _ = evicted.cancelled() => debug!(%peer, "evicted for a new connection; closing"),
            () = self.serve(stream) => {}
        }
    }

    async fn serve(mut self, stream: TcpStream) {
        debug!(peer = %self.peer, "connection opened");
        let service = Arc::clone(&self.service);
        let metrics = service.metrics();
        metrics.connection_opened();
        let _open = GaugeGuard(metrics, Metrics::connection_closed);
        let (r, w) = stream.into_split();
        let mut reader = FramedRead::new(r, codec(self.limits.max_frame_bytes));
        let mut writer = FramedWrite::new(w, codec(MAX_RESPONSE));
        let idle = self.limits.idle_timeout();
        let closing_time = Instant::now() + self.limits.max_connection_time();
        let mut bad_frames = 0u32;
        let mut first = true;
        loop {
            // The whole next frame must arrive within the first-frame or
            // idle timeout (however it is dribbled), and before the
            // connection's lifetime ends.
            let patience = if first {
                self.limits.first_frame_timeout()
            } else {
                idle
            };
            let wait = patience.min(closing_time.saturating_duration_since(Instant::now()));
            let next = tokio::select! {
                _ = self.stop.wait_for(|stop| *stop) => break,
                next = timeout(wait, reader.next()) => next,
            };
            let frame = match next {
                Err(_elapsed) => {
                    if wait < patience {
                        debug!(peer = %self.peer, "connection lifetime over; closing");
                    } else if first {
                        metrics.connection_dropped("first_frame_timeout");
                        debug!(peer = %self.peer, "no complete first request within the first-frame timeout; closing");
                    } else {
                        metrics.connection_dropped("idle_timeout");
                        debug!(peer = %self.peer, "no complete request within the idle timeout; closing");
                    }
                    break;
                }
                Ok(None) => break,
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => {
                    let too_long = e
                        .get_ref()
                        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
                    if too_long {
                        warn!(peer = %self.peer, max = self.limits.max_frame_bytes, "frame too long; closing");
                        metrics.refusal("frame", ErrorCode::Malformed);
                        let frame = error_frame(
                            ErrorCode::Malformed,
                            format!(
                                "frame longer than the TP's limit of {} bytes; closing the connection",
                                self.limits.max_frame_bytes
                            ),
                        );
                        if let Ok(Ok(())) = timeout(idle, writer.send(frame)).await {
                            linger(reader.into_inner(), writer.into_inner()).await;
                        }
                    } else {
                        debug!(peer = %self.peer, error = %e, "read failed; closing");
                    }
                    return;
                }
            };
            first = false;
            if !self.slot.start_request() {
                // Evicted just before the frame completed.
                break;
            }
            let (response, decoded) = self.answer(&frame).await;
            self.slot.finish_request();
            if !decoded {
                bad_frames += 1;
            }
            let bytes = encode_response(&response);
            if bytes.len() > self.limits.max_frame_bytes {
                warn!(peer = %self.peer, len = bytes.len(), "response exceeds the request frame limit; clients with default limits may refuse it");
            }
            match timeout(idle, writer.send(Bytes::from(bytes))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(peer = %self.peer, error = %e, "write failed; closing");
                    break;
                }
                Err(_) => {
                    debug!(peer = %self.peer, "client does not read its responses; closing");
                    break;
                }
            }
            if bad_frames >= MAX_BAD_FRAMES {
                warn!(peer = %self.peer, bad_frames, "too many undecodable frames; closing");
                linger(reader.into_inner(), writer.into_inner()).await;
                return;
            }
            if Instant::now() >= closing_time {
                debug!(peer = %self.peer, "connection lifetime over; closing");
                break;
            }
        }
        debug!(peer = %self.peer, "connection closed");
    }

    /// The response to one frame, and whether the frame decoded.
    async fn answer(&self, frame: &[u8]) -> (Response, bool) {
        let metrics = self.service.metrics();
        let request = match decode_request(frame) {
            Ok(r) => r,
            Err(e) => {
                debug!(peer = %self.peer, error = %e, "undecodable request");
                metrics.request("undecodable");
                let r = protocol_refusal(&e);
                if let Response::Error(WireError { code, .. }) = &r {
                    metrics.refusal("undecodable", *code);
                }
                return (r, false);
            }
        };
        let kind = request_kind(&request);
        metrics.request(kind);
        // Per-identity rate: checked now, charged only for an answer (see
        // `crate::rate_limit`).
        let limited = self.rate.as_ref().zip(requester(&request));
        if let Some((rate, id)) = &limited {
            if let Err(wait) = rate.check(id, Instant::now()) {
                debug!(peer = %self.peer, identity = %&id.0.to_hex()[..16], "identity over its rate; busy");
                metrics.refusal(kind, ErrorCode::Busy);
                let ms = wait.as_millis().max(1);
                return (
                    Response::Error(WireError {
                        code: ErrorCode::Busy,
                        message: format!(
                            "identity {} is over the TP's rate limit ({} requests/s, bursts \
                             of {}); retry in {ms} ms",
                            id.0.to_hex(),
                            self.limits.identity_rate_per_sec,
                            self.limits.identity_burst
                        ),
                    }),
                    true,
                );
            }
        }
        // Own task: runs to completion even if this connection is dropped,
        // and shutdown waits for it (the tracker).
        let service = Arc::clone(&self.service);
        let response = match self
            .tracker
            .spawn(async move {
                let m = Arc::clone(service.metrics());
                m.request_started();
                let _g = GaugeGuard(&m, Metrics::request_finished);
                service.handle(request).await
            })
            .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "request handler failed");
                Response::Error(WireError {
                    code: ErrorCode::Unavailable,
                    message: "the TP failed while handling this request; retry".into(),
                })
            }
        };
        match &response {
            Response::Error(WireError { code, .. }) => metrics.refusal(kind, *code),
            _ => {
                if let Some((rate, id)) = &limited {
                    rate.charge(id, Instant::now());
                }
            }
        }
        (response, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Admit from `addr` at `t0 + secs`.
    fn admit(
        t: &mut SlotTable,
        addr: &str,
        t0: Instant,
        secs: u64,
        max: usize,
    ) -> Result<Admitted, Refusal> {
        t.admit(ip(addr), t0 + Duration::from_secs(secs), max, max)
    }

    #[test]
    fn a_full_table_evicts_from_the_biggest_holder_longest_waiting_first() {
        let t0 = Instant::now();
        let mut t = SlotTable::default();
        // Two attacker addresses fill 6 slots: .2 holds 4, .3 holds 2.
        let mut attackers = Vec::new();
        for (i, a) in [
            "10.0.0.2", "10.0.0.3", "10.0.0.2", "10.0.0.2", "10.0.0.3", "10.0.0.2",
        ]
        .into_iter()
        .enumerate()
        {
            attackers.push(admit(&mut t, a, t0, i as u64, 6).unwrap());
        }
        assert_eq!(t.total, 6);
        // A newcomer evicts .2's longest-waiting connection (the first).
        let honest = admit(&mut t, "10.0.0.9", t0, 10, 6).unwrap();
        assert_eq!(honest.evicted_from, Some(ip("10.0.0.2")));
        assert!(attackers[0].evicted.is_cancelled());
        assert!(attackers[1..].iter().all(|a| !a.evicted.is_cancelled()));
        assert_eq!((t.total, t.addrs[&ip("10.0.0.2")].held), (6, 3));
        // .2 reconnects: it still holds the most (3 > 2 > 1): refused.
        assert_eq!(
            admit(&mut t, "10.0.0.2", t0, 11, 6).err(),
            Some(Refusal::Full)
        );
        // .3 (2 slots) may take one from .2 (3 slots): its next oldest.
        let x = admit(&mut t, "10.0.0.3", t0, 12, 6).unwrap();
        assert_eq!(x.evicted_from, Some(ip("10.0.0.2")));
        assert!(attackers[2].evicted.is_cancelled());
        // Now .2 and .3 hold 2 and 3: .2 takes from .3, whose oldest
        // waiting connection is attackers[1].
        let y = admit(&mut t, "10.0.0.2", t0, 13, 6).unwrap();
        assert_eq!(y.evicted_from, Some(ip("10.0.0.3")));
        assert!(attackers[1].evicted.is_cancelled());
        // The honest client (1 slot) is never the victim while others hold
        // more.
        assert!(!honest.evicted.is_cancelled());
        assert_eq!(t.total, 6);
    }

    #[test]
    fn busy_connections_are_not_evicted() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut t = SlotTable::default();
        let a = admit(&mut t, "10.0.0.2", t0, 0, 2).unwrap();
        let b = admit(&mut t, "10.0.0.2", t0, 1, 2).unwrap();
        // `a` is handling a request: only `b` may go.
        assert!(t.start_request(ip("10.0.0.2"), (at(0), a.id)));
        let c = admit(&mut t, "10.0.0.3", t0, 2, 2).unwrap();
        assert!(b.evicted.is_cancelled() && !a.evicted.is_cancelled());
        // `b`'s frame completing finds it evicted.
        assert!(!t.start_request(ip("10.0.0.2"), (at(1), b.id)));
        // Both addresses hold one; neither may push the other out.
        for addr in ["10.0.0.2", "10.0.0.3"] {
            assert_eq!(admit(&mut t, addr, t0, 3, 2).err(), Some(Refusal::Full));
        }
        // With `c` busy too, even a new address finds nobody to evict.
        assert!(t.start_request(ip("10.0.0.3"), (at(2), c.id)));
        assert_eq!(
            admit(&mut t, "10.0.0.4", t0, 4, 2).err(),
            Some(Refusal::Full)
        );
        // `a` answered and waits again: now it may be evicted.
        t.finish_request(ip("10.0.0.2"), a.id, at(5), &a.evicted);
        let d = admit(&mut t, "10.0.0.4", t0, 6, 2).unwrap();
        assert_eq!(d.evicted_from, Some(ip("10.0.0.2")));
        assert!(a.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert_eq!(t.total, 2);
    }

    #[test]
    fn the_per_address_limit_refuses_before_anything_is_evicted() {
        let t0 = Instant::now();
        let mut t = SlotTable::default();
        for i in 0..3 {
            t.admit(ip("10.0.0.2"), t0 + Duration::from_secs(i), 10, 3)
                .unwrap();
        }
        assert_eq!(
            t.admit(ip("10.0.0.2"), t0, 10, 3).err(),
            Some(Refusal::AddressFull)
        );
        // IPv6: one /64 counts as one address.
        for i in 0..3 {
            t.admit(client_key(ip(&format!("2001:db8::{i}"))), t0, 10, 3)
                .unwrap();
        }
        assert_eq!(
            t.admit(client_key(ip("2001:db8::ffff")), t0, 10, 3).err(),
            Some(Refusal::AddressFull)
        );
        assert_eq!(t.total, 6);
    }

    #[test]
    fn slots_are_freed_once_whether_closed_or_evicted() {
        let slots = Slots::new(2, 2);
        let (a, _) = slots.admit(ip("10.0.0.2")).unwrap();
        let (mut b, _) = slots.admit(ip("10.0.0.2")).unwrap();
        assert!(b.start_request());
        // Full; .3 evicts `a` (the only waiting one).
        let (c, from) = slots.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(from, Some(ip("10.0.0.2")));
        assert!(a.evicted.is_cancelled());
        drop(a); // already freed by the eviction
        assert_eq!(slots.lock().total, 2);
        b.finish_request();
        drop(b);
        drop(c);
        let t = slots.lock();
        assert_eq!(t.total, 0);
        assert!(t.addrs.is_empty());
    }

    #[test]
    fn the_open_file_limit_bounds_the_connections_served() {
        assert_eq!(connections_within(1_000_000, 1024), 1024);
        assert_eq!(connections_within(1024 + FD_RESERVE as u64, 1024), 1024);
        assert_eq!(connections_within(1024, 1024), 1024 - FD_RESERVE);
        assert_eq!(connections_within(10, 1024), 1);
        assert_eq!(connections_within(u64::MAX, 5), 5);
    }

    #[test]
    fn throttled_warnings_count_what_they_skipped() {
        let t0 = Instant::now();
        let mut w = Throttle::new();
        assert_eq!(w.hit(t0), Some(0));
        assert_eq!(w.hit(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.hit(t0 + Duration::from_secs(2)), None);
        assert_eq!(w.hit(t0 + WARN_EVERY + Duration::from_secs(1)), Some(2));
    }
}
