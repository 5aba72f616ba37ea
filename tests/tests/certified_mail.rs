//! The certified-mail exchange end to end: a real SoftHSM token, a real
//! `tp-daemon` process on loopback, parties acting through the real `vtp` CLI.
//! Numbers refer to the test list of issue 2.

use std::path::Path;

use vtp_e2e::{cheat, flip_byte, sha256_file, vtp, Party, Tp};

fn p(path: &Path) -> String {
    path.display().to_string()
}

struct World {
    tp: Tp,
    alice: Party,
    bob: Party,
    msg: std::path::PathBuf,
}

fn world() -> World {
    let mut tp = Tp::init();
    tp.start();
    let root = tp.dir.path().to_path_buf();
    let alice = Party::new(&root, "alice");
    let bob = Party::new(&root, "bob");
    let msg = root.join("message.txt");
    std::fs::write(
        &msg,
        b"Dear Bob, the signed lease is attached.\n".repeat(100),
    )
    .unwrap();
    World {
        tp,
        alice,
        bob,
        msg,
    }
}

impl World {
    fn send(&self, deadline: &str) -> std::path::PathBuf {
        let env = self.alice.path("envelope.vtp");
        vtp([
            "send",
            "--as",
            &p(&self.alice.id),
            "--to",
            &p(&self.bob.card),
            "--tp",
            &p(&self.tp.card()),
            "--deadline",
            deadline,
            "--in",
            &p(&self.msg),
            "--out",
            &p(&env),
        ])
        .ok();
        env
    }
    /// Bob accepts; the receipt is named after the envelope file. Bob will
    /// accept as little as one minute before the deadline (the TP's minimum).
    fn accept(&self, env: &Path) -> std::path::PathBuf {
        let name = env.file_stem().unwrap().to_string_lossy();
        let receipt = self.bob.path(&format!("{name}.receipt.vtp"));
        vtp([
            "accept",
            "--as",
            &p(&self.bob.id),
            "--tp",
            &p(&self.tp.card()),
            &p(env),
            "--out",
            &p(&receipt),
            "--min-time-left",
            "60s",
        ])
        .ok();
        receipt
    }
    fn claim(&self, env: &Path, receipt: &Path, out: &str) -> vtp_e2e::Run {
        vtp([
            "claim",
            "--as",
            &p(&self.bob.id),
            "--tp-addr",
            &self.tp.addr,
            &p(env),
            &p(receipt),
            "--out",
            &p(&self.bob.path(out)),
            "--affidavit-out",
            &p(&self.bob.path(&format!("{out}.affidavit"))),
        ])
    }
    fn resolved_rows(&self) -> i64 {
        self.tp.journal_rows("resolved")
    }
    fn verify_json(&self, env: &Path, receipt: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec![
            "verify".to_string(),
            "--tp".into(),
            p(&self.tp.card()),
            p(env),
            p(receipt),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let r = vtp(args);
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "verify --json printed no JSON ({e}): {} / {}",
                r.stdout, r.stderr
            )
        });
        (r.status, v)
    }
}

/// 1. Honest exchange: Bob gets the message, Alice the receipt, the TP never hears of it.
#[test]
fn t01_honest_exchange_never_touches_the_tp() {
    let w = world();
    let env = w.send("1h");
    let receipt = w.accept(&env);
    let opening = w.alice.path("opening.vtp");
    vtp([
        "reveal",
        "--as",
        &p(&w.alice.id),
        &p(&env),
        &p(&receipt),
        "--out",
        &p(&opening),
    ])
    .ok();
    let got = w.bob.path("message.txt");
    vtp([
        "open",
        "--as",
        &p(&w.bob.id),
        &p(&env),
        &p(&opening),
        "--out",
        &p(&got),
    ])
    .ok();
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&w.msg).unwrap());
    assert_eq!(
        w.resolved_rows(),
        0,
        "an honest exchange must not reach the TP journal"
    );
    let (code, v) = w.verify_json(
        &env,
        &receipt,
        &["--opening", &p(&opening), "--message", &p(&w.msg)],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["valid"], true);
    assert_eq!(v["delivered_via"], "opening");
    assert_eq!(v["message_sha256"], sha256_file(&w.msg));
}

/// 2. Alice withholds the opening: Bob claims and gets the message; Alice
///    fetches the receipt and the TP's affidavit.
#[test]
fn t02_withheld_opening_is_resolved_by_the_tp() {
    let w = world();
    let env = w.send("1h");
    let receipt = w.accept(&env);
    w.claim(&env, &receipt, "msg").ok();
    assert_eq!(
        std::fs::read(w.bob.path("msg")).unwrap(),
        std::fs::read(&w.msg).unwrap()
    );
    assert_eq!(w.resolved_rows(), 1);
    let out = w.alice.path("receipts");
    vtp([
        "receipts",
        "--as",
        &p(&w.alice.id),
        "--tp-addr",
        &w.tp.addr,
        "--out-dir",
        &p(&out),
    ])
    .ok();
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let aff = files
        .iter()
        .find(|f| p(f).ends_with(".affidavit.vtp"))
        .expect("affidavit fetched");
    let rec = files
        .iter()
        .find(|f| p(f).ends_with(".receipt.vtp"))
        .expect("receipt fetched");
    let (code, v) = w.verify_json(
        &env,
        rec,
        &["--affidavit", &p(aff), "--message", &p(&w.msg)],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["delivered_via"], "trusted-party");
    assert_eq!(v["message_sha256"], sha256_file(&w.msg));
}

/// 3. Bob goes straight to the TP and never gives Alice the receipt: Alice
///    still gets it from the TP.
#[test]
fn t03_receipt_reaches_alice_without_bob() {
    let w = world();
    let env = w.send("1h");
    let receipt = w.accept(&env); // stays in Bob's directory
    w.claim(&env, &receipt, "msg").ok();
    let out = w.alice.path("receipts");
    let r = vtp([
        "receipts",
        "--as",
        &p(&w.alice.id),
        "--tp-addr",
        &w.tp.addr,
        "--out-dir",
        &p(&out),
    ])
    .ok();
    assert!(r.stdout.contains('1'), "{}", r.stdout);
    let rec = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| p(f).ends_with(".receipt.vtp"))
        .expect("receipt");
    assert_eq!(
        std::fs::read(rec).unwrap(),
        std::fs::read(&receipt).unwrap(),
        "the very receipt Bob signed"
    );
    // Bob's identity cannot fetch Alice's receipts.
    let bobs = w.bob.path("receipts");
    vtp([
        "receipts",
        "--as",
        &p(&w.bob.id),
        "--tp-addr",
        &w.tp.addr,
        "--out-dir",
        &p(&bobs),
    ])
    .ok();
    assert_eq!(std::fs::read_dir(&bobs).map(|d| d.count()).unwrap_or(0), 0);
}

/// 4. A wrong opening: Bob's `open` refuses it, his claim succeeds.
#[test]
fn t04_wrong_opening_refused_then_claim() {
    let w = world();
    let env = w.send("1h");
    let receipt = w.accept(&env);
    let opening = w.alice.path("opening.vtp");
    vtp([
        "reveal",
        "--as",
        &p(&w.alice.id),
        &p(&env),
        &p(&receipt),
        "--out",
        &p(&opening),
    ])
    .ok();
    flip_byte(&opening, -1); // inside the secret
    let got = w.bob.path("message.txt");
    vtp([
        "open",
        "--as",
        &p(&w.bob.id),
        &p(&env),
        &p(&opening),
        "--out",
        &p(&got),
    ])
    .fails();
    assert!(!got.exists(), "nothing written on a refused opening");
    w.claim(&env, &receipt, "msg").ok();
    assert_eq!(
        std::fs::read(w.bob.path("msg")).unwrap(),
        std::fs::read(&w.msg).unwrap()
    );
}

/// 5. Malformed z: the TP signs an invalid-envelope affidavit and the judge
///    rejects Alice's receipt. Both kinds: z that decrypts but disagrees with
///    the header, and z that does not decrypt at all.
#[test]
fn t05_malformed_z_voids_the_receipt() {
    let w = world();
    // (a) inside disagrees: Alice puts another recipient inside z.
    let env = w.alice.path("bad-inside.vtp");
    cheat::envelope_with_bad_inside(
        &w.alice.id,
        &w.bob.card,
        &w.tp.card(),
        b"hello",
        3600,
        &env,
        |inside| {
            inside.recipient = inside.sender;
        },
    );
    // (b) does not decrypt: flip a byte of z's sealed part and re-sign the header.
    let env2 = w.alice.path("undecryptable.vtp");
    let good = w.send("1h");
    let (mut e, cm) = cheat::read_envelope(&good);
    let last = e.zs[0].sealed.len() - 1;
    e.zs[0].sealed[last] ^= 1;
    e.header.trustees[0].z_hash = e.zs[0].hash();
    let bad = cheat::reframe(&w.alice.id, e.header.clone(), e.zs[0].clone(), &w.tp.card());
    cheat::write_envelope(&env2, &bad, &cm);

    for (i, env) in [env, env2].iter().enumerate() {
        let receipt = w.accept(env); // Bob cannot tell before the TP decrypts
        let out = format!("msg{i}");
        let r = w.claim(env, &receipt, &out).fails();
        assert!(r.stderr.contains("invalid"), "{}", r.stderr);
        assert!(!w.bob.path(&out).exists());
        let aff = w.bob.path(&format!("{out}.affidavit"));
        assert!(
            aff.exists(),
            "the invalid-envelope affidavit is kept as evidence"
        );
        let (code, v) = w.verify_json(env, &receipt, &["--affidavit", &p(&aff)]);
        assert_ne!(code, 0);
        assert_eq!(v["valid"], false);
        assert!(v["reason"].as_str().unwrap().contains("void"), "{v}");
        // Alice gets no receipt for it.
        let dir = w.alice.path(&format!("receipts{i}"));
        vtp([
            "receipts",
            "--as",
            &p(&w.alice.id),
            "--tp-addr",
            &w.tp.addr,
            "--out-dir",
            &p(&dir),
        ])
        .ok();
        assert_eq!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0), 0);
    }
    assert_eq!(w.resolved_rows(), 0);
}

/// 6. Micali's Simultaneous Electronic Transactions' "Chris" attack: Chris lifts Alice's z for Bob into his own
///    envelope; nothing is decrypted for him, and Bob's own claim still works.
#[test]
fn t06_chris_gets_nothing_and_bob_is_not_blocked() {
    let w = world();
    let chris = Party::new(w.tp.dir.path(), "chris");
    let env = w.send("1h");
    let (e, cm) = cheat::read_envelope(&env);
    let chris_id = cheat::identity(&chris.id).id();
    let mut h = e.header.clone();
    h.sender = chris_id;
    h.recipient = chris_id;
    let forged = cheat::reframe(&chris.id, h, e.zs[0].clone(), &w.tp.card());
    let fenv = chris.path("lifted.vtp");
    cheat::write_envelope(&fenv, &forged, &cm);
    let freceipt = chris.path("receipt.vtp");
    vtp([
        "accept",
        "--as",
        &p(&chris.id),
        "--tp",
        &p(&w.tp.card()),
        &p(&fenv),
        "--out",
        &p(&freceipt),
    ])
    .ok();
    let out = chris.path("stolen.txt");
    let r = vtp([
        "claim",
        "--as",
        &p(&chris.id),
        "--tp-addr",
        &w.tp.addr,
        &p(&fenv),
        &p(&freceipt),
        "--out",
        &p(&out),
    ])
    .fails();
    assert!(r.stderr.contains("invalid"), "{}", r.stderr);
    assert!(!out.exists());
    assert_eq!(w.resolved_rows(), 0);
    // The genuine claim for the same z is unaffected by Chris's verdict.
    let receipt = w.accept(&env);
    w.claim(&env, &receipt, "msg").ok();
    assert_eq!(
        std::fs::read(w.bob.path("msg")).unwrap(),
        std::fs::read(&w.msg).unwrap()
    );
}

/// 7. Replays and duplicates: the same claim twice, then 20 concurrent
///    identical claims: one journal entry, identical answers.
#[test]
fn t07_replayed_and_concurrent_claims_resolve_once() {
    let w = world();
    let env = w.send("1h");
    let receipt = w.accept(&env);
    w.claim(&env, &receipt, "m0").ok();
    w.claim(&env, &receipt, "m1").ok();
    let first = std::fs::read(w.bob.path("m0.affidavit")).unwrap();
    assert_eq!(first, std::fs::read(w.bob.path("m1.affidavit")).unwrap());
    // A second envelope, claimed by 20 processes at once.
    let env2 = w.alice.path("envelope2.vtp");
    vtp([
        "send",
        "--as",
        &p(&w.alice.id),
        "--to",
        &p(&w.bob.card),
        "--tp",
        &p(&w.tp.card()),
        "--deadline",
        "1h",
        "--in",
        &p(&w.msg),
        "--out",
        &p(&env2),
    ])
    .ok();
    let receipt2 = w.bob.path("receipt2.vtp");
    vtp([
        "accept",
        "--as",
        &p(&w.bob.id),
        "--tp",
        &p(&w.tp.card()),
        &p(&env2),
        "--out",
        &p(&receipt2),
    ])
    .ok();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let args = vec![
                "claim".to_string(),
                "--as".into(),
                p(&w.bob.id),
                "--tp-addr".into(),
                w.tp.addr.clone(),
                p(&env2),
                p(&receipt2),
                "--out".into(),
                p(&w.bob.path(&format!("k{i}"))),
                "--affidavit-out".into(),
                p(&w.bob.path(&format!("k{i}.aff"))),
            ];
            std::thread::spawn(move || vtp(args))
        })
        .collect();
    for h in handles {
        h.join().unwrap().ok();
    }
    let reference = std::fs::read(w.bob.path("k0.aff")).unwrap();
    for i in 0..20 {
        assert_eq!(
            std::fs::read(w.bob.path(&format!("k{i}.aff"))).unwrap(),
            reference,
            "answer {i} differs"
        );
        assert_eq!(
            std::fs::read(w.bob.path(&format!("k{i}"))).unwrap(),
            std::fs::read(&w.msg).unwrap()
        );
    }
    assert_eq!(w.resolved_rows(), 2, "one row per envelope");
}

/// 8. Deadlines: a claim at or after T is refused; `unclaimed` works only
///    after T and only if the envelope was never resolved. The daemon's clock
///    is moved forward (by the allowed skew) with its labelled test hook, and
///    a claim window of 1 s passes in real time.
#[test]
fn t08_deadline_rules() {
    let mut w = world();
    w.tp.kill();
    w.tp.short_claim_window();
    w.tp.start();
    let sent = vtp_e2e::cheat::now();
    let env = w.send(Tp::SHORT_DEADLINE);
    let receipt = w.accept(&env);
    // Before T: no unclaimed certificate.
    let cert = w.bob.path("unclaimed.vtp");
    let r = vtp([
        "unclaimed",
        "--as",
        &p(&w.bob.id),
        "--tp-addr",
        &w.tp.addr,
        &p(&env),
        "--out",
        &p(&cert),
    ])
    .fails();
    assert!(
        r.stderr.to_lowercase().contains("deadline") || r.stderr.contains("early"),
        "{}",
        r.stderr
    );
    // A resolved envelope never gets one.
    let env_resolved = w.alice.path("resolved.vtp");
    vtp([
        "send",
        "--as",
        &p(&w.alice.id),
        "--to",
        &p(&w.bob.card),
        "--tp",
        &p(&w.tp.card()),
        "--deadline",
        Tp::SHORT_DEADLINE,
        "--in",
        &p(&w.msg),
        "--out",
        &p(&env_resolved),
    ])
    .ok();
    let rec_resolved = w.accept(&env_resolved);
    w.claim(&env_resolved, &rec_resolved, "early").ok();

    // The TP's clock 300 s ahead, and the window passed: past both deadlines.
    w.tp.pass_short_deadline(sent);
    let r = w.claim(&env, &receipt, "late").fails();
    assert!(r.stderr.contains("deadline"), "{}", r.stderr);
    assert!(!w.bob.path("late").exists());
    vtp([
        "unclaimed",
        "--as",
        &p(&w.bob.id),
        "--tp-addr",
        &w.tp.addr,
        &p(&env),
        "--out",
        &p(&cert),
    ])
    .ok();
    assert!(cert.exists());
    // Alice may ask too, and gets the same recorded certificate.
    let cert2 = w.alice.path("unclaimed.vtp");
    vtp([
        "unclaimed",
        "--as",
        &p(&w.alice.id),
        "--tp-addr",
        &w.tp.addr,
        &p(&env),
        "--out",
        &p(&cert2),
    ])
    .ok();
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        std::fs::read(&cert2).unwrap()
    );
    // The judge: an unclaimed certificate proves no delivery.
    let (code, v) = w.verify_json(&env, &receipt, &["--affidavit", &p(&cert)]);
    assert_ne!(code, 0);
    assert_eq!(v["valid"], false);
    // The resolved one: refused, and Bob re-asking still gets his recorded answer.
    let out = w.alice.path("nope.vtp");
    vtp([
        "unclaimed",
        "--as",
        &p(&w.alice.id),
        "--tp-addr",
        &w.tp.addr,
        &p(&env_resolved),
        "--out",
        &p(&out),
    ])
    .fails();
    w.claim(&env_resolved, &rec_resolved, "again").ok();
    assert_eq!(
        std::fs::read(w.bob.path("again.affidavit")).unwrap(),
        std::fs::read(w.bob.path("early.affidavit")).unwrap()
    );
}

/// 11. Restart: a resolved claim is still served after a kill -9 and restart.
#[test]
fn t11_resolution_survives_restart() {
    let mut w = world();
    let env = w.send("1h");
    let receipt = w.accept(&env);
    w.claim(&env, &receipt, "before").ok();
    w.tp.restart();
    w.claim(&env, &receipt, "after").ok();
    assert_eq!(
        std::fs::read(w.bob.path("before.affidavit")).unwrap(),
        std::fs::read(w.bob.path("after.affidavit")).unwrap()
    );
    let out = w.alice.path("receipts");
    vtp([
        "receipts",
        "--as",
        &p(&w.alice.id),
        "--tp-addr",
        &w.tp.addr,
        "--out-dir",
        &p(&out),
    ])
    .ok();
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
    assert_eq!(w.resolved_rows(), 1);
}

/// Audit finding 1: a forged "unclaimed" request must not kill a live
/// claim. Alice re-signs her envelope's header with the deadline 30 s in
/// the past (same z) and asks the TP for an unclaimed certificate; Chris,
/// who saw the envelope, does the same as its sender. Whatever the TP
/// certifies about those headers, Bob's genuine claim two hours before the
/// deadline still gets him the message, and the judge agrees.
#[test]
fn t12_forged_unclaimed_does_not_stop_the_genuine_claim() {
    let w = world();
    let chris = Party::new(w.tp.dir.path(), "chris");
    let env = w.send("2h");
    let receipt = w.accept(&env);
    let (e, cm) = cheat::read_envelope(&env);
    let now = cheat::now();
    let ask_unclaimed = |who: &Party, env: &Path, out: &Path| {
        vtp([
            "unclaimed",
            "--as",
            &p(&who.id),
            "--tp-addr",
            &w.tp.addr,
            &p(env),
            "--out",
            &p(out),
        ])
    };
    // Alice's forgery: only `deadline` and `created` changed.
    let forged = cheat::resign(&w.alice.id, &e, |h| {
        h.deadline = now - 30;
        h.created = now - 90;
    });
    let fenv = w.alice.path("forged.vtp");
    cheat::write_envelope(&fenv, &forged, &cm);
    let fcert = w.alice.path("forged.unclaimed");
    let alice_forgery = ask_unclaimed(&w.alice, &fenv, &fcert);
    // Chris's: himself as the sender, the deadline passed.
    let chris_id = cheat::identity(&chris.id).id();
    let lifted = cheat::resign(&chris.id, &e, |h| {
        h.sender = chris_id;
        h.deadline = now - 30;
    });
    let lenv = chris.path("lifted.vtp");
    cheat::write_envelope(&lenv, &lifted, &cm);
    ask_unclaimed(&chris, &lenv, &chris.path("lifted.unclaimed"));

    // Bob's claim of the genuine envelope resolves.
    w.claim(&env, &receipt, "msg").ok();
    assert_eq!(
        std::fs::read(w.bob.path("msg")).unwrap(),
        std::fs::read(&w.msg).unwrap()
    );
    assert_eq!(w.resolved_rows(), 1);
    let aff = p(&w.bob.path("msg.affidavit"));
    let (code, v) = w.verify_json(&env, &receipt, &["--affidavit", &aff]);
    assert_eq!((code, &v["valid"]), (0, &serde_json::json!(true)), "{v}");
    // A certificate about the forged header says nothing about the genuine
    // envelope: the judge refuses to weigh it with Bob's receipt.
    if alice_forgery.status == 0 {
        let (code, v) = w.verify_json(&env, &receipt, &["--affidavit", &p(&fcert)]);
        assert_ne!(code, 0);
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("another envelope"),
            "{v}"
        );
    }
    // After the resolution, no header around this z gets a certificate.
    ask_unclaimed(&w.alice, &fenv, &w.alice.path("late.unclaimed")).fails();
}

/// Audit finding 8, one TP: a TP that certified an envelope invalid never
/// also certifies it unclaimed (the judge would see two outcomes for one
/// envelope); the recorded verdict stands and is given again.
#[test]
fn t13_no_unclaimed_certificate_for_an_invalid_envelope() {
    let mut w = world();
    w.tp.kill();
    w.tp.short_claim_window();
    w.tp.start();
    let sent = cheat::now();
    let env = w.alice.path("bad.vtp");
    cheat::envelope_with_bad_inside(
        &w.alice.id,
        &w.bob.card,
        &w.tp.card(),
        b"a message the TP can never release",
        309,
        &env,
        |inside| inside.deadline += 1,
    );
    let receipt = w.accept(&env);
    let r = w.claim(&env, &receipt, "bad").fails();
    assert!(r.stderr.contains("invalid"), "{}", r.stderr);
    assert_eq!(w.tp.journal_rows("invalid"), 1);
    // Past the deadline on the TP's clock.
    w.tp.pass_short_deadline(sent);
    for who in [&w.alice, &w.bob] {
        let cert = who.path("bad.unclaimed");
        let r = vtp([
            "unclaimed",
            "--as",
            &p(&who.id),
            "--tp-addr",
            &w.tp.addr,
            &p(&env),
            "--out",
            &p(&cert),
        ])
        .fails();
        assert!(r.stderr.contains("invalid"), "{}", r.stderr);
        assert!(!cert.exists());
    }
    assert_eq!(w.tp.journal_rows("unclaimed"), 0);
    // Bob asking again gets the recorded verdict, deadline or not.
    let r = w.claim(&env, &receipt, "again").fails();
    assert!(r.stderr.contains("invalid"), "{}", r.stderr);
    assert_eq!(
        std::fs::read(w.bob.path("again.affidavit")).unwrap(),
        std::fs::read(w.bob.path("bad.affidavit")).unwrap()
    );
}

/// The claim window holds on the TP's clock too: a sender cannot make an
/// envelope with less than the TP's claim window plus its clock skew left,
/// and a recipient (even one content with a 60 s margin) does not accept
/// one, say from a sender whose clock was slow, because the TP's clock may be
/// the skew ahead of his and the deadline already past there.
#[test]
fn the_claim_window_allows_for_the_clock_skew() {
    let w = world();
    let env = w.alice.path("close.vtp");
    let send = |deadline: &str| {
        vtp([
            "send",
            "--as",
            &p(&w.alice.id),
            "--to",
            &p(&w.bob.card),
            "--tp",
            &p(&w.tp.card()),
            "--deadline",
            deadline,
            "--in",
            &p(&w.msg),
            "--out",
            &p(&env),
            "--force",
        ])
    };
    // The default policy: a 60 s window and 300 s skew, 360 s in all.
    let r = send("5m").fails();
    assert!(
        r.stderr.contains("at least 6m are needed")
            && r.stderr.contains("claim window of 1m plus the 5m"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(!env.exists());
    send("7m").ok();

    // Alice's clock was 100 s slow: 5 minutes left by Bob's clock.
    let now = cheat::now();
    cheat::envelope_made_at(
        &w.alice.id,
        &w.bob.card,
        &w.tp.card(),
        b"too late on the TP's clock",
        now + 300,
        now - 100,
        &env,
        |_| {},
    );
    let receipt = w.bob.path("close.receipt");
    let r = vtp([
        "accept",
        "--as",
        &p(&w.bob.id),
        "--tp",
        &p(&w.tp.card()),
        &p(&env),
        "--out",
        &p(&receipt),
        "--min-time-left",
        "60s",
    ])
    .fails();
    assert!(
        r.stderr
            .contains("at least 6m are needed to be able to claim"),
        "{}",
        r.stderr
    );
    assert!(
        !receipt.exists(),
        "no receipt for an envelope Bob could not claim"
    );
}

/// Audit finding 3: after a key rotation, Bob's `vtp accept` refuses an
/// envelope sealed to the superseded key (his card names another current
/// key); an envelope he accepted while the key was current stays claimable
/// up to its deadline; and `tp-daemon keys retire` without --force is
/// refused until no card that offered the key can have let anyone accept
/// an envelope still live, then allowed.
#[test]
fn superseded_key_is_refused_at_accept_and_retire_waits_for_live_envelopes() {
    use vtp_tp_daemon::clock::rfc3339;
    let mut w = world();
    let config = w.tp.config();
    let tp_daemon = |args: &[&str], offset: Option<i64>| {
        let mut c = vtp_testkit::Cli::new("tp-daemon")
            .args(args)
            .arg("--config")
            .arg(&config);
        if let Some(o) = offset {
            c = c.env("VTP_TEST_CLOCK_OFFSET_SECS", o.to_string());
        }
        c.run()
    };
    let fetch = |w: &World, name: &str| {
        let card = w.bob.path(name);
        vtp(["tp", "fetch", "--tp-addr", &w.tp.addr, "--out", &p(&card)]).ok();
        card
    };
    let card1 = fetch(&w, "tp1.card");
    let k1 = cheat::tp_card(&card1).body().current_key;
    let k1_hex = hex::encode(k1.0);

    // Bob accepts an envelope while K1 is current.
    let env = w.send("2h");
    let receipt = w.accept(&env);
    let deadline = cheat::read_envelope(&env).0.header.deadline;

    // The TP rotates; after a restart it serves K2 as current.
    tp_daemon(&["keys", "rotate"], None).ok();
    w.tp.restart();
    let card2 = fetch(&w, "tp2.card");
    assert_ne!(cheat::tp_card(&card2).body().current_key, k1);

    // Alice seals to K1 with the old card (the CLI would use the current
    // key): Bob, trusting the TP's current card, refuses it.
    let stale = w.alice.path("stale.vtp");
    cheat::envelope_with_bad_inside(
        &w.alice.id,
        &w.bob.card,
        &card1,
        b"sealed to a superseded key",
        3600,
        &stale,
        |_| {},
    );
    let r = vtp([
        "accept",
        "--as",
        &p(&w.bob.id),
        "--tp",
        &p(&card2),
        &p(&stale),
        "--out",
        &p(&w.bob.path("stale.receipt")),
    ])
    .fails();
    assert!(
        r.stderr.contains(&format!("sealed to key {k1_hex}"))
            && r.stderr
                .contains("send it again with the TP's current card"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(!w.bob.path("stale.receipt").exists());

    // Retiring K1 now is refused with one line naming when it is safe: the
    // latest deadline any card offering K1 allowed (recorded when each was
    // signed), and never before superseded + horizon + skew.
    let db = w.tp.journal_db();
    let (superseded, offered): (i64, i64) = db
        .query_row(
            "SELECT superseded_at, latest_deadline FROM keyring JOIN key_offers USING (key_id) \
             WHERE key_id = ?1",
            [&k1.0[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(db);
    let policy = cheat::tp_card(&card1).policy().clone();
    let safe =
        (offered as u64).max(superseded as u64 + policy.max_deadline_secs + policy.clock_skew_secs);
    assert!(offered as u64 >= cheat::tp_card(&card1).latest_deadline());
    assert!(safe > deadline);
    let r = tp_daemon(&["keys", "retire", &k1_hex], None).fails();
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("Wait until {}", rfc3339(safe))) && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );

    // The envelope accepted while K1 was current is still claimable just
    // before its deadline on the TP's clock.
    w.tp.kill();
    w.tp.clock_offset = deadline as i64 - 90 - cheat::now() as i64;
    w.tp.start();
    w.claim(&env, &receipt, "late.txt").ok();
    assert_eq!(
        std::fs::read(w.bob.path("late.txt")).unwrap(),
        std::fs::read(&w.msg).unwrap()
    );

    // A retire before the safe moment is refused; from it on it works
    // without --force.
    let at = |t: u64| Some(t as i64 - cheat::now() as i64);
    tp_daemon(&["keys", "retire", &k1_hex], at(safe - 60)).fails();
    let r = tp_daemon(&["keys", "retire", &k1_hex], at(safe)).ok();
    assert!(
        r.stdout
            .contains(&format!("encryption key {k1_hex} retired"))
            && !r.stdout.contains("forced before"),
        "{}",
        r.stdout
    );
}
