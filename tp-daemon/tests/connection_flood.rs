//! Connection exhaustion against a real daemon over real sockets: an
//! attacker on four addresses keeps 2 000 connections going (silent ones,
//! ones dribbling a frame a byte a second, half frames, a valid `GetCard`
//! in a loop) and re-opens every one the daemon closes, while an honest
//! client on a fifth address fetches the card and claims — and must be
//! served at once, every time. Also the two rules that make this work, on
//! their own: the first-frame timeout, and who is evicted when the
//! connection table is full (see the module doc of `tp-daemon/src/server.rs`).
//!
//! Loopback only: the attacker binds 127.0.0.2 .. 127.0.0.5 before
//! connecting; the honest client is 127.0.0.1.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use vtp_protocol::wire::{
    decode_response, encode_request, ClaimOutcome, ErrorCode, Request, Response, WireError,
};

const ATTACKERS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
];
/// Attacker connections per address: 4 × 500 = 2 000, against the default
/// `max_connections` 1 024 and `max_connections_per_ip` 256.
const PER_ADDRESS: usize = 500;
/// How soon the attacker re-opens a connection the daemon closed.
const REOPEN_PAUSE: Duration = Duration::from_millis(500);
/// Honest rounds (a card fetch and a claim each), `ROUND_GAP` apart: more
/// than one first-frame timeout (5 s), so the attacker's silent
/// connections are cut off and re-opened during the test.
const ROUNDS: usize = 4;
const ROUND_GAP: Duration = Duration::from_secs(2);

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(WireError { code, .. }) => Some(*code),
        _ => None,
    }
}

/// What one attacker connection does until the daemon closes it.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Sends nothing.
    Silent,
    /// Announces a 1 000-byte frame and sends one byte of it a second.
    Dribble,
    /// Sends half of a frame, then nothing.
    HalfFrame,
    /// A valid `GetCard`, its answer read, every second.
    CardLoop,
}

#[derive(Default)]
struct FloodStats {
    /// Attacker connections established now.
    open: AtomicI64,
    peak_open: AtomicI64,
    /// Connections established in all.
    opened: AtomicU64,
    /// Cards the `CardLoop` connections were answered.
    cards: AtomicU64,
}

/// The attacker: 2 000 tasks on a runtime of their own, until stopped.
struct Flood {
    stop: CancellationToken,
    stats: Arc<FloodStats>,
    thread: thread::JoinHandle<()>,
}

impl Flood {
    fn start(addr: SocketAddr) -> Flood {
        let stop = CancellationToken::new();
        let stats = Arc::new(FloodStats::default());
        let thread = {
            let (stop, stats) = (stop.clone(), Arc::clone(&stats));
            thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut tasks = JoinSet::new();
                    for source in ATTACKERS {
                        for i in 0..PER_ADDRESS {
                            let behaviour = match i % 4 {
                                0 => Behaviour::Silent,
                                1 => Behaviour::Dribble,
                                2 => Behaviour::HalfFrame,
                                _ => Behaviour::CardLoop,
                            };
                            // Spread the first connects over ~0.5 s.
                            let delay = Duration::from_millis((i % 100) as u64 * 5);
                            tasks.spawn(attacker(
                                source,
                                addr,
                                behaviour,
                                delay,
                                Arc::clone(&stats),
                                stop.clone(),
                            ));
                        }
                    }
                    while tasks.join_next().await.is_some() {}
                });
            })
        };
        Flood {
            stop,
            stats,
            thread,
        }
    }

    fn stop(self) -> Arc<FloodStats> {
        self.stop.cancel();
        self.thread.join().unwrap();
        self.stats
    }
}

async fn attacker(
    source: Ipv4Addr,
    addr: SocketAddr,
    behaviour: Behaviour,
    delay: Duration,
    stats: Arc<FloodStats>,
    stop: CancellationToken,
) {
    tokio::time::sleep(delay).await;
    while !stop.is_cancelled() {
        let connect = async {
            let sock = TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
            sock.connect(addr).await
        };
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(10), connect) => c,
        };
        if let Ok(Ok(stream)) = connected {
            stats.opened.fetch_add(1, Ordering::Relaxed);
            let now = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
            stats.peak_open.fetch_max(now, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => {}
                () = behave(stream, behaviour, &stats) => {}
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            () = tokio::time::sleep(REOPEN_PAUSE) => {}
        }
    }
}

/// Run `behaviour` on `stream` until the daemon closes it.
async fn behave(stream: TcpStream, behaviour: Behaviour, stats: &FloodStats) {
    let (mut r, mut w) = stream.into_split();
    if let Behaviour::CardLoop = behaviour {
        let request = frame(&encode_request(&Request::GetCard));
        loop {
            if w.write_all(&request).await.is_err() {
                return;
            }
            let mut len = [0u8; 4];
            if r.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            if r.read_exact(&mut body).await.is_err() {
                return;
            }
            match decode_response(&body) {
                Ok(Response::Card(_)) => stats.cards.fetch_add(1, Ordering::Relaxed),
                _ => return, // Busy: refused
            };
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let closed = async move {
        let mut buf = [0u8; 512];
        while let Ok(1..) = r.read(&mut buf).await {}
    };
    let talk = async move {
        match behaviour {
            Behaviour::Dribble => {
                if w.write_all(&1000u32.to_be_bytes()).await.is_ok() {
                    while w.write_all(&[0x5a]).await.is_ok() {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            Behaviour::HalfFrame => {
                let mut half = 600u32.to_be_bytes().to_vec();
                half.extend_from_slice(&[0xa5; 300]);
                let _ = w.write_all(&half).await;
            }
            Behaviour::Silent | Behaviour::CardLoop => {}
        }
        // Keep the write half open (dropping it would send a FIN).
        std::future::pending::<()>().await;
        drop(w);
    };
    tokio::select! {
        () = closed => {}
        () = talk => {}
    }
}

/// One honest request from 127.0.0.1 on a fresh connection, one attempt;
/// panics naming `what` if the daemon does not answer it.
fn honest(d: &Daemon, request: &Request, what: &str) -> Response {
    let mut c = Conn::connect(d.addr);
    c.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if let Err(e) = c.0.write_all(&frame(&encode_request(request))) {
        panic!("{what}: the TP dropped the connection before the request was sent: {e}");
    }
    c.read_response()
        .unwrap_or_else(|| panic!("{what}: the TP closed the connection without an answer"))
}

/// Poll `/metrics` until the daemon serves at least `n` connections.
fn wait_connections(d: &Daemon, n: f64, limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let open = d.metric("vtp_connections_open").unwrap_or(0.0);
        if open >= n {
            return open;
        }
        assert!(
            start.elapsed() < limit,
            "the daemon serves {open} connections, not {n}, after {limit:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn counter(d: &Daemon, series: &str) -> f64 {
    d.metric(series).unwrap_or(0.0)
}

#[test]
fn honest_claims_succeed_while_2000_connections_flood_the_tp() {
    assert!(raise_open_file_limit() >= 4096, "need file descriptors");
    let tp = TestTp::new();
    // The default limits: max_connections 1024, max_connections_per_ip
    // 256 (4 × 256 fill the table), idle 30 s, first frame 5 s.
    let d = tp.start_with(&["--allow-root", "--metrics-listen", "127.0.0.1:0"], &[]);
    let card = card_of(&d);
    let exchanges: Vec<Exchange> = (0..ROUNDS).map(|_| Exchange::new(&card, 3600)).collect();

    let flood = Flood::start(d.addr);
    // The attacker fills the table.
    wait_connections(&d, 1016.0, Duration::from_secs(30));

    let started = Instant::now();
    let mut took = Vec::new();
    for (round, x) in exchanges.iter().enumerate() {
        // Each round starts with the TP full of attacker connections.
        let open = wait_connections(&d, 1016.0, Duration::from_secs(15));
        let t = Instant::now();
        match honest(&d, &Request::GetCard, &format!("round {round}: GetCard")) {
            Response::Card(c) => assert_eq!(c.id(), card.id()),
            other => panic!(
                "round {round}: the honest GetCard (with {open} connections open) got {other:?}"
            ),
        }
        match honest(&d, &x.claim(), &format!("round {round}: claim")) {
            Response::Claim(ClaimOutcome::Resolved { .. }) => {}
            other => panic!(
                "round {round}: the honest claim (with {open} connections open) got {other:?}"
            ),
        }
        took.push(t.elapsed());
        thread::sleep(ROUND_GAP);
    }
    let honest_phase = started.elapsed();
    let evicted = counter(&d, "vtp_connections_dropped_total{reason=\"evicted\"}");
    let first_frame = counter(
        &d,
        "vtp_connections_dropped_total{reason=\"first_frame_timeout\"}",
    );
    let refused = counter(
        &d,
        "vtp_refusals_total{request=\"connection\",reason=\"busy\"}",
    );
    let stats = flood.stop();
    let (opened, peak, cards) = (
        stats.opened.load(Ordering::Relaxed),
        stats.peak_open.load(Ordering::Relaxed),
        stats.cards.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {opened} attacker connections opened (peak {peak} at once), {cards} cards to \
         the attacker; daemon: {evicted} evicted, {first_frame} first-frame timeouts, {refused} \
         refused; honest rounds took {took:?}"
    );

    // Each honest round was served at once, all within 30 s.
    assert!(
        took.iter().all(|t| *t < Duration::from_secs(10)),
        "{took:?}"
    );
    assert!(honest_phase < Duration::from_secs(30), "{honest_phase:?}");
    // The flood was real: 2 000 attacker connections and thousands
    // re-opened, the table full, connections evicted for the
    // honest client, silent ones cut off at the first-frame timeout, the
    // surplus refused, and the attacker's valid requests served too.
    assert!(opened >= 2 * 2000, "only {opened} attacker connections");
    assert!(peak >= 1024, "only {peak} attacker connections at once");
    assert!(evicted >= ROUNDS as f64 * 2.0, "{evicted} evictions");
    assert!(first_frame >= 200.0, "{first_frame} first-frame timeouts");
    assert!(refused > 0.0);
    assert!(cards > 0);
    // Exactly the honest claims were resolved, and the TP still serves.
    assert_eq!(tp.journal_stats().0, ROUNDS as u64);
    assert!(matches!(
        honest(&d, &Request::GetCard, "after the flood"),
        Response::Card(_)
    ));
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("evicted the longest-waiting connection"),
        "{log}"
    );
    // Warnings are throttled: not a line per refused connection.
    let lines = log
        .matches("too many connections from this address")
        .count();
    assert!(lines <= 10, "{lines} refusal warnings");
}

/// Wait for the daemon to close `c` (EOF or reset); how long it took, or
/// `None` if it is still open after `limit`.
fn closed_within(c: &mut Conn, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    c.0.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 256];
    while start.elapsed() < limit {
        match c.0.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn attacker_ip(i: usize) -> IpAddr {
    IpAddr::V4(ATTACKERS[i])
}

#[test]
fn silent_connections_are_closed_at_the_first_frame_timeout_served_ones_are_not() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        t.replace(
            "idle_timeout_secs = 30",
            "idle_timeout_secs = 30\nfirst_frame_timeout_secs = 1",
        )
    });
    let d = tp.start();
    let mut silent = Conn::connect_from(attacker_ip(0), d.addr);
    let mut half = Conn::connect_from(attacker_ip(0), d.addr);
    // 3 bytes of a 256-byte frame.
    half.0.write_all(&[0, 0, 1, 0, 1, 2, 3]).unwrap();
    let mut served = Conn::connect_from(attacker_ip(1), d.addr);
    assert!(matches!(
        served.request(&Request::GetCard),
        Response::Card(_)
    ));

    let silent_took = closed_within(&mut silent, Duration::from_secs(5));
    let half_took = closed_within(&mut half, Duration::from_secs(5));
    for took in [silent_took, half_took] {
        let took = took.expect("still open 5 s after a 1 s first-frame timeout");
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
    }
    // A connection past its first request waits for the idle timeout (30 s).
    assert_eq!(closed_within(&mut served, Duration::from_millis(500)), None);
    served
        .0
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(matches!(
        served.request(&Request::GetCard),
        Response::Card(_)
    ));
}

#[test]
fn a_full_table_makes_room_for_a_smaller_holder_not_for_the_biggest() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        t.replace(
            "max_connections = 1024",
            "max_connections = 8\nmax_connections_per_ip = 8",
        )
    });
    let d = tp.start_with(&["--allow-root", "--metrics-listen", "127.0.0.1:0"], &[]);
    // 127.0.0.2 takes every slot, one after the other.
    let mut hog: Vec<Conn> = (0..8)
        .map(|_| Conn::connect_from(attacker_ip(0), d.addr))
        .collect();
    wait_connections(&d, 8.0, Duration::from_secs(10));

    // A ninth from the address holding everything: Busy, nobody evicted.
    let mut ninth = Conn::connect_from(attacker_ip(0), d.addr);
    let r = ninth.read_response().expect("a Busy frame");
    assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");

    // The honest client on another address is served; the hog's
    // longest-waiting connection (its first) made room.
    let mut c = d.connect();
    assert!(matches!(c.request(&Request::GetCard), Response::Card(_)));
    assert!(closed_within(&mut hog[0], Duration::from_secs(2)).is_some());
    for h in &mut hog[1..] {
        assert_eq!(closed_within(h, Duration::from_millis(100)), None);
    }
    // A third address too (the hog, with 7, still holds the most).
    let mut third = Conn::connect_from(attacker_ip(1), d.addr);
    assert!(matches!(
        third.request(&Request::GetCard),
        Response::Card(_)
    ));
    assert!(closed_within(&mut hog[1], Duration::from_secs(2)).is_some());
    assert_eq!(
        counter(&d, "vtp_connections_dropped_total{reason=\"evicted\"}"),
        2.0
    );
    // The hog (6 slots) still holds the most: it cannot push anyone out.
    let mut more = Conn::connect_from(attacker_ip(0), d.addr);
    let r = more.read_response().expect("a Busy frame");
    assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
    // 127.0.0.3 (1 slot) may, but only from the hog, never from the
    // honest client (1 slot, waiting after its answer).
    let _third2 = Conn::connect_from(attacker_ip(1), d.addr);
    assert!(closed_within(&mut hog[2], Duration::from_secs(2)).is_some());
    c.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(c.request(&Request::GetCard), Response::Card(_)));
    assert!(d
        .log_text()
        .contains("evicted the longest-waiting connection"));
}

/// Start a daemon whose open-file limit is `soft` / `hard`.
fn start_with_nofile(tp: &TestTp, soft: u64, hard: u64) -> Daemon {
    use std::os::unix::process::CommandExt;
    tp.start_with_command(&["--allow-root"], &[], |cmd| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft as libc::rlim_t,
                    rlim_max: hard as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    })
}

/// The daemon's own `RLIMIT_NOFILE` soft limit, from /proc.
fn soft_nofile(d: &Daemon) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn the_open_file_limit_is_raised_for_max_connections_or_the_table_shrinks_to_fit() {
    let reserve = vtp_tp_daemon::server::FD_RESERVE as u64;
    let tp = TestTp::new();
    // Soft 1024 below what 1024 connections need, hard limit above it:
    // raised to exactly max_connections + the reserve.
    let d = start_with_nofile(&tp, 1024, 4096);
    assert_eq!(soft_nofile(&d), 1024 + reserve);
    let log = d.wait_log("raised the open-file limit", 1);
    assert!(log.contains("from=1024"), "{log}");
    assert!(!log.contains("cannot hold max_connections"), "{log}");
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
    d.terminate();

    // Hard limit too low: the daemon serves what fits and says so.
    let hard = reserve + 100;
    let d = start_with_nofile(&tp, 256, hard);
    assert_eq!(soft_nofile(&d), hard);
    let log = d.wait_log("cannot hold max_connections", 1);
    assert!(log.contains("serving 100 connections at once"), "{log}");
    // ...and still admits by the usual rule once those 100 are taken.
    let hog: Vec<Conn> = (0..100)
        .map(|_| Conn::connect_from(attacker_ip(0), d.addr))
        .collect();
    let mut extra = Conn::connect_from(attacker_ip(0), d.addr);
    let r = extra.read_response().expect("a Busy frame");
    assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
    let mut c = d.connect();
    c.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(c.request(&Request::GetCard), Response::Card(_)));
    drop(hog);
}
