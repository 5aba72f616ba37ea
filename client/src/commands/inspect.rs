//! `vtp inspect FILE`: what any vtp file is and says — kind, parties,
//! deadline, ids and hashes — without signing or sending anything, so a
//! user can look before signing a receipt or an agreement. Nothing secret
//! is shown (a secret identity shows its public card only; an opening
//! shows which envelope it opens, not its secret).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Map, Value};
use vtp_protocol::affidavit::{Affidavit, Statement};
use vtp_protocol::contract::{
    Agreement, AgreementBody, ContractBundle, ContractSignature, Proposal,
};
use vtp_protocol::encoding::{Kind, PREFIX_LEN};
use vtp_protocol::envelope::Envelope;
use vtp_protocol::identity::{IdentityCard, IdentitySecret};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wrap_proof::VoidEvidence;
use vtp_protocol::{ProtocolError, Timestamp};

use super::{display_name, party_json, tp_card_json};
use crate::cli::InspectArgs;
use crate::files::{input_error, io_error, open_seekable, MAX_SMALL_FILE};
use crate::stream::EnvelopeFile;
use crate::timeparse::{format_timestamp, now};
use crate::{report, say};

/// The report: human lines in order, and the same as a JSON object.
struct Report {
    lines: Vec<(String, String)>,
    json: Map<String, Value>,
}

impl Report {
    fn new(kind: &str) -> Self {
        let mut r = Report {
            lines: Vec::new(),
            json: Map::new(),
        };
        r.field("kind", "kind", json!(kind), kind.to_string());
        r
    }
    fn field(&mut self, key: &str, label: &str, v: Value, human: String) {
        self.json.insert(key.to_string(), v);
        self.lines.push((label.to_string(), human));
    }
    fn hex(&mut self, key: &str, label: &str, v: impl std::fmt::Display) {
        let s = v.to_string();
        self.field(key, label, json!(s), s.clone());
    }
    fn party(&mut self, key: &str, label: &str, card: &IdentityCard) {
        self.field(
            key,
            label,
            party_json(card),
            format!("{} ({})", display_name(card.name()), card.id()),
        );
    }
    /// An identity known only by id.
    fn id(&mut self, key: &str, label: &str, id: impl std::fmt::Display) {
        let s = id.to_string();
        self.field(key, label, json!({ "id": s }), s.clone());
    }
    fn time(&mut self, key: &str, label: &str, t: Timestamp, relative: bool) {
        self.json.insert(key.to_string(), json!(t));
        self.json
            .insert(format!("{key}_rfc3339"), json!(format_timestamp(t)));
        let rel = if relative {
            format!(" ({})", super::exchange::time_left(t, now()))
        } else {
            String::new()
        };
        self.lines
            .push((label.to_string(), format!("{}{rel}", format_timestamp(t))));
    }
    fn print(self) {
        let width = self.lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
        for (label, value) in &self.lines {
            say!("{:width$} {value}", format!("{label}:"));
        }
        report::json(&Value::Object(self.json));
    }
}

fn agreement_fields(r: &mut Report, b: &AgreementBody) {
    r.hex("agreement_id", "agreement", b.id());
    r.hex(
        "contract_sha256",
        "contract",
        format!("SHA-256 {}", b.contract_sha256),
    );
    r.json.insert(
        "contract_sha256".into(),
        json!(b.contract_sha256.to_string()),
    );
    r.id("proposer", "proposer", b.proposer);
    r.id("counterparty", "counterparty", b.counterparty);
    r.hex("tp", "TP", b.tp);
    r.time("deadline", "deadline", b.deadline, true);
}

fn envelope_fields(r: &mut Report, env: &Envelope) {
    let h = &env.header;
    r.hex("envelope_id", "envelope", h.envelope_id());
    r.party("sender", "from", &env.sender_card);
    r.id("recipient", "to", h.recipient);
    let trustees: Vec<Value> = h
        .trustees
        .iter()
        .zip(&env.tp_cards)
        .map(|(t, c)| {
            json!({"id": t.tp.to_string(), "name": c.name(), "key_id": t.key_id.to_string(),
                   "z_hash": t.z_hash.to_string(), "addresses": c.addresses()})
        })
        .collect();
    let human = h
        .trustees
        .iter()
        .zip(&env.tp_cards)
        .map(|(t, c)| format!("{} ({}), key {}", display_name(c.name()), t.tp, t.key_id))
        .collect::<Vec<_>>()
        .join("; ");
    r.field("trustees", "TP", json!(trustees), human);
    if h.is_group() {
        r.field(
            "threshold",
            "threshold",
            json!(h.threshold()),
            format!("{} of {}", h.threshold(), h.trustees.len()),
        );
    } else {
        r.json.insert("threshold".into(), json!(1));
    }
    r.time("created", "created", h.created, false);
    r.time("deadline", "deadline", h.deadline, true);
    r.field(
        "message_ciphertext_len",
        "ciphertext",
        json!(h.cm_len),
        format!("{} bytes, hash {}", h.cm_len, h.cm_hash),
    );
    r.json.insert(
        "message_ciphertext_hash".into(),
        json!(h.cm_hash.to_string()),
    );
    r.hex("message_commitment", "commitment", h.message_commitment);
    let sig = match env.verify_embedded() {
        Ok(_) => "valid (checked against the cards it carries; `vtp accept` also checks the TP is one you trust)".to_string(),
        Err(e) => format!("INVALID: {e}"),
    };
    r.json.insert(
        "signature_valid".into(),
        json!(env.verify_embedded().is_ok()),
    );
    r.lines.push(("signature".into(), sig));
}

/// Parse a small file of a known kind.
fn parse<T>(
    path: &Path,
    bytes: &[u8],
    f: impl FnOnce(&[u8]) -> Result<T, ProtocolError>,
) -> Result<T> {
    f(bytes).map_err(|e| input_error(path, e))
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let path = a.file.as_path();
    let mut file = open_seekable(path)?;
    let mut head = [0u8; PREFIX_LEN];
    let n = file
        .read(&mut head)
        .map_err(|e| io_error(path, format!("cannot read: {e}")))?;
    if n < PREFIX_LEN || &head[..3] != b"VTP" {
        return Err(input_error(path, "not a vtp file (no VTP header)"));
    }
    if head[3] == Kind::Envelope as u8 {
        let ef = EnvelopeFile::from_file(file, path)?;
        let mut r = Report::new("envelope");
        envelope_fields(&mut r, &ef.envelope);
        r.print();
        return Ok(());
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error(path, format!("cannot read: {e}")))?;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_SMALL_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_SMALL_FILE {
        return Err(input_error(path, "too large for a vtp file of this kind"));
    }
    let b: &[u8] = &bytes;
    let kind = head[3];
    let mut r;
    if kind == Kind::IdentitySecret as u8 {
        let me = parse(path, b, IdentitySecret::from_file)?;
        r = Report::new("secret identity");
        r.party("identity", "identity", me.card());
        r.time("created", "created", me.card().body().created, false);
        r.lines.push((
            "note".into(),
            "holds secret keys (not shown): keep it private".into(),
        ));
    } else if kind == Kind::IdentityCard as u8 {
        let c = parse(path, b, IdentityCard::from_file)?;
        r = Report::new("identity card");
        r.party("identity", "identity", &c);
        r.time("created", "created", c.body().created, false);
    } else if kind == Kind::TpCard as u8 {
        let c = parse(path, b, TpCard::from_file)?;
        r = Report::new("TP card");
        r.json = match tp_card_json(&c) {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        };
        r.lines.push((
            "TP".into(),
            format!("{} ({})", display_name(c.name()), c.id()),
        ));
        r.lines
            .push(("created".into(), format_timestamp(c.body().created)));
        r.lines.push((
            "addresses".into(),
            if c.addresses().is_empty() {
                "none published".into()
            } else {
                c.addresses().join(", ")
            },
        ));
        r.lines
            .push(("current key".into(), c.current_key().id.to_string()));
    } else if kind == Kind::Receipt as u8 {
        let rc = parse(path, b, Receipt::from_file)?;
        r = Report::new("receipt");
        r.hex("envelope_id", "envelope", rc.body.envelope_id);
        r.party("recipient", "from", &rc.recipient_card);
        r.id("sender", "for", rc.body.sender);
        r.field(
            "trustees",
            "TP",
            json!(rc
                .body
                .trustees
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()),
            rc.body
                .trustees
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        r.time("issued", "issued", rc.body.issued, false);
        r.time("deadline", "deadline", rc.body.deadline, true);
        r.hex("message_ciphertext_hash", "ciphertext", rc.body.cm_hash);
        r.lines.push((
            "signature".into(),
            "checked with the envelope (`vtp reveal`, `vtp verify`)".into(),
        ));
    } else if kind == Kind::Opening as u8 {
        let o = parse(path, b, Opening::from_file)?;
        r = Report::new("opening");
        r.hex("envelope_id", "envelope", o.envelope_id);
        r.lines.push((
            "note".into(),
            "opens that envelope (the secret is not shown); `vtp open` checks it".into(),
        ));
    } else if kind == Kind::Affidavit as u8 {
        let af = parse(path, b, Affidavit::from_file)?;
        let body = &af.body;
        let (statement, extra) = match &body.statement {
            Statement::Resolved { key_id, message_sha256, .. } => (
                "resolved",
                format!("the TP released the message key (key {key_id}); message SHA-256 {message_sha256}"),
            ),
            Statement::InvalidEnvelope { key_id, .. } => (
                "invalid-envelope",
                format!("the TP found the envelope invalid (key {key_id}): receipts for it are void"),
            ),
            Statement::Unclaimed => ("unclaimed", "the TP never resolved the envelope before its deadline".into()),
        };
        r = Report::new("TP affidavit");
        r.field("statement", "statement", json!(statement), extra);
        if let Statement::Resolved { message_sha256, .. } = &body.statement {
            r.json
                .insert("message_sha256".into(), json!(message_sha256.to_string()));
        }
        r.hex("tp", "TP", body.tp);
        r.hex("envelope_id", "envelope", body.envelope_id);
        r.id("sender", "sender", body.sender);
        r.id("recipient", "recipient", body.recipient);
        r.time("deadline", "deadline", body.deadline, false);
        r.time("at", "stated at", body.at, false);
        r.field(
            "journal_seq",
            "journal",
            json!(body.journal.seq),
            body.journal.to_string(),
        );
        r.lines.push((
            "signature".into(),
            "checked against the TP card by `vtp verify`".into(),
        ));
    } else if kind == Kind::VoidEvidence as u8 {
        let v = parse(path, b, VoidEvidence::from_file)?;
        r = Report::new("void evidence");
        r.hex("envelope_id", "envelope", v.envelope_id);
        r.field(
            "wraps",
            "wraps",
            json!(v.wraps.len()),
            format!("{} released wrap(s) proven not to open", v.wraps.len()),
        );
    } else if kind == Kind::ContractProposal as u8 {
        let p = parse(path, b, Proposal::from_file)?;
        r = Report::new("contract proposal");
        agreement_fields(&mut r, &p.body);
        r.party("proposer", "proposer", &p.proposer_card);
    } else if kind == Kind::ContractAgreement as u8 {
        let ag = parse(path, b, Agreement::from_file)?;
        r = Report::new("contract agreement");
        agreement_fields(&mut r, &ag.body);
        r.party("proposer", "proposer", &ag.proposer_card);
        r.party("counterparty", "counterparty", &ag.counterparty_card);
    } else if kind == Kind::ContractSignature as u8 {
        let s = parse(path, b, ContractSignature::from_file)?;
        r = Report::new("contract signature");
        r.hex("agreement_id", "agreement", s.body.agreement_id);
        r.hex("contract_sha256", "contract", s.body.contract_sha256);
        r.id("signer", "signer", s.body.signer);
    } else if kind == Kind::ContractBundle as u8 {
        let bu = parse(path, b, ContractBundle::from_file)?;
        r = Report::new("contract bundle");
        agreement_fields(&mut r, &bu.agreement.body);
        r.party("proposer", "proposer", &bu.agreement.proposer_card);
        r.party(
            "counterparty",
            "counterparty",
            &bu.agreement.counterparty_card,
        );
        let parts: Vec<&str> = [
            bu.receipt.as_ref().map(|_| "receipt"),
            bu.opening.as_ref().map(|_| "opening"),
            bu.affidavit.as_ref().map(|_| "affidavit"),
            bu.contract_signature.as_ref().map(|_| "contract signature"),
        ]
        .into_iter()
        .flatten()
        .collect();
        r.field(
            "contains",
            "contains",
            json!(parts),
            format!("envelope, {}", parts.join(", ")),
        );
        r.lines
            .push(("verdict".into(), "`vtp contract verify` weighs it".into()));
    } else {
        return Err(input_error(
            path,
            format!("not a vtp file kind this vtp knows (kind byte {kind})"),
        ));
    }
    r.print();
    Ok(())
}
