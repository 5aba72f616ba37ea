//! Requests and responses between clients and the TP daemon.
//!
//! Each frame on the socket is a 4-byte big-endian length followed by an
//! encoded [`Request`] or [`Response`] (versioned apart from files, see
//! [`encoding::WIRE_VERSION`]). Requests that reveal something about a party
//! are signed by that party.
//!
//! **Receipts come in pages.** A sender may hold any number of receipts, but
//! a frame is bounded; so [`FetchBody`] names where to continue
//! (`after_seq`: the journal position of the last receipt already received)
//! and the TP answers with a [`ReceiptPage`] that [`PageBuilder`] fills
//! only as far as its encoded frame stays within [`RECEIPTS_PAGE_MAX_FRAME`],
//! saying whether more remain. The cursor is the journal position the TP
//! signed in the page's last affidavit, so it cannot disagree with the page.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::affidavit::Affidavit;
use crate::claim::Claim;
use crate::encoding::{self, domain, signing_digest, Kind};
use crate::envelope::{Envelope, VerifiedEnvelope};
use crate::identity::{IdentityCard, IdentitySecret};
use crate::receipt::Receipt;
use crate::tp_card::TpCard;
use crate::{IdentityId, ProtocolError, Signature, Timestamp, TpId};

/// Default limit on one frame.
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024;
/// Largest encoded response frame of one receipts page. The default request
/// frame limit: far below what any client accepts, and a page never makes
/// the TP warn about an oversized response under default limits.
pub const RECEIPTS_PAGE_MAX_FRAME: usize = DEFAULT_MAX_FRAME;
/// Most receipts one page holds, whatever a client asks (bounds the TP's
/// work per request; the frame budget usually stops a page sooner).
pub const MAX_PAGE_RECEIPTS: u32 = 4096;

// Requests and responses live for one round trip; boxing the big variants
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    GetCard,
    Claim(Claim),
    FetchReceipts(FetchRequest),
    Unclaimed(UnclaimedRequest),
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Card(TpCard),
    Claim(ClaimOutcome),
    Receipts(ReceiptPage),
    Unclaimed(Affidavit),
    Error(WireError),
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimOutcome {
    /// `wrapped_km` is `E_B(k_m)` from inside z, for the recipient only.
    Resolved {
        affidavit: Affidavit,
        wrapped_km: Vec<u8>,
    },
    InvalidEnvelope {
        affidavit: Affidavit,
    },
}

/// A receipt the TP holds for a sender, with its affidavit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedReceipt {
    pub receipt: Receipt,
    pub affidavit: Affidavit,
}

impl ResolvedReceipt {
    /// The journal position the TP recorded (and signed) this resolution at.
    pub fn seq(&self) -> u64 {
        self.affidavit.body.journal.seq
    }
}

/// One page of a sender's receipts, oldest (lowest journal position) first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptPage {
    pub receipts: Vec<ResolvedReceipt>,
    /// More receipts follow: ask again with `after_seq` = this page's cursor
    /// (see [`ReceiptPage::check`]).
    pub more: bool,
}

impl ReceiptPage {
    /// The client's check that this is the page it asked for: every
    /// receipt lies after `after_seq`, in strictly increasing journal order,
    /// and a page that says more follow is not empty (else the client could
    /// never advance). Returns the cursor: the last receipt's position, or
    /// `after_seq` for an empty page.
    pub fn check(&self, after_seq: u64) -> Result<u64, ProtocolError> {
        let mut last = after_seq;
        for r in &self.receipts {
            if r.seq() <= last {
                return Err(ProtocolError::malformed(
                    "receipt page",
                    format!(
                        "journal record #{} does not follow #{last} (asked for receipts after #{after_seq})",
                        r.seq()
                    ),
                ));
            }
            last = r.seq();
        }
        if self.more && self.receipts.is_empty() {
            return Err(ProtocolError::malformed(
                "receipt page",
                "it is empty but says more receipts follow",
            ));
        }
        Ok(last)
    }
}

/// The page is full: the receipt offered did not fit and was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFull;

/// Fills a [`ReceiptPage`] up to a receipt count and an encoded frame size,
/// computed from the receipts' encoded sizes (exactly what
/// [`encode_response`] will produce), not estimated.
#[derive(Debug)]
pub struct PageBuilder {
    max_frame: usize,
    max_receipts: usize,
    /// Sum of the encoded sizes of `receipts`.
    items_len: usize,
    receipts: Vec<ResolvedReceipt>,
}

impl PageBuilder {
    /// A page of at most `max_receipts` (capped at [`MAX_PAGE_RECEIPTS`])
    /// whose response frame is at most `max_frame` bytes.
    pub fn new(max_frame: usize, max_receipts: NonZeroU32) -> Self {
        PageBuilder {
            max_frame,
            max_receipts: max_receipts.get().min(MAX_PAGE_RECEIPTS) as usize,
            items_len: 0,
            receipts: Vec::new(),
        }
    }

    /// No receipt may be added (the count limit is reached).
    pub fn is_full(&self) -> bool {
        self.receipts.len() >= self.max_receipts
    }

    /// Encoded length of the response frame holding `n` receipts whose
    /// encodings add up to `items_len` bytes: prefix, variant, the vector's
    /// varint length, the items, `more`.
    fn frame_len(n: usize, items_len: usize) -> usize {
        encoding::PREFIX_LEN + 1 + varint_len(n) + items_len + 1
    }

    /// Add the next receipt if the page can hold it. The first receipt is
    /// always taken (a page must make progress), even if it alone exceeds
    /// the frame budget.
    pub fn push(&mut self, r: ResolvedReceipt) -> Result<(), PageFull> {
        if self.is_full() {
            return Err(PageFull);
        }
        let len = encoding::canonical(&r).len();
        let n = self.receipts.len() + 1;
        if n > 1 && Self::frame_len(n, self.items_len + len) > self.max_frame {
            return Err(PageFull);
        }
        self.items_len += len;
        self.receipts.push(r);
        Ok(())
    }

    /// Encoded length of the response frame as it stands.
    pub fn frame_len_now(&self) -> usize {
        Self::frame_len(self.receipts.len(), self.items_len)
    }

    /// The page; `more` says whether receipts remain after it.
    pub fn finish(self, more: bool) -> ReceiptPage {
        ReceiptPage {
            receipts: self.receipts,
            more,
        }
    }
}

/// Length of postcard's LEB128 varint encoding of `n`.
fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request could not be decoded or is structurally wrong.
    Malformed,
    /// A signature or binding check failed.
    Rejected,
    /// The deadline rules forbid this now.
    Deadline,
    UnknownKey,
    NotAuthorized,
    /// Too many requests or connections; retry later.
    Busy,
    /// The TP could not complete the operation; nothing was released; retry.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TP refused ({:?}): {}", self.code, self.message)
    }
}

/// Alice asks for the receipts the TP resolved for her: the next page of
/// them, after a journal position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBody {
    pub tp: TpId,
    pub sender_card: IdentityCard,
    pub requested: Timestamp,
    /// Only receipts recorded after this journal position (0: from the
    /// start; else the cursor of the previous page, or `vtp receipts
    /// --since`).
    pub after_seq: u64,
    /// Most receipts wanted in this page; the TP may send fewer (its own
    /// cap, [`MAX_PAGE_RECEIPTS`], and the frame budget).
    pub max_receipts: NonZeroU32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub body: FetchBody,
    pub signature: Signature,
}

impl FetchRequest {
    /// Ask for the page of receipts after journal position `after_seq`.
    pub fn new(
        me: &IdentitySecret,
        tp: TpId,
        now: Timestamp,
        after_seq: u64,
        max_receipts: NonZeroU32,
    ) -> Self {
        let body = FetchBody {
            tp,
            sender_card: me.card().clone(),
            requested: now,
            after_seq,
            max_receipts,
        };
        let signature = me.sign(&signing_digest(domain::FETCH, &body));
        FetchRequest { body, signature }
    }
    /// The requester is the card's owner, asking this TP, recently.
    pub fn verify(&self, tp: &TpCard, now: Timestamp) -> Result<IdentityId, ProtocolError> {
        check_fresh(self.body.tp, self.body.requested, tp, now)?;
        self.body.sender_card.verify_statement(
            domain::FETCH,
            &self.body,
            &self.signature,
            "receipt request",
        )?;
        Ok(self.body.sender_card.id())
    }
}

/// A party asks for an unclaimed certificate after the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnclaimedBody {
    pub tp: TpId,
    pub envelope: Envelope,
    pub requester_card: IdentityCard,
    pub requested: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnclaimedRequest {
    pub body: UnclaimedBody,
    pub signature: Signature,
}

impl UnclaimedRequest {
    /// Ask trustee `tp` of the envelope.
    pub fn new(me: &IdentitySecret, env: &VerifiedEnvelope, tp: TpId, now: Timestamp) -> Self {
        let body = UnclaimedBody {
            tp,
            envelope: env.envelope().clone(),
            requester_card: me.card().clone(),
            requested: now,
        };
        let signature = me.sign(&signing_digest(domain::UNCLAIMED_REQUEST, &body));
        UnclaimedRequest { body, signature }
    }
    /// Signed by the envelope's sender or recipient; the envelope is valid.
    pub fn verify(&self, tp: &TpCard, now: Timestamp) -> Result<VerifiedEnvelope, ProtocolError> {
        check_fresh(self.body.tp, self.body.requested, tp, now)?;
        let env = self.body.envelope.verify(tp)?;
        let who = self.body.requester_card.id();
        if who != env.header().sender && who != env.header().recipient {
            return Err(ProtocolError::Refused(
                "only the sender or the recipient may ask about this envelope".into(),
            ));
        }
        self.body.requester_card.verify_statement(
            domain::UNCLAIMED_REQUEST,
            &self.body,
            &self.signature,
            "unclaimed request",
        )?;
        Ok(env)
    }
}

fn check_fresh(
    asked: TpId,
    requested: Timestamp,
    tp: &TpCard,
    now: Timestamp,
) -> Result<(), ProtocolError> {
    if asked != tp.id() {
        return Err(ProtocolError::mismatch(
            "request",
            "it is addressed to another TP",
        ));
    }
    if requested.abs_diff(now) > tp.policy().clock_skew_secs {
        return Err(ProtocolError::Deadline(
            "request timestamp too far from the TP's clock: check your clock".into(),
        ));
    }
    Ok(())
}

pub fn encode_request(r: &Request) -> Vec<u8> {
    encoding::encode(Kind::Request, r)
}
pub fn decode_request(b: &[u8]) -> Result<Request, ProtocolError> {
    encoding::decode(Kind::Request, b)
}
pub fn encode_response(r: &Response) -> Vec<u8> {
    encoding::encode(Kind::Response, r)
}
pub fn decode_response(b: &[u8]) -> Result<Response, ProtocolError> {
    encoding::decode(Kind::Response, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affidavit::{AffidavitBody, ChainPosition, Statement};
    use crate::receipt::ReceiptBody;
    use crate::{Digest32, KeyId};
    use rand_core::OsRng;

    /// A structurally complete receipt and affidavit (signatures are not
    /// checked here) at journal position `seq`; `name` varies its size.
    fn item(seq: u64, name: &str) -> ResolvedReceipt {
        let bob = IdentitySecret::generate(name, 1, &mut OsRng).unwrap();
        let d = |b: u8| Digest32([b; 32]);
        ResolvedReceipt {
            receipt: Receipt {
                body: ReceiptBody {
                    envelope_id: d(1),
                    trustees: vec![TpId(d(2))],
                    threshold: 1,
                    sender: IdentityId(d(3)),
                    recipient: bob.id(),
                    deadline: 1_900_000_000,
                    cm_hash: d(4),
                    issued: 1_800_000_000,
                },
                recipient_card: bob.card().clone(),
                signature: Signature([5; 64]),
            },
            affidavit: Affidavit {
                body: AffidavitBody {
                    tp: TpId(d(2)),
                    envelope_id: d(1),
                    z_hash: d(6),
                    sender: IdentityId(d(3)),
                    recipient: bob.id(),
                    deadline: 1_900_000_000,
                    at: 1_800_000_100,
                    statement: Statement::Resolved {
                        key_id: KeyId([7; 8]),
                        receipt_hash: d(8),
                        message_sha256: d(9),
                        commit_salt: [10; 32],
                        wrapped_km_hash: d(11),
                    },
                    journal: ChainPosition { seq, prev: d(12) },
                },
                signature: Signature([13; 64]),
            },
        }
    }

    fn frame_len(page: &ReceiptPage) -> usize {
        encode_response(&Response::Receipts(page.clone())).len()
    }

    #[test]
    fn a_page_stops_where_the_frame_would_outgrow_the_budget() {
        let budget = 16 * 1024;
        let mut b = PageBuilder::new(budget, NonZeroU32::MAX);
        let mut seq = 0;
        let refused = loop {
            seq += 1;
            // Names of varying length: receipts of different sizes.
            let r = item(seq, &"b".repeat(1 + (seq as usize * 37) % 200));
            if b.push(r.clone()).is_err() {
                break r;
            }
        };
        let computed = b.frame_len_now();
        let page = b.finish(true);
        assert!(page.receipts.len() > 5, "{}", page.receipts.len());
        assert_eq!(frame_len(&page), computed, "computed, not estimated");
        assert!(computed <= budget);
        let mut with_next = page.clone();
        with_next.receipts.push(refused);
        assert!(
            frame_len(&with_next) > budget,
            "the refused receipt did not fit"
        );
        assert_eq!(page.check(0), Ok(seq - 1));
    }

    #[test]
    fn the_computed_size_is_exact_past_one_byte_of_length() {
        // 200 receipts: the vector's length takes two bytes.
        let mut b = PageBuilder::new(usize::MAX, NonZeroU32::MAX);
        let one = item(1, "bob");
        for seq in 1..=200 {
            let mut r = one.clone();
            r.affidavit.body.journal.seq = seq;
            b.push(r).unwrap();
        }
        let computed = b.frame_len_now();
        assert_eq!(frame_len(&b.finish(false)), computed);
    }

    #[test]
    fn a_page_takes_its_first_receipt_and_honours_the_count() {
        let mut b = PageBuilder::new(10, NonZeroU32::MAX);
        b.push(item(1, "bob")).unwrap();
        assert_eq!(b.push(item(2, "bob")), Err(PageFull));

        let mut b = PageBuilder::new(usize::MAX, NonZeroU32::new(2).unwrap());
        b.push(item(1, "bob")).unwrap();
        b.push(item(2, "bob")).unwrap();
        assert!(b.is_full());
        assert_eq!(b.push(item(3, "bob")), Err(PageFull));

        // No client can ask for more than the TP's cap.
        let b = PageBuilder::new(usize::MAX, NonZeroU32::MAX);
        assert_eq!(b.max_receipts, MAX_PAGE_RECEIPTS as usize);
    }

    #[test]
    fn a_client_refuses_a_page_it_did_not_ask_for() {
        let page = |seqs: &[u64], more| ReceiptPage {
            receipts: seqs.iter().map(|s| item(*s, "bob")).collect(),
            more,
        };
        assert_eq!(page(&[3, 5, 9], true).check(2), Ok(9));
        assert_eq!(page(&[], false).check(7), Ok(7));
        for (p, after, why) in [
            (page(&[3, 5], false), 3, "does not follow #3"),
            (page(&[3, 3], false), 0, "does not follow #3"),
            (page(&[5, 4], false), 0, "does not follow #5"),
            (page(&[], true), 0, "empty but says more"),
        ] {
            let e = p.check(after).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn frames_of_another_wire_version_are_refused_and_files_keep_theirs() {
        let mut frame = encode_request(&Request::GetCard);
        assert_eq!(frame[4], encoding::WIRE_VERSION);
        frame[4] = 1;
        assert_eq!(
            decode_request(&frame),
            Err(ProtocolError::UnsupportedVersion {
                found: 1,
                supported: encoding::WIRE_VERSION
            })
        );
        let receipt = item(1, "bob").receipt.to_file();
        assert_eq!(receipt[4], encoding::FORMAT_VERSION);
    }
}
