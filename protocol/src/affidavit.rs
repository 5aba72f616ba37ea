//! The TP's signed statements about an envelope. Each names the envelope, its
//! parties and deadline, when the TP made it, and where the TP recorded it in
//! its journal; the signing digest is what the token signs.
//!
//! **Journal position.** The TP's journal is a hash chain: record `seq`
//! carries the hash of record `seq - 1` (see the daemon's `docs/journal.md`).
//! Every affidavit names the record it is stored in ([`ChainPosition`]), and
//! the TP signs that together with the statement. So an affidavit is also
//! the TP's signed promise that its journal holds this statement at that
//! place after exactly that history: a journal that later lacks the record,
//! holds something else there, or was rewritten before it, is proven wrong by
//! the affidavit alone; two different affidavits naming the same position
//! prove that the TP forked its journal.

use serde::{Deserialize, Serialize};

use crate::decide::{CertifiableUnclaimed, ResolvableClaim};
use crate::encoding::{self, domain, signing_digest, Kind};
use crate::envelope::VerifiedEnvelope;
use crate::seal::Inside;
use crate::tp_card::TpCard;
use crate::{Digest32, IdentityId, KeyId, ProtocolError, Signature, Timestamp, TpId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Statement {
    /// The TP decrypted z, found it consistent, released `E_B(k_m)` to the
    /// recipient and holds the receipt for the sender.
    Resolved {
        key_id: KeyId,
        receipt_hash: Digest32,
        message_sha256: Digest32,
        commit_salt: [u8; 32],
        wrapped_km_hash: Digest32,
    },
    /// z did not decrypt or disagreed with its header: receipts for this
    /// envelope are void.
    InvalidEnvelope {
        key_id: KeyId,
        receipt_hash: Digest32,
    },
    /// The deadline passed and the TP never resolved this z.
    Unclaimed,
}

/// Where an affidavit is recorded in the TP's journal: its record's sequence
/// number (the first record is 1) and the hash of the record before it (all
/// zero for the first record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainPosition {
    pub seq: u64,
    pub prev: Digest32,
}

impl ChainPosition {
    /// The `prev` of the first record.
    pub const GENESIS_PREV: Digest32 = Digest32([0; 32]);
}

impl std::fmt::Display for ChainPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} (after {})", self.seq, &self.prev.to_hex()[..16])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffidavitBody {
    pub tp: TpId,
    pub envelope_id: Digest32,
    pub z_hash: Digest32,
    pub sender: IdentityId,
    pub recipient: IdentityId,
    pub deadline: Timestamp,
    pub at: Timestamp,
    pub statement: Statement,
    /// The journal record this affidavit is stored in.
    pub journal: ChainPosition,
}

impl AffidavitBody {
    /// A statement about trustee slot `slot` of an envelope. Only data:
    /// the TP's token signs statements only through the typed constructors
    /// below, which take what the decision core (`crate::decide`) let
    /// through.
    pub fn about(
        env: &VerifiedEnvelope,
        slot: usize,
        at: Timestamp,
        statement: Statement,
        journal: ChainPosition,
    ) -> Self {
        let h = env.header();
        AffidavitBody {
            tp: h.trustees[slot].tp,
            envelope_id: h.envelope_id(),
            z_hash: h.trustees[slot].z_hash,
            sender: h.sender,
            recipient: h.recipient,
            deadline: h.deadline,
            at,
            statement,
            journal,
        }
    }
    /// The resolution of a claim the TP's rules let the token resolve, at
    /// the time those rules checked the deadline.
    pub fn resolved(claim: &ResolvableClaim, inside: &Inside, journal: ChainPosition) -> Self {
        let c = claim.claim();
        Self::about(
            c.envelope(),
            c.slot(),
            claim.at(),
            Statement::Resolved {
                key_id: c.key_id(),
                receipt_hash: c.receipt().receipt().hash(),
                message_sha256: inside.message_sha256,
                commit_salt: inside.commit_salt,
                wrapped_km_hash: inside.wrapped_km_hash(),
            },
            journal,
        )
    }
    /// The verdict on a claim whose z the token found not to open under its
    /// header (or to disagree with it).
    pub fn invalid_envelope(claim: &ResolvableClaim, journal: ChainPosition) -> Self {
        let c = claim.claim();
        Self::about(
            c.envelope(),
            c.slot(),
            claim.at(),
            Statement::InvalidEnvelope {
                key_id: c.key_id(),
                receipt_hash: c.receipt().receipt().hash(),
            },
            journal,
        )
    }
    /// The certificate that the deciding trustee never resolved its z under
    /// this header.
    pub fn unclaimed(cert: &CertifiableUnclaimed, journal: ChainPosition) -> Self {
        Self::about(
            cert.envelope(),
            cert.slot(),
            cert.at(),
            Statement::Unclaimed,
            journal,
        )
    }
    /// The digest the TP's token signs.
    pub fn signing_digest(&self) -> Digest32 {
        signing_digest(domain::AFFIDAVIT, self)
    }
    pub fn kind(&self) -> &'static str {
        match self.statement {
            Statement::Resolved { .. } => "resolved",
            Statement::InvalidEnvelope { .. } => "invalid-envelope",
            Statement::Unclaimed => "unclaimed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affidavit {
    pub body: AffidavitBody,
    pub signature: Signature,
}

impl Affidavit {
    /// Check the TP's signature and that the affidavit is about this
    /// envelope (and this TP's z in it); returns the TP's slot.
    pub fn verify(&self, tp: &TpCard, env: &VerifiedEnvelope) -> Result<usize, ProtocolError> {
        if self.body.tp != tp.id() {
            return Err(ProtocolError::mismatch(
                "affidavit",
                "it is from another TP",
            ));
        }
        let h = env.header();
        let Some(slot) = h.slot_of(&tp.id()) else {
            return Err(ProtocolError::mismatch(
                "affidavit",
                "it is from a TP that is not a trustee of this envelope",
            ));
        };
        tp.verify(&self.body.signing_digest(), &self.signature, "TP affidavit")?;
        if self.body.journal.seq == 0 {
            return Err(ProtocolError::mismatch(
                "affidavit",
                "it names no journal record (sequence number 0)",
            ));
        }
        // An invalid-envelope verdict is about one header; a resolution is
        // about z (any header that agrees with z's inside).
        let about_this = match self.body.statement {
            Statement::Resolved { .. } => self.body.z_hash == h.trustees[slot].z_hash,
            _ => self.body.envelope_id == h.envelope_id(),
        } && self.body.sender == h.sender
            && self.body.recipient == h.recipient
            && self.body.deadline == h.deadline;
        if !about_this {
            return Err(ProtocolError::mismatch(
                "affidavit",
                "it is about another envelope",
            ));
        }
        Ok(slot)
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::Affidavit, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::Affidavit, bytes)
    }
}
