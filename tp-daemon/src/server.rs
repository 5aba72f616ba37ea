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
//! - no complete request frame for `idle_timeout_secs` (or a response the
//!   client does not read for as long): the connection is closed. The
//!   timeout bounds the whole frame from the moment the server starts
//!   waiting for it, so a client that dribbles a frame one byte at a time
//!   is cut off like one that sends nothing;
//! - [`MAX_BAD_FRAMES`] undecodable frames on one connection: after the
//!   error response to the last one, the connection is closed (garbage
//!   costs a client its connection, not the TP its CPU);
//! - a connection older than `max_connection_secs`: closed once its
//!   current request is answered, so no client holds a slot forever, even
//!   one that keeps sending valid requests slowly;
//! - more than `max_connections` at once, or more than
//!   `max_connections_per_ip` from one client address (IPv6: one /64): the
//!   extra connection gets one `Error{Busy}` frame and is closed (during a
//!   flood of more than [`MAX_REFUSING`] at once, closed without a frame);
//! - an identity over its rate (`identity_rate_per_sec`,
//!   `identity_burst`): `Error{Busy}` for that request, the connection
//!   stays open (see [`crate::rate_limit`] for why forged requests in
//!   someone's name cannot use up that someone's budget).
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

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::codec::length_delimited::LengthDelimitedCodecError;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
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

/// Connections open per client address.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted in [`PerIp`]; uncounted when dropped.
struct IpSlot {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let key = client_key(ip);
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: Arc::clone(self),
            key,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.key);
            }
        }
    }
}

/// Let this process hold `connections` sockets plus its own files: raise
/// the soft `RLIMIT_NOFILE` towards the hard limit if it is lower (the
/// default soft limit, 1024, is exactly `max_connections`' default).
fn raise_fd_limit(connections: usize) {
    let want = (connections as libc::rlim_t).saturating_add(256);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < want && lim.rlim_cur < lim.rlim_max {
            let cur = lim.rlim_cur;
            lim.rlim_cur = want.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                debug!(from = cur, to = lim.rlim_cur, "raised the open-file limit");
            }
        }
        if lim.rlim_cur < want {
            warn!(
                limit = lim.rlim_cur,
                max_connections = connections,
                "the open-file limit is below max_connections + 256; raise LimitNOFILE"
            );
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
        raise_fd_limit(limits.max_connections);
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            service,
            limits,
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
        } = self;
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let per_ip = Arc::new(PerIp::default());
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
                        let slot = per_ip.acquire(peer.ip(), limits.max_connections_per_ip);
                        match (Arc::clone(&permits).try_acquire_owned(), slot) {
                            (Ok(permit), Some(slot)) => {
                                let conn = Connection {
                                    service: Arc::clone(&service),
                                    limits: limits.clone(),
                                    stop: stop_rx.clone(),
                                    peer,
                                    tracker: tracker.clone(),
                                    rate: rate.clone(),
                                    _permit: permit,
                                    _slot: slot,
                                };
                                tasks.spawn(conn.run(stream));
                            }
                            (Err(_), _) => {
                                warn!(%peer, max = limits.max_connections, "too many connections; refusing");
                                service.metrics().refusal("connection", ErrorCode::Busy);
                                refuse(&mut tasks, stream);
                            }
                            (Ok(_), None) => {
                                warn!(%peer, max = limits.max_connections_per_ip, "too many connections from this address; refusing");
                                service.metrics().refusal("connection", ErrorCode::Busy);
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
    /// Held for the life of the connection (`max_connections`).
    _permit: OwnedSemaphorePermit,
    /// Held for the life of the connection (`max_connections_per_ip`).
    _slot: IpSlot,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
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
        loop {
            // The whole next frame must arrive within `idle` (however it
            // is dribbled), and before the connection's lifetime ends.
            let wait = idle.min(closing_time.saturating_duration_since(Instant::now()));
            let next = tokio::select! {
                _ = self.stop.wait_for(|stop| *stop) => break,
                next = timeout(wait, reader.next()) => next,
            };
            let frame = match next {
                Err(_elapsed) => {
                    if wait < idle {
                        debug!(peer = %self.peer, "connection lifetime over; closing");
                    } else {
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
            let (response, decoded) = self.answer(&frame).await;
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
