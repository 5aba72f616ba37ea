//! A small blocking client for the TP daemon.
//!
//! The client needs exactly one round trip per question, so plain `std::net`
//! with timeouts is enough (no async runtime in a command-line tool). A frame
//! is a 4-byte big-endian length followed by an encoded
//! [`Request`](vtp_protocol::wire::Request) or
//! [`Response`](vtp_protocol::wire::Response). Each call opens its own
//! connection, so the client does not depend on whether the daemon keeps a
//! connection open for a second request. Responses are signed end to end (the
//! affidavits, the card), so the transport needs no integrity of its own.
//!
//! The framing — [`request_frame`], the response length limit, decoding
//! into an [`Answer`] — is shared with [`TpConnection`] (feature `async`),
//! a kept-open tokio connection for programs that send many requests on one
//! connection (`tp-daemon bench`); the `vtp` command never starts a runtime.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Result;
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::WIRE_VERSION;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{
    decode_response, encode_request, ClaimOutcome, ErrorCode, FetchRequest, ReceiptPage, Request,
    Response, UnclaimedRequest, WireError, DEFAULT_MAX_FRAME,
};
use vtp_protocol::ProtocolError;

use crate::error;

/// Connect, read and write timeout unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response frame accepted: far above any honest answer, far below
/// anything that could exhaust memory.
pub const MAX_RESPONSE: usize = 1 << 20;
// A TP pages receipts into frames of at most the default frame limit.
const _: () = assert!(vtp_protocol::wire::RECEIPTS_PAGE_MAX_FRAME <= MAX_RESPONSE);
const _: () = assert!(DEFAULT_MAX_FRAME <= MAX_RESPONSE);

/// The TP answered with an error frame. Kept as a type (inside the
/// `anyhow::Error`) so callers can tell "busy, retry" from other refusals.
#[derive(Debug, thiserror::Error)]
#[error("TP refused: {} ({:?})", .0.message, .0.code)]
pub struct TpRefused(pub WireError);

impl TpRefused {
    /// Whether `e` is the TP saying it is busy (retrying later may work).
    pub fn is_busy(e: &anyhow::Error) -> bool {
        matches!(e.downcast_ref::<TpRefused>(), Some(TpRefused(w)) if w.code == ErrorCode::Busy)
    }
}

/// The port of a TP address given without one.
pub const DEFAULT_PORT: u16 = 7400;

/// `HOST[:PORT]` (also `[V6]`, `[V6]:PORT` and a bare IPv6 address) with
/// the default port filled in, and whether it had to be.
pub fn with_default_port(addr: &str) -> (String, bool) {
    let a = addr.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return match rest.find(']') {
            Some(i) if rest[i + 1..].is_empty() => (format!("{a}:{DEFAULT_PORT}"), true),
            _ => (a.to_string(), false),
        };
    }
    match a.matches(':').count() {
        0 => (format!("{a}:{DEFAULT_PORT}"), true),
        1 => (a.to_string(), false),
        _ => (format!("[{a}]:{DEFAULT_PORT}"), true),
    }
}

/// Where the TP is (one or more addresses, tried in order: the ones a TP
/// card publishes, or the one given) and how long to wait for it.
#[derive(Debug, Clone)]
pub struct TpClient {
    /// `host:port`, the default port filled in.
    addrs: Vec<String>,
    /// As shown in messages.
    shown: String,
    /// Some address was given without a port (for the hint when it fails).
    port_defaulted: bool,
    timeout: Duration,
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Card(_) => "a TP card",
        Response::Claim(_) => "a claim outcome",
        Response::Receipts(_) => "a page of receipts",
        Response::Unclaimed(_) => "an unclaimed affidavit",
        Response::Error(_) => "an error",
    }
}

impl TpClient {
    /// A TP at `HOST[:PORT]` (default port [`DEFAULT_PORT`]).
    pub fn new(addr: &str, timeout: Duration) -> Self {
        Self::with_addresses(&[addr.to_string()], timeout)
    }

    /// A TP reachable at any of `addrs`, tried in order.
    pub fn with_addresses(addrs: &[String], timeout: Duration) -> Self {
        let mut port_defaulted = false;
        let addrs: Vec<String> = addrs
            .iter()
            .map(|a| {
                let (a, defaulted) = with_default_port(a);
                port_defaulted |= defaulted;
                a
            })
            .collect();
        TpClient {
            shown: addrs.join(" or "),
            addrs,
            port_defaulted,
            timeout,
        }
    }

    /// The address(es), for messages.
    pub fn addr(&self) -> &str {
        &self.shown
    }

    fn port_hint(&self) -> &'static str {
        if self.port_defaulted {
            " (no port was given, so the default port 7400 was used)"
        } else {
            ""
        }
    }

    fn io_error(&self, doing: &str, e: io::Error) -> anyhow::Error {
        io_error(self.addr(), Some(self.timeout), doing, e)
    }

    fn connect(&self) -> Result<TcpStream> {
        let mut problems = Vec::new();
        for addr in &self.addrs {
            let resolved: Vec<_> = match addr.to_socket_addrs() {
                Ok(r) => r.collect(),
                Err(e) => {
                    problems.push(format!("cannot resolve the TP address {addr}: {e}"));
                    continue;
                }
            };
            if resolved.is_empty() {
                problems.push(format!("the TP address {addr} resolves to nothing"));
            }
            for a in &resolved {
                crate::detail!("connecting to the TP at {addr} ({a})");
                match TcpStream::connect_timeout(a, self.timeout) {
                    Ok(s) => {
                        s.set_read_timeout(Some(self.timeout))
                            .and_then(|_| s.set_write_timeout(Some(self.timeout)))
                            .and_then(|_| s.set_nodelay(true))
                            .map_err(|e| self.io_error("connecting", e))?;
                        return Ok(s);
                    }
                    Err(e) => problems.push(format!("cannot reach the TP at {addr}: {e}")),
                }
            }
        }
        Err(error::tp_unreachable(format!(
            "{}{}",
            problems.join("; "),
            self.port_hint()
        )))
    }

    /// What answered is not a vtp TP: show what it said, if it is text (an
    /// SSH or SMTP banner, an HTTP error page).
    fn not_a_tp(&self, stream: &mut TcpStream, head: [u8; 4]) -> anyhow::Error {
        let mut seen = head.to_vec();
        let mut more = [0u8; 60];
        let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        if let Ok(n) = stream.read(&mut more) {
            seen.extend_from_slice(&more[..n]);
        }
        let text: String = String::from_utf8_lossy(&seen)
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        error::tp_unreachable(format!(
            "the service at {} is not a vtp TP (it answered {text:?}){}",
            self.addr(),
            self.port_hint()
        ))
    }

    /// One request, one response. `Response::Error` becomes an error.
    pub fn call(&self, req: &Request) -> Result<Response> {
        let mut stream = self.connect()?;
        stream
            .write_all(&request_frame(req)?)
            .and_then(|_| stream.flush())
            .map_err(|e| self.io_error("sending the request", e))?;

        let mut head = [0u8; 4];
        stream
            .read_exact(&mut head)
            .map_err(|e| self.io_error("waiting for the response", e))?;
        if looks_like_text(head) {
            return Err(self.not_a_tp(&mut stream, head));
        }
        let mut body = vec![0u8; response_len(self.addr(), head)?];
        stream
            .read_exact(&mut body)
            .map_err(|e| self.io_error("reading the response", e))?;
        Answer {
            addr: self.addr(),
            body: &body,
        }
        .decode()
    }

    fn unexpected(&self, got: &Response, asked: &str) -> anyhow::Error {
        error::tp_unreachable(format!(
            "the TP at {} answered {asked} with {}",
            self.addr(),
            response_name(got)
        ))
    }

    /// `GetCard`: the TP's self-signed card (checked on decode). Whether it
    /// is the *right* TP is for the caller to decide (compare ids).
    pub fn get_card(&self) -> Result<TpCard> {
        match self.call(&Request::GetCard)? {
            Response::Card(c) => Ok(c),
            other => Err(self.unexpected(&other, "a card request")),
        }
    }

    pub fn claim(&self, claim: Claim) -> Result<ClaimOutcome> {
        match self.call(&Request::Claim(claim))? {
            Response::Claim(o) => Ok(o),
            other => Err(self.unexpected(&other, "a claim")),
        }
    }

    /// One page of receipts (the caller checks it with
    /// [`ReceiptPage::check`] and asks for the next).
    pub fn fetch_receipts(&self, req: FetchRequest) -> Result<ReceiptPage> {
        match self.call(&Request::FetchReceipts(req))? {
            Response::Receipts(r) => Ok(r),
            other => Err(self.unexpected(&other, "a receipts request")),
        }
    }

    pub fn unclaimed(&self, req: UnclaimedRequest) -> Result<Affidavit> {
        match self.call(&Request::Unclaimed(req))? {
            Response::Unclaimed(a) => Ok(a),
            other => Err(self.unexpected(&other, "an unclaimed request")),
        }
    }
}

/// One request as it travels: its length (4 bytes, big-endian), then the
/// encoded request.
pub fn request_frame(req: &Request) -> Result<Vec<u8>> {
    let payload = encode_request(req);
    let len = u32::try_from(payload.len()).map_err(|_| anyhow::anyhow!("request too large"))?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The body length a response frame's head announces; refused above
/// [`MAX_RESPONSE`].
fn response_len(addr: &str, head: [u8; 4]) -> Result<usize> {
    let n = u32::from_be_bytes(head) as usize;
    if n > MAX_RESPONSE {
        return Err(error::tp_unreachable(format!(
            "the TP at {addr} sent a {n}-byte response, more than the {MAX_RESPONSE}-byte limit; \
             refused (is it a vtp TP?)"
        )));
    }
    Ok(n)
}

/// A frame head of printable ASCII: no honest length is that large, so the
/// other end speaks another protocol (an SSH or SMTP banner, HTTP).
fn looks_like_text(head: [u8; 4]) -> bool {
    head.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
}

/// What went wrong on the socket, in words that name the TP and the step
/// (`timeout`: the limit a blocking client set, to name it).
fn io_error(addr: &str, timeout: Option<Duration>, doing: &str, e: io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => match timeout {
            Some(t) => error::tp_unreachable(format!(
                "the TP at {addr} did not answer within {} while {doing} (see --timeout)",
                humantime::format_duration(t)
            )),
            None => error::tp_unreachable(format!("the TP at {addr} did not answer while {doing}")),
        },
        io::ErrorKind::UnexpectedEof => error::tp_unreachable(format!(
            "the TP at {addr} closed the connection while {doing}"
        )),
        _ => error::tp_unreachable(format!(
            "talking to the TP at {addr} failed while {doing}: {e}"
        )),
    }
}

/// A response frame's body as received, not yet decoded (a caller that
/// times round trips can stop the clock before decoding).
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    addr: &'a str,
    body: &'a [u8],
}

impl Answer<'_> {
    pub fn body(&self) -> &[u8] {
        self.body
    }

    /// The response. An error frame becomes a [`TpRefused`]; a TP of
    /// another wire version is named as such.
    pub fn decode(&self) -> Result<Response> {
        let addr = self.addr;
        let resp = decode_response(self.body).map_err(|e| match e {
            ProtocolError::UnsupportedVersion { found, .. } => error::tp_unreachable(format!(
                "the TP at {addr} speaks wire protocol version {found} and this vtp speaks version \
                 {WIRE_VERSION}: use a vtp release that matches the TP"
            )),
            _ if !self.body.starts_with(b"VTP") => error::tp_unreachable(format!(
                "the service at {addr} is not a vtp TP (its answer is not a vtp frame)"
            )),
            e => error::tp_unreachable(format!("the TP at {addr} sent a bad response: {e}")),
        })?;
        if let Response::Error(e) = resp {
            return Err(TpRefused(e).into());
        }
        Ok(resp)
    }
}

#[cfg(feature = "async")]
mod connection;
#[cfg(feature = "async")]
pub use connection::TpConnection;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use vtp_protocol::wire::{decode_request, encode_response, ErrorCode, WireError};

    /// A one-shot server answering with `reply` (raw bytes after the request).
    fn serve(reply: impl FnOnce(Request) -> Vec<u8> + Send + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut head = [0u8; 4];
            s.read_exact(&mut head).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
            s.read_exact(&mut body).unwrap();
            let out = reply(decode_request(&body).unwrap());
            let _ = s.write_all(&out);
        });
        addr
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn error_responses_become_tp_refused() {
        let addr = serve(|req| {
            assert_eq!(req, Request::GetCard);
            frame(&encode_response(&Response::Error(WireError {
                code: ErrorCode::Busy,
                message: "come back later".into(),
            })))
        });
        let e = TpClient::new(&addr, DEFAULT_TIMEOUT)
            .get_card()
            .unwrap_err();
        assert_eq!(e.to_string(), "TP refused: come back later (Busy)");
        assert!(TpRefused::is_busy(&e));
    }

    #[test]
    fn a_tp_of_another_wire_version_is_named_as_such() {
        // What a TP of the previous wire version answers to anything.
        let addr = serve(|_| {
            let mut f = encode_response(&Response::Error(WireError {
                code: ErrorCode::Malformed,
                message: "unsupported format version 2".into(),
            }));
            f[4] = 1;
            frame(&f)
        });
        let e = TpClient::new(&addr, DEFAULT_TIMEOUT)
            .get_card()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("speaks wire protocol version 1")
                && e.contains(&format!("this vtp speaks version {WIRE_VERSION}")),
            "{e}"
        );
    }

    #[test]
    fn oversized_and_unexpected_responses_are_refused() {
        let addr = serve(|_| ((MAX_RESPONSE + 1) as u32).to_be_bytes().to_vec());
        let e = TpClient::new(&addr, DEFAULT_TIMEOUT)
            .get_card()
            .unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");

        let addr = serve(|_| {
            frame(&encode_response(&Response::Receipts(ReceiptPage {
                receipts: vec![],
                more: false,
            })))
        });
        let e = TpClient::new(&addr, DEFAULT_TIMEOUT)
            .get_card()
            .unwrap_err();
        assert!(e.to_string().contains("page of receipts"), "{e}");
    }

    #[test]
    fn silence_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            thread::sleep(Duration::from_millis(1500));
            drop(s);
        });
        let e = TpClient::new(&addr, Duration::from_millis(300))
            .get_card()
            .unwrap_err();
        assert!(e.to_string().contains("did not answer"), "{e}");
        h.join().unwrap();
    }
}
