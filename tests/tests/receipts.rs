//! `vtp receipts` when the TP holds more receipts for a sender than one frame
//! holds: the real daemon pages them (each response frame within
//! `RECEIPTS_PAGE_MAX_FRAME`), the real CLI asks page after page and saves
//! every one, and `--since` fetches only what is newer.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;

use vtp_e2e::{bulk, cheat, vtp, Party, Tp};
use vtp_protocol::encoding::canonical;
use vtp_protocol::wire::{
    self, ClaimOutcome, FetchRequest, Request, ResolvedReceipt, Response, RECEIPTS_PAGE_MAX_FRAME,
};

/// Enough receipts for more than 1 MiB (the largest response `vtp` accepts,
/// which an unpaged answer outgrew at about 1 300).
const RECEIPTS: usize = 1500;
const THREADS: usize = 4;

#[test]
fn more_receipts_than_one_frame_holds_are_all_fetched() {
    let mut tp = Tp::init();
    // One recipient claims 1 500 times in seconds; this test is about
    // volume, not the per-identity rate limit.
    let config = std::fs::read_to_string(tp.config()).unwrap();
    assert!(config.contains("\n[limits]\n"), "no [limits] in tp.toml");
    std::fs::write(
        tp.config(),
        config.replace("\n[limits]\n", "\n[limits]\nidentity_rate_per_sec = 0\n"),
    )
    .unwrap();
    tp.start();
    let card = cheat::tp_card(&tp.card());
    let alice = Party::new(tp.dir.path(), "alice");
    let alice_secret = cheat::identity(&alice.id);

    let claims = Arc::new(bulk::make_claims(&card, &alice_secret, RECEIPTS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (claims, addr) = (Arc::clone(&claims), tp.addr.clone());
            std::thread::spawn(move || {
                (t..claims.len())
                    .step_by(THREADS)
                    .map(|i| match bulk::send_claim(&addr, &claims[i]) {
                        Some(ClaimOutcome::Resolved { affidavit, .. }) => ResolvedReceipt {
                            receipt: claims[i].body.receipt.clone(),
                            affidavit,
                        },
                        other => panic!("claim {i}: {other:?}"),
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let resolved: Vec<ResolvedReceipt> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let total: usize = resolved.iter().map(|r| canonical(r).len()).sum();
    assert!(
        total > 1 << 20,
        "{RECEIPTS} receipts are only {total} bytes: not more than one frame"
    );
    let last_seq = resolved.iter().map(|r| r.seq()).max().unwrap();

    // On the wire: pages within the frame budget, together all receipts.
    let mut after = 0;
    let mut pages = 0;
    let mut seen = Vec::new();
    loop {
        let req = Request::FetchReceipts(FetchRequest::new(
            &alice_secret,
            card.id(),
            cheat::now(),
            after,
            NonZeroU32::MAX,
        ));
        let payload = wire::encode_request(&req);
        let frame = tp.raw_frame(&payload).unwrap();
        assert!(
            frame.len() <= RECEIPTS_PAGE_MAX_FRAME,
            "page {pages}: a {}-byte frame",
            frame.len()
        );
        let Response::Receipts(page) = wire::decode_response(&frame).unwrap() else {
            panic!("page {pages}: not a page");
        };
        after = page.check(after).unwrap();
        pages += 1;
        seen.extend(page.receipts);
        if !page.more {
            break;
        }
    }
    assert!(pages >= 5, "{pages} pages");
    assert_eq!(seen.len(), RECEIPTS);
    assert_eq!(after, last_seq);
    let by_seq = |rs: &[ResolvedReceipt]| {
        let mut v: Vec<Vec<u8>> = rs.iter().map(canonical).collect();
        v.sort();
        v
    };
    assert_eq!(
        by_seq(&seen),
        by_seq(&resolved),
        "exactly the resolved ones"
    );

    // The CLI: every receipt and affidavit saved, progress on stderr.
    let out = tp.dir.path().join("got");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "receipts",
            "--as",
            &alice.id.display().to_string(),
            "--tp-addr",
            &tp.addr,
            "--out-dir",
            &out.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        vtp(args).ok()
    };
    let r = run(&[]);
    assert!(
        r.stdout.contains(&format!("{RECEIPTS} receipts saved")),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stderr.matches("receipts fetched so far").count(),
        pages - 1,
        "{}",
        r.stderr
    );
    let files: HashSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2 * RECEIPTS);
    for x in &resolved {
        let id = x.affidavit.body.envelope_id.to_hex();
        assert!(files.contains(&format!("{id}.receipt.vtp")), "{id}");
        assert!(files.contains(&format!("{id}.affidavit.vtp")), "{id}");
    }
    let hint = format!("`--since {last_seq}` fetches only the receipts");
    assert!(r.stdout.contains(&hint), "{}", r.stdout);

    // Since the last one: nothing. Since the 1 000th: the 500 after it.
    let r = run(&["--since", &last_seq.to_string()]);
    assert!(r.stdout.contains("0 receipts saved"), "{}", r.stdout);
    let mut seqs: Vec<u64> = resolved.iter().map(|r| r.seq()).collect();
    seqs.sort();
    let r = run(&["--since", &seqs[999].to_string()]);
    assert!(r.stdout.contains("500 receipts saved"), "{}", r.stdout);
}
