//! Model checking of the TP's decision core (`vtp_protocol::decide`) with
//! `stateright`: every interleaving, within bounds, of an honest recipient
//! (Bob), a cheating sender (Alice), a third party (Chris), the trustees and
//! a clock, over a network that loses, duplicates, replays and reorders
//! requests, with trustees that crash between the token's decision and the
//! journal commit.
//!
//! The trustees decide with the real decision core: each step that
//! delivers a request calls `AuthenticClaim::decide` or
//! `AuthenticUnclaimed::decide` on what that trustee's journal holds about
//! the request's subject, looked up the way the daemon's journal looks it up
//! (resolutions by `H(z)`, invalid verdicts by envelope id, unclaimed
//! certificates by z and envelope id). Requests are real signed protocol
//! objects, built and authenticated once up front; the token is stood in
//! for by host keys (`common::Tp::open`), because this crate is sans-IO.
//!
//! Safety properties, on every reachable state:
//! - `bob-message-implies-alice-receipt`: Bob holds the message only if
//!   Alice holds his receipt or can fetch it from a trustee's journal;
//! - `receipt-implies-bob-can-get-message`: while the deadline has not
//!   passed, if Alice holds Bob's receipt (and so, with her opening, a judge
//!   would say "delivered"), Bob either holds the message or enough honest
//!   trustees would still let his claim through (the core answers with a
//!   resolution or lets the token resolve);
//! - `one-outcome-per-subject`: no honest trustee's journal holds two
//!   outcomes (resolved, invalid, unclaimed) for one z under one header, or
//!   an unclaimed certificate for a z it resolved.
//!
//! Run against the journal lookup of the audited code (unclaimed
//! certificates looked up by z alone), the checker finds the forged-unclaimed
//! counterexample of audit finding 1; without the invalid-verdict rule for
//! unclaimed requests it finds finding 8's double statement. Both are kept
//! as tests below.
//!
//! Bounds: three clock values (before the forged deadline, between it and
//! the real deadline, after the real deadline); each kind of request is
//! either not yet sent or on the network (from then on it can be delivered
//! any number of times, in any order, or never); at most one request in
//! flight per trustee. `VTP_MODEL_DEPTH` overrides the search depth.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{ident, send_group, Tp, DEADLINE, NOW};
use stateright::{Checker, Model, Property};
use vtp_protocol::affidavit::{Affidavit, AffidavitBody, ChainPosition};
use vtp_protocol::claim::{AuthenticClaim, Claim};
use vtp_protocol::decide::{
    AuthenticUnclaimed, ClaimContext, ClaimDecision, Recorded, RecordedResolution, Subject,
    UnclaimedDecision,
};
use vtp_protocol::envelope::Envelope;
use vtp_protocol::evidence::judge_group;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::Policy;
use vtp_protocol::wire::{ClaimOutcome, UnclaimedRequest};

/// The deadline of the forged headers: before the genuine one.
const FORGED_DEADLINE: u64 = NOW + 600;
/// When the unclaimed requests are dated: within the skew of every model time.
const REQUESTED: u64 = NOW + 1800;
/// The model clock's values.
const TIMES: [u64; 3] = [NOW + 10, FORGED_DEADLINE + 100, DEADLINE + 10];

/// The requests anyone can put on the network. Each is sent to every
/// trustee of the envelope it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Msg {
    /// Bob's claim of the genuine envelope.
    BobClaim,
    /// Bob asks for an unclaimed certificate of the genuine envelope.
    BobUnclaimed,
    /// Alice asks for one of the genuine envelope.
    AliceUnclaimed,
    /// Alice's forgery: the genuine z under her re-signed header with an
    /// earlier deadline (audit finding 1).
    AliceForgedUnclaimed,
    /// Chris's forgery: the genuine z under his own header (himself as the
    /// sender, an earlier deadline).
    ChrisLiftedUnclaimed,
    /// Chris claims the genuine z under a header naming himself as sender
    /// and recipient (the "Chris" attack).
    ChrisLiftedClaim,
}

const MSGS: [Msg; 6] = [
    Msg::BobClaim,
    Msg::BobUnclaimed,
    Msg::AliceUnclaimed,
    Msg::AliceForgedUnclaimed,
    Msg::ChrisLiftedUnclaimed,
    Msg::ChrisLiftedClaim,
];

/// A request, authenticated once by one trustee (the signature checks are
/// not what is being explored), and what its token would do with it.
// Built once per world; boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Claim {
        claim: AuthenticClaim,
        /// The stand-in token's outcome if the core lets it resolve.
        opened: ClaimOutcome,
    },
    Unclaimed {
        request: AuthenticUnclaimed,
        /// The certificate if the core lets the token sign one.
        certificate: Affidavit,
    },
}

impl Prepared {
    fn subject(&self) -> Subject {
        match self {
            Prepared::Claim { claim, .. } => claim.subject(),
            Prepared::Unclaimed { request, .. } => request.subject(),
        }
    }
}

/// Which journal lookups the trustees use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup {
    /// The daemon's: unclaimed certificates by z and envelope id.
    Current,
    /// The audited code's: an unclaimed certificate for z under any header
    /// stops every claim of z (finding 1).
    UnclaimedByZ,
    /// Unclaimed requests that do not see invalid verdicts (finding 8).
    UnclaimedIgnoresInvalid,
}

struct World {
    trustees: Vec<Tp>,
    threshold: usize,
    /// Trustees at these indices are corrupt: they never help Bob.
    corrupt: Vec<usize>,
    receipt: Receipt,
    /// What the real judge says of Alice's evidence (Bob's receipt and her
    /// opening): whether a judge would say "delivered".
    judge_says_delivered: bool,
    /// Whether Alice's opening opens the message for Bob (B2).
    opening_opens: bool,
    /// `prepared[trustee][msg]`.
    prepared: Vec<Vec<Prepared>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Resolved,
    Invalid,
    Unclaimed,
}

/// A journal record: which request produced it, and what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Record {
    msg: Msg,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TrusteeState {
    journal: BTreeSet<Record>,
    /// Decided in the token, not yet committed.
    pending: Option<Record>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    clock: usize,
    bob_accepted: bool,
    /// The receipt reached Alice directly.
    alice_has_receipt: bool,
    opening_sent: bool,
    bob_has_message: bool,
    /// Trustees whose resolution (share) Bob received.
    bob_shares: BTreeSet<usize>,
    /// Bob received an invalid-envelope verdict (his receipt is void).
    bob_void: bool,
    sent: BTreeSet<Msg>,
    trustees: Vec<TrusteeState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Tick,
    BobAccepts,
    /// The receipt reaches Alice (it may also be lost: never delivered).
    ReceiptArrives,
    /// Alice sends her opening (an honest sender does; a cheat never).
    AliceOpens,
    OpeningArrives,
    Send(Msg),
    /// Trustee `.0` receives a copy of `.1` (any number of times).
    Deliver(usize, Msg),
    /// Trustee commits its pending record and answers (`true`) or the
    /// answer is lost (`false`).
    Commit(usize, bool),
    /// Trustee crashes between the token's decision and the commit.
    Crash(usize),
}

struct TpModel {
    world: Arc<World>,
    lookup: Lookup,
}

impl TpModel {
    fn honest(&self, i: usize) -> bool {
        !self.world.corrupt.contains(&i)
    }

    /// What trustee `i`'s journal holds about `subject`, as its journal
    /// looks it up.
    fn recorded(&self, i: usize, t: &TrusteeState, subject: Subject, asking: Msg) -> Recorded {
        let w = &*self.world;
        let mut r = Recorded::nothing();
        for rec in &t.journal {
            let p = &w.prepared[i][rec.msg as usize];
            let s = p.subject();
            match (rec.kind, p) {
                (Kind::Resolved, Prepared::Claim { claim, opened })
                    if s.z_hash == subject.z_hash =>
                {
                    r.resolution = Some(RecordedResolution {
                        outcome: opened.clone(),
                        receipt: claim.receipt().receipt().clone(),
                    });
                }
                (Kind::Invalid, Prepared::Claim { opened, .. })
                    if s.envelope_id == subject.envelope_id =>
                {
                    let ignore = self.lookup == Lookup::UnclaimedIgnoresInvalid
                        && !matches!(asking, Msg::BobClaim | Msg::ChrisLiftedClaim);
                    if !ignore {
                        r.invalid = Some(opened.clone());
                    }
                }
                (Kind::Unclaimed, Prepared::Unclaimed { certificate, .. }) => {
                    let same = match self.lookup {
                        Lookup::UnclaimedByZ => s.z_hash == subject.z_hash,
                        _ => s == subject,
                    };
                    if same {
                        r.unclaimed = Some(certificate.clone());
                    }
                }
                _ => {}
            }
        }
        r
    }

    /// Run the decision core for trustee `i` on `msg` at time `now`:
    /// `Ok(Some(record))` to commit after the token acts, `Err(kind)` for a
    /// recorded answer of that kind given again, `Ok(None)` for a refusal.
    fn decide(
        &self,
        i: usize,
        t: &TrusteeState,
        msg: Msg,
        now: u64,
    ) -> Result<Option<Record>, Kind> {
        let w = &*self.world;
        let p = &w.prepared[i][msg as usize];
        let recorded = self.recorded(i, t, p.subject(), msg);
        match p {
            Prepared::Claim { claim, opened } => {
                let card = &w.trustees[i].card;
                match claim
                    .clone()
                    .decide(card, &recorded, &ClaimContext::OPEN, now)
                {
                    ClaimDecision::Answer(ClaimOutcome::Resolved { .. }) => Err(Kind::Resolved),
                    ClaimDecision::Answer(ClaimOutcome::InvalidEnvelope { .. }) => {
                        Err(Kind::Invalid)
                    }
                    ClaimDecision::Refuse(_) => Ok(None),
                    ClaimDecision::Resolve(_) => Ok(Some(Record {
                        msg,
                        kind: match opened {
                            ClaimOutcome::Resolved { .. } => Kind::Resolved,
                            ClaimOutcome::InvalidEnvelope { .. } => Kind::Invalid,
                        },
                    })),
                }
            }
            Prepared::Unclaimed { request, .. } => match request.clone().decide(&recorded, now) {
                UnclaimedDecision::Answer(_) => Err(Kind::Unclaimed),
                UnclaimedDecision::Refuse(_) => Ok(None),
                UnclaimedDecision::Certify(_) => Ok(Some(Record {
                    msg,
                    kind: Kind::Unclaimed,
                })),
            },
        }
    }

    /// Whether Bob's claim, delivered to trustee `i` now, would give him
    /// its share (recorded or resolved by the token).
    fn bob_would_get_share(&self, s: &State, i: usize) -> bool {
        if !self.honest(i) {
            return false;
        }
        let t = &s.trustees[i];
        matches!(
            self.decide(i, t, Msg::BobClaim, TIMES[s.clock]),
            Err(Kind::Resolved)
                | Ok(Some(Record {
                    kind: Kind::Resolved,
                    ..
                }))
        )
    }

    /// Alice holds Bob's receipt, or can fetch it from a trustee that
    /// resolved his claim.
    fn alice_can_have_receipt(&self, s: &State) -> bool {
        s.alice_has_receipt
            || s.trustees.iter().any(|t| {
                t.journal.contains(&Record {
                    msg: Msg::BobClaim,
                    kind: Kind::Resolved,
                })
            })
    }
}

impl Model for TpModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            clock: 0,
            bob_accepted: false,
            alice_has_receipt: false,
            opening_sent: false,
            bob_has_message: false,
            bob_shares: BTreeSet::new(),
            bob_void: false,
            sent: BTreeSet::new(),
            trustees: vec![
                TrusteeState {
                    journal: BTreeSet::new(),
                    pending: None,
                };
                self.world.trustees.len()
            ],
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.clock + 1 < TIMES.len() {
            actions.push(Action::Tick);
        }
        // Bob accepts only with time left (B1).
        if !s.bob_accepted && s.clock == 0 {
            actions.push(Action::BobAccepts);
        }
        if s.bob_accepted && !s.alice_has_receipt {
            actions.push(Action::ReceiptArrives);
        }
        if s.alice_has_receipt && !s.opening_sent {
            actions.push(Action::AliceOpens);
        }
        if s.opening_sent && !s.bob_has_message {
            actions.push(Action::OpeningArrives);
        }
        for m in MSGS {
            if s.sent.contains(&m) {
                continue;
            }
            // Bob claims only what he accepted; the others may send anything
            // at any time.
            if matches!(m, Msg::BobClaim) && !s.bob_accepted {
                continue;
            }
            actions.push(Action::Send(m));
        }
        for (i, t) in s.trustees.iter().enumerate() {
            if !self.honest(i) {
                continue;
            }
            match t.pending {
                Some(_) => {
                    actions.push(Action::Commit(i, true));
                    actions.push(Action::Commit(i, false));
                    actions.push(Action::Crash(i));
                }
                None => {
                    for m in &s.sent {
                        actions.push(Action::Deliver(i, *m));
                    }
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        let w = &*self.world;
        match action {
            Action::Tick => s.clock += 1,
            Action::BobAccepts => s.bob_accepted = true,
            Action::ReceiptArrives => s.alice_has_receipt = true,
            Action::AliceOpens => s.opening_sent = true,
            Action::OpeningArrives => {
                if !w.opening_opens {
                    return None;
                }
                s.bob_has_message = true
            }
            Action::Send(m) => {
                s.sent.insert(m);
            }
            Action::Deliver(i, m) => {
                let now = TIMES[s.clock];
                match self.decide(i, &s.trustees[i], m, now) {
                    Ok(Some(record)) => s.trustees[i].pending = Some(record),
                    Ok(None) => return None,
                    Err(kind) => {
                        if m == Msg::BobClaim && kind == Kind::Resolved {
                            s.bob_shares.insert(i);
                        } else if m == Msg::BobClaim && kind == Kind::Invalid && !s.bob_void {
                            s.bob_void = true;
                        } else {
                            // A recorded answer to someone else changes nothing.
                            return None;
                        }
                    }
                }
            }
            Action::Commit(i, answered) => {
                let record = s.trustees[i].pending.take()?;
                s.trustees[i].journal.insert(record);
                if answered && record.msg == Msg::BobClaim {
                    match record.kind {
                        Kind::Resolved => {
                            s.bob_shares.insert(i);
                        }
                        Kind::Invalid => s.bob_void = true,
                        Kind::Unclaimed => {}
                    }
                }
            }
            Action::Crash(i) => s.trustees[i].pending = None,
        }
        if s.bob_shares.len() >= w.threshold {
            s.bob_has_message = true;
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "bob-message-implies-alice-receipt",
                |m: &TpModel, s: &State| !s.bob_has_message || m.alice_can_have_receipt(s),
            ),
            Property::always(
                "receipt-implies-bob-can-get-message",
                |m: &TpModel, s: &State| {
                    let judge_says_delivered =
                        m.world.judge_says_delivered && m.alice_can_have_receipt(s);
                    if !judge_says_delivered || s.bob_has_message || TIMES[s.clock] >= DEADLINE {
                        return true;
                    }
                    let can = (0..s.trustees.len())
                        .filter(|&i| s.bob_shares.contains(&i) || m.bob_would_get_share(s, i))
                        .count();
                    can >= m.world.threshold
                },
            ),
            Property::always("one-outcome-per-subject", |m: &TpModel, s: &State| {
                s.trustees.iter().enumerate().all(|(i, t)| {
                    let w = &*m.world;
                    let recs: Vec<(Subject, Kind)> = t
                        .journal
                        .iter()
                        .map(|r| (w.prepared[i][r.msg as usize].subject(), r.kind))
                        .collect();
                    recs.iter().enumerate().all(|(a, (sa, ka))| {
                        recs.iter()
                            .skip(a + 1)
                            .all(|(sb, kb)| !(sa == sb && ka != kb))
                    })
                })
            }),
            // Reachability checks that the model is not vacuous.
            Property::sometimes(
                "bob-gets-message-or-void-verdict-from-trustees",
                |m: &TpModel, s: &State| s.bob_shares.len() >= m.world.threshold || s.bob_void,
            ),
        ]
    }
}

/// The genuine envelope (Alice to Bob, `DEADLINE`) with `n` trustees, `t`
/// of which must act, the forgeries of it, and every request prepared.
/// `bad_slot`: that trustee's z disagrees with the header (a cheating
/// sender), for the invalid-envelope scenarios.
fn world(n: u8, t: usize, corrupt: Vec<usize>, bad_slot: Option<usize>) -> World {
    let policy = Policy {
        // Requests in the model are made once (unclaimed requests dated
        // `REQUESTED`) and delivered at any of the model's times: the skew
        // covers them all, since freshness is not what is explored here.
        clock_skew_secs: 1900,
        ..Policy::default()
    };
    let trustees: Vec<Tp> = (0..n)
        .map(|i| Tp::trustee(&format!("trustee {i}"), 0x50 + i, policy.clone()))
        .collect();
    let cards: Vec<_> = trustees.iter().map(|t| t.card.clone()).collect();
    let alice = ident("alice", 1);
    let bob = ident("bob", 2);
    let chris = ident("chris", 3);
    let (genuine, _cm) = send_group(
        &alice,
        bob.card(),
        &cards,
        t,
        b"the model's message",
        7,
        |slot, inside| {
            if Some(slot) == bad_slot {
                inside.deadline += 1;
            }
        },
    );
    let venv = genuine.verify_trusted(&cards).unwrap();
    let receipt = Receipt::issue(&bob, &venv, NOW + 1);
    let vr = receipt.verify(&venv).unwrap();
    let resign = |signer: &IdentitySecret,
                  edit: &dyn Fn(&mut vtp_protocol::envelope::EnvelopeHeader)| {
        let mut header = genuine.header.clone();
        edit(&mut header);
        let digest = vtp_protocol::encoding::signing_digest(
            vtp_protocol::encoding::domain::ENVELOPE,
            &header,
        );
        Envelope {
            signature: vtp_protocol::identity::test_sign(signer, &digest),
            header,
            zs: genuine.zs.clone(),
            sender_card: signer.card().clone(),
            tp_cards: genuine.tp_cards.clone(),
        }
    };
    let forged = resign(&alice, &|h| {
        h.deadline = FORGED_DEADLINE;
        h.created = NOW - 5;
    });
    let lifted = resign(&chris, &|h| {
        h.sender = chris.id();
        h.deadline = FORGED_DEADLINE;
    });
    let lifted_to_chris = resign(&chris, &|h| {
        h.sender = chris.id();
        h.recipient = chris.id();
    });
    let chris_venv = lifted_to_chris.verify_trusted(&cards).unwrap();
    let chris_receipt = Receipt::issue(&chris, &chris_venv, NOW + 2);
    let chris_claim = Claim::new(
        &chris,
        &chris_venv,
        &chris_receipt.verify(&chris_venv).unwrap(),
        NOW + 3,
    );
    let bob_claim = Claim::new(&bob, &venv, &vr, NOW + 5);
    // A cheating sender's opening of a bad z does not open (Alice cannot
    // even make one that checks); the judge is then not convinced either.
    let (judge_says_delivered, opening_opens) = match Opening::reveal(&alice, &venv, &vr) {
        Ok(opening) => (
            judge_group(&cards, &genuine, &receipt, Some(&opening), &[], None).valid,
            opening.check(&venv, bob.card()).is_ok(),
        ),
        Err(_) => (false, false),
    };
    let position = ChainPosition {
        seq: 1,
        prev: ChainPosition::GENESIS_PREV,
    };
    let prepared = trustees
        .iter()
        .map(|tp| {
            let card = &tp.card;
            let claim = |c: &Claim| {
                let claim = c.authenticate(card, NOW + 10).unwrap();
                let opened = tp.open(&c.decide_fresh(card, NOW + 10).unwrap());
                Prepared::Claim { claim, opened }
            };
            let unclaimed = |who: &IdentitySecret, env: &Envelope| {
                let v = env.verify_trusted(&cards).unwrap();
                let req = UnclaimedRequest::new(who, &v, card.id(), REQUESTED);
                let request = req.authenticate(card, NOW + 10).unwrap();
                let certificate = match request.clone().decide(&Recorded::nothing(), DEADLINE + 10)
                {
                    UnclaimedDecision::Certify(c) => {
                        tp.sign(AffidavitBody::unclaimed(&c, position))
                    }
                    other => panic!("a fresh unclaimed request after every deadline: {other:?}"),
                };
                Prepared::Unclaimed {
                    request,
                    certificate,
                }
            };
            MSGS.iter()
                .map(|m| match m {
                    Msg::BobClaim => claim(&bob_claim),
                    Msg::BobUnclaimed => unclaimed(&bob, &genuine),
                    Msg::AliceUnclaimed => unclaimed(&alice, &genuine),
                    Msg::AliceForgedUnclaimed => unclaimed(&alice, &forged),
                    Msg::ChrisLiftedUnclaimed => unclaimed(&chris, &lifted),
                    Msg::ChrisLiftedClaim => claim(&chris_claim),
                })
                .collect()
        })
        .collect();
    World {
        trustees,
        threshold: t,
        corrupt,
        receipt,
        judge_says_delivered,
        opening_opens,
        prepared,
    }
}

fn check(world: World, lookup: Lookup) -> impl Checker<TpModel> {
    let depth = std::env::var("VTP_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    // One thread makes the search strictly breadth-first, so a
    // counterexample is a shortest one; the group world uses both cores.
    let threads = if world.trustees.len() > 1 { 2 } else { 1 };
    let model = TpModel {
        world: Arc::new(world),
        lookup,
    };
    let mut b = model.checker().threads(threads);
    if depth > 0 {
        b = b.target_max_depth(depth);
    }
    b.spawn_bfs().join()
}

fn report(name: &str, c: &impl Checker<TpModel>) {
    eprintln!(
        "model {name}: {} states ({} unique), complete: {}",
        c.state_count(),
        c.unique_state_count(),
        c.is_done()
    );
}

#[test]
fn one_tp_the_core_is_fair() {
    let c = check(world(1, 1, vec![], None), Lookup::Current);
    report("one TP", &c);
    c.assert_properties();
}

#[test]
fn one_tp_with_an_invalid_envelope_the_core_is_fair() {
    let c = check(world(1, 1, vec![], Some(0)), Lookup::Current);
    report("one TP, invalid z", &c);
    c.assert_properties();
}

#[test]
fn two_of_three_with_a_corrupt_trustee_the_core_is_fair() {
    let c = check(world(3, 2, vec![2], None), Lookup::Current);
    report("2 of 3, one corrupt", &c);
    c.assert_properties();
}

/// The checker catches audit finding 1 when the trustees look unclaimed
/// certificates up by z alone (the audited code): Alice's forged unclaimed
/// request is certified and Bob's claim is then refused before his deadline.
#[test]
fn the_checker_finds_the_forged_unclaimed_attack_on_the_old_rule() {
    let c = check(world(1, 1, vec![], None), Lookup::UnclaimedByZ);
    report("one TP, old unclaimed lookup", &c);
    let path = c.assert_any_discovery("receipt-implies-bob-can-get-message");
    let actions = path.into_actions();
    eprintln!("counterexample: {actions:?}");
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Deliver(_, Msg::AliceForgedUnclaimed | Msg::ChrisLiftedUnclaimed)
        )),
        "the counterexample goes through a forged unclaimed request: {actions:?}"
    );
}

/// Without the invalid-verdict rule for unclaimed requests (the audited
/// code), the checker finds a TP that signs both "invalid" and "unclaimed"
/// for one envelope (audit finding 8).
#[test]
fn the_checker_finds_the_double_statement_on_the_old_rule() {
    let c = check(
        world(1, 1, vec![], Some(0)),
        Lookup::UnclaimedIgnoresInvalid,
    );
    report("one TP, invalid z, old unclaimed rule", &c);
    c.assert_any_discovery("one-outcome-per-subject");
}

#[test]
fn the_world_is_what_the_model_assumes() {
    // The genuine claim resolves, Chris's lifted claim and an invalid z do
    // not, and Bob's receipt is the one the claims carry.
    let w = world(1, 1, vec![], None);
    let kind = |m: Msg| match &w.prepared[0][m as usize] {
        Prepared::Claim { opened, .. } => match opened {
            ClaimOutcome::Resolved { .. } => "resolved",
            ClaimOutcome::InvalidEnvelope { .. } => "invalid",
        },
        Prepared::Unclaimed { .. } => "unclaimed",
    };
    assert_eq!(kind(Msg::BobClaim), "resolved");
    assert_eq!(kind(Msg::ChrisLiftedClaim), "invalid");
    let bad = world(1, 1, vec![], Some(0));
    assert!(matches!(
        &bad.prepared[0][Msg::BobClaim as usize],
        Prepared::Claim {
            opened: ClaimOutcome::InvalidEnvelope { .. },
            ..
        }
    ));
    assert_eq!(w.receipt.body.deadline, DEADLINE);
    assert!(w.judge_says_delivered && w.opening_opens);
    assert!(!bad.judge_says_delivered && !bad.opening_opens);
}
