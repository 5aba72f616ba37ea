//! Contract signing over certified mail (Micali's "contract closing" and
//! fair electronic contract signing; docs/protocol.md lists the papers). See
//! `docs/contract.md` for the reasoning.
//!
//! 1. **Preliminary agreement.** Alice (the proposer, A) signs an
//!    [`AgreementBody`] binding `SHA-256(C)`, A, B, the TP and the deadline T,
//!    with a fresh nonce: a [`Proposal`]. Bob (the counterparty, B)
//!    countersigns the same body under his own domain tag: an [`Agreement`],
//!    whose id is `H(body)`. The agreed terms: *Alice is committed to C if Bob
//!    gets the message consisting of her contract signature under this
//!    agreement; Bob is committed to C if Alice gets his receipt for that
//!    message.* Neither signature commits anyone to C by itself.
//! 2. **The exchange.** Alice's [`ContractSignature`] (over the agreement id
//!    and `SHA-256(C)`) is the message `m` of an ordinary certified-mail
//!    envelope from A to B whose deadline, TP and parties are the agreement's
//!    and whose nonce is derived from the agreement id
//!    ([`envelope_nonce`]): Bob's receipt for that envelope therefore names
//!    the agreement. Bob checks this binding before he signs the receipt
//!    ([`VerifiedAgreement::check_envelope`]); the receipt is his commitment.
//! 3. **The outcome.** A [`ContractBundle`] holds the agreement, the envelope
//!    (with `c_m`), and either the proof of execution (receipt + opening or
//!    resolved affidavit + Alice's contract signature) or the TP's statement
//!    that it was never completed (unclaimed) or that Bob's receipt is void
//!    (invalid envelope). [`judge_bundle`] checks it offline.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::affidavit::{Affidavit, Statement};
use crate::encoding::{self, canonical, signing_digest, tagged_hash, CmHasher, Kind};
use crate::envelope::{check_deadline, Envelope, EnvelopeHeader};
use crate::evidence::{judge, DeliveredVia};
use crate::identity::{IdentityCard, IdentitySecret};
use crate::message::{self, MessageOpener};
use crate::opening::Opening;
use crate::receipt::Receipt;
use crate::tp_card::TpCard;
use crate::{Digest32, IdentityId, KeyId, ProtocolError, Signature, Timestamp, TpId};

/// Domain tags of the contract statements (see [`crate::encoding::domain`]).
pub mod domain {
    /// The proposer's signature of an agreement body.
    pub const PROPOSAL: &str = "vtp/v1/contract-proposal";
    /// The counterparty's countersignature of the same body.
    pub const ACCEPTANCE: &str = "vtp/v1/contract-acceptance";
    pub const AGREEMENT_ID: &str = "vtp/v1/contract-agreement-id";
    /// Alice's signature of the contract: the message of the exchange.
    pub const CONTRACT_SIGNATURE: &str = "vtp/v1/contract-signature";
    /// The envelope nonce of an agreement's exchange.
    pub const ENVELOPE_NONCE: &str = "vtp/v1/contract-envelope-nonce";
}

/// The terms both parties sign, verbatim (checked on every agreement).
pub const TERMS: &str = "vtp/v1 contract closing: the proposer is committed to the contract \
if the counterparty gets the message consisting of the proposer's contract signature under \
this agreement; the counterparty is committed to the contract if the proposer gets the \
counterparty's receipt for that message. Only before the deadline can the trusted party \
complete the exchange.";

/// The preliminary agreement, as signed by both parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementBody {
    pub terms: String,
    /// SHA-256 of the contract file C (plain SHA-256: `sha256sum` agrees).
    pub contract_sha256: Digest32,
    /// A: sends her contract signature as the message.
    pub proposer: IdentityId,
    /// B: commits with his receipt.
    pub counterparty: IdentityId,
    pub tp: TpId,
    /// T: the exchange's deadline. The TP resolves strictly before it.
    pub deadline: Timestamp,
    /// Fresh per agreement: two agreements on the same contract differ.
    pub nonce: [u8; 32],
    pub created: Timestamp,
}

impl AgreementBody {
    pub fn id(&self) -> Digest32 {
        tagged_hash(domain::AGREEMENT_ID, &[&canonical(self)])
    }

    fn check_shape(&self, tp: &TpCard) -> Result<(), ProtocolError> {
        if self.terms != TERMS {
            return Err(ProtocolError::mismatch(
                "agreement",
                "its terms are not this version's contract-closing terms",
            ));
        }
        if self.proposer == self.counterparty {
            return Err(ProtocolError::malformed(
                "agreement",
                "proposer and counterparty are the same identity",
            ));
        }
        if self.tp != tp.id() {
            return Err(ProtocolError::mismatch(
                "agreement",
                "it names another TP than this TP card",
            ));
        }
        Ok(())
    }
}

/// The envelope nonce of the exchange under agreement `agreement_id` with the
/// TP encryption key `key_id`. Deterministic, so Bob (and any judge) can check
/// that an envelope belongs to the agreement, and Alice's opening secret is
/// the same each time she signs under it (the message is deterministic too,
/// so signing again yields the same z: one exchange per agreement and TP key).
pub fn envelope_nonce(agreement_id: &Digest32, key_id: &KeyId) -> [u8; 32] {
    tagged_hash(domain::ENVELOPE_NONCE, &[&agreement_id.0, &key_id.0]).0
}

/// Alice's signed proposal: an agreement body and her signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub body: AgreementBody,
    pub proposer_card: IdentityCard,
    pub proposer_signature: Signature,
}

impl Proposal {
    /// Alice proposes. `nonce` must be fresh random.
    pub fn new(
        me: &IdentitySecret,
        counterparty: &IdentityCard,
        tp: &TpCard,
        contract_sha256: Digest32,
        deadline: Timestamp,
        now: Timestamp,
        nonce: [u8; 32],
    ) -> Result<Proposal, ProtocolError> {
        if counterparty.id() == me.id() {
            return Err(ProtocolError::Refused(
                "the counterparty is yourself".into(),
            ));
        }
        check_deadline(deadline, now, tp, 0)?;
        let body = AgreementBody {
            terms: TERMS.into(),
            contract_sha256,
            proposer: me.id(),
            counterparty: counterparty.id(),
            tp: tp.id(),
            deadline,
            nonce,
            created: now,
        };
        let proposer_signature = me.sign(&signing_digest(domain::PROPOSAL, &body));
        Ok(Proposal {
            body,
            proposer_card: me.card().clone(),
            proposer_signature,
        })
    }

    /// Terms, TP, proposer's card and signature.
    pub fn verify(&self, tp: &TpCard) -> Result<(), ProtocolError> {
        self.body.check_shape(tp)?;
        if self.proposer_card.id() != self.body.proposer {
            return Err(ProtocolError::mismatch(
                "agreement",
                "the enclosed proposer card is not the proposer it names",
            ));
        }
        self.proposer_card.verify_statement(
            domain::PROPOSAL,
            &self.body,
            &self.proposer_signature,
            "agreement (proposer's signature)",
        )
    }

    /// Bob countersigns after checking: it verifies, it is from
    /// `expected_proposer` to him, for the contract he holds, for the TP he
    /// trusts, and its deadline leaves at least `min_time_left` (and the TP's
    /// minimum claim window).
    pub fn accept(
        &self,
        me: &IdentitySecret,
        tp: &TpCard,
        contract_sha256: Digest32,
        expected_proposer: IdentityId,
        now: Timestamp,
        min_time_left: u64,
    ) -> Result<Agreement, ProtocolError> {
        self.verify(tp)?;
        let b = &self.body;
        if b.counterparty != me.id() {
            return Err(ProtocolError::Refused(
                "this proposal is addressed to someone else".into(),
            ));
        }
        if b.proposer != expected_proposer {
            return Err(ProtocolError::Refused(
                "this proposal is not from the expected proposer".into(),
            ));
        }
        if b.contract_sha256 != contract_sha256 {
            return Err(ProtocolError::mismatch(
                "agreement",
                "it is for another contract than the one given (SHA-256 differs)",
            ));
        }
        check_deadline(b.deadline, now, tp, min_time_left)?;
        let counterparty_signature = me.sign(&signing_digest(domain::ACCEPTANCE, b));
        Ok(Agreement {
            body: b.clone(),
            proposer_card: self.proposer_card.clone(),
            counterparty_card: me.card().clone(),
            proposer_signature: self.proposer_signature,
            counterparty_signature,
        })
    }

    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::ContractProposal, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::ContractProposal, bytes)
    }
}

/// The preliminary agreement signed by both parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub body: AgreementBody,
    pub proposer_card: IdentityCard,
    pub counterparty_card: IdentityCard,
    pub proposer_signature: Signature,
    pub counterparty_signature: Signature,
}

impl Agreement {
    pub fn id(&self) -> Digest32 {
        self.body.id()
    }

    /// Both signatures, both cards, the terms and the TP.
    pub fn verify(&self, tp: &TpCard) -> Result<VerifiedAgreement, ProtocolError> {
        Proposal {
            body: self.body.clone(),
            proposer_card: self.proposer_card.clone(),
            proposer_signature: self.proposer_signature,
        }
        .verify(tp)?;
        if self.counterparty_card.id() != self.body.counterparty {
            return Err(ProtocolError::mismatch(
                "agreement",
                "the enclosed counterparty card is not the counterparty it names",
            ));
        }
        self.counterparty_card.verify_statement(
            domain::ACCEPTANCE,
            &self.body,
            &self.counterparty_signature,
            "agreement (counterparty's signature)",
        )?;
        Ok(VerifiedAgreement(self.clone()))
    }

    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::ContractAgreement, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::ContractAgreement, bytes)
    }
}

/// An agreement whose signatures were checked against a TP card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAgreement(Agreement);

impl VerifiedAgreement {
    pub fn agreement(&self) -> &Agreement {
        &self.0
    }
    pub fn body(&self) -> &AgreementBody {
        &self.0.body
    }
    pub fn id(&self) -> Digest32 {
        self.0.id()
    }

    /// The envelope is this agreement's exchange: from the proposer to the
    /// counterparty, for the agreement's TP and deadline, with the nonce
    /// derived from the agreement id, and a body the size of a contract
    /// signature. Bob refuses to sign a receipt otherwise; a judge refuses to
    /// count such a receipt as his commitment.
    pub fn check_envelope(&self, h: &EnvelopeHeader) -> Result<(), ProtocolError> {
        let b = self.body();
        let diff = if h.sender != b.proposer {
            Some("its sender is not the agreement's proposer")
        } else if h.recipient != b.counterparty {
            Some("its recipient is not the agreement's counterparty")
        } else if h.trustees.len() != 1 || h.trustees[0].tp != b.tp {
            Some("its TP is not the agreement's TP (contracts use one TP, not a group)")
        } else if h.deadline != b.deadline {
            Some("its deadline is not the agreement's deadline")
        } else if h.nonce != envelope_nonce(&self.id(), &h.trustees[0].key_id) {
            Some("it is not the exchange of this agreement (nonce not derived from the agreement id)")
        } else if h.cm_len != message::sealed_len(ContractSignature::FILE_LEN as u64) {
            Some("its message is not the size of a contract signature")
        } else {
            None
        };
        match diff {
            Some(d) => Err(ProtocolError::mismatch("envelope for the agreement", d)),
            None => Ok(()),
        }
    }
}

/// What Alice signs: "I sign contract `contract_sha256` under agreement
/// `agreement_id`". No timestamp, and ECDSA here is deterministic (RFC 6979),
/// so signing again gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractSignatureBody {
    pub agreement_id: Digest32,
    pub contract_sha256: Digest32,
    pub signer: IdentityId,
}

/// Alice's contract signature: the message `m` of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractSignature {
    pub body: ContractSignatureBody,
    pub signature: Signature,
}

impl ContractSignature {
    /// Length of every contract-signature file (fixed-size fields only).
    pub const FILE_LEN: usize = encoding::PREFIX_LEN + 32 + 32 + 32 + 1 + 64;

    /// Alice signs the contract of an agreement she proposed.
    pub fn sign(
        me: &IdentitySecret,
        agreement: &VerifiedAgreement,
    ) -> Result<ContractSignature, ProtocolError> {
        let b = agreement.body();
        if b.proposer != me.id() {
            return Err(ProtocolError::Refused(
                "only the agreement's proposer signs the contract in the exchange".into(),
            ));
        }
        let body = ContractSignatureBody {
            agreement_id: agreement.id(),
            contract_sha256: b.contract_sha256,
            signer: me.id(),
        };
        let signature = me.sign(&signing_digest(domain::CONTRACT_SIGNATURE, &body));
        Ok(ContractSignature { body, signature })
    }

    /// It is the proposer's signature of this agreement's contract, under
    /// this agreement (not lifted from another one).
    pub fn verify(&self, agreement: &VerifiedAgreement) -> Result<(), ProtocolError> {
        let a = agreement.body();
        if self.body.agreement_id != agreement.id() {
            return Err(ProtocolError::mismatch(
                "contract signature",
                "it was made under another agreement",
            ));
        }
        if self.body.contract_sha256 != a.contract_sha256 {
            return Err(ProtocolError::mismatch(
                "contract signature",
                "it signs another contract than the agreed one",
            ));
        }
        if self.body.signer != a.proposer {
            return Err(ProtocolError::mismatch(
                "contract signature",
                "it is not by the agreement's proposer",
            ));
        }
        agreement.agreement().proposer_card.verify_statement(
            domain::CONTRACT_SIGNATURE,
            &self.body,
            &self.signature,
            "contract signature (proposer's signature)",
        )
    }

    /// The message bytes (what the envelope carries).
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::ContractSignature, self)
    }
    /// Parse a delivered message: it must be exactly the canonical encoding,
    /// so the bytes whose SHA-256 the TP and the opening certify are the
    /// signature a judge sees.
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let s: ContractSignature = encoding::decode(Kind::ContractSignature, bytes)?;
        if s.to_file() != bytes {
            return Err(ProtocolError::malformed(
                "contract signature",
                "not in canonical encoding",
            ));
        }
        Ok(s)
    }
    pub fn sha256(&self) -> Digest32 {
        Digest32(Sha256::digest(self.to_file()).into())
    }
}

/// Everything a judge needs about one agreement's outcome.
///
/// * executed: `receipt`, `contract_signature` and `opening` and/or a
///   *resolved* `affidavit`;
/// * never completed: an *unclaimed* `affidavit` (and no opening);
/// * Bob's receipt void: an *invalid-envelope* `affidavit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractBundle {
    pub agreement: Agreement,
    pub envelope: Envelope,
    /// `c_m`: lets the judge check that the opening's key really decrypts
    /// the signed ciphertext to Alice's contract signature.
    pub message_ciphertext: Vec<u8>,
    pub receipt: Option<Receipt>,
    pub opening: Option<Opening>,
    pub affidavit: Option<Affidavit>,
    pub contract_signature: Option<ContractSignature>,
}

impl ContractBundle {
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::ContractBundle, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::ContractBundle, bytes)
    }
}

/// What the evidence proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Both are bound: Bob holds Alice's contract signature, Alice Bob's receipt.
    Executed,
    /// The TP certifies it never resolved the exchange, and no opening is
    /// shown: Bob never got Alice's signature through the TP, and after T he
    /// never can.
    NeverCompleted,
    /// The TP certifies the envelope invalid: Bob's receipt commits him to
    /// nothing, and there is no valid opening of it.
    ReceiptVoid,
}

/// The judge's answer about a contract bundle, ready to print as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ContractVerdict {
    /// The evidence is genuine and consistent (whatever the outcome).
    pub valid: bool,
    pub outcome: Option<Outcome>,
    /// Executed: directly (`opening`) or through the TP (`trusted-party`).
    pub completed_via: Option<DeliveredVia>,
    pub agreement_id: String,
    pub contract_sha256: String,
    pub proposer: String,
    pub proposer_name: String,
    pub counterparty: String,
    pub counterparty_name: String,
    pub deadline: Timestamp,
    pub agreed_at: Timestamp,
    /// When Bob signed his receipt (his clock), if a receipt is shown.
    pub committed_at: Option<Timestamp>,
    /// When the TP made its statement, if an affidavit is shown.
    pub tp_statement_at: Option<Timestamp>,
    /// TPs whose statement the evidence proves false (an invalid-envelope
    /// certificate for a z the opening recomputes), with what disproves it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contradictions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ContractVerdict {
    pub fn executed(&self) -> bool {
        self.valid && self.outcome == Some(Outcome::Executed)
    }
}

/// Check a bundle offline against the TP card the judge trusts and the
/// SHA-256 of the contract file shown to the judge.
pub fn judge_bundle(tp: &TpCard, contract_sha256: Digest32, b: &ContractBundle) -> ContractVerdict {
    let a = &b.agreement.body;
    let mut v = ContractVerdict {
        valid: false,
        outcome: None,
        completed_via: None,
        agreement_id: a.id().to_string(),
        contract_sha256: a.contract_sha256.to_string(),
        proposer: a.proposer.to_string(),
        proposer_name: b.agreement.proposer_card.name().to_string(),
        counterparty: a.counterparty.to_string(),
        counterparty_name: b.agreement.counterparty_card.name().to_string(),
        deadline: a.deadline,
        agreed_at: a.created,
        committed_at: b.receipt.as_ref().map(|r| r.body.issued),
        tp_statement_at: b.affidavit.as_ref().map(|x| x.body.at),
        contradictions: Vec::new(),
        reason: None,
    };
    match weigh(tp, contract_sha256, b) {
        Ok((outcome, via, contradictions)) => {
            v.valid = true;
            v.outcome = Some(outcome);
            v.completed_via = via;
            v.contradictions = contradictions;
            match outcome {
                Outcome::Executed => {}
                Outcome::NeverCompleted => v.reason = Some(
                    "the TP certifies that it never completed this exchange, and no opening is shown: Bob never got Alice's signature through the TP and no longer can (the deadline passed)".into(),
                ),
                Outcome::ReceiptVoid => v.reason = Some(
                    "the TP certified the envelope invalid (z does not match its signed header): Bob's receipt is void and the contract is not executed".into(),
                ),
            }
        }
        Err(e) => v.reason = Some(e.to_string()),
    }
    v
}

/// The outcome, how it was completed, and the TP statements the evidence
/// disproves.
type Weighed = (Outcome, Option<DeliveredVia>, Vec<String>);

fn weigh(
    tp: &TpCard,
    contract_sha256: Digest32,
    b: &ContractBundle,
) -> Result<Weighed, ProtocolError> {
    let agreement = b.agreement.verify(tp)?;
    if agreement.body().contract_sha256 != contract_sha256 {
        return Err(ProtocolError::mismatch(
            "contract",
            "the contract shown is not the agreed one (SHA-256 differs)",
        ));
    }
    let env = b.envelope.verify(tp)?;
    agreement.check_envelope(env.header())?;
    let mut cm = CmHasher::default();
    cm.update(&b.message_ciphertext);
    if b.message_ciphertext.len() as u64 != env.header().cm_len
        || cm.finish() != env.header().cm_hash
    {
        return Err(ProtocolError::mismatch(
            "bundle",
            "the message ciphertext is not the one the envelope signs",
        ));
    }
    if let Some(aff) = &b.affidavit {
        match aff.body.statement {
            Statement::InvalidEnvelope { receipt_hash, .. } => {
                aff.verify(tp, &env)?;
                if b.receipt.as_ref().is_some_and(|r| r.hash() != receipt_hash) {
                    return Err(ProtocolError::mismatch(
                        "affidavit",
                        "it certifies another receipt than the one in the bundle",
                    ));
                }
                // A valid opening recomputes z byte for byte: the TP's
                // invalid-envelope statement is then false, and the opening
                // is weighed below like any other. Without one, the
                // statement stands and the receipt is void.
                let refuted = b
                    .opening
                    .as_ref()
                    .is_some_and(|o| o.check(&env, &b.agreement.counterparty_card).is_ok());
                if !refuted {
                    return Ok((Outcome::ReceiptVoid, None, Vec::new()));
                }
            }
            Statement::Unclaimed if b.opening.is_none() => {
                aff.verify(tp, &env)?;
                return Ok((Outcome::NeverCompleted, None, Vec::new()));
            }
            _ => {}
        }
    }
    let receipt = b.receipt.as_ref().ok_or_else(|| {
        ProtocolError::Refused("no receipt: nothing shows the counterparty's commitment".into())
    })?;
    let sig = b.contract_signature.as_ref().ok_or_else(|| {
        ProtocolError::Refused("no contract signature: nothing shows the proposer's".into())
    })?;
    sig.verify(&agreement)?;
    let message = sig.to_file();
    let verdict = judge(
        tp,
        &b.envelope,
        receipt,
        b.opening.as_ref(),
        b.affidavit.as_ref(),
        Some(Digest32(Sha256::digest(&message).into())),
    );
    if !verdict.valid {
        return Err(ProtocolError::Refused(format!(
            "the delivery evidence does not hold: {}",
            verdict.reason.as_deref().unwrap_or("no reason given")
        )));
    }
    if let Some(o) = &b.opening {
        // The opening's key must decrypt the signed ciphertext to exactly
        // Alice's contract signature (otherwise Bob did not receive it).
        let opened = o.check(&env, &receipt.recipient_card)?;
        if decrypt_small(&opened.message_key, &b.message_ciphertext)?.as_deref()
            != Some(&message[..])
        {
            return Err(ProtocolError::mismatch(
                "envelope",
                "the opening's key does not decrypt the message ciphertext to the contract signature",
            ));
        }
    }
    Ok((
        Outcome::Executed,
        verdict.delivered_via,
        verdict.contradictions,
    ))
}

/// Decrypt a small, fully buffered `c_m` (a contract signature is one chunk).
/// `None` if it does not authenticate.
pub fn decrypt_small(km: &[u8; 32], cm: &[u8]) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut opener = MessageOpener::new(km, cm.len() as u64)?;
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(n) = opener.next_len() {
        match opener.open_chunk(&cm[off..off + n]) {
            Ok(p) => out.extend(p),
            Err(_) => return Ok(None),
        }
        off += n;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn contract_signature_file_has_its_fixed_length_and_is_canonical() {
        let me =
            IdentitySecret::generate("A", 1, &mut rand_chacha::ChaCha20Rng::from_seed([1; 32]))
                .unwrap();
        let body = ContractSignatureBody {
            agreement_id: Digest32([7; 32]),
            contract_sha256: Digest32([8; 32]),
            signer: me.id(),
        };
        let s = ContractSignature {
            signature: me.sign(&signing_digest(domain::CONTRACT_SIGNATURE, &body)),
            body: body.clone(),
        };
        let again = me.sign(&signing_digest(domain::CONTRACT_SIGNATURE, &body));
        assert_eq!(
            s.signature, again,
            "RFC 6979: signing again gives the same bytes"
        );
        let f = s.to_file();
        assert_eq!(f.len(), ContractSignature::FILE_LEN);
        assert_eq!(ContractSignature::from_file(&f).unwrap(), s);
        let mut longer = f.clone();
        longer.push(0);
        assert!(ContractSignature::from_file(&longer).is_err());
    }
}
