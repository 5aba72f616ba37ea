//! The subscribers, in the journal: who may claim when `[policy]
//! require_subscription` is set (the TP may serve its subscribers only), with
//! an optional expiry. Every change is audited in the same transaction.

use rusqlite::params;
use vtp_protocol::{IdentityId, Timestamp};

use crate::clock::rfc3339;
use crate::journal::audit::insert_audit;
use crate::journal::{Journal, JournalError};

/// One subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub identity: IdentityId,
    pub note: String,
    pub added_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

impl Subscriber {
    pub fn active_at(&self, now: Timestamp) -> bool {
        match self.expires_at {
            None => true,
            Some(e) => now < e,
        }
    }
}

impl Journal {
    /// Add (or update) a subscriber; `true` if it is new.
    pub fn add_subscriber(
        &self,
        identity: &IdentityId,
        note: &str,
        expires_at: Option<Timestamp>,
        at: Timestamp,
        actor: &str,
    ) -> Result<bool, JournalError> {
        self.write_tx(|tx| {
            let existed: bool = tx
                .query_row(
                    "SELECT COUNT(*) FROM subscribers WHERE identity = ?1",
                    [&identity.0 .0[..]],
                    |r| r.get::<_, i64>(0),
                )
                ?
                > 0;
            tx.execute(
                "INSERT INTO subscribers (identity, note, added_at, expires_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (identity) DO UPDATE SET note = excluded.note, expires_at = excluded.expires_at",
                params![&identity.0 .0[..], note, at as i64, expires_at.map(|t| t as i64)],
            )
            ?;
            let detail = format!(
                "{} subscriber \"{note}\", {}",
                if existed { "updated" } else { "added" },
                match expires_at {
                    Some(t) => format!("expires {}", rfc3339(t)),
                    None => "no expiry".into(),
                }
            );
            let event = if existed {
                "subscriber.updated"
            } else {
                "subscriber.added"
            };
            insert_audit(tx, at, event, &identity.0.to_hex(), &detail, actor)
                ?;
            Ok(!existed)
        })
    }

    /// Remove a subscriber; `false` if it was not subscribed.
    pub fn remove_subscriber(
        &self,
        identity: &IdentityId,
        at: Timestamp,
        actor: &str,
    ) -> Result<bool, JournalError> {
        self.write_tx(|tx| {
            let n = tx.execute(
                "DELETE FROM subscribers WHERE identity = ?1",
                [&identity.0 .0[..]],
            )?;
            if n > 0 {
                insert_audit(
                    tx,
                    at,
                    "subscriber.removed",
                    &identity.0.to_hex(),
                    "removed",
                    actor,
                )?;
            }
            Ok(n > 0)
        })
    }

    fn subscriber_rows(
        &self,
        filter: Option<&IdentityId>,
    ) -> Result<Vec<Subscriber>, JournalError> {
        let conn = self.conn();
        let (sql, args): (&str, Vec<Vec<u8>>) = match filter {
            Some(id) => (
                "SELECT identity, note, added_at, expires_at FROM subscribers WHERE identity = ?1",
                vec![id.0 .0.to_vec()],
            ),
            None => (
                "SELECT identity, note, added_at, expires_at FROM subscribers ORDER BY added_at, identity",
                vec![],
            ),
        };
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                let b: Vec<u8> = r.get(0)?;
                let id: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Blob,
                        "identity is not 32 bytes".into(),
                    )
                })?;
                Ok(Subscriber {
                    identity: IdentityId(vtp_protocol::Digest32(id)),
                    note: r.get(1)?,
                    added_at: r.get::<_, i64>(2)? as Timestamp,
                    expires_at: r.get::<_, Option<i64>>(3)?.map(|t| t as Timestamp),
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    pub fn subscribers(&self) -> Result<Vec<Subscriber>, JournalError> {
        self.subscriber_rows(None)
    }

    pub fn subscriber(&self, id: &IdentityId) -> Result<Option<Subscriber>, JournalError> {
        Ok(self.subscriber_rows(Some(id))?.pop())
    }
}
