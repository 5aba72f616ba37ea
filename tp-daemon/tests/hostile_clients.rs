//! Hostile clients against a real daemon: connections that send nothing,
//! garbage, or dribble a frame one byte at a time, too many connections
//! from one address, and one identity claiming too fast — while honest
//! claims keep succeeding.
//!
//! Hostile clients connect from other loopback addresses (127.0.0.2, …) so
//! the per-address limit can be seen to protect the honest client on
//! 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{
    decode_response, encode_request, ClaimOutcome, ErrorCode, Request, Response, WireError,
};
use vtp_protocol::Digest32;

/// A connection from a chosen loopback source address.
fn connect_from(source: &str, addr: SocketAddr) -> Conn {
    Conn::connect_from(source.parse().unwrap(), addr)
}

/// The next response frame, or `None` when the daemon closed the connection
/// (even in the middle of a frame).
fn read_response(c: &mut Conn) -> Option<Response> {
    Some(decode_response(&c.read_frame().ok()?).expect("decodable response"))
}

/// Wait (up to `limit`) for the daemon to close `s`, reading and dropping
/// whatever it still sends. Returns how long that took.
fn wait_closed(c: &mut Conn, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    c.0.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match c.0.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(WireError { code, .. }) => Some(*code),
        _ => None,
    }
}

/// A1 + B1 from a fresh sender to `bob`, and Bob's claim.
fn claim_for(card: &TpCard, bob: &IdentitySecret) -> Claim {
    let alice = identity("alice");
    let t = now();
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let prep = envelope::prepare(&alice, bob.card(), card, t + 3600, t, nonce).unwrap();
    let msg = b"a message for bob".repeat(20);
    let mut sealer = MessageSealer::new(prep.message_key(), msg.len() as u64);
    let cm = sealer.seal_chunk(&msg).unwrap();
    let mut h = CmHasher::default();
    h.update(&cm);
    let env = prep
        .finish(
            &alice,
            h.finish(),
            cm.len() as u64,
            Digest32(Sha256::digest(&msg).into()),
        )
        .unwrap();
    let venv = env.verify(card).unwrap();
    let receipt = Receipt::issue(bob, &venv, t).verify(&venv).unwrap();
    Claim::new(bob, &venv, &receipt, t)
}

#[test]
fn hostile_connections_do_not_stop_honest_claims() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        t.replace(
            "idle_timeout_secs = 30",
            "idle_timeout_secs = 2\nmax_connections_per_ip = 100\nmax_connection_secs = 5",
        )
    });
    let d = tp.start();
    let card = card_of(&d);
    let honest: Vec<Exchange> = (0..8).map(|_| Exchange::new(&card, 3600)).collect();

    // 150 silent connections from one address: 100 are served (and idle),
    // the other 50 are told Busy at once.
    let mut silent: Vec<Conn> = (0..150)
        .map(|_| connect_from("127.0.0.2", d.addr))
        .collect();
    // 30 garbage senders: well-framed junk, 20 frames each.
    let garbage: Vec<_> = (0..30)
        .map(|i| {
            let mut s = connect_from("127.0.0.3", d.addr);
            thread::spawn(move || {
                let mut junk = vec![0u8; 64 + i];
                let mut answered = 0;
                for _ in 0..20 {
                    OsRng.fill_bytes(&mut junk);
                    if s.0.write_all(&frame(&junk)).is_err() {
                        break;
                    }
                }
                s.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                while let Some(r) = read_response(&mut s) {
                    assert_eq!(code(&r), Some(ErrorCode::Malformed));
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    // 5 raw-noise senders: no framing at all.
    let noise: Vec<_> = (0..5)
        .map(|_| {
            let mut s = connect_from("127.0.0.3", d.addr);
            let mut junk = vec![0u8; 4096];
            OsRng.fill_bytes(&mut junk);
            let _ = s.0.write_all(&junk);
            s
        })
        .collect();
    // 20 dribblers: a real claim frame, one byte every 100 ms (it would
    // take minutes to complete).
    let dribblers: Vec<_> = (0..20)
        .map(|_| {
            let mut s = connect_from("127.0.0.4", d.addr);
            let bytes = frame(&encode_request(&Exchange::new(&card, 3600).claim()));
            thread::spawn(move || {
                let start = Instant::now();
                for b in bytes {
                    if s.0.write_all(&[b]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                    if start.elapsed() > Duration::from_secs(15) {
                        break;
                    }
                }
                wait_closed(&mut s, Duration::from_secs(5));
                start.elapsed()
            })
        })
        .collect();
    // A slow but valid client: a card request every 1.5 s, within the idle
    // timeout each time, still cut off by the connection lifetime.
    let slow = {
        let mut s = connect_from("127.0.0.5", d.addr);
        thread::spawn(move || {
            let start = Instant::now();
            let mut answers = 0;
            s.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            while start.elapsed() < Duration::from_secs(15) {
                if s.0
                    .write_all(&frame(&encode_request(&Request::GetCard)))
                    .is_err()
                {
                    break;
                }
                match read_response(&mut s) {
                    Some(Response::Card(_)) => answers += 1,
                    _ => break,
                }
                thread::sleep(Duration::from_millis(1500));
            }
            (answers, start.elapsed())
        })
    };

    // Meanwhile, honest claims from 127.0.0.1, four at a time.
    let started = Instant::now();
    thread::scope(|s| {
        for chunk in honest.chunks(2) {
            let addr = d.addr;
            s.spawn(move || {
                for x in chunk {
                    let mut c = connect_from("127.0.0.1", addr);
                    match c.request(&x.claim()) {
                        Response::Claim(ClaimOutcome::Resolved { .. }) => {}
                        other => panic!("honest claim failed: {other:?}"),
                    }
                }
            });
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "honest claims took {:?}",
        started.elapsed()
    );

    // The 50 silent connections over the per-address limit got Busy.
    let mut busy = 0;
    let mut closed_idle = 0;
    for s in &mut silent {
        s.0.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match read_response(s) {
            Some(r) => {
                assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
                busy += 1;
            }
            None => closed_idle += 1,
        }
    }
    assert_eq!((busy, closed_idle), (50, 100));
    // Garbage costs the sender its connection after MAX_BAD_FRAMES.
    for g in garbage {
        assert_eq!(g.join().unwrap(), vtp_tp_daemon::server::MAX_BAD_FRAMES);
    }
    for mut n in noise {
        assert!(wait_closed(&mut n, Duration::from_secs(5)).is_some());
    }
    // Dribblers are cut off at the idle timeout (2 s), not after minutes.
    for t in dribblers {
        let took = t.join().unwrap();
        assert!(
            took < Duration::from_secs(6),
            "a dribbler held on for {took:?}"
        );
    }
    let (answers, took) = slow.join().unwrap();
    assert!(answers >= 3, "the slow client got {answers} answers");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "the slow client was closed after {took:?}"
    );

    // Still serving, and exactly the honest claims were resolved.
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
    assert_eq!(tp.journal_stats().0, honest.len() as u64);
    let log = d.log_text();
    assert!(
        log.contains("too many connections from this address"),
        "{log}"
    );
    assert!(log.contains("too many undecodable frames"), "{log}");
}

#[test]
fn identities_are_rate_limited_and_forgeries_do_not_count() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        t.replace(
            "idle_timeout_secs = 30",
            "idle_timeout_secs = 30\nidentity_rate_per_sec = 1\nidentity_burst = 2",
        )
    });
    let d = tp.start();
    let card = card_of(&d);
    let bob = identity("bob");
    let claims: Vec<Claim> = (0..4).map(|_| claim_for(&card, &bob)).collect();
    let mut c = d.connect();

    // Forged claims in Bob's name (his public card, a broken signature):
    // refused, and they do not use up Bob's budget.
    for _ in 0..10 {
        let mut forged = claims[3].clone();
        forged.signature.0[7] ^= 0x40;
        assert_eq!(
            code(&c.request(&Request::Claim(forged))),
            Some(ErrorCode::Rejected)
        );
    }
    // A burst of two...
    for claim in &claims[..2] {
        assert!(matches!(
            c.request(&Request::Claim(claim.clone())),
            Response::Claim(ClaimOutcome::Resolved { .. })
        ));
    }
    // ...then Busy, on the same connection, which stays open.
    let r = c.request(&Request::Claim(claims[2].clone()));
    assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
    let Response::Error(e) = &r else {
        unreachable!()
    };
    assert!(e.message.contains("rate limit"), "{}", e.message);
    assert!(e.message.contains(&bob.id().0.to_hex()), "{}", e.message);
    // Nothing was resolved for the refused claim.
    assert_eq!(tp.journal_stats().0, 2);
    // Another identity is not affected.
    let other = Exchange::new(&card, 3600);
    assert!(matches!(
        c.request(&other.claim()),
        Response::Claim(ClaimOutcome::Resolved { .. })
    ));
    // A second later Bob has one more.
    thread::sleep(Duration::from_millis(1100));
    assert!(matches!(
        c.request(&Request::Claim(claims[2].clone())),
        Response::Claim(ClaimOutcome::Resolved { .. })
    ));
    assert_eq!(
        code(&c.request(&Request::Claim(claims[3].clone()))),
        Some(ErrorCode::Busy)
    );
    assert_eq!(tp.journal_stats().0, 4);
    let metrics_log = d.log_text();
    assert!(!metrics_log.contains("panicked"), "{metrics_log}");
}
