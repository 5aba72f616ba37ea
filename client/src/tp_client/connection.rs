//! [`TpConnection`]: one kept-open connection to the TP for tokio programs
//! that send many requests on it (`tp-daemon bench` drives many of them at
//! once). The framing is the blocking client's: [`request_frame`],
//! [`response_len`], [`Answer`].

use anyhow::{anyhow, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vtp_protocol::wire::{Request, Response};

use super::{io_error, request_frame, response_len, Answer};

/// A connection to the TP that stays open for request after request (the
/// daemon answers them in order). No timeouts: the caller bounds its time.
pub struct TpConnection {
    stream: tokio::net::TcpStream,
    addr: String,
    /// The last response's body, reused.
    body: Vec<u8>,
}

impl TpConnection {
    /// Connect (with `TCP_NODELAY`: requests are small and wait for answers).
    pub async fn connect(addr: &str) -> Result<TpConnection> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| anyhow!("cannot reach the TP at {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| io_error(addr, None, "connecting", e))?;
        Ok(TpConnection {
            stream,
            addr: addr.to_owned(),
            body: Vec::new(),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send one request frame (made with [`request_frame`], perhaps long
    /// before) and read the response frame; decoding is up to the caller
    /// ([`Answer::decode`]).
    pub async fn round_trip(&mut self, frame: &[u8]) -> Result<Answer<'_>> {
        let addr = &self.addr;
        self.stream
            .write_all(frame)
            .await
            .map_err(|e| io_error(addr, None, "sending the request", e))?;
        let mut head = [0u8; 4];
        self.stream
            .read_exact(&mut head)
            .await
            .map_err(|e| io_error(addr, None, "waiting for the response", e))?;
        self.body.resize(response_len(addr, head)?, 0);
        self.stream
            .read_exact(&mut self.body)
            .await
            .map_err(|e| io_error(addr, None, "reading the response", e))?;
        Ok(Answer {
            addr,
            body: &self.body,
        })
    }

    /// One request, one response. `Response::Error` becomes an error.
    pub async fn call(&mut self, req: &Request) -> Result<Response> {
        let frame = request_frame(req)?;
        self.round_trip(&frame).await?.decode()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use vtp_protocol::wire::{decode_request, encode_response, ErrorCode, WireError};

    use super::*;
    use crate::tp_client::TpRefused;

    /// A server answering requests on one connection: the odd ones with an
    /// error frame (Busy), the even ones with a frame that is no response.
    fn serve() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for i in 0.. {
                let mut head = [0u8; 4];
                if s.read_exact(&mut head).is_err() {
                    return;
                }
                let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
                s.read_exact(&mut body).unwrap();
                assert_eq!(decode_request(&body).unwrap(), Request::GetCard);
                let out = if i % 2 == 0 {
                    encode_response(&Response::Error(WireError {
                        code: ErrorCode::Busy,
                        message: "later".into(),
                    }))
                } else {
                    b"not a response".to_vec()
                };
                s.write_all(&(out.len() as u32).to_be_bytes()).unwrap();
                s.write_all(&out).unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn one_connection_answers_request_after_request() {
        let addr = serve();
        let mut c = TpConnection::connect(&addr).await.unwrap();
        let frame = request_frame(&Request::GetCard).unwrap();
        for _ in 0..3 {
            let e = c.round_trip(&frame).await.unwrap().decode().unwrap_err();
            assert!(TpRefused::is_busy(&e), "{e}");
            let e = c.round_trip(&frame).await.unwrap().decode().unwrap_err();
            assert!(e.to_string().contains("not a vtp frame"), "{e}");
        }
        let e = c.call(&Request::GetCard).await.unwrap_err();
        assert_eq!(e.to_string(), "TP refused: later (Busy)");
    }
}
