//! Frames over `std` sockets, as the TP speaks them: a 4-byte big-endian
//! length, then a [`vtp_protocol::wire`] request or response.
//!
//! The `vtp` client frames through its own TP client
//! (`vtp_client::tp_client`), which refuses anything odd; tests need the
//! other side too — half frames, garbage, oversized lengths, a stand-in TP
//! answering requests — so they frame by hand, with these functions only.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use vtp_protocol::wire::{decode_response, encode_request, Request, Response};

/// How long a [`Conn`] waits for an answer before its reads fail.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `body` with its length prefix.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Write `body` as one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    w.write_all(&frame(body))
}

/// Read one frame's body (any length the prefix announces).
pub fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// A client connection to a TP, speaking raw frames. The field is the
/// socket itself, for tests that write bytes no frame would hold.
pub struct Conn(pub TcpStream);

impl Conn {
    /// Connect, with reads timing out after [`READ_TIMEOUT`].
    pub fn try_connect(addr: impl ToSocketAddrs) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(Conn(s))
    }

    /// [`Conn::try_connect`] for tests: panics if nobody listens.
    #[track_caller]
    pub fn connect(addr: impl ToSocketAddrs + std::fmt::Debug) -> Conn {
        Conn::try_connect(&addr).unwrap_or_else(|e| panic!("cannot connect to {addr:?}: {e}"))
    }

    /// A connection from a chosen local address (e.g. 127.0.0.2, to be
    /// another client address than 127.0.0.1 for the per-address limits).
    #[track_caller]
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> Conn {
        let connect = || -> io::Result<Conn> {
            let domain = socket2::Domain::for_address(addr);
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            s.bind(&SocketAddr::new(source, 0).into())?;
            s.connect(&addr.into())?;
            let s = TcpStream::from(s);
            s.set_read_timeout(Some(READ_TIMEOUT))?;
            Ok(Conn(s))
        };
        connect().unwrap_or_else(|e| panic!("cannot connect from {source} to {addr}: {e}"))
    }

    /// Send `body` as one frame.
    #[track_caller]
    pub fn send_frame(&mut self, body: &[u8]) {
        write_frame(&mut self.0, body).expect("send a frame");
    }

    /// The next frame's body.
    pub fn read_frame(&mut self) -> io::Result<Vec<u8>> {
        read_frame(&mut self.0)
    }

    /// The next response, or `None` at end of stream (or reset) before
    /// one; panics on a frame cut short or not decodable.
    #[track_caller]
    pub fn read_response(&mut self) -> Option<Response> {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).expect("the rest of the frame");
        Some(decode_response(&body).expect("the daemon sends decodable responses"))
    }

    /// One request, its response; `None` if the connection failed or was
    /// closed before an answer.
    #[track_caller]
    pub fn try_request(&mut self, r: &Request) -> Option<Response> {
        write_frame(&mut self.0, &encode_request(r)).ok()?;
        self.read_response()
    }

    /// One request, its response.
    #[track_caller]
    pub fn request(&mut self, r: &Request) -> Response {
        self.send_frame(&encode_request(r));
        self.read_response().expect("a response")
    }

    /// True if the daemon closed the connection (EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

/// One request on a fresh connection; `None` if nobody answered it (the
/// daemon is gone, or closed the connection first).
pub fn try_ask(addr: impl ToSocketAddrs, r: &Request) -> Option<Response> {
    Conn::try_connect(addr).ok()?.try_request(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_cut_frames_fail() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(buf, frame(b"hello"));
        assert_eq!(&buf[..4], &5u32.to_be_bytes());
        assert_eq!(read_frame(&mut &buf[..]).unwrap(), b"hello");
        assert!(read_frame(&mut &buf[..7]).is_err());
    }
}
