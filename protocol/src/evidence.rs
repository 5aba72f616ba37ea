//! The judge: offline verification of delivery evidence.
//!
//! Inputs are the trustees' cards, the envelope, Bob's receipt and either
//! Alice's opening or trustee affidavits (or both). The verdict says whether
//! the evidence proves that the recipient received exactly the message with
//! the reported SHA-256, and how.
//!
//! The rules, in the order the judge applies them (n trustees, any t of
//! which must act; one TP is n = t = 1):
//!
//! 1. Every affidavit must be signed by a trustee whose card was given, be
//!    about this envelope, and — for a resolution or an invalid-envelope
//!    certificate — name the hash of exactly the receipt being weighed.
//!    Otherwise the evidence is refused: the presenter mixed up files.
//! 2. A trustee whose statements are proven false counts for nothing and is
//!    named in [`Verdict::contradicted_by`]: a resolution whose message hash
//!    does not open the envelope's commitment, a resolution together with a
//!    certificate that it did not resolve, or (when a valid opening is given)
//!    an invalid-envelope certificate for a z the opening recomputes. One
//!    trustee's lie never makes the whole evidence invalid.
//! 3. A valid opening (every z recomputes byte for byte and every inside
//!    matches the signed header) proves delivery, whatever any trustee says.
//! 4. Without one, delivery is proven by consistent resolutions from at
//!    least t distinct trustees. Resolutions that disagree on the message
//!    hash make the evidence invalid, naming the trustees.
//! 5. The receipt is void only if more than n − t trustees certified the
//!    envelope invalid: then fewer than t could ever resolve it. Fewer
//!    certificates than that decide nothing.
//! 6. The receipt is also void when the recipient's [`VoidEvidence`] shows
//!    that the wraps the trustees released to him do not open the message:
//!    the evidence must weigh every resolution shown (at least t, one wrap
//!    per trustee, each the wrap that trustee certified releasing), every
//!    shared point must be proven ([`crate::wrap_proof`]), and then no t of
//!    the shares recomputed from them may give a key that decrypts `c_m` to
//!    the certified message. If one does, the evidence is a false accusation:
//!    it is refused ([`Verdict::accusation_refused`]) and the resolutions
//!    prove delivery as without it. A valid opening outweighs it (it
//!    recomputes every wrap), and void evidence that does not check is
//!    refused like a file that is not about this envelope.
//!
//! An invalid-envelope certificate and an unclaimed certificate from the
//! same trustee agree (neither released anything); the trustee counts as
//! having certified the envelope invalid.

use serde::Serialize;

use crate::affidavit::{Affidavit, Statement};
use crate::encoding::CmHasher;
use crate::envelope::{Envelope, EnvelopeHeader, VerifiedEnvelope};
use crate::message::MessageOpener;
use crate::opening::Opening;
use crate::receipt::Receipt;
use crate::seal::{message_commitment, wrapped_km_hash};
use crate::tp_card::TpCard;
use crate::wrap_proof::{candidate_keys, VoidEvidence, WrapOutcome};
use crate::{Digest32, EcPoint, ProtocolError, Timestamp, TpId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveredVia {
    Opening,
    TrustedParty,
}

/// The judge's answer, ready to print as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub valid: bool,
    pub sender: Option<String>,
    pub sender_name: Option<String>,
    pub recipient: Option<String>,
    pub recipient_name: Option<String>,
    pub deadline: Option<Timestamp>,
    pub envelope_id: Option<String>,
    pub message_sha256: Option<String>,
    pub delivered_via: Option<DeliveredVia>,
    /// The trustees whose resolutions prove delivery (when delivered via them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolved_by: Vec<String>,
    /// The trustees whose signed statements this evidence proves false, in
    /// slot order; their statements count for nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contradicted_by: Vec<String>,
    /// One line per entry of `contradicted_by`: what the trustee said and
    /// what proves it false.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contradictions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the recipient's void evidence was refused as a false accusation
    /// (the released key opens the message); the verdict stands on the
    /// rest of the evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accusation_refused: Option<String>,
}

/// What decrypting the message ciphertext `c_m` under a key gave. The
/// caller reads `c_m` (streaming a file, or from memory: the protocol does
/// no IO), so the judge can try the keys the recipient's evidence yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiphertextReading {
    /// Every chunk authenticates: the SHA-256 of the plaintext.
    Plaintext(Digest32),
    /// Chunk `chunk` (0-based) fails authentication under the key.
    DoesNotDecrypt { chunk: u64 },
    /// `c_m` is not the one the header signs (altered), or cannot be read;
    /// says why. The evidence cannot be weighed against it.
    Unusable(String),
}

/// The message ciphertext as the judge reads it.
pub trait Ciphertext {
    /// Decrypt `c_m` under `km` (checking it is the ciphertext whose hash
    /// and length `header` signs) and say what it gave.
    fn read_under(&mut self, km: &[u8; 32], header: &EnvelopeHeader) -> CiphertextReading;
}

/// `c_m` held in memory.
pub struct CiphertextBytes<'a>(pub &'a [u8]);

impl Ciphertext for CiphertextBytes<'_> {
    fn read_under(&mut self, km: &[u8; 32], header: &EnvelopeHeader) -> CiphertextReading {
        let mut h = CmHasher::default();
        h.update(self.0);
        if self.0.len() as u64 != header.cm_len || h.finish() != header.cm_hash {
            return CiphertextReading::Unusable(
                "the message ciphertext does not hash to the value in the signed header: the file was altered".into(),
            );
        }
        let Ok(mut opener) = MessageOpener::new(km, header.cm_len) else {
            return CiphertextReading::Unusable(
                "the message ciphertext has an impossible length".into(),
            );
        };
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        let (mut off, mut chunk) = (0usize, 0u64);
        while let Some(n) = opener.next_len() {
            match opener.open_chunk(&self.0[off..off + n]) {
                Ok(plain) => {
                    sha2::Digest::update(&mut sha, zeroize::Zeroizing::new(plain).as_slice())
                }
                Err(_) => return CiphertextReading::DoesNotDecrypt { chunk },
            }
            off += n;
            chunk += 1;
        }
        CiphertextReading::Plaintext(Digest32(sha2::Digest::finalize(sha).into()))
    }
}

/// The recipient's void evidence and the ciphertext it is weighed against.
pub struct VoidClaim<'a> {
    pub evidence: &'a VoidEvidence,
    pub ciphertext: &'a mut dyn Ciphertext,
}

/// Weigh the evidence about an envelope with one TP. `message_sha256` is the
/// SHA-256 of the message the verifier was shown, if any: the verdict is
/// valid only if it matches.
pub fn judge(
    tp: &TpCard,
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavit: Option<&Affidavit>,
    message_sha256: Option<Digest32>,
) -> Verdict {
    judge_group(
        std::slice::from_ref(tp),
        envelope,
        receipt,
        opening,
        affidavit.map(std::slice::from_ref).unwrap_or(&[]),
        message_sha256,
    )
}

/// Weigh the evidence about an envelope whose trustees are among `tps` (one
/// TP, or a group), by the rules in the module documentation.
pub fn judge_group(
    tps: &[TpCard],
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavits: &[Affidavit],
    message_sha256: Option<Digest32>,
) -> Verdict {
    judge_with_void(
        tps,
        envelope,
        receipt,
        opening,
        affidavits,
        None,
        message_sha256,
    )
}

/// [`judge_group`], also weighing the recipient's evidence that the key
/// released to him does not open the message (rule 6).
pub fn judge_with_void(
    tps: &[TpCard],
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavits: &[Affidavit],
    void: Option<VoidClaim<'_>>,
    message_sha256: Option<Digest32>,
) -> Verdict {
    let h = &envelope.header;
    let mut v = Verdict {
        valid: false,
        sender: Some(h.sender.to_string()),
        sender_name: Some(envelope.sender_card.name().to_string()),
        recipient: Some(h.recipient.to_string()),
        recipient_name: Some(receipt.recipient_card.name().to_string()),
        deadline: Some(h.deadline),
        envelope_id: Some(h.envelope_id().to_string()),
        message_sha256: None,
        delivered_via: None,
        resolved_by: Vec::new(),
        contradicted_by: Vec::new(),
        contradictions: Vec::new(),
        reason: None,
        accusation_refused: None,
    };
    let decision = match weigh(tps, envelope, receipt, opening, affidavits, void) {
        Ok(d) => d,
        Err(e) => {
            v.reason = Some(e.to_string());
            return v;
        }
    };
    for (tp, why) in decision.contradicted {
        v.contradicted_by.push(tp.to_string());
        v.contradictions.push(why);
    }
    v.accusation_refused = decision.accusation_refused;
    match decision.outcome {
        Ok(proof) => {
            v.message_sha256 = Some(proof.message_sha256.to_string());
            v.resolved_by = proof.resolved_by.iter().map(ToString::to_string).collect();
            if let Some(shown) = message_sha256 {
                if shown != proof.message_sha256 {
                    v.reason =
                        Some("the message shown is not the one delivered (SHA-256 differs)".into());
                    return v;
                }
            }
            v.valid = true;
            v.delivered_via = Some(proof.via);
        }
        Err(e) => v.reason = Some(e.to_string()),
    }
    v
}

/// What proves delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Proof {
    message_sha256: Digest32,
    via: DeliveredVia,
    resolved_by: Vec<TpId>,
}

/// The judge's decision once every file checked: the proof or why there is
/// none, and the trustees proven wrong (either way).
#[derive(Debug)]
struct Decision {
    outcome: Result<Proof, ProtocolError>,
    contradicted: Vec<(TpId, String)>,
    /// Set when void evidence was weighed and the released key opens the
    /// message.
    accusation_refused: Option<String>,
}

/// What the recipient's void evidence, once it checks, shows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum VoidFinding {
    /// No t of the released shares open the message: the verdict (one line,
    /// naming the step that fails).
    Void(String),
    /// Some t of them give a key that decrypts `c_m` to the certified message.
    Opens,
}

/// What one trustee's statements about the envelope amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    /// None of its statements was given.
    Silent,
    /// It resolved its z; the message hash opens the envelope's commitment.
    Resolved(Digest32),
    /// It certified its z invalid (and maybe also that it never resolved it).
    Invalid,
    /// It certified that it never resolved its z.
    Unclaimed,
    /// Its statements prove themselves false (why, in words): they count for
    /// nothing.
    Discredited(&'static str),
}

/// Check every file, then decide. `Err` only when the files themselves are
/// wrong (not signed, not about this envelope or receipt).
fn weigh(
    tps: &[TpCard],
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavits: &[Affidavit],
    void: Option<VoidClaim<'_>>,
) -> Result<Decision, ProtocolError> {
    let env = envelope.verify_trusted(tps)?;
    let receipt = receipt.verify(&env)?;
    let h = env.header();
    let receipt_hash = receipt.receipt().hash();
    let mut said: Vec<Vec<&Statement>> = vec![Vec::new(); h.trustees.len()];
    for a in affidavits {
        let Some(card) = tps.iter().find(|c| c.id() == a.body.tp) else {
            return Err(ProtocolError::mismatch(
                "affidavit",
                format!("it is from TP {}, whose card was not given", a.body.tp),
            ));
        };
        let slot = a.verify(card, &env)?;
        let names = match &a.body.statement {
            Statement::Resolved { receipt_hash, .. }
            | Statement::InvalidEnvelope { receipt_hash, .. } => Some(receipt_hash),
            Statement::Unclaimed => None,
        };
        if names.is_some_and(|r| *r != receipt_hash) {
            return Err(ProtocolError::mismatch(
                "affidavit",
                format!(
                    "the {} statement of {} is about another receipt than the one given (its receipt hash differs)",
                    a.body.kind(),
                    trustee_name(h, slot)
                ),
            ));
        }
        said[slot].push(&a.body.statement);
    }
    let positions: Vec<Position> = said.iter().map(|s| position(h, s)).collect();
    let opened = opening.map(|o| {
        o.check(&env, &receipt.receipt().recipient_card)
            .map(|opened| opened.inside.message_sha256)
    });
    // A valid opening recomputes every wrap: void evidence has nothing to add.
    let void = match (&opened, void) {
        (Some(Ok(_)), _) | (_, None) => None,
        (_, Some(claim)) => {
            let recipient = receipt.receipt().recipient_card.enc_key();
            Some(weigh_void(&env, recipient, &positions, &said, claim))
        }
    };
    Ok(decide(h, &positions, opened, void))
}

/// Rule 6: check the recipient's void evidence against the resolutions,
/// then recompute what he would and try every key it gives on `c_m`.
/// `Err` when the evidence does not check (it proves nothing).
fn weigh_void(
    env: &VerifiedEnvelope,
    recipient: &EcPoint,
    positions: &[Position],
    said: &[Vec<&Statement>],
    claim: VoidClaim<'_>,
) -> Result<VoidFinding, ProtocolError> {
    let h = env.header();
    let (n, t) = (h.trustees.len(), h.threshold());
    let ev = claim.evidence;
    let refuse = |detail: String| ProtocolError::mismatch("void evidence", detail);
    if ev.envelope_id != h.envelope_id() {
        return Err(refuse("it is about another envelope".into()));
    }
    let resolvers: Vec<(usize, Digest32)> = positions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Position::Resolved(sha) => Some((i, *sha)),
            _ => None,
        })
        .collect();
    let Some(&(_, message_sha256)) = resolvers.first() else {
        return Err(refuse(
            "no resolution of any trustee is shown with it (give the resolved affidavits)".into(),
        ));
    };
    if resolvers.iter().any(|(_, sha)| *sha != message_sha256) {
        // `decide` names the trustees.
        return Err(refuse(
            "the resolutions shown disagree on the message".into(),
        ));
    }
    let mut weighed = vec![false; n];
    for w in &ev.wraps {
        let slot = usize::from(w.slot);
        if slot >= n || weighed[slot] {
            return Err(refuse(format!(
                "it weighs slot {} twice or a slot the envelope does not have",
                slot + 1
            )));
        }
        weighed[slot] = true;
        if !matches!(positions[slot], Position::Resolved(_)) {
            return Err(refuse(format!(
                "it weighs a wrap of {}, but no resolution of it that counts is shown",
                trustee_name(h, slot)
            )));
        }
        let certified = said[slot].iter().any(|st| {
            matches!(st, Statement::Resolved { wrapped_km_hash: k, .. } if *k == wrapped_km_hash(&w.wrap))
        });
        if !certified {
            return Err(refuse(format!(
                "its wrap for {} is not the one that trustee certified releasing",
                trustee_name(h, w.slot.into())
            )));
        }
    }
    if let Some(&(slot, _)) = resolvers.iter().find(|(i, _)| !weighed[*i]) {
        return Err(refuse(format!(
            "it does not weigh the resolution of {} (the share it released might open the message)",
            trustee_name(h, slot)
        )));
    }
    if ev.wraps.len() < t {
        return Err(refuse(format!(
            "it weighs {} released wraps; {t} trustees must have released their share before the key can be said not to open the message",
            ev.wraps.len()
        )));
    }
    let group = h.is_group();
    let mut steps: Vec<String> = Vec::new();
    let mut shares = Vec::new();
    for w in &ev.wraps {
        let outcome = w.reopen(env, recipient).map_err(|e| {
            refuse(format!(
                "its entry for {}: {e}",
                trustee_name(h, w.slot.into())
            ))
        })?;
        match outcome {
            WrapOutcome::Share(s) => shares.push(s),
            WrapOutcome::Fails(why) if group => steps.push(format!(
                "the wrap {} released {why}",
                trustee_name(h, w.slot.into())
            )),
            WrapOutcome::Fails(why) => steps.push(format!("the wrap the TP released {why}")),
        }
    }
    let void = |steps: Vec<String>| {
        VoidFinding::Void(format!(
            "receipt void: the message key the {} released for the recipient does not open the message (the sender's fault): {}",
            if group { "trustees" } else { "TP" },
            steps.join("; ")
        ))
    };
    if shares.len() < t {
        if group {
            steps.push(format!(
                "only {} of the {t} shares needed can be recovered",
                shares.len()
            ));
        }
        return Ok(void(steps));
    }
    let keys = candidate_keys(&shares, t);
    let whose = || {
        let slots: Vec<usize> = shares.iter().map(|s| usize::from(s.x) - 1).collect();
        names(h, &slots)
    };
    let mut failures = Vec::new();
    for km in &keys {
        match claim.ciphertext.read_under(km, h) {
            CiphertextReading::Plaintext(sha) if sha == message_sha256 => return Ok(VoidFinding::Opens),
            CiphertextReading::Plaintext(sha) => failures.push(format!(
                "decrypts the message ciphertext to a message with SHA-256 {sha}, not the {message_sha256} certified"
            )),
            CiphertextReading::DoesNotDecrypt { chunk } => failures.push(format!(
                "does not decrypt the message ciphertext (chunk {chunk} fails authentication)"
            )),
            CiphertextReading::Unusable(why) => return Err(ProtocolError::Refused(why)),
        }
    }
    match (group, keys.len()) {
        (false, _) => steps.push(format!("the released key {}", failures.join("; "))),
        (true, 1) => steps.push(format!(
            "the key from the shares of {} {}",
            whose(),
            failures[0]
        )),
        (true, k) => steps.push(format!(
            "none of the {k} keys that {t} of the shares of {} give opens the message (the first {})",
            whose(),
            failures.first().map(String::as_str).unwrap_or("gives nothing")
        )),
    }
    Ok(void(steps))
}

/// "trustee 2 (id)" in a group, "the TP (id)" for one TP.
fn trustee_name(h: &EnvelopeHeader, slot: usize) -> String {
    if h.is_group() {
        format!("trustee {} ({})", slot + 1, h.trustees[slot].tp)
    } else {
        format!("the TP ({})", h.trustees[slot].tp)
    }
}

fn names(h: &EnvelopeHeader, slots: &[usize]) -> String {
    slots
        .iter()
        .map(|&s| trustee_name(h, s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One trustee's statements (already checked to be signed by it and about
/// this envelope and receipt), taken together.
fn position(h: &EnvelopeHeader, said: &[&Statement]) -> Position {
    let (mut resolved, mut invalid, mut unclaimed) = (None, false, false);
    for st in said {
        match st {
            Statement::Resolved {
                message_sha256,
                commit_salt,
                ..
            } => {
                if message_commitment(commit_salt, message_sha256) != h.message_commitment {
                    return Position::Discredited(
                        "its resolution names a message hash that does not open the envelope's commitment",
                    );
                }
                if resolved.is_some_and(|r| r != *message_sha256) {
                    return Position::Discredited(
                        "it resolved the envelope twice with different message hashes",
                    );
                }
                resolved = Some(*message_sha256);
            }
            Statement::InvalidEnvelope { .. } => invalid = true,
            Statement::Unclaimed => unclaimed = true,
        }
    }
    match (resolved, invalid, unclaimed) {
        (Some(_), true, _) => Position::Discredited(
            "it certified both that it resolved its part and that its part is invalid",
        ),
        (Some(_), false, true) => Position::Discredited(
            "it certified both that it resolved its part and that it never resolved it",
        ),
        (Some(sha), false, false) => Position::Resolved(sha),
        (None, true, _) => Position::Invalid,
        (None, false, true) => Position::Unclaimed,
        (None, false, false) => Position::Silent,
    }
}

/// The rules of the module documentation over what each trustee slot said
/// and what the opening (if one was given) yielded.
fn decide(
    h: &EnvelopeHeader,
    positions: &[Position],
    opening: Option<Result<Digest32, ProtocolError>>,
    void: Option<Result<VoidFinding, ProtocolError>>,
) -> Decision {
    let (n, t) = (h.trustees.len(), h.threshold());
    let slots = |f: &dyn Fn(&Position) -> bool| -> Vec<usize> {
        (0..n).filter(|&i| f(&positions[i])).collect()
    };
    let resolvers: Vec<(usize, Digest32)> = positions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Position::Resolved(sha) => Some((i, *sha)),
            _ => None,
        })
        .collect();
    let invalid = slots(&|p| matches!(p, Position::Invalid));
    let unclaimed = slots(&|p| matches!(p, Position::Unclaimed));
    let mut contradicted: Vec<(usize, String)> = positions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Position::Discredited(why) => Some((
                i,
                format!(
                    "{}: {why}; its statements count for nothing",
                    trustee_name(h, i)
                ),
            )),
            _ => None,
        })
        .collect();
    let mut accusation_refused = None;
    let finish = |outcome, mut contradicted: Vec<(usize, String)>, accusation_refused| {
        contradicted.sort_by_key(|(slot, _)| *slot);
        Decision {
            outcome,
            contradicted: contradicted
                .into_iter()
                .map(|(slot, why)| (h.trustees[slot].tp, why))
                .collect(),
            accusation_refused,
        }
    };

    // A valid opening: every z recomputes, so no trustee can have found its
    // part invalid, and each resolution must name the opening's message.
    let (opening_error, opened) = match opening {
        Some(Ok(sha)) => (None, Some(sha)),
        Some(Err(e)) => (Some(e), None),
        None => (None, None),
    };
    if let Some(sha) = opened {
        for &i in &invalid {
            contradicted.push((
                i,
                format!(
                    "{} certified its part invalid, but the opening recomputes its z and the inside matches the signed header",
                    trustee_name(h, i)
                ),
            ));
        }
        let mut agreeing = Vec::new();
        for &(i, r) in &resolvers {
            if r == sha {
                agreeing.push(h.trustees[i].tp);
            } else {
                contradicted.push((
                    i,
                    format!(
                        "{} resolved with another message hash than the one the opening proves",
                        trustee_name(h, i)
                    ),
                ));
            }
        }
        let proof = if agreeing.len() >= t {
            Proof {
                message_sha256: sha,
                via: DeliveredVia::TrustedParty,
                resolved_by: agreeing,
            }
        } else {
            Proof {
                message_sha256: sha,
                via: DeliveredVia::Opening,
                resolved_by: Vec::new(),
            }
        };
        return finish(Ok(proof), contradicted, None);
    }

    let resolver_slots: Vec<usize> = resolvers.iter().map(|(i, _)| *i).collect();
    if resolvers.iter().any(|(_, sha)| *sha != resolvers[0].1) {
        let e = ProtocolError::mismatch(
            "evidence",
            format!(
                "{} resolved with different message hashes",
                names(h, &resolver_slots)
            ),
        );
        return finish(Err(e), contradicted, None);
    }
    match void {
        Some(Err(e)) => return finish(Err(e), contradicted, None),
        Some(Ok(VoidFinding::Void(reason))) => {
            return finish(Err(ProtocolError::Refused(reason)), contradicted, None)
        }
        Some(Ok(VoidFinding::Opens)) => {
            accusation_refused = Some(
                "the recipient's void evidence is a false accusation: the key recomputed from the released wraps decrypts the message ciphertext to the certified message".to_string(),
            )
        }
        None => {}
    }
    if resolvers.len() >= t {
        let proof = Proof {
            message_sha256: resolvers[0].1,
            via: DeliveredVia::TrustedParty,
            resolved_by: resolvers.iter().map(|(i, _)| h.trustees[*i].tp).collect(),
        };
        return finish(Ok(proof), contradicted, accusation_refused);
    }
    if invalid.len() > n - t {
        let reason = if h.is_group() {
            format!(
                "{} of the {n} trustees certified their part of this envelope invalid ({}), so fewer than the {t} needed can ever resolve it: the receipt is void",
                invalid.len(),
                names(h, &invalid)
            )
        } else {
            "the TP certified this envelope invalid (z does not match its signed header): the receipt is void".into()
        };
        return finish(Err(ProtocolError::Refused(reason)), contradicted, None);
    }
    if let Some(e) = opening_error {
        return finish(Err(e), contradicted, None);
    }
    let discredited = if contradicted.is_empty() {
        String::new()
    } else {
        let slots: Vec<usize> = contradicted.iter().map(|(i, _)| *i).collect();
        format!(
            " (the statements of {} count for nothing)",
            names(h, &slots)
        )
    };
    let reason = if !h.is_group() {
        if unclaimed.is_empty() && contradicted.is_empty() {
            "no opening and no affidavit: nothing proves delivery".to_string()
        } else if let Some((_, why)) = contradicted.first() {
            format!("{why}; without an opening nothing proves delivery")
        } else {
            "the TP certified that this envelope was never resolved by it; without an opening nothing proves delivery".into()
        }
    } else if resolvers.is_empty()
        && invalid.is_empty()
        && unclaimed.is_empty()
        && contradicted.is_empty()
    {
        "no opening and no affidavit: nothing proves delivery".into()
    } else {
        let mut parts = vec![format!(
            "{} of the {t} trustees needed certified a resolution{}",
            resolvers.len(),
            if resolvers.is_empty() {
                String::new()
            } else {
                format!(" ({})", names(h, &resolver_slots))
            }
        )];
        if !invalid.is_empty() {
            parts.push(format!(
                "{} certified their part invalid ({}), fewer than the {} needed to void the receipt",
                invalid.len(),
                names(h, &invalid),
                n - t + 1
            ));
        }
        let never = invalid.len() + unclaimed.len();
        if never > n - t {
            parts.push(format!(
                "{never} certified they never resolved it, so the exchange was never completed through the trustees"
            ));
        } else if !unclaimed.is_empty() {
            parts.push(format!(
                "{} certified they never resolved it",
                unclaimed.len()
            ));
        }
        format!(
            "{}{discredited}; without an opening nothing proves delivery",
            parts.join(", ")
        )
    };
    finish(Err(ProtocolError::Refused(reason)), contradicted, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::TrusteeSlot;
    use crate::{IdentityId, KeyId};

    fn header(n: u8, t: u8) -> EnvelopeHeader {
        EnvelopeHeader {
            trustees: (0..n)
                .map(|i| TrusteeSlot {
                    tp: TpId(Digest32([i + 1; 32])),
                    key_id: KeyId([0; 8]),
                    z_hash: Digest32([0; 32]),
                })
                .collect(),
            threshold: t,
            sender: IdentityId(Digest32([0xa; 32])),
            recipient: IdentityId(Digest32([0xb; 32])),
            deadline: 2,
            created: 1,
            nonce: [0; 32],
            cm_hash: Digest32([0; 32]),
            cm_len: 0,
            message_commitment: Digest32([0; 32]),
        }
    }

    /// Resolutions that disagree on the message (which takes breaking the
    /// commitment, so only reachable here) are invalid evidence naming the
    /// trustees, even when t of them agree.
    #[test]
    fn disagreeing_resolutions_are_invalid_evidence_naming_them() {
        let h = header(3, 2);
        let (a, b) = (Digest32([1; 32]), Digest32([2; 32]));
        let d = decide(
            &h,
            &[
                Position::Resolved(a),
                Position::Resolved(a),
                Position::Resolved(b),
            ],
            None,
            None,
        );
        let e = d.outcome.unwrap_err().to_string();
        assert!(e.contains("different message hashes"), "{e}");
        for slot in &h.trustees {
            assert!(e.contains(&slot.tp.to_string()), "{e}");
        }
        // With a valid opening, the one that disagrees with it is named.
        let d = decide(
            &h,
            &[
                Position::Resolved(a),
                Position::Silent,
                Position::Resolved(b),
            ],
            Some(Ok(a)),
            None,
        );
        assert_eq!(d.outcome.unwrap().via, DeliveredVia::Opening);
        assert_eq!(d.contradicted.len(), 1);
        assert_eq!(d.contradicted[0].0, h.trustees[2].tp);
    }

    /// Void takes more than n - t invalid-envelope statements, for any n, t.
    #[test]
    fn void_threshold_is_more_than_n_minus_t() {
        for n in 1..=5u8 {
            for t in 1..=n {
                for k in 0..=n {
                    let mut pos = vec![Position::Silent; n as usize];
                    pos[..k as usize].fill(Position::Invalid);
                    let d = decide(&header(n, t), &pos, None, None);
                    let void = d
                        .outcome
                        .unwrap_err()
                        .to_string()
                        .contains("receipt is void");
                    assert_eq!(void, k > n - t, "n={n} t={t} k={k}");
                }
            }
        }
    }
}
