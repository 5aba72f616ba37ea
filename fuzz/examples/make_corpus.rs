//! Writes the seed corpus: small valid inputs for every fuzz target, built
//! from the same fixture the targets use, plus a few hand-made edge cases.
//!
//!     cd fuzz && cargo run --example make_corpus [-- OUT_DIR]   # default: corpus
//!
//! Files are named for what they hold and overwritten on each run; files the
//! fuzzer (or a person) added under other names are left alone. Re-run it
//! when an encoding changes, and commit the result.

use std::fs;
use std::path::{Path, PathBuf};

use vtp_fuzz::{fixture, seal_message, RawSigned, DEADLINE, NOW};
use vtp_protocol::encoding::{canonical, encode, Kind};
use vtp_protocol::envelope::Envelope;
use vtp_protocol::tp_card::TpCardBody;
use vtp_protocol::wire::{
    encode_request, encode_response, ClaimOutcome, ErrorCode, ReceiptPage, Request,
    ResolvedReceipt, Response, WireError,
};

struct Out {
    root: PathBuf,
    total: usize,
}

impl Out {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        fs::write(dir.join(name), bytes).expect("write corpus file");
        self.total += bytes.len();
    }
}

fn with(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(body);
    v
}

fn framed(frames: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in frames {
        v.extend_from_slice(&(f.len() as u32).to_be_bytes());
        v.extend_from_slice(f);
    }
    v
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut out = Out { root, total: 0 };
    let fx = fixture();

    // --- wire_request
    let get_card = encode_request(&Request::GetCard);
    let claim = encode_request(&Request::Claim(fx.claim.clone()));
    let fetch = encode_request(&Request::FetchReceipts(fx.fetch.clone()));
    let unclaimed = encode_request(&Request::Unclaimed(fx.unclaimed.clone()));
    out.put("wire_request", "get-card", &get_card);
    out.put("wire_request", "claim", &claim);
    out.put("wire_request", "fetch-receipts", &fetch);
    out.put("wire_request", "unclaimed", &unclaimed);
    // Edge cases: bare prefix, wrong kind, wrong version, trailing byte,
    // truncated claim, unknown variant, huge varint length.
    out.put("wire_request", "edge-bare-prefix", b"VTP\x08\x02");
    out.put("wire_request", "edge-wrong-kind", b"VTP\x09\x02\x00");
    out.put("wire_request", "edge-wrong-version", b"VTP\x08\x01\x00");
    out.put("wire_request", "edge-trailing", &with(&get_card, b"\x00"));
    out.put(
        "wire_request",
        "edge-truncated-claim",
        &claim[..claim.len() / 2],
    );
    out.put("wire_request", "edge-unknown-variant", b"VTP\x08\x02\x07");
    out.put(
        "wire_request",
        "edge-huge-length",
        b"VTP\x08\x02\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    );

    // --- wire_response
    let responses = [
        ("card", Response::Card(fx.tp.clone())),
        (
            "claim-resolved",
            Response::Claim(ClaimOutcome::Resolved {
                affidavit: fx.aff_resolved.clone(),
                wrapped_km: fx.inside.wrapped_km.clone(),
            }),
        ),
        (
            "claim-invalid",
            Response::Claim(ClaimOutcome::InvalidEnvelope {
                affidavit: fx.aff_invalid.clone(),
            }),
        ),
        (
            "receipts",
            Response::Receipts(ReceiptPage {
                receipts: vec![ResolvedReceipt {
                    receipt: fx.receipt.clone(),
                    affidavit: fx.aff_resolved.clone(),
                }],
                more: false,
            }),
        ),
        (
            "receipts-empty",
            Response::Receipts(ReceiptPage {
                receipts: vec![],
                more: false,
            }),
        ),
        ("unclaimed", Response::Unclaimed(fx.aff_unclaimed.clone())),
        (
            "error",
            Response::Error(WireError {
                code: ErrorCode::Busy,
                message: "retry later".into(),
            }),
        ),
    ];
    for (name, r) in &responses {
        out.put("wire_response", name, &encode_response(r));
    }
    out.put(
        "wire_response",
        "edge-bad-utf8-error",
        b"VTP\x09\x02\x04\x00\x02\xc3\x28",
    );

    // --- frame: [limit, read size - 1, stream]
    let two = framed(&[&get_card, &fetch]);
    out.put("frame", "default-limit-two-frames", &with(&[0, 255], &two));
    out.put(
        "frame",
        "default-limit-claim-bytewise",
        &with(&[0, 0], &framed(&[&claim])),
    );
    out.put("frame", "small-limit-too-long", &with(&[1, 7], &two));
    out.put(
        "frame",
        "empty-frame-then-partial",
        &with(&[4, 3], b"\x00\x00\x00\x00\x00\x00\x01\x00VTP"),
    );
    out.put(
        "frame",
        "length-u32-max",
        &with(&[0, 255], b"\xff\xff\xff\xff"),
    );
    out.put(
        "frame",
        "length-just-over-default",
        &with(&[0, 255], &(256u32 * 1024 + 1).to_be_bytes()),
    );

    // --- files: [kind, file]
    let env_prefix = fx.envelope.to_file_prefix();
    let env_file = with(&env_prefix, &fx.cm);
    let tp_body: &TpCardBody = fx.tp.body();
    let mut tp_body_and_times = canonical(tp_body);
    for n in [DEADLINE, NOW, 60u64] {
        tp_body_and_times.extend_from_slice(&n.to_le_bytes());
    }
    let files: [(&str, u8, Vec<u8>); 11] = [
        ("secret-identity", 0, fx.alice.to_file().to_vec()),
        ("identity-card", 1, fx.bob.card().to_file()),
        ("tp-card", 2, fx.tp.to_file()),
        ("envelope-prefix", 3, env_prefix.clone()),
        ("envelope-file-with-cm", 3, env_file),
        ("receipt", 4, fx.receipt.to_file()),
        ("opening", 5, fx.opening.to_file()),
        ("affidavit-resolved", 6, fx.aff_resolved.to_file()),
        ("inside-of-z", 7, canonical(&fx.inside)),
        ("tp-card-body-resign", 8, tp_body_and_times),
        (
            "identity-card-body-resign",
            9,
            canonical(fx.alice.card().body()),
        ),
    ];
    for (name, kind, bytes) in &files {
        out.put("files", name, &with(&[*kind], bytes));
    }
    out.put(
        "files",
        "affidavit-unclaimed",
        &with(&[6], &fx.aff_unclaimed.to_file()),
    );
    out.put(
        "files",
        "affidavit-invalid",
        &with(&[6], &fx.aff_invalid.to_file()),
    );
    // Edge cases: an envelope head announcing more than MAX_ENVELOPE, one
    // announcing a length past the end, a receipt file read as an envelope.
    out.put(
        "files",
        "edge-envelope-too-large",
        &with(&[3], b"VTP\x04\x01\x00\x01\x00\x01"),
    );
    out.put(
        "files",
        "edge-envelope-truncated",
        &with(&[3], &env_prefix[..env_prefix.len() - 1]),
    );
    out.put(
        "files",
        "edge-receipt-as-envelope",
        &with(&[3], &fx.receipt.to_file()),
    );
    let raw_tp = RawSigned {
        body: fx.tp.body().clone(),
        signature: fx.aff_resolved.signature,
    };
    out.put(
        "files",
        "edge-tp-card-bad-signature",
        &with(&[2], &encode(Kind::TpCard, &raw_tp)),
    );

    // --- evidence: [target, flags, file]
    let ev = [
        ("tp-card-opening", 0, 0x00, fx.tp.to_file()),
        ("tp-card-resign-both", 0, 0x42, fx.tp.to_file()),
        ("envelope-both-shown", 1, 0x12, env_prefix.clone()),
        ("envelope-resign-affidavit", 1, 0x41, env_prefix.clone()),
        ("receipt-opening", 2, 0x00, fx.receipt.to_file()),
        ("receipt-resign-affidavit", 2, 0x41, fx.receipt.to_file()),
        ("opening-shown", 3, 0x10, fx.opening.to_file()),
        ("opening-with-unclaimed", 3, 0x0A, fx.opening.to_file()),
        (
            "affidavit-resolved-shown",
            4,
            0x11,
            fx.aff_resolved.to_file(),
        ),
        (
            "affidavit-resolved-resign-other",
            4,
            0x61,
            fx.aff_resolved.to_file(),
        ),
        ("affidavit-invalid", 4, 0x01, fx.aff_invalid.to_file()),
        (
            "affidavit-unclaimed-both",
            4,
            0x42,
            fx.aff_unclaimed.to_file(),
        ),
    ];
    for (name, target, flags, file) in &ev {
        out.put("evidence", name, &with(&[*target, *flags], file));
    }

    // --- message_opener: [message, (len, plain)?, edits..., feed...]
    let small = b"hello, bob";
    let mut m = vec![0, small.len() as u8];
    m.extend_from_slice(small);
    out.put("message_opener", "small-clean", &with(&m, &[0, 0]));
    out.put(
        "message_opener",
        "small-flip",
        &with(&m, &[1, 0, 3, 0, 0, 0, 0x40, 0]),
    );
    out.put("message_opener", "empty-message", &[0, 0, 0, 0]);
    out.put("message_opener", "one-chunk-clean", &[1, 0, 0]);
    out.put(
        "message_opener",
        "two-chunks-truncate",
        &[3, 1, 1, 0x10, 0x00, 0x01, 0x00, 0],
    );
    out.put(
        "message_opener",
        "three-chunks-swap",
        &[5, 1, 4, 0, 0, 0, 0, 1, 0],
    );
    out.put(
        "message_opener",
        "three-chunks-sloppy",
        &[5, 0, 1, 1, 2, 1, 1, 1],
    );
    out.put(
        "message_opener",
        "two-chunks-dup",
        &[3, 1, 5, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    );

    // Sanity: the fixture's message really is in cm.
    assert_eq!(seal_message(&fx.km, vtp_fuzz::MESSAGE), fx.cm);
    let _ = Envelope::from_file_prefix(&env_prefix).expect("fixture envelope parses");
    eprintln!(
        "corpus written to {} ({} bytes of seeds)",
        out.root.display(),
        out.total
    );
}
