//! The TP's key ring, in the journal (its audit log is [`super::audit`],
//! its subscribers [`super::subscribers`]).
//!
//! **Why the journal and not `tp.toml`.** Which encryption keys the TP
//! honours is state that changes while the daemon runs (`keys rotate`,
//! `keys retire` from another process) and that must stay consistent with
//! the resolutions the journal records: a restored journal backup must come
//! with the key ring of its time. Keeping both in one SQLite file gives
//! atomic updates (a rotation is one transaction: new current key, old one
//! demoted, audit records), one file to back up, safe concurrent access by
//! the daemon and the operator's commands, and no rewriting of a
//! hand-commented config file. `tp.toml` keeps what an operator decides once:
//! the token, the signing key (the TP's identity) and the defaults for new
//! keys.
//!
//! Encryption key states:
//! - `current`: new envelopes use it (exactly one key, once any exists);
//! - `standby`: generated and published in the TP card, not yet current;
//! - `previous`: was current; still resolves envelopes made for it;
//! - `retired`: no longer honoured or published; claims for envelopes made
//!   for it are refused with a clear message (recorded answers are still
//!   served). The key stays on the token until an operator destroys it.
//!
//! Signing keys are not in the ring (the config names the one in use), but
//! their generation is audited like every key event, and `keys list` takes
//! their creation time from the audit log.

use rusqlite::{params, OptionalExtension};
use vtp_device::{KeyId, OaepHash, TpKeys};
use vtp_protocol::tp_card::{Policy, TpCard};
use vtp_protocol::Timestamp;

use crate::clock::rfc3339;
use crate::journal::audit::insert_audit;
pub use crate::journal::audit::{actor, AuditRecord};
pub use crate::journal::subscribers::Subscriber;
use crate::journal::{Journal, JournalError, TxError};

/// Tables added in journal schema version 2 (and `key_offers`, added later
/// without a version bump: [`Journal::open`] creates it in older journals).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keyring (
    key_id        BLOB PRIMARY KEY NOT NULL,  -- CKA_ID, 8 bytes
    label         TEXT NOT NULL,              -- CKA_LABEL
    bits          INTEGER NOT NULL,           -- RSA modulus size
    oaep          TEXT NOT NULL,              -- sha1 | sha256
    state         TEXT NOT NULL,              -- current | standby | previous | retired
    created_at    INTEGER NOT NULL,
    current_since INTEGER,                    -- when it last became current
    superseded_at INTEGER,                    -- when it last stopped being current
    retired_at    INTEGER
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS keyring_one_current ON keyring (state) WHERE state = 'current';

-- For each key that was the current key of a TP card this TP signed: the
-- latest signing time of such a card and the latest deadline such a card
-- lets a recipient accept (TpCard::latest_deadline). Added without a schema
-- version bump: older builds ignore it, and it is created on every open.
CREATE TABLE IF NOT EXISTS key_offers (
    key_id         BLOB PRIMARY KEY NOT NULL,  -- CKA_ID, 8 bytes
    last_signed    INTEGER NOT NULL,
    latest_deadline INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    event   TEXT NOT NULL,     -- e.g. key.generated, key.current, key.retired
    subject TEXT NOT NULL,     -- key id (hex), identity id (hex), TP id, ...
    detail  TEXT NOT NULL,
    actor   TEXT NOT NULL      -- which command, uid and pid
);
CREATE INDEX IF NOT EXISTS audit_by_subject ON audit (subject, seq);

CREATE TABLE IF NOT EXISTS subscribers (
    identity   BLOB PRIMARY KEY NOT NULL,  -- IdentityId (SHA-256 of the card)
    note       TEXT NOT NULL,
    added_at   INTEGER NOT NULL,
    expires_at INTEGER                     -- NULL: no expiry
) WITHOUT ROWID;
";

/// Where an encryption key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    Current,
    Standby,
    Previous,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Current => "current",
            KeyState::Standby => "standby",
            KeyState::Previous => "previous",
            KeyState::Retired => "retired",
        }
    }
    fn parse(s: &str) -> Option<KeyState> {
        Some(match s {
            "current" => KeyState::Current,
            "standby" => KeyState::Standby,
            "previous" => KeyState::Previous,
            "retired" => KeyState::Retired,
            _ => return None,
        })
    }
    /// Published in the card and resolving envelopes.
    pub fn honoured(self) -> bool {
        self != KeyState::Retired
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One encryption key of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingKey {
    pub id: KeyId,
    pub label: String,
    pub bits: u32,
    pub oaep: OaepHash,
    pub state: KeyState,
    pub created_at: Timestamp,
    pub current_since: Option<Timestamp>,
    pub superseded_at: Option<Timestamp>,
    pub retired_at: Option<Timestamp>,
}

impl RingKey {
    /// "RSA-3072 OAEP-SHA1".
    pub fn algorithm(&self) -> String {
        format!(
            "RSA-{} OAEP-{}",
            self.bits,
            self.oaep.as_str().to_ascii_uppercase()
        )
    }

    /// When retiring this key can no longer strand a claim.
    ///
    /// A recipient accepts an envelope only if it is sealed to the current
    /// key of a TP card he trusts, with a deadline no later than that card's
    /// [`TpCard::latest_deadline`](vtp_protocol::tp_card::TpCard::latest_deadline)
    /// (its signing time + its horizon + skew). So the last claim for this
    /// key comes before the latest such deadline of any card that named it
    /// current: `offers` as recorded when each card was signed. Cards signed
    /// by builds that did not record them were signed while the key was
    /// current, so before `superseded_at`: for those the time it stopped
    /// being current (or was added) plus today's `policy` horizon is the
    /// bound, as before. The later of both is safe.
    pub fn safe_to_retire_at(&self, policy: &Policy, offers: Option<&KeyOffers>) -> Timestamp {
        let last_use = self
            .superseded_at
            .unwrap_or(self.created_at)
            .max(self.created_at);
        let legacy = last_use + policy.max_deadline_secs + policy.clock_skew_secs;
        offers.map_or(legacy, |o| o.latest_deadline.max(legacy))
    }
}

/// What the TP cards that named a key as current promised, as recorded
/// when the TP signed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOffers {
    /// The latest signing time (`created`) of such a card.
    pub last_signed: Timestamp,
    /// The latest deadline such a card lets a recipient accept.
    pub latest_deadline: Timestamp,
}

/// A key just retired, and when retiring it would have been safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    pub key: RingKey,
    /// [`RingKey::safe_to_retire_at`]: later than the retirement only with
    /// `--force`, and then envelopes for the key with deadlines up to it
    /// may be stranded.
    pub safe_at: Timestamp,
}

impl Retirement {
    /// Retired before it was safe (`--force`).
    pub fn forced_early(&self) -> bool {
        self.key.retired_at.is_some_and(|at| at < self.safe_at)
    }
}

/// A key to add to the ring.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: KeyId,
    pub label: String,
    pub bits: u32,
    pub oaep: OaepHash,
}

/// The ring as read from the journal, oldest key first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    pub keys: Vec<RingKey>,
}

impl KeyRing {
    pub fn current(&self) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.state == KeyState::Current)
    }
    pub fn get(&self, id: KeyId) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.id == id)
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// The device's view: every honoured key, and the current one.
    pub fn tp_keys(&self, signing: KeyId) -> Result<TpKeys, NoCurrentKey> {
        let current = self.current().ok_or(NoCurrentKey)?;
        Ok(TpKeys {
            signing,
            encryption: self
                .keys
                .iter()
                .filter(|k| k.state.honoured())
                .map(|k| k.id)
                .collect(),
            current: current.id,
        })
    }
}

/// A key ring without a current encryption key cannot serve: nothing
/// would tell senders which key to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the key ring has no current encryption key (run `tp-daemon keys rotate`, or \
     `tp-daemon keys generate --encryption` on a new TP)"
)]
pub struct NoCurrentKey;

fn key_id_from(b: Vec<u8>) -> rusqlite::Result<KeyId> {
    <[u8; 8]>::try_from(b.as_slice()).map(KeyId).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "key id is not 8 bytes".into(),
        )
    })
}

fn oaep_from(s: &str) -> Option<OaepHash> {
    match s {
        "sha1" => Some(OaepHash::Sha1),
        "sha256" => Some(OaepHash::Sha256),
        _ => None,
    }
}

const RING_COLUMNS: &str =
    "key_id, label, bits, oaep, state, created_at, current_since, superseded_at, retired_at";

fn ring_row(r: &rusqlite::Row) -> rusqlite::Result<(KeyId, RingRowRest)> {
    Ok((
        key_id_from(r.get(0)?)?,
        RingRowRest {
            label: r.get(1)?,
            bits: r.get(2)?,
            oaep: r.get(3)?,
            state: r.get(4)?,
            created_at: r.get(5)?,
            current_since: r.get(6)?,
            superseded_at: r.get(7)?,
            retired_at: r.get(8)?,
        },
    ))
}

struct RingRowRest {
    label: String,
    bits: u32,
    oaep: String,
    state: String,
    created_at: i64,
    current_since: Option<i64>,
    superseded_at: Option<i64>,
    retired_at: Option<i64>,
}

impl Journal {
    fn ring_key(&self, id: KeyId, rest: RingRowRest) -> Result<RingKey, JournalError> {
        let corrupt = |what: &str| JournalError::Corrupt {
            path: self.path().to_owned(),
            detail: format!("key ring entry {id}: {what}"),
        };
        Ok(RingKey {
            id,
            label: rest.label,
            bits: rest.bits,
            oaep: oaep_from(&rest.oaep).ok_or_else(|| corrupt("unknown OAEP hash"))?,
            state: KeyState::parse(&rest.state).ok_or_else(|| corrupt("unknown state"))?,
            created_at: rest.created_at as Timestamp,
            current_since: rest.current_since.map(|t| t as Timestamp),
            superseded_at: rest.superseded_at.map(|t| t as Timestamp),
            retired_at: rest.retired_at.map(|t| t as Timestamp),
        })
    }

    /// The whole key ring, oldest key first.
    pub fn key_ring(&self) -> Result<KeyRing, JournalError> {
        let rows: Vec<(KeyId, RingRowRest)> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {RING_COLUMNS} FROM keyring ORDER BY created_at, key_id"
                ))
                .map_err(|e| self.sql(e))?;
            let rows = stmt
                .query_map([], ring_row)
                .map_err(|e| self.sql(e))?
                .collect::<Result<_, _>>()
                .map_err(|e| self.sql(e))?;
            rows
        };
        let keys = rows
            .into_iter()
            .map(|(id, rest)| self.ring_key(id, rest))
            .collect::<Result<_, _>>()?;
        Ok(KeyRing { keys })
    }

    /// When a key (of any kind) was first generated or imported, per the
    /// audit log.
    pub fn key_first_seen(&self, id: KeyId) -> Result<Option<Timestamp>, JournalError> {
        let conn = self.conn();
        let t: Option<i64> = conn
            .query_row(
                "SELECT MIN(at) FROM audit WHERE subject = ?1 AND event IN \
                 ('key.generated', 'key.imported')",
                [id.to_string()],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(t.map(|t| t as Timestamp))
    }

    /// Add an encryption key to the ring (state `standby`, or `current` —
    /// the old current key becomes `previous`), with its audit records, in
    /// one transaction. `event` is `key.generated` or `key.imported`.
    pub fn add_key(
        &self,
        key: &NewKey,
        make_current: bool,
        at: Timestamp,
        event: &str,
        detail: &str,
        actor: &str,
    ) -> Result<(), JournalError> {
        self.write_tx(|tx| {
            let exists = key_state_in(tx, key.id)?;
            if let Some(state) = exists {
                return Err(TxError::refused(format!(
                    "key {} is already in the key ring ({})",
                    key.id,
                    state.as_str()
                )));
            }
            tx.execute(
                &format!("INSERT INTO keyring ({RING_COLUMNS}) VALUES (?1, ?2, ?3, ?4, 'standby', ?5, NULL, NULL, NULL)"),
                params![
                    &key.id.as_bytes()[..],
                    key.label,
                    key.bits,
                    key.oaep.as_str(),
                    at as i64
                ],
            )
            ?;
            insert_audit(tx, at, event, &key.id.to_string(), detail, actor)
                ?;
            if make_current {
                make_current_in(tx, key.id, at, actor)?;
            }
            Ok(())
        })
    }

    /// Make a `standby` or `previous` key current; the current key becomes
    /// `previous`. Returns the key that was current.
    pub fn make_current(
        &self,
        id: KeyId,
        at: Timestamp,
        actor: &str,
    ) -> Result<Option<KeyId>, JournalError> {
        self.write_tx(|tx| {
            let state = key_state_in(tx, id)?;
            match state {
                None => {
                    return Err(TxError::refused(format!(
                        "key {id} is not in the key ring (see `tp-daemon keys list`)"
                    )))
                }
                Some(KeyState::Current) => {
                    return Err(TxError::refused(format!("key {id} is already current")))
                }
                Some(KeyState::Retired) => {
                    return Err(TxError::refused(format!(
                        "key {id} is retired; a retired key never comes back (generate a new one)"
                    )))
                }
                Some(_) => {}
            }
            let old = make_current_in(tx, id, at, actor)?;
            Ok(old)
        })
    }

    /// What the recorded TP cards naming `id` current promised.
    pub fn key_offers(&self, id: KeyId) -> Result<Option<KeyOffers>, JournalError> {
        key_offers_in(&self.conn(), id).map_err(|e| self.sql(e))
    }

    /// Record a TP card just signed, before it is served or written: the
    /// `card.signed` audit record and what the card promises for its current
    /// key ([`KeyOffers`]), in one transaction. Refused if that key was
    /// retired meanwhile (the card must not be used then), so a retirement
    /// and the cards it has to wait for never miss each other.
    pub fn record_card_signed(
        &self,
        card: &TpCard,
        at: Timestamp,
        detail: &str,
        actor: &str,
    ) -> Result<(), JournalError> {
        let key = card.body().current_key;
        self.write_tx(|tx| {
            let state = key_state_in(tx, key)?;
            if state == Some(KeyState::Retired) {
                return Err(TxError::refused(format!(
                    "encryption key {key} was retired while the TP card naming it current was being \
                     signed; the card is not used (sign it again: SIGHUP or restart)"
                )));
            }
            tx.execute(
                "INSERT INTO key_offers (key_id, last_signed, latest_deadline) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key_id) DO UPDATE SET \
                 last_signed = MAX(last_signed, excluded.last_signed), \
                 latest_deadline = MAX(latest_deadline, excluded.latest_deadline)",
                params![
                    &key.as_bytes()[..],
                    card.body().created as i64,
                    card.latest_deadline() as i64
                ],
            )
            ?;
            insert_audit(tx, at, "card.signed", &card.id().0.to_hex(), detail, actor)
                ?;
            Ok(())
        })
    }

    /// Retire a key that is not current. Unless `force`, refuse while
    /// envelopes made for it may still be claimed (see
    /// [`RingKey::safe_to_retire_at`]).
    pub fn retire_key(
        &self,
        id: KeyId,
        policy: &Policy,
        force: bool,
        at: Timestamp,
        actor: &str,
    ) -> Result<Retirement, JournalError> {
        self.write_tx(|tx| {
            let row = tx
                .query_row(
                    &format!("SELECT {RING_COLUMNS} FROM keyring WHERE key_id = ?1"),
                    [&id.as_bytes()[..]],
                    ring_row,
                )
                .optional()
                ?;
            let Some((_, rest)) = row else {
                return Err(TxError::refused(format!(
                    "key {id} is not in the key ring (see `tp-daemon keys list`)"
                )));
            };
            let key = self.ring_key(id, rest)?;
            match key.state {
                KeyState::Current => {
                    return Err(TxError::refused(format!(
                        "key {id} is the current encryption key; make another key current first \
                         (`tp-daemon keys rotate`)"
                    )))
                }
                KeyState::Retired => {
                    return Err(TxError::refused(format!(
                        "key {id} was already retired at {}",
                        rfc3339(key.retired_at.unwrap_or(0))
                    )))
                }
                KeyState::Standby | KeyState::Previous => {}
            }
            let offers = key_offers_in(tx, id)?;
            let safe = key.safe_to_retire_at(policy, offers.as_ref());
            if at < safe && !force {
                let since = match offers {
                    Some(o) => format!(
                        "the last TP card naming it current was signed at {}",
                        rfc3339(o.last_signed)
                    ),
                    None => format!(
                        "it was in use until {}",
                        rfc3339(key.superseded_at.unwrap_or(key.created_at))
                    ),
                };
                return Err(TxError::refused(format!(
                    "key {id} may still have envelopes whose deadline has not passed until {} \
                     ({since}, and recipients accept deadlines up to max_deadline_secs + \
                     clock_skew_secs after a card's signing); retiring it now would leave their \
                     recipients unable to claim. Wait until {}, or pass --force if you know no such \
                     envelope exists",
                    rfc3339(safe),
                    rfc3339(safe)
                )));
            }
            tx.execute(
                "UPDATE keyring SET state = 'retired', retired_at = ?2 WHERE key_id = ?1",
                params![&id.as_bytes()[..], at as i64],
            )
            ?;
            let detail = if at < safe {
                format!(
                    "retired with --force before {} (was {})",
                    rfc3339(safe),
                    key.state
                )
            } else {
                format!("retired (was {})", key.state)
            };
            insert_audit(tx, at, "key.retired", &id.to_string(), &detail, actor)
                ?;
            Ok(Retirement {
                key: RingKey {
                    state: KeyState::Retired,
                    retired_at: Some(at),
                    ..key
                },
                safe_at: safe,
            })
        })
    }
}

fn key_offers_in(conn: &rusqlite::Connection, id: KeyId) -> rusqlite::Result<Option<KeyOffers>> {
    conn.query_row(
        "SELECT last_signed, latest_deadline FROM key_offers WHERE key_id = ?1",
        [&id.as_bytes()[..]],
        |r| {
            Ok(KeyOffers {
                last_signed: r.get::<_, i64>(0)? as Timestamp,
                latest_deadline: r.get::<_, i64>(1)? as Timestamp,
            })
        },
    )
    .optional()
}

/// Inside a transaction: `id` becomes current, the old current `previous`.
/// A key's state, read inside the caller's transaction (so it still holds
/// when the caller writes).
fn key_state_in(tx: &rusqlite::Transaction<'_>, id: KeyId) -> Result<Option<KeyState>, TxError> {
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM keyring WHERE key_id = ?1",
            [&id.as_bytes()[..]],
            |r| r.get(0),
        )
        .optional()?;
    match state {
        None => Ok(None),
        Some(s) => KeyState::parse(&s)
            .map(Some)
            .ok_or_else(|| TxError::Corrupt(format!("key ring entry {id}: unknown state {s:?}"))),
    }
}

fn make_current_in(
    tx: &rusqlite::Connection,
    id: KeyId,
    at: Timestamp,
    actor: &str,
) -> rusqlite::Result<Option<KeyId>> {
    let old: Option<Vec<u8>> = tx
        .query_row(
            "SELECT key_id FROM keyring WHERE state = 'current'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let old = old.map(key_id_from).transpose()?;
    if let Some(old) = old {
        tx.execute(
            "UPDATE keyring SET state = 'previous', superseded_at = ?2 WHERE key_id = ?1",
            params![&old.as_bytes()[..], at as i64],
        )?;
    }
    tx.execute(
        "UPDATE keyring SET state = 'current', current_since = ?2 WHERE key_id = ?1",
        params![&id.as_bytes()[..], at as i64],
    )?;
    let detail = match old {
        Some(o) => format!(
            "now the current encryption key (replaces {o}, which stays honoured as previous)"
        ),
        None => "now the current encryption key".to_owned(),
    };
    insert_audit(tx, at, "key.current", &id.to_string(), &detail, actor)?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> NewKey {
        NewKey {
            id: KeyId([n; 8]),
            label: format!("vtp-enc-{}-sha1", KeyId([n; 8])),
            bits: 2048,
            oaep: OaepHash::Sha1,
        }
    }

    #[test]
    fn ring_lifecycle_with_audit() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.key_ring().unwrap().is_empty());
        let policy = Policy {
            max_deadline_secs: 100,
            min_claim_window_secs: 10,
            clock_skew_secs: 5,
            ..Policy::default()
        };
        j.add_key(&key(1), true, 1000, "key.generated", "g", "test")
            .unwrap();
        j.add_key(&key(2), false, 1010, "key.generated", "g", "test")
            .unwrap();
        let ring = j.key_ring().unwrap();
        assert_eq!(ring.current().unwrap().id, KeyId([1; 8]));
        assert_eq!(ring.get(KeyId([2; 8])).unwrap().state, KeyState::Standby);
        let tk = ring.tp_keys(KeyId([9; 8])).unwrap();
        assert_eq!(tk.encryption, vec![KeyId([1; 8]), KeyId([2; 8])]);

        // Adding twice is refused.
        let e = j
            .add_key(&key(2), false, 1011, "key.generated", "g", "test")
            .unwrap_err();
        assert!(e.to_string().contains("already in the key ring"), "{e}");

        // Rotate to the standby key.
        assert_eq!(
            j.make_current(KeyId([2; 8]), 1020, "test").unwrap(),
            Some(KeyId([1; 8]))
        );
        let ring = j.key_ring().unwrap();
        let old = ring.get(KeyId([1; 8])).unwrap();
        assert_eq!(old.state, KeyState::Previous);
        assert_eq!(old.superseded_at, Some(1020));
        assert_eq!(old.safe_to_retire_at(&policy, None), 1125);
        // A card offering it as current signed later (a daemon not yet
        // reloaded) pushes the safe moment back; an earlier one does not.
        let offers = |latest_deadline| KeyOffers {
            last_signed: 0,
            latest_deadline,
        };
        assert_eq!(old.safe_to_retire_at(&policy, Some(&offers(1300))), 1300);
        assert_eq!(old.safe_to_retire_at(&policy, Some(&offers(1050))), 1125);
        assert_eq!(j.key_offers(KeyId([1; 8])).unwrap(), None);

        // The current key cannot be retired; a recent one only with force.
        let e = j
            .retire_key(KeyId([2; 8]), &policy, true, 1030, "test")
            .unwrap_err();
        assert!(e.to_string().contains("current encryption key"), "{e}");
        let e = j
            .retire_key(KeyId([1; 8]), &policy, false, 1030, "test")
            .unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let r = j
            .retire_key(KeyId([1; 8]), &policy, false, 1125, "test")
            .unwrap();
        assert_eq!(r.key.state, KeyState::Retired);
        assert!(!r.forced_early());
        let e = j
            .retire_key(KeyId([1; 8]), &policy, true, 1200, "test")
            .unwrap_err();
        assert!(e.to_string().contains("already retired"), "{e}");
        let e = j.make_current(KeyId([1; 8]), 1200, "test").unwrap_err();
        assert!(e.to_string().contains("never comes back"), "{e}");
        let e = j
            .retire_key(KeyId([7; 8]), &policy, true, 1200, "test")
            .unwrap_err();
        assert!(e.to_string().contains("not in the key ring"), "{e}");

        let ring = j.key_ring().unwrap();
        assert_eq!(
            ring.tp_keys(KeyId([9; 8])).unwrap().encryption,
            vec![KeyId([2; 8])]
        );

        let log = j.audit_log(100).unwrap();
        let events: Vec<&str> = log.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(
            events,
            [
                "key.generated",
                "key.current",
                "key.generated",
                "key.current",
                "key.retired"
            ]
        );
        assert_eq!(j.key_first_seen(KeyId([2; 8])).unwrap(), Some(1010));
        assert_eq!(j.audit_log(1).unwrap().len(), 1);
    }

    #[test]
    fn subscribers_with_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let id = vtp_protocol::IdentityId(vtp_protocol::Digest32([5; 32]));
        assert!(j.subscriber(&id).unwrap().is_none());
        assert!(j.add_subscriber(&id, "Bob", Some(2000), 1000, "t").unwrap());
        assert!(!j.add_subscriber(&id, "Bob B.", None, 1100, "t").unwrap());
        let s = j.subscriber(&id).unwrap().unwrap();
        assert_eq!(s.note, "Bob B.");
        assert!(s.active_at(5000));
        assert_eq!(j.subscribers().unwrap().len(), 1);
        assert!(j.remove_subscriber(&id, 1200, "t").unwrap());
        assert!(!j.remove_subscriber(&id, 1300, "t").unwrap());
        let events: Vec<String> = j
            .audit_log(10)
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(
            events,
            [
                "subscriber.added",
                "subscriber.updated",
                "subscriber.removed"
            ]
        );
    }

    #[test]
    fn a_version_1_journal_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = rusqlite::Connection::open(dir.path().join(crate::journal::FILE_NAME)).unwrap();
            c.execute_batch(
                "CREATE TABLE resolved (z_hash BLOB PRIMARY KEY); PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.key_ring().unwrap().is_empty());
        j.audit(1, "x", "y", "z", "t").unwrap();
    }
}
