//! Several trustees end to end (issue 5): three `tp-daemon` processes, each
//! with its own SoftHSM token, keys and journal; Alice splits the TP across
//! them with `vtp send --tp … --threshold 2`; Bob claims through the real
//! `vtp` CLI. Scenarios: all honest, one trustee down, one refusing, Bob
//! colluding with one trustee, and `unclaimed` for the group.

use std::path::{Path, PathBuf};

use vtp_e2e::{cheat, sha256_file, vtp, Party, Run, Tp};
use vtp_protocol::claim::Claim;
use vtp_protocol::message::MessageOpener;
use vtp_protocol::opening::{message_key_from_shares, unwrap_released_share};
use vtp_protocol::receipt::Receipt;
use vtp_protocol::wire::{self, ClaimOutcome, Request, Response};

fn p(path: &Path) -> String {
    path.display().to_string()
}

struct World {
    trustees: Vec<Tp>,
    alice: Party,
    bob: Party,
    msg: PathBuf,
    root: tempfile::TempDir,
}

/// Three trustees (started), Alice and Bob. `configure` may edit trustee
/// i's tp.toml before it starts.
fn world(configure: impl Fn(usize, &mut String)) -> World {
    let root = tempfile::tempdir().unwrap();
    let trustees = (0..3)
        .map(|i| {
            let mut tp = Tp::init();
            let mut cfg = std::fs::read_to_string(tp.config()).unwrap();
            configure(i, &mut cfg);
            std::fs::write(tp.config(), cfg).unwrap();
            tp.start();
            tp
        })
        .collect();
    let alice = Party::new(root.path(), "alice");
    let bob = Party::new(root.path(), "bob");
    let msg = root.path().join("message.txt");
    std::fs::write(&msg, b"Split three ways, opened two ways.\n".repeat(300)).unwrap();
    World {
        trustees,
        alice,
        bob,
        msg,
        root,
    }
}

impl World {
    fn cards(&self) -> Vec<String> {
        self.trustees.iter().map(|t| p(&t.card())).collect()
    }
    /// `--tp X` for each of `items`.
    fn tp_flags(items: &[String]) -> Vec<String> {
        Self::flags("--tp", items)
    }
    /// `--tp-addr X` for each of `items`.
    fn addr_flags(items: &[String]) -> Vec<String> {
        Self::flags("--tp-addr", items)
    }
    fn flags(flag: &str, items: &[String]) -> Vec<String> {
        items
            .iter()
            .flat_map(|c| [flag.to_string(), c.clone()])
            .collect()
    }
    fn addrs(&self, order: &[usize]) -> Vec<String> {
        order
            .iter()
            .map(|&i| self.trustees[i].addr.clone())
            .collect()
    }
    /// A1 with all three trustees, threshold 2, and B1.
    fn send_and_accept(&self, name: &str, deadline: &str) -> (PathBuf, PathBuf) {
        let env = self.alice.path(&format!("{name}.env"));
        let mut args = vec![
            "send".to_string(),
            "--as".into(),
            p(&self.alice.id),
            "--to".into(),
            p(&self.bob.card),
        ];
        args.extend(Self::tp_flags(&self.cards()));
        args.extend([
            "--threshold".into(),
            "2".into(),
            "--deadline".into(),
            deadline.into(),
            "--in".into(),
            p(&self.msg),
            "--out".into(),
            p(&env),
        ]);
        let out = vtp(&args).ok();
        assert!(
            out.stdout.contains("2 of these 3 must act"),
            "{}",
            out.stdout
        );
        let receipt = self.bob.path(&format!("{name}.receipt"));
        let mut args = vec!["accept".to_string(), "--as".into(), p(&self.bob.id)];
        args.extend(Self::tp_flags(&self.cards()));
        args.extend([
            p(&env),
            "--out".into(),
            p(&receipt),
            "--min-time-left".into(),
            "60s".into(),
        ]);
        vtp(&args).ok();
        (env, receipt)
    }
    fn claim(&self, env: &Path, receipt: &Path, order: &[usize], out: &Path) -> Run {
        let mut args = vec!["claim".to_string(), "--as".into(), p(&self.bob.id)];
        args.extend(Self::addr_flags(&self.addrs(order)));
        args.extend([
            "--timeout".into(),
            "5s".into(),
            p(env),
            p(receipt),
            "--out".into(),
            p(out),
            "--affidavit-out".into(),
            p(&self.bob.path("aff")),
            "--force".into(),
        ]);
        vtp(&args)
    }
    fn verify(&self, env: &Path, receipt: &Path, affidavits: &[PathBuf]) -> Run {
        let mut args = vec!["verify".to_string()];
        args.extend(Self::tp_flags(&self.cards()));
        args.extend([p(env), p(receipt), "--message".into(), p(&self.msg)]);
        for a in affidavits {
            args.extend(["--affidavit".into(), p(a)]);
        }
        vtp(&args)
    }
    fn resolved_rows(&self, i: usize) -> i64 {
        self.trustees[i].journal_rows("resolved")
    }
}

fn ask(tp: &Tp, req: &Request) -> Response {
    let bytes = tp
        .raw_frame(&wire::encode_request(req))
        .expect("round trip");
    wire::decode_response(&bytes).expect("decodable response")
}

/// All honest; then one trustee down; then one down and one refusing (not
/// enough: nothing opens, the judge is not convinced); then the downed
/// trustee comes back and the claim completes. The honest path (opening)
/// needs no trustee at all.
#[test]
fn two_of_three_trustees_honest_down_and_refusing() {
    // Trustee 1 (index 1) serves subscribers only: it refuses Bob.
    let mut w = world(|i, cfg| {
        if i == 1 {
            *cfg = cfg.replace(
                "require_subscription = false",
                "require_subscription = true",
            );
            assert!(cfg.contains("require_subscription = true"));
        }
    });

    // The optimistic path recomputes all three z without any trustee.
    let (env, receipt) = w.send_and_accept("honest", "1h");
    let opening = w.alice.path("honest.opening");
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
    let got = w.bob.path("honest.txt");
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
    assert_eq!(sha256_file(&got), sha256_file(&w.msg));
    for i in 0..3 {
        assert_eq!(w.resolved_rows(i), 0, "trustee {i} was never involved");
    }

    // All honest (trustee 1's refusal aside): Bob asks 0, 2, 1 and stops
    // after two shares; trustee 1 is never asked.
    let (env, receipt) = w.send_and_accept("all", "1h");
    let out = w.bob.path("all.txt");
    let r = w.claim(&env, &receipt, &[0, 2, 1], &out).ok();
    assert!(
        r.stdout.contains("2 of the 3 trustees resolved"),
        "{}",
        r.stdout
    );
    assert_eq!(sha256_file(&out), sha256_file(&w.msg));
    assert_eq!(
        (w.resolved_rows(0), w.resolved_rows(1), w.resolved_rows(2)),
        (1, 0, 1)
    );
    let (a1, a3) = (w.bob.path("aff.1"), w.bob.path("aff.3"));
    assert!(a1.exists() && a3.exists() && !w.bob.path("aff.2").exists());
    // The judge: two trustees' resolutions prove delivery, one does not.
    let v = w.verify(&env, &receipt, &[a1.clone(), a3.clone()]).ok();
    assert!(v.stdout.contains("VALID"), "{}", v.stdout);
    assert!(
        v.stdout.contains("affidavits of 2 trustees"),
        "{}",
        v.stdout
    );
    let v = w.verify(&env, &receipt, std::slice::from_ref(&a1)).fails();
    assert!(
        v.stderr.contains("1 of the 2 trustees needed"),
        "{}",
        v.stderr
    );
    // Each acting trustee holds Alice's receipt for her.
    for i in [0, 2] {
        let dir = w.alice.path(&format!("receipts-{i}"));
        let r = vtp([
            "receipts",
            "--as",
            &p(&w.alice.id),
            "--tp-addr",
            &w.trustees[i].addr,
            "--out-dir",
            &p(&dir),
        ])
        .ok();
        assert!(r.stdout.contains("1 receipt saved"), "{}", r.stdout);
    }

    // Trustee 2 down and trustee 1 refusing: only trustee 0 answers, which
    // is not enough.
    let (env, receipt) = w.send_and_accept("down", "1h");
    w.trustees[2].kill();
    let out = w.bob.path("down.txt");
    let r = w.claim(&env, &receipt, &[2, 0, 1], &out).fails();
    assert!(
        r.stderr
            .contains("only 1 of the 2 trustees needed released their share"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("not subscribed"),
        "trustee 1's refusal is reported: {}",
        r.stderr
    );
    assert!(!out.exists(), "nothing is written without the message key");
    // The one resolution Alice has is not evidence of delivery.
    let v = w.verify(&env, &receipt, &[w.bob.path("aff.1")]).fails();
    assert!(
        v.stderr.contains("1 of the 2 trustees needed"),
        "{}",
        v.stderr
    );

    // One refusing: trustee 2 comes back and Bob asks 1 (refuses), 0, 2 —
    // the claim completes (trustee 0 answers from its journal, exactly once).
    w.trustees[2].start();
    let r = w.claim(&env, &receipt, &[1, 0, 2], &out).ok();
    assert!(
        r.stdout.contains("2 of the 3 trustees resolved"),
        "{}",
        r.stdout
    );
    assert_eq!(sha256_file(&out), sha256_file(&w.msg));
    assert_eq!(
        (w.resolved_rows(0), w.resolved_rows(1), w.resolved_rows(2)),
        (2, 0, 2)
    );
    // One trustee down: with trustee 1 down, 0 and 2 complete a new claim.
    w.trustees[1].kill();
    let (env, receipt) = w.send_and_accept("one-down", "1h");
    let out = w.bob.path("one-down.txt");
    let r = w.claim(&env, &receipt, &[1, 2, 0], &out).ok();
    assert!(
        r.stdout.contains("2 of the 3 trustees resolved"),
        "{}",
        r.stdout
    );
    assert_eq!(sha256_file(&out), sha256_file(&w.msg));
    drop(w.root);
}

/// Bob colludes with trustee 0: it resolves for him (and would hand over
/// anything its token yields), the other two are unavailable. Bob gets one
/// share, which opens nothing. After the deadline, two of the three
/// trustees certify they never resolved: the group's exchange is unclaimed.
#[test]
fn bob_and_one_trustee_get_nothing_and_unclaimed_is_for_the_group() {
    let mut w = world(|_, _| {});
    for tp in &mut w.trustees {
        tp.kill();
        tp.short_claim_window();
        tp.start();
    }
    let (env, receipt) = w.send_and_accept("collude", "1h");
    w.trustees[1].kill();
    w.trustees[2].kill();

    // Through the CLI: not enough trustees, nothing written.
    let out = w.bob.path("collude.txt");
    let r = w.claim(&env, &receipt, &[0, 1, 2], &out).fails();
    assert!(r.stderr.contains("only 1 of the 2"), "{}", r.stderr);
    assert!(!out.exists());

    // As a cheater with the colluding trustee's answer in hand: the share
    // it released, used in every way one share can be, opens nothing.
    let (e, cm) = cheat::read_envelope(&env);
    let venv = e.verify_trusted(&[cheat::tp_card(&w.trustees[0].card())]);
    assert!(venv.is_err(), "Bob's judge needs every trustee's card");
    let cards: Vec<_> = w
        .trustees
        .iter()
        .map(|t| cheat::tp_card(&t.card()))
        .collect();
    let venv = e.verify_trusted(&cards).unwrap();
    let bob = cheat::identity(&w.bob.id);
    let rcpt = Receipt::from_file(&std::fs::read(&receipt).unwrap()).unwrap();
    let vr = rcpt.verify(&venv).unwrap();
    let claim = Claim::new(&bob, &venv, &vr, cheat::now());
    let Response::Claim(ClaimOutcome::Resolved { wrapped_km, .. }) =
        ask(&w.trustees[0], &Request::Claim(claim))
    else {
        panic!("the colluding trustee resolves its part");
    };
    let share = unwrap_released_share(&bob, &venv, 0, &wrapped_km).unwrap();
    assert!(message_key_from_shares(&venv, std::slice::from_ref(&share)).is_err());
    let opens = |km: &[u8; 32]| {
        let mut o = MessageOpener::new(km, cm.len() as u64).unwrap();
        let n = o.next_len().unwrap();
        o.open_chunk(&cm[..n]).is_ok()
    };
    let as_sigma =
        vtp_protocol::seal::message_key_from_shares(std::slice::from_ref(&share), 1).unwrap();
    assert!(!opens(&as_sigma), "one share taken as the whole secret");
    assert!(!opens(share.value()), "one share taken as the message key");
    // (The control: two real shares do open it.)
    w.trustees[1].start();
    let claim = Claim::new(&bob, &venv, &vr, cheat::now());
    let Response::Claim(ClaimOutcome::Resolved { wrapped_km, .. }) =
        ask(&w.trustees[1], &Request::Claim(claim))
    else {
        panic!("trustee 1 resolves");
    };
    let share1 = unwrap_released_share(&bob, &venv, 1, &wrapped_km).unwrap();
    let km = message_key_from_shares(&venv, &[share, share1]).unwrap();
    assert!(opens(&km));

    // Unclaimed for the group: a fresh envelope nobody claims. Before the
    // deadline every trustee refuses; after it (trustees' clocks moved on
    // 300 s, the allowed clock skew, and their 1 s claim window passed),
    // trustees 0 and 2 certify; trustee 1 is down. 2 > n - t = 1.
    let sent = cheat::now();
    let (env, receipt) = w.send_and_accept("late", Tp::SHORT_DEADLINE);
    let cert = w.alice.path("late.unclaimed");
    let unclaimed = |w: &World, order: &[usize]| {
        let mut args = vec!["unclaimed".to_string(), "--as".into(), p(&w.alice.id)];
        args.extend(World::addr_flags(&w.addrs(order)));
        args.extend([
            "--timeout".into(),
            "5s".into(),
            p(&env),
            "--out".into(),
            p(&cert),
            "--force".into(),
        ]);
        vtp(&args)
    };
    let r = unclaimed(&w, &[0, 1, 2]).fails();
    assert!(r.stderr.contains("too early"), "{}", r.stderr);
    w.trustees[1].kill();
    w.trustees[0].pass_short_deadline(sent);
    w.trustees[2].pass_short_deadline(sent);
    let r = unclaimed(&w, &[1, 0, 2]).ok();
    assert!(
        r.stdout.contains("2 of the 3 trustees certify"),
        "{}",
        r.stdout
    );
    let (c1, c3) = (
        w.alice.path("late.unclaimed.1"),
        w.alice.path("late.unclaimed.3"),
    );
    assert!(c1.exists() && c3.exists());
    let v = w.verify(&env, &receipt, &[c1.clone(), c3]).fails();
    assert!(v.stderr.contains("never completed"), "{}", v.stderr);
    // One certificate alone does not show that.
    let v = w.verify(&env, &receipt, &[c1]).fails();
    assert!(!v.stderr.contains("never completed"), "{}", v.stderr);
    // The group's claim is now refused by each trustee that certified.
    let r = w
        .claim(&env, &receipt, &[0, 2], &w.bob.path("late.txt"))
        .fails();
    assert!(r.stderr.contains("never claimed"), "{}", r.stderr);
    assert!(r.stderr.contains("only 0 of the 2"), "{}", r.stderr);
}

/// Audit finding 1 for a group: Alice re-signs the group envelope's header
/// with the deadline in the past (same z for every trustee) and asks all
/// three trustees for unclaimed certificates. Whatever they certify about
/// that header, Bob's claim of the genuine envelope still gets two shares
/// and the message, long before its deadline.
#[test]
fn forged_unclaimed_for_the_group_does_not_stop_the_claim() {
    let w = world(|_, _| {});
    let (env, receipt) = w.send_and_accept("genuine", "2h");
    let (e, cm) = cheat::read_envelope(&env);
    let now = cheat::now();
    let forged = cheat::resign(&w.alice.id, &e, |h| {
        h.deadline = now - 30;
        h.created = now - 90;
    });
    let fenv = w.alice.path("forged.env");
    cheat::write_envelope(&fenv, &forged, &cm);
    let mut args = vec!["unclaimed".to_string(), "--as".into(), p(&w.alice.id)];
    args.extend(World::addr_flags(&w.addrs(&[0, 1, 2])));
    args.extend([
        "--timeout".into(),
        "5s".into(),
        p(&fenv),
        "--out".into(),
        p(&w.alice.path("forged.unclaimed")),
        "--force".into(),
    ]);
    let _ = vtp(&args);
    let out = w.bob.path("genuine.txt");
    w.claim(&env, &receipt, &[0, 1, 2], &out).ok();
    assert_eq!(sha256_file(&out), sha256_file(&w.msg));
}
