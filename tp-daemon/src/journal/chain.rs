//! The journal as a hash chain: what a record is, how it is hashed, and the
//! check behind `tp-daemon journal verify`.
//!
//! Every answer the TP must never change — a resolution, an invalid-envelope
//! verdict, an unclaimed certificate — is one **record** in the `records`
//! table, numbered `seq = 1, 2, 3, ...` without gaps. Record `seq` stores:
//! - `body`: the canonical (postcard) bytes of a [`JournalRecord`] — the
//!   claim outcome with Alice's receipt (and Bob's `E_B(k_m)`), or the
//!   unclaimed certificate;
//! - `prev_hash`: the `hash` of record `seq - 1` (32 zero bytes for record 1);
//! - `hash = SHA-256("vtp/v1/journal-record" || 0x00 || seq as 8 bytes
//!   big-endian || prev_hash || body)`.
//!
//! The affidavit inside every record names its own position
//! (`AffidavitBody::journal = { seq, prev: prev_hash }`) and is signed by the
//! TP's token. So the chain is tamper-evident twice over: changing, removing,
//! inserting or reordering records breaks the hashes, and rewriting the whole
//! chain consistently needs the TP's signing key for every affidavit after
//! the change — and still contradicts every affidavit already handed out.
//! (Dropping records at the *end* leaves a shorter valid chain; the signed
//! affidavits their owners hold, or a head noted elsewhere — `verify` prints
//! it — expose that.)
//!
//! The lookup tables (`resolved`, `invalid`, `unclaimed`) are an index into
//! the chain: key columns and the record's `seq`. `verify` checks them too.
//!
//! The key ring, audit log, subscribers and TP cards are not chained: they
//! are written by operator commands in other processes (the chain has one
//! writer, the daemon), and TP cards are self-signed anyway.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use vtp_protocol::affidavit::{Affidavit, ChainPosition, Statement};
use vtp_protocol::encoding::{canonical, tagged_hash};
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::ClaimOutcome;
use vtp_protocol::{Digest32, TpId};

/// Domain tag of a record's hash.
pub const RECORD_DOMAIN: &str = "vtp/v1/journal-record";

/// One answer in the journal.
// Lives for one request or one verification step; boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalRecord {
    /// A claim's outcome (resolved: with `E_B(k_m)` for Bob; or an
    /// invalid-envelope verdict) and the receipt it was claimed with (for
    /// Alice).
    Claim {
        outcome: ClaimOutcome,
        receipt: Receipt,
    },
    /// An unclaimed certificate.
    Unclaimed { affidavit: Affidavit },
}

impl JournalRecord {
    pub fn affidavit(&self) -> &Affidavit {
        match self {
            JournalRecord::Claim {
                outcome:
                    ClaimOutcome::Resolved { affidavit, .. }
                    | ClaimOutcome::InvalidEnvelope { affidavit },
                ..
            }
            | JournalRecord::Unclaimed { affidavit } => affidavit,
        }
    }

    /// `resolved`, `invalid-envelope` or `unclaimed` (the `kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            JournalRecord::Claim {
                outcome: ClaimOutcome::Resolved { .. },
                ..
            } => "resolved",
            JournalRecord::Claim { .. } => "invalid-envelope",
            JournalRecord::Unclaimed { .. } => "unclaimed",
        }
    }

    /// The lookup table that indexes this kind of record.
    pub fn table(&self) -> &'static str {
        match self.kind() {
            "resolved" => "resolved",
            "invalid-envelope" => "invalid",
            _ => "unclaimed",
        }
    }

    /// The index row this record must have.
    pub fn index_row(&self, seq: u64) -> IndexRow {
        let b = &self.affidavit().body;
        IndexRow {
            table: self.table(),
            z_hash: b.z_hash,
            envelope_id: b.envelope_id,
            sender: b.sender.0,
            recipient: b.recipient.0,
            deadline: b.deadline,
            created_at: b.at,
            seq,
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<JournalRecord, DecodeError> {
        let (r, rest) = postcard::take_from_bytes(bytes).map_err(DecodeError::Postcard)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes(rest.len()));
        }
        Ok(r)
    }
}

/// A stored record body that is not a [`JournalRecord`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Postcard(postcard::Error),
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// A lookup row: where to find a record by what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    pub table: &'static str,
    pub z_hash: Digest32,
    pub envelope_id: Digest32,
    pub sender: Digest32,
    pub recipient: Digest32,
    pub deadline: u64,
    /// The affidavit's `at`.
    pub created_at: u64,
    pub seq: u64,
}

/// The last record of a chain (`seq` 0 and the genesis hash when empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Digest32,
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: ChainPosition::GENESIS_PREV,
    };
    /// Where the record after this one goes.
    pub fn next_position(&self) -> ChainPosition {
        ChainPosition {
            seq: self.seq + 1,
            prev: self.hash,
        }
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} {}", self.seq, self.hash.to_hex())
    }
}

/// The hash of record `seq` whose predecessor's hash is `prev`.
pub fn record_hash(seq: u64, prev: &Digest32, body: &[u8]) -> Digest32 {
    tagged_hash(RECORD_DOMAIN, &[&seq.to_be_bytes(), &prev.0, body])
}

/// A record encoded and hashed at its position, ready to be written.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub seq: u64,
    pub prev: Digest32,
    pub hash: Digest32,
    pub kind: &'static str,
    pub body: Vec<u8>,
    pub index: IndexRow,
}

impl Sealed {
    pub fn new(at: ChainPosition, record: &JournalRecord) -> Sealed {
        let body = canonical(record);
        Sealed {
            seq: at.seq,
            prev: at.prev,
            hash: record_hash(at.seq, &at.prev, &body),
            kind: record.kind(),
            index: record.index_row(at.seq),
            body,
        }
    }
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

fn digest(b: Vec<u8>) -> Option<Digest32> {
    b.try_into().ok().map(Digest32)
}

/// The last record of a chain is damaged (see `tp-daemon journal verify`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record #{seq} (the last one): {problem}; run `tp-daemon journal verify`")]
pub struct DamagedHead {
    pub seq: i64,
    pub problem: Problem,
}

/// The last record of the chain in `conn` (checked: its stored hash must be
/// the hash of its contents).
pub fn head(conn: &Connection) -> Result<Result<Head, DamagedHead>, rusqlite::Error> {
    type Row = (i64, Vec<u8>, Vec<u8>, Vec<u8>);
    let row: Option<Row> = conn
        .query_row(
            "SELECT seq, prev_hash, hash, body FROM records ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((seq, prev, hash, body)) = row else {
        return Ok(Ok(Head::EMPTY));
    };
    let (Some(prev), Some(hash)) = (digest(prev), digest(hash)) else {
        return Ok(Err(DamagedHead {
            seq,
            problem: Problem::HashLength,
        }));
    };
    if record_hash(seq as u64, &prev, &body) != hash {
        return Ok(Err(DamagedHead {
            seq,
            problem: Problem::Altered,
        }));
    }
    Ok(Ok(Head {
        seq: seq as u64,
        hash,
    }))
}

// ---- verification -----------------------------------------------------------

/// The first thing wrong in a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub seq: u64,
    pub problem: Problem,
}

/// What is wrong with a journal record (or where one should be). Each says
/// in one line what was found, so an operator knows what was done to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("missing (the record after #{after} is #{found}): records were removed")]
    Removed { after: u64, found: i64 },
    #[error("unexpected sequence number {0}")]
    UnexpectedSeq(i64),
    #[error("a stored hash is not 32 bytes")]
    HashLength,
    #[error(
        "prev_hash {prev} is not the hash of record #{before} ({before_hash}): the chain was \
         rewritten or reordered here"
    )]
    Relinked {
        prev: String,
        before: u64,
        before_hash: String,
    },
    #[error("its hash does not match its contents: the record was altered")]
    Altered,
    #[error("cannot decode: {0}")]
    Undecodable(String),
    #[error("its kind column says {column}, its contents are a {contents} record")]
    KindMismatch {
        column: String,
        contents: &'static str,
    },
    #[error("its affidavit names journal position {named}, not {at}")]
    Misplaced {
        named: ChainPosition,
        at: ChainPosition,
    },
    #[error("its affidavit is signed by TP {0}, whose card is not among the trusted ones")]
    UnknownSigner(TpId),
    #[error("the affidavit's signature does not verify: {0}")]
    BadSignature(String),
    #[error("the stored receipt is not the one the affidavit names")]
    OtherReceipt,
    #[error("the stored E_B(k_m) is not the one the affidavit names")]
    OtherWrap,
    #[error("its affidavit's statement does not fit the record")]
    StatementMismatch,
    #[error("it has no row in the `{0}` index")]
    NotIndexed(&'static str),
    #[error("it is indexed in `{found}`, not in `{want}`")]
    WrongIndex {
        found: &'static str,
        want: &'static str,
    },
    #[error("its `{0}` index row does not match the record (keys, deadline or time differ)")]
    IndexMismatch(&'static str),
    #[error("it is indexed more than once")]
    IndexedTwice,
    #[error("cannot read the `{table}` index: {detail}")]
    IndexUnreadable { table: &'static str, detail: String },
    #[error("its `{0}` index row holds a malformed key")]
    MalformedIndexKey(&'static str),
    #[error("missing: the `{0}` index points to it, but there is no such record")]
    Orphaned(&'static str),
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record #{}: {}", self.seq, self.problem)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records checked (up to the first bad one).
    pub records: u64,
    /// The last good record.
    pub head: Head,
    /// Affidavits per signing TP.
    pub signers: Vec<(TpId, u64)>,
    pub first_bad: Option<BadRecord>,
}

/// Walk the whole chain of `conn` in one read transaction and check every
/// record: sequence numbers without gaps, `prev_hash` links, hashes, the
/// body decodes and matches its kind, the affidavit names this position and
/// its signature verifies with the card of the TP it names (`cards`; if
/// `trusted` is given only those cards count), a resolution's receipt and
/// `E_B(k_m)` match the affidavit, and every record has exactly its index
/// row. Stops at the first bad record.
pub fn verify(
    conn: &mut Connection,
    cards: &[TpCard],
    trusted: Option<&[TpCard]>,
) -> Result<Report, rusqlite::Error> {
    let tx = conn.transaction()?;
    let by_id: HashMap<TpId, &TpCard> = match trusted {
        Some(t) => t.iter().map(|c| (c.id(), c)).collect(),
        None => cards.iter().map(|c| (c.id(), c)).collect(),
    };
    let mut report = Report {
        records: 0,
        head: Head::EMPTY,
        signers: Vec::new(),
        first_bad: None,
    };
    let mut signers: HashMap<TpId, u64> = HashMap::new();
    let mut walk_bad: Option<BadRecord> = None;
    {
        let mut stmt =
            tx.prepare("SELECT seq, kind, prev_hash, hash, body FROM records ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        let mut index = IndexLookup::new(&tx)?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let kind: String = row.get(1)?;
            let prev: Vec<u8> = row.get(2)?;
            let hash: Vec<u8> = row.get(3)?;
            let body: Vec<u8> = row.get(4)?;
            let expected = report.head.seq + 1;
            let bad = |problem: Problem, at: u64| BadRecord { seq: at, problem };
            if seq < 1 || seq as u64 != expected {
                walk_bad = Some(if (seq as u64) > expected {
                    bad(
                        Problem::Removed {
                            after: report.head.seq,
                            found: seq,
                        },
                        expected,
                    )
                } else {
                    bad(Problem::UnexpectedSeq(seq), expected)
                });
                break;
            }
            let seq = seq as u64;
            let (Some(prev), Some(hash)) = (digest(prev), digest(hash)) else {
                walk_bad = Some(bad(Problem::HashLength, seq));
                break;
            };
            if prev != report.head.hash {
                walk_bad = Some(bad(
                    Problem::Relinked {
                        prev: prev.to_hex()[..16].to_owned(),
                        before: report.head.seq,
                        before_hash: report.head.hash.to_hex()[..16].to_owned(),
                    },
                    seq,
                ));
                break;
            }
            if record_hash(seq, &prev, &body) != hash {
                walk_bad = Some(bad(Problem::Altered, seq));
                break;
            }
            if let Err(problem) =
                check_record(seq, prev, &kind, &body, &by_id, &mut signers, &mut index)
            {
                walk_bad = Some(bad(problem, seq));
                break;
            }
            report.records += 1;
            report.head = Head { seq, hash };
        }
    }
    // Index rows pointing at no record (or past the last good one).
    let mut orphan: Option<BadRecord> = None;
    for table in ["resolved", "invalid", "unclaimed"] {
        let q = format!(
            "SELECT MIN(x.seq) FROM {table} x LEFT JOIN records r ON r.seq = x.seq \
             WHERE r.seq IS NULL"
        );
        let min: Option<i64> = tx.query_row(&q, [], |r| r.get(0))?;
        if let Some(s) = min {
            let s = s.max(0) as u64;
            if !matches!(&orphan, Some(o) if o.seq <= s) {
                orphan = Some(BadRecord {
                    seq: s,
                    problem: Problem::Orphaned(table),
                });
            }
        }
    }
    report.first_bad = match (walk_bad, orphan) {
        (Some(w), Some(o)) if o.seq < w.seq => Some(o),
        (Some(w), _) => Some(w),
        (None, o) => o,
    };
    let mut signers: Vec<(TpId, u64)> = signers.into_iter().collect();
    signers.sort_by_key(|(id, _)| id.0 .0);
    report.signers = signers;
    Ok(report)
}

/// Reads index rows by `seq`.
struct IndexLookup<'c> {
    stmts: Vec<(&'static str, rusqlite::Statement<'c>)>,
}

impl<'c> IndexLookup<'c> {
    fn new(conn: &'c Connection) -> Result<Self, rusqlite::Error> {
        let mut stmts = Vec::new();
        for table in ["resolved", "invalid", "unclaimed"] {
            stmts.push((
                table,
                conn.prepare(&format!(
                    "SELECT z_hash, envelope_id, sender, recipient, deadline, created_at \
                     FROM {table} WHERE seq = ?1"
                ))?,
            ));
        }
        Ok(IndexLookup { stmts })
    }

    /// Every index row naming `seq`, by table.
    fn rows(&mut self, seq: u64) -> Result<Vec<IndexRow>, Problem> {
        let mut out = Vec::new();
        for (table, stmt) in &mut self.stmts {
            let found = stmt
                .query_row([seq as i64], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .optional()
                .map_err(|e| Problem::IndexUnreadable {
                    table,
                    detail: e.to_string(),
                })?;
            if let Some((z, e, s, r, d, c)) = found {
                let (Some(z), Some(e), Some(s), Some(r)) =
                    (digest(z), digest(e), digest(s), digest(r))
                else {
                    return Err(Problem::MalformedIndexKey(table));
                };
                out.push(IndexRow {
                    table,
                    z_hash: z,
                    envelope_id: e,
                    sender: s,
                    recipient: r,
                    deadline: d as u64,
                    created_at: c as u64,
                    seq,
                });
            }
        }
        Ok(out)
    }
}

fn check_record(
    seq: u64,
    prev: Digest32,
    kind: &str,
    body: &[u8],
    cards: &HashMap<TpId, &TpCard>,
    signers: &mut HashMap<TpId, u64>,
    index: &mut IndexLookup<'_>,
) -> Result<(), Problem> {
    let record = JournalRecord::decode(body).map_err(|e| Problem::Undecodable(e.to_string()))?;
    if record.kind() != kind {
        return Err(Problem::KindMismatch {
            column: kind.to_owned(),
            contents: record.kind(),
        });
    }
    let a = record.affidavit();
    let at = ChainPosition { seq, prev };
    if a.body.journal != at {
        return Err(Problem::Misplaced {
            named: a.body.journal,
            at,
        });
    }
    let card = cards
        .get(&a.body.tp)
        .ok_or(Problem::UnknownSigner(a.body.tp))?;
    card.verify(&a.body.signing_digest(), &a.signature, "TP affidavit")
        .map_err(|e| Problem::BadSignature(e.to_string()))?;
    *signers.entry(a.body.tp).or_default() += 1;
    match (&record, &a.body.statement) {
        (
            JournalRecord::Claim { outcome, receipt },
            Statement::Resolved {
                receipt_hash,
                wrapped_km_hash,
                ..
            },
        ) => {
            if receipt.hash() != *receipt_hash {
                return Err(Problem::OtherReceipt);
            }
            let ClaimOutcome::Resolved { wrapped_km, .. } = outcome else {
                unreachable!("kind checked above");
            };
            if vtp_protocol::seal::wrapped_km_hash(wrapped_km) != *wrapped_km_hash {
                return Err(Problem::OtherWrap);
            }
        }
        (JournalRecord::Claim { receipt, .. }, Statement::InvalidEnvelope { receipt_hash, .. }) => {
            if receipt.hash() != *receipt_hash {
                return Err(Problem::OtherReceipt);
            }
        }
        (JournalRecord::Unclaimed { .. }, Statement::Unclaimed) => {}
        _ => return Err(Problem::StatementMismatch),
    }
    let want = record.index_row(seq);
    let rows = index.rows(seq)?;
    match rows.as_slice() {
        [] => Err(Problem::NotIndexed(want.table)),
        [one] if *one == want => Ok(()),
        [one] if one.table != want.table => Err(Problem::WrongIndex {
            found: one.table,
            want: want.table,
        }),
        [_] => Err(Problem::IndexMismatch(want.table)),
        _ => Err(Problem::IndexedTwice),
    }
}
