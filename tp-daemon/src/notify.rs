//! systemd readiness for `Type=notify`: the `NOTIFY_SOCKET` datagram
//! protocol (one `KEY=value` line per field, one datagram per message), in
//! a few lines of std rather than a dependency. Outside systemd (no
//! `NOTIFY_SOCKET`) every call does nothing.
//!
//! `serve` sends `READY=1` once the token is logged in, the journal open
//! and both sockets bound, so `systemctl start` returns (and units ordered
//! after it start) only when claims can be answered; `STOPPING=1` when it
//! begins to drain; `STATUS=` lines for `systemctl status`.

use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::debug;

/// Environment variable naming the service manager's socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Where to send notifications; read once at start-up.
#[derive(Debug)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`: a path, or `@name` for Linux's abstract
    /// namespace. Unset, empty or unusable: a notifier that does nothing.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os(NOTIFY_SOCKET_ENV).and_then(|v| {
            let v = v.to_string_lossy().into_owned();
            let addr = match v.strip_prefix('@') {
                Some(name) => abstract_addr(name),
                None if v.starts_with('/') => SocketAddr::from_pathname(&v).ok(),
                None => None,
            };
            if addr.is_none() {
                debug!(socket = %v, "{NOTIFY_SOCKET_ENV} is not usable; no readiness notification");
            }
            addr
        });
        Notifier { target }
    }

    /// Send one message, e.g. `"READY=1\nSTATUS=serving"`. Best effort: the
    /// daemon serves whether or not anyone listens.
    pub fn notify(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let sent = UnixDatagram::unbound()
            .and_then(|s| s.send_to_addr(message.as_bytes(), target).map(|_| ()));
        if let Err(e) = sent {
            debug!(error = %e, "cannot notify the service manager");
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> Option<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name.as_bytes()).ok()
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &str) -> Option<SocketAddr> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(SocketAddr::from_pathname(&path).unwrap()),
        };
        n.notify("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        // Nobody listening, or no socket at all: silently nothing.
        Notifier { target: None }.notify("READY=1");
    }
}
