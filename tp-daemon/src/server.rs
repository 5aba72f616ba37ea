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
//!   client does not read for as long): the connection is closed;
//! - more than `max_connections` at once: the extra connection gets one
//!   `Error{Busy}` frame and is closed.
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

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
                        match Arc::clone(&permits).try_acquire_owned() {
                            Ok(permit) => {
                                let conn = Connection {
                                    service: Arc::clone(&service),
                                    limits: limits.clone(),
                                    stop: stop_rx.clone(),
                                    peer,
                                    tracker: tracker.clone(),
                                    _permit: permit,
                                };
                                tasks.spawn(conn.run(stream));
                            }
                            Err(_) => {
                                warn!(%peer, max = limits.max_connections, "too many connections; refusing");
                                service.metrics().refusal("connection", ErrorCode::Busy);
                                tasks.spawn(refuse_busy(stream));
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
    /// Held for the life of the connection (`max_connections`).
    _permit: OwnedSemaphorePermit,
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
        loop {
            let next = tokio::select! {
                _ = self.stop.wait_for(|stop| *stop) => break,
                next = timeout(idle, reader.next()) => next,
            };
            let frame = match next {
                Err(_elapsed) => {
                    debug!(peer = %self.peer, "idle timeout; closing");
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
            let response = self.answer(&frame).await;
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
        }
        debug!(peer = %self.peer, "connection closed");
    }

    async fn answer(&self, frame: &[u8]) -> Response {
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
                return r;
            }
        };
        let kind = request_kind(&request);
        metrics.request(kind);
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
        if let Response::Error(WireError { code, .. }) = &response {
            metrics.refusal(kind, *code);
        }
        response
    }
}
