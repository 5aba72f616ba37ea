//! A rough check (ignored by default; not the benchmark): the daemon's claim
//! rate at concurrency 64 against the raw device resolve rate (decide + sign
//! on two threads, in this process, on the same token), and the p99 claim
//! latency. Run with
//! `cargo test --release -p vtp-tp-daemon --test throughput -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vtp_protocol::affidavit::ChainPosition;
use vtp_protocol::wire::{ClaimOutcome, Request, Response};
use vtp_protocol::Digest32;
use vtp_tp_daemon::clock::Clock;
use vtp_tp_daemon::config::Config;
use vtp_tp_daemon::journal::Journal;
use vtp_tp_daemon::operator;

const CLIENTS: usize = 64;

#[test]
#[ignore]
fn daemon_rate_against_the_raw_device_rate() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);

    // The raw device rate: the daemon's own TP, in this process.
    let config = Config::load(&tp.config).unwrap();
    let token = operator::open_token(&config).unwrap();
    let journal = Journal::open(&config.data_dir).unwrap();
    let live = operator::build_live(&config, &token, &journal, Clock::system(), "bench").unwrap();
    drop(journal);
    let raw_claims: Vec<_> = (0..600)
        .map(|_| {
            let x = Exchange::new(&card, 3600);
            let Request::Claim(c) = x.claim() else {
                unreachable!()
            };
            c.decide_fresh(live.tp.card(), now()).unwrap()
        })
        .collect();
    let at = ChainPosition {
        seq: 1,
        prev: Digest32([0; 32]),
    };
    let started = Instant::now();
    std::thread::scope(|s| {
        for half in raw_claims.chunks(raw_claims.len() / 2) {
            let tp = &live.tp;
            s.spawn(move || {
                for c in half {
                    tp.resolve(c, at).unwrap();
                }
            });
        }
    });
    let raw = raw_claims.len() as f64 / started.elapsed().as_secs_f64();

    // The daemon at concurrency 64.
    let per_client = 40;
    let claims: Vec<Vec<Request>> = (0..CLIENTS)
        .map(|_| {
            (0..per_client)
                .map(|_| Exchange::new(&card, 3600).claim())
                .collect()
        })
        .collect();
    let addr = d.addr;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = claims
            .iter()
            .map(|mine| {
                s.spawn(move || {
                    let mut conn = Conn::connect(addr);
                    conn.0.set_nodelay(true).unwrap();
                    mine.iter()
                        .map(|c| {
                            let t = Instant::now();
                            let r = conn.request(c);
                            assert!(
                                matches!(r, Response::Claim(ClaimOutcome::Resolved { .. })),
                                "{r:?}"
                            );
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "raw device {raw:.0}/s; daemon {rate:.0}/s = {:.2} x raw; latency p50 {:?} p99 {:?}",
        rate / raw,
        p(0.5),
        p(0.99)
    );
    assert!(d.terminate().success());
}
