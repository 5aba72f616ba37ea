//! The daemon over real sockets with a real SoftHSM token: claims, the
//! journal, bad frames, limits, restarts and shutdown.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::*;
use vtp_protocol::affidavit::Statement;
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::{domain, encode, signing_digest, Kind};
use vtp_protocol::envelope::Envelope;
use vtp_protocol::identity::test_sign;
use vtp_protocol::opening::unwrap_released_key;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::wire::{
    ClaimOutcome, ErrorCode, FetchRequest, ReceiptPage, Request, Response, UnclaimedRequest,
    WireError,
};

fn error_code(r: &Response) -> ErrorCode {
    match r {
        Response::Error(WireError { code, .. }) => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn error_text(r: &Response) -> String {
    match r {
        Response::Error(WireError { message, .. }) => message.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn outcome(r: Response) -> ClaimOutcome {
    match r {
        Response::Claim(o) => o,
        other => panic!("expected a claim outcome, got {other:?}"),
    }
}

#[test]
fn card_is_served_and_matches_the_one_init_wrote() {
    let tp = TestTp::new();
    let d = tp.start();
    let served = card_of(&d);
    let written = vtp_protocol::tp_card::TpCard::from_file(
        &std::fs::read(tp.path().join("tp-card.vtp")).unwrap(),
    )
    .unwrap();
    assert_eq!(served.id(), written.id());
    assert_eq!(served.body().name, "test TP");
    assert_eq!(served.body().enc_keys.len(), 1);
    // The PIN never reaches the log.
    let pin = std::fs::read_to_string(tp.pin_file()).unwrap();
    assert!(!d.log_text().contains(pin.trim()));
}

#[test]
fn honest_claim_is_resolved_recorded_and_repeatable() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    let x = Exchange::new(&card, 3600);

    let first = outcome(d.ask(&x.claim()));
    let ClaimOutcome::Resolved {
        affidavit,
        wrapped_km,
    } = &first
    else {
        panic!("expected Resolved, got {first:?}");
    };
    affidavit.verify(&card, &x.verified).unwrap();
    assert!(matches!(
        affidavit.body.statement,
        Statement::Resolved { .. }
    ));
    let km = unwrap_released_key(&x.bob, &x.verified, wrapped_km).unwrap();
    assert_eq!(*km, x.message_key, "Bob gets the message key");
    assert_eq!(tp.journal_stats(), (1, 0, 0));

    // Asking again (a new claim, later timestamp) gives the recorded answer.
    let mut conn = d.connect();
    for _ in 0..2 {
        assert_eq!(outcome(conn.request(&x.claim())), first);
    }
    assert_eq!(tp.journal_stats(), (1, 0, 0));

    // Alice fetches her receipt: one page, nothing after it.
    let fetch = |who, at, after| {
        Request::FetchReceipts(FetchRequest::new(
            who,
            card.id(),
            at,
            after,
            NonZeroU32::MAX,
        ))
    };
    match d.ask(&fetch(&x.alice, now(), 0)) {
        Response::Receipts(page) => {
            assert!(!page.more);
            assert_eq!(page.receipts.len(), 1);
            assert_eq!(&page.receipts[0].receipt, x.receipt.receipt());
            assert_eq!(&page.receipts[0].affidavit, affidavit);
        }
        other => panic!("{other:?}"),
    }
    // Nothing after its journal position.
    let seq = affidavit.body.journal.seq;
    let empty = Response::Receipts(ReceiptPage {
        receipts: vec![],
        more: false,
    });
    assert_eq!(d.ask(&fetch(&x.alice, now(), seq)), empty);
    assert_eq!(d.ask(&fetch(&x.alice, now(), u64::MAX)), empty);
    // Bob has no receipts as a sender.
    assert_eq!(d.ask(&fetch(&x.bob, now(), 0)), empty);
    // A stale fetch request is refused.
    let fetch = fetch(&x.alice, now() - 3600, 0);
    assert_eq!(error_code(&d.ask(&fetch)), ErrorCode::Deadline);
}

#[test]
fn concurrent_identical_claims_resolve_once() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    let x = Exchange::new(&card, 3600);
    let claim = x.claim();
    let addr = d.addr;
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| Conn::connect(addr).request(&claim)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(matches!(
        answers[0],
        Response::Claim(ClaimOutcome::Resolved { .. })
    ));
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "all answers identical"
    );
    assert_eq!(tp.journal_stats(), (1, 0, 0));
    // The token resolved once; the others waited and read the journal.
    let log = d.log_text();
    assert_eq!(
        log.matches("claim resolved and recorded").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("claim answered from the journal").count(),
        19,
        "{log}"
    );
}

#[test]
fn a_forged_header_around_someone_elses_z_does_not_block_the_genuine_claim() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    let x = Exchange::new(&card, 3600);

    // Mallory re-signs Alice's z under her own name.
    let mallory = identity("mallory");
    let mut forged: Envelope = x.envelope.clone();
    forged.header.sender = mallory.id();
    forged.sender_card = mallory.card().clone();
    forged.signature = test_sign(&mallory, &signing_digest(domain::ENVELOPE, &forged.header));
    let fv = forged.verify(&card).unwrap();
    let receipt = Receipt::issue(&x.bob, &fv, now()).verify(&fv).unwrap();
    let claim = Request::Claim(Claim::new(&x.bob, &fv, &receipt, now()));
    let verdict = outcome(d.ask(&claim));
    let ClaimOutcome::InvalidEnvelope { affidavit } = &verdict else {
        panic!("expected InvalidEnvelope, got {verdict:?}");
    };
    affidavit.verify(&card, &fv).unwrap();
    assert_eq!(outcome(d.ask(&claim)), verdict, "the verdict is recorded");
    assert_eq!(tp.journal_stats(), (0, 1, 0));

    // The genuine envelope still resolves.
    let genuine = outcome(d.ask(&x.claim()));
    assert!(
        matches!(genuine, ClaimOutcome::Resolved { .. }),
        "{genuine:?}"
    );
    assert_eq!(tp.journal_stats(), (1, 1, 0));
}

#[test]
fn bad_frames_get_errors_and_the_daemon_keeps_serving() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);

    let mut c = d.connect();
    // Not a vtp message at all.
    c.send_frame(b"hello, is this the TP?");
    assert_eq!(
        error_code(&c.read_response().unwrap()),
        ErrorCode::Malformed
    );
    // The right prefix, garbage postcard.
    c.send_frame(b"VTP\x08\x01\xff\xff\xff\xff\xff\xff\xff");
    assert_eq!(
        error_code(&c.read_response().unwrap()),
        ErrorCode::Malformed
    );
    // A response where a request belongs.
    c.send_frame(&encode(Kind::Response, &Response::Card(card.clone())));
    assert_eq!(
        error_code(&c.read_response().unwrap()),
        ErrorCode::Malformed
    );
    // Trailing bytes after a valid request.
    let mut padded = encode(Kind::Request, &Request::GetCard);
    padded.push(0);
    c.send_frame(&padded);
    assert_eq!(
        error_code(&c.read_response().unwrap()),
        ErrorCode::Malformed
    );
    // An empty frame.
    c.send_frame(b"");
    assert_eq!(
        error_code(&c.read_response().unwrap()),
        ErrorCode::Malformed
    );
    // A well-formed claim with a broken signature.
    let x = Exchange::new(&card, 3600);
    let mut claim = Claim::new(&x.bob, &x.verified, &x.receipt, now());
    claim.signature.0[10] ^= 1;
    assert_eq!(
        error_code(&c.request(&Request::Claim(claim))),
        ErrorCode::Rejected
    );
    // ... and the same connection still works.
    assert!(matches!(c.request(&Request::GetCard), Response::Card(_)));

    // An oversized frame: an error, then the connection is closed.
    let mut big = d.connect();
    let declared: u32 = 262_144 + 1;
    use std::io::Write;
    big.0.write_all(&declared.to_be_bytes()).unwrap();
    big.0.write_all(&[0u8; 1024]).unwrap();
    let r = big
        .read_response()
        .expect("an error response before closing");
    assert_eq!(error_code(&r), ErrorCode::Malformed);
    assert!(error_text(&r).contains("262144"), "{r:?}");
    assert!(big.is_closed());

    // A client that disconnects mid-frame.
    let mut half = d.connect();
    half.0.write_all(&100u32.to_be_bytes()).unwrap();
    half.0.write_all(b"partial").unwrap();
    drop(half);

    // Others are unaffected.
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
    assert!(matches!(c.request(&Request::GetCard), Response::Card(_)));
    assert_eq!(tp.journal_stats(), (0, 0, 0));
}

#[test]
fn connection_limit_and_idle_timeout() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        t.replace("max_connections = 1024", "max_connections = 2")
            .replace("idle_timeout_secs = 30", "idle_timeout_secs = 1")
    });
    let d = tp.start();
    let mut a = d.connect();
    let mut b = d.connect();
    assert!(matches!(a.request(&Request::GetCard), Response::Card(_)));
    assert!(matches!(b.request(&Request::GetCard), Response::Card(_)));
    let mut extra = d.connect();
    let busy = extra.read_response().expect("a Busy frame");
    assert_eq!(error_code(&busy), ErrorCode::Busy);
    assert!(extra.is_closed());

    // Idle connections are closed after the timeout, freeing their slots.
    std::thread::sleep(Duration::from_millis(1600));
    assert!(a.is_closed());
    assert!(b.is_closed());
    let mut fresh = d.connect();
    assert!(matches!(
        fresh.request(&Request::GetCard),
        Response::Card(_)
    ));
}

#[test]
fn a_restarted_daemon_returns_the_recorded_result() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    let x = Exchange::new(&card, 3600);
    let first = outcome(d.ask(&x.claim()));
    d.kill(); // a crash right after answering: the answer was committed

    let d = tp.start();
    assert_eq!(card_of(&d).id(), card.id(), "same TP after restart");
    assert_eq!(outcome(d.ask(&x.claim())), first);
    assert_eq!(tp.journal_stats(), (1, 0, 0));
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let tp = TestTp::new();
    let d = tp.start();
    let mut c = d.connect();
    assert!(matches!(c.request(&Request::GetCard), Response::Card(_)));
    let addr = d.addr;
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
    assert!(c.is_closed());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
}

#[test]
fn deadlines_are_judged_on_the_tp_clock_and_recorded_answers_outlive_them() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    let resolved = Exchange::new(&card, 400);
    let unclaimed = Exchange::new(&card, 400);
    let first = outcome(d.ask(&resolved.claim()));
    assert!(matches!(first, ClaimOutcome::Resolved { .. }));
    // Before the deadline there is no unclaimed certificate.
    let early = UnclaimedRequest::new(
        &unclaimed.alice,
        &unclaimed.verified,
        unclaimed.verified.header().trustees[0].tp,
        now(),
    );
    let r = d.ask(&Request::Unclaimed(early));
    assert_eq!(error_code(&r), ErrorCode::Deadline);
    assert!(error_text(&r).contains("too early"), "{r:?}");
    drop(d);

    // An hour later on the TP's clock (test hook).
    let later = 3600;
    let d = tp.start_with_env(&[("VTP_TEST_CLOCK_OFFSET_SECS", "3600")]);
    assert!(d.log_text().contains("TEST HOOK"), "a loud warning");
    // Bob re-asking after the deadline gets the recorded answer.
    assert_eq!(outcome(d.ask(&resolved.claim())), first);
    // A new claim after the deadline is refused.
    let r = d.ask(&unclaimed.claim());
    assert_eq!(error_code(&r), ErrorCode::Deadline, "{r:?}");
    // Alice gets an unclaimed certificate, the same one every time.
    let ask = || {
        let req = UnclaimedRequest::new(
            &unclaimed.alice,
            &unclaimed.verified,
            unclaimed.verified.header().trustees[0].tp,
            now() + later,
        );
        d.ask(&Request::Unclaimed(req))
    };
    let cert = match ask() {
        Response::Unclaimed(a) => a,
        other => panic!("{other:?}"),
    };
    cert.verify(&card, &unclaimed.verified).unwrap();
    assert_eq!(cert.body.statement, Statement::Unclaimed);
    assert_eq!(ask(), Response::Unclaimed(cert.clone()));
    // Bob may ask too: same certificate.
    let req = UnclaimedRequest::new(
        &unclaimed.bob,
        &unclaimed.verified,
        unclaimed.verified.header().trustees[0].tp,
        now() + later,
    );
    assert_eq!(d.ask(&Request::Unclaimed(req)), Response::Unclaimed(cert));
    // A stranger may not.
    let eve = identity("eve");
    let req = UnclaimedRequest::new(
        &eve,
        &unclaimed.verified,
        unclaimed.verified.header().trustees[0].tp,
        now() + later,
    );
    assert_eq!(
        error_code(&d.ask(&Request::Unclaimed(req))),
        ErrorCode::NotAuthorized
    );
    // No unclaimed certificate for a resolved envelope.
    let req = UnclaimedRequest::new(
        &resolved.alice,
        &resolved.verified,
        resolved.verified.header().trustees[0].tp,
        now() + later,
    );
    let r = d.ask(&Request::Unclaimed(req));
    assert_eq!(error_code(&r), ErrorCode::NotAuthorized);
    assert!(error_text(&r).contains("was resolved at"), "{r:?}");
    assert_eq!(tp.journal_stats(), (1, 0, 1));
    drop(d);

    // Even if the clock goes back, an envelope declared unclaimed stays so.
    let d = tp.start();
    let r = d.ask(&unclaimed.claim());
    assert_eq!(error_code(&r), ErrorCode::Deadline, "{r:?}");
    assert_eq!(tp.journal_stats(), (1, 0, 1));
}
