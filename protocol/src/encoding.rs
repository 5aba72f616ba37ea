//! Versioned postcard encoding shared by files and wire frames.
//!
//! A file is `b"VTP" || kind || version || postcard(body)`. The kind byte lets a
//! tool say "this is a receipt, expected an envelope" instead of a parse error;
//! the version byte lets a later format coexist. Files and wire frames are
//! versioned apart ([`Kind::version`]): a change to requests and responses
//! must not make anyone's stored identities, envelopes or receipts unreadable,
//! and a client and TP that speak different wire versions say so in one line
//! instead of misreading each other's frames. Envelope files additionally
//! carry the message ciphertext after the encoded envelope (see
//! [`crate::envelope::EnvelopeFile`]).

use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use crate::{Digest32, ProtocolError};

/// The version of files (identities, cards, envelopes, receipts, affidavits,
/// contracts) this build reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// The version of wire frames ([`Kind::Request`], [`Kind::Response`]) this
/// build speaks. Version 2: receipts are fetched in pages
/// ([`crate::wire::FetchBody::after_seq`]); a version-1 frame is refused as
/// [`ProtocolError::UnsupportedVersion`], never decoded as something else.
pub const WIRE_VERSION: u8 = 2;
const MAGIC: &[u8; 3] = b"VTP";

/// What a file or frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    IdentitySecret = 1,
    IdentityCard = 2,
    TpCard = 3,
    Envelope = 4,
    Receipt = 5,
    Opening = 6,
    Affidavit = 7,
    Request = 8,
    Response = 9,
    ContractProposal = 10,
    ContractAgreement = 11,
    ContractSignature = 12,
    ContractBundle = 13,
    VoidEvidence = 14,
    BankCard = 15,
    Coin = 16,
    BankStatement = 17,
    TxnOutcome = 18,
}

impl Kind {
    /// The version byte written after this kind (and the only one read).
    pub fn version(self) -> u8 {
        match self {
            Kind::Request | Kind::Response => WIRE_VERSION,
            _ => FORMAT_VERSION,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::IdentitySecret => "secret identity",
            Kind::IdentityCard => "identity card",
            Kind::TpCard => "TP card",
            Kind::Envelope => "envelope",
            Kind::Receipt => "receipt",
            Kind::Opening => "opening",
            Kind::Affidavit => "TP affidavit",
            Kind::Request => "request",
            Kind::Response => "response",
            Kind::ContractProposal => "contract proposal",
            Kind::ContractAgreement => "contract agreement",
            Kind::ContractSignature => "contract signature",
            Kind::ContractBundle => "contract bundle",
            Kind::VoidEvidence => "void evidence",
            Kind::BankCard => "bank card",
            Kind::Coin => "coin",
            Kind::BankStatement => "bank statement",
            Kind::TxnOutcome => "transaction outcome",
        }
    }
    /// The kind a file's fourth byte names.
    pub fn from_byte(b: u8) -> Option<Kind> {
        use Kind::*;
        [
            IdentitySecret,
            IdentityCard,
            TpCard,
            Envelope,
            Receipt,
            Opening,
            Affidavit,
            Request,
            Response,
            ContractProposal,
            ContractAgreement,
            ContractSignature,
            ContractBundle,
            VoidEvidence,
            BankCard,
            Coin,
            BankStatement,
            TxnOutcome,
        ]
        .into_iter()
        .find(|k| *k as u8 == b)
    }
}

/// Length of the `VTP || kind || version` prefix.
pub const PREFIX_LEN: usize = 5;

/// Canonical postcard bytes of a value (used for hashing and signing).
pub fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard encoding into a Vec cannot fail")
}

/// Encode `value` as a complete file or frame of the given kind.
pub fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.push(kind.version());
    out.extend_from_slice(&canonical(value));
    out
}

/// Check the prefix of `bytes` and return the body after it.
pub fn check_prefix(kind: Kind, bytes: &[u8]) -> Result<&[u8], ProtocolError> {
    if bytes.len() < PREFIX_LEN
        && MAGIC.starts_with(&bytes[..bytes.len().min(3)])
        && !bytes.is_empty()
    {
        return Err(ProtocolError::Truncated { what: kind.name() });
    }
    if bytes.len() < PREFIX_LEN || &bytes[..3] != MAGIC {
        return Err(ProtocolError::malformed(
            kind.name(),
            "not a vtp file (missing VTP header)",
        ));
    }
    match Kind::from_byte(bytes[3]) {
        Some(k) if k == kind => {}
        Some(k) => {
            return Err(ProtocolError::WrongKind {
                expected: kind.name(),
                found: k.name(),
            })
        }
        None => {
            return Err(ProtocolError::malformed(
                kind.name(),
                format!("unknown kind byte {}", bytes[3]),
            ))
        }
    }
    if bytes[4] != kind.version() {
        return Err(ProtocolError::UnsupportedVersion {
            found: bytes[4],
            supported: kind.version(),
        });
    }
    Ok(&bytes[PREFIX_LEN..])
}

/// Decode a complete file or frame; trailing bytes are an error (one value,
/// one encoding: no room for smuggled data).
pub fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T, ProtocolError> {
    let body = check_prefix(kind, bytes)?;
    decode_body(kind, body)
}

thread_local! {
    static FAILED_CHECK: std::cell::RefCell<Option<ProtocolError>> =
        const { std::cell::RefCell::new(None) };
}

/// A check that failed while a value was being decoded (a card's
/// signature, a point off the curve). serde hands postcard only a message
/// it discards, so the error is kept here for [`decode_body`] to report.
pub(crate) fn failed_check(e: ProtocolError) -> ProtocolError {
    FAILED_CHECK.with(|c| *c.borrow_mut() = Some(e.clone()));
    e
}

/// What went wrong decoding a `kind`, in words: a cut-off file is
/// "truncated receipt", not the decoder's "hit the end of buffer".
fn decode_error(kind: Kind, e: postcard::Error) -> ProtocolError {
    let what = kind.name();
    match e {
        postcard::Error::DeserializeUnexpectedEnd => ProtocolError::Truncated { what },
        postcard::Error::SerdeDeCustom => match FAILED_CHECK.with(|c| c.borrow_mut().take()) {
            Some(inner) => ProtocolError::malformed(what, inner),
            None => ProtocolError::malformed(what, "a value in it fails its checks"),
        },
        e => ProtocolError::malformed(what, format!("corrupted data ({e})")),
    }
}

pub(crate) fn decode_body<T: DeserializeOwned>(
    kind: Kind,
    body: &[u8],
) -> Result<T, ProtocolError> {
    FAILED_CHECK.with(|c| *c.borrow_mut() = None);
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| decode_error(kind, e))?;
    if !rest.is_empty() {
        return Err(ProtocolError::malformed(
            kind.name(),
            format!("{} unexpected trailing bytes", rest.len()),
        ));
    }
    Ok(value)
}

/// Domain tags: one per kind of signed or hashed statement.
pub mod domain {
    pub const IDENTITY_CARD: &str = "vtp/v1/identity-card";
    pub const IDENTITY_ID: &str = "vtp/v1/identity-id";
    pub const TP_CARD: &str = "vtp/v1/tp-card";
    /// A TP card that also signs the TP's addresses (layout 2, see
    /// `crate::tp_card`).
    pub const TP_CARD_ADDRESSED: &str = "vtp/v2/tp-card";
    pub const TP_ID: &str = "vtp/v1/tp-id";
    pub const ENVELOPE: &str = "vtp/v1/envelope";
    pub const ENVELOPE_ID: &str = "vtp/v1/envelope-id";
    pub const Z_HASH: &str = "vtp/v1/z";
    pub const Z_AAD: &str = "vtp/v1/z-aad";
    pub const RECEIPT: &str = "vtp/v1/receipt";
    pub const RECEIPT_HASH: &str = "vtp/v1/receipt-hash";
    pub const CLAIM: &str = "vtp/v1/claim";
    pub const AFFIDAVIT: &str = "vtp/v1/affidavit";
    pub const FETCH: &str = "vtp/v1/fetch-receipts";
    pub const UNCLAIMED_REQUEST: &str = "vtp/v1/unclaimed-request";
    pub const MESSAGE_COMMITMENT: &str = "vtp/v1/message-commitment";
    pub const WRAPPED_KM: &str = "vtp/v1/wrapped-message-key";
    pub const WRAP_CONTEXT: &str = "vtp/v1/wrap-context";
    pub const CM_HASH: &str = "vtp/v1/message-ciphertext";
    /// The Fiat–Shamir challenge of the proof that a wrap's shared point is
    /// the recipient's ECDH result.
    pub const WRAP_DLEQ: &str = "vtp/v1/wrap-dleq";
    // The bank and the transaction log (crate::bank, crate::txlog).
    pub const BANK_CARD: &str = "vtp/v1/bank-card";
    pub const BANK_ID: &str = "vtp/v1/bank-id";
    /// What a brand key blind-signs: the coin body (RFC 9474 message).
    pub const COIN: &str = "vtp/v1/coin";
    pub const COIN_ID: &str = "vtp/v1/coin-id";
    pub const WITHDRAW: &str = "vtp/v1/withdraw";
    pub const LOCK: &str = "vtp/v1/lock";
    pub const DEPOSIT: &str = "vtp/v1/deposit";
    pub const REFRESH: &str = "vtp/v1/refresh";
    pub const BANK_STATEMENT: &str = "vtp/v1/bank-statement";
    /// A bank statement's salted link to the journal record before it.
    pub const BANK_CHAIN_LINK: &str = "vtp/v1/bank-chain-link";
    /// Hash of a request body as a statement names it.
    pub const BANK_REQUEST_HASH: &str = "vtp/v1/bank-request";
    pub const TXN_COMMIT: &str = "vtp/v1/txn-commit";
    pub const TXN_OUTCOME: &str = "vtp/v1/txn-outcome";
    pub const TXN_RELEASE: &str = "vtp/v1/txn-release";
}

/// `SHA-256(domain || 0x00 || parts...)`: every hash in the protocol is
/// domain-separated so no value can be reinterpreted as another.
pub fn tagged_hash(domain: &str, parts: &[&[u8]]) -> Digest32 {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    for p in parts {
        h.update(p);
    }
    Digest32(h.finalize().into())
}

/// The digest that an ECDSA signature over a statement of kind `domain` signs.
/// The TP's token signs exactly this digest with `CKM_ECDSA`.
pub fn signing_digest<T: Serialize>(domain: &str, body: &T) -> Digest32 {
    tagged_hash(domain, &[&canonical(body)])
}

/// Incremental hasher for the message ciphertext (`H(c_m)`), so clients can
/// hash gigabytes while streaming.
pub struct CmHasher(Sha256);

impl Default for CmHasher {
    fn default() -> Self {
        let mut h = Sha256::new();
        h.update(domain::CM_HASH.as_bytes());
        h.update([0u8]);
        CmHasher(h)
    }
}

impl CmHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> Digest32 {
        Digest32(self.0.finalize().into())
    }
}
