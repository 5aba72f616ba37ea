//! The TP's journal: every answer it ever gave that must never change.
//!
//! DESIGN.md §3 step 3: a resolution is committed here **before** Bob sees
//! it, so a crash leaves either nothing released or a durable record from
//! which Bob and Alice are both served. Hence SQLite in WAL mode with
//! `synchronous=FULL` (the WAL is fsynced before a commit returns) and
//! `PRAGMA integrity_check` when the daemon starts.
//!
//! Three tables, each keyed by what its statement is about:
//! - `resolved`: keyed by `z_hash`. A resolution is about z (any header that
//!   agrees with z's inside), so a second claim for the same z gets it back.
//! - `invalid`: keyed by `envelope_id`. An invalid-envelope verdict is about
//!   one signed header: a forged header around someone else's z must not
//!   block the genuine envelope's claim.
//! - `unclaimed`: keyed by `(z_hash, envelope_id)`. The certificate names the
//!   envelope it is about; lookups by z alone tell the claim path that z was
//!   declared unclaimed.
//!
//! Inserts never overwrite: if a row already exists (only possible if two
//! daemons share a journal), the recorded row wins and is returned, so what
//! the caller releases is always what the journal holds.
//!
//! Since schema version 2 the journal also holds the TP's **key ring**
//! (which encryption keys exist, which is current, which are retired), the
//! **audit log** of key and subscriber events, and the **subscribers**; see
//! [`crate::keyring`]. A version-1 journal is upgraded in place when opened
//! read-write (the new tables are added; nothing else changes).
//!
//! Blocking: one connection behind a `std::sync::Mutex`; async callers go
//! through [`Journal::blocking`], which runs on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use vtp_protocol::affidavit::{Affidavit, AffidavitBody, Statement};
use vtp_protocol::encoding::canonical;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::wire::{ClaimOutcome, ResolvedReceipt};
use vtp_protocol::{Digest32, IdentityId, Timestamp};

/// File name of the journal inside the data directory.
pub const FILE_NAME: &str = "journal.sqlite3";

/// Bumped when the schema or the stored encodings change.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resolved (
    z_hash      BLOB PRIMARY KEY NOT NULL,
    envelope_id BLOB NOT NULL,
    sender      BLOB NOT NULL,
    recipient   BLOB NOT NULL,
    deadline    INTEGER NOT NULL,
    outcome     BLOB NOT NULL,   -- postcard ClaimOutcome::Resolved
    receipt     BLOB NOT NULL,   -- postcard Receipt (Alice's receipt)
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resolved_by_sender ON resolved (sender, created_at);

CREATE TABLE IF NOT EXISTS invalid (
    envelope_id BLOB PRIMARY KEY NOT NULL,
    z_hash      BLOB NOT NULL,
    sender      BLOB NOT NULL,
    recipient   BLOB NOT NULL,
    deadline    INTEGER NOT NULL,
    outcome     BLOB NOT NULL,   -- postcard ClaimOutcome::InvalidEnvelope
    receipt     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS unclaimed (
    z_hash      BLOB NOT NULL,
    envelope_id BLOB NOT NULL,
    sender      BLOB NOT NULL,
    recipient   BLOB NOT NULL,
    deadline    INTEGER NOT NULL,
    affidavit   BLOB NOT NULL,   -- postcard Affidavit (Statement::Unclaimed)
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (z_hash, envelope_id)
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("journal {}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("journal task failed: {0}")]
    Task(String),
    /// A key-ring or subscriber operation the journal's state does not allow
    /// (e.g. retiring the current key). The message is for the operator.
    #[error("{0}")]
    Refused(String),
}

/// Row counts, for logs, tests and `tp-daemon journal stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub resolved: u64,
    pub invalid: u64,
    pub unclaimed: u64,
}

/// A handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Open (creating if needed) `data_dir/journal.sqlite3`, set WAL and
    /// `synchronous=FULL`, check integrity and create the schema.
    pub fn open(data_dir: &Path) -> Result<Journal, JournalError> {
        let path = data_dir.join(FILE_NAME);
        std::fs::create_dir_all(data_dir).map_err(|e| JournalError::Corrupt {
            path: path.clone(),
            detail: format!("cannot create the data directory: {e}"),
        })?;
        let sql = |source| JournalError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(JournalError::Corrupt {
                path,
                detail: format!("cannot switch to WAL mode (journal_mode is {mode})"),
            });
        }
        // FULL: in WAL mode the WAL is fsynced at every commit, so a commit
        // that returned survives a power loss.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        check_integrity(&conn, &path)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        match version {
            0 => {
                let tx = conn.unchecked_transaction().map_err(sql)?;
                tx.execute_batch(SCHEMA).map_err(sql)?;
                tx.execute_batch(crate::keyring::SCHEMA).map_err(sql)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(sql)?;
                tx.commit().map_err(sql)?;
            }
            1 => {
                let tx = conn.unchecked_transaction().map_err(sql)?;
                tx.execute_batch(crate::keyring::SCHEMA).map_err(sql)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(sql)?;
                tx.commit().map_err(sql)?;
                tracing::info!(journal = %path.display(), "journal upgraded to schema version 2 (key ring, audit log, subscribers)");
            }
            SCHEMA_VERSION => {}
            other => {
                return Err(JournalError::Corrupt {
                    path,
                    detail: format!(
                        "schema version {other}, this build knows version {SCHEMA_VERSION}"
                    ),
                })
            }
        }
        Ok(Journal {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Open an existing journal read-only (operator tools, tests), while a
    /// daemon may be using it.
    pub fn open_read_only(data_dir: &Path) -> Result<Journal, JournalError> {
        let path = data_dir.join(FILE_NAME);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| JournalError::Sqlite {
            path: path.clone(),
            source,
        })?;
        Ok(Journal {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run blocking journal work on tokio's blocking pool.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
    {
        let j = self.clone();
        tokio::task::spawn_blocking(move || f(&j))
            .await
            .map_err(|e| JournalError::Task(e.to_string()))?
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done
        // transaction behind: rusqlite rolls back on drop.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn sql(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, JournalError> {
        postcard::from_bytes(bytes).map_err(|e| JournalError::Corrupt {
            path: self.path.clone(),
            detail: format!("cannot decode a stored {what}: {e}"),
        })
    }

    /// The recorded resolution of z, if any.
    pub fn resolved(&self, z_hash: &Digest32) -> Result<Option<ClaimOutcome>, JournalError> {
        let row: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT outcome FROM resolved WHERE z_hash = ?1",
                [&z_hash.0[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        row.map(|b| self.decode("claim outcome", &b)).transpose()
    }

    /// The recorded invalid-envelope verdict for this signed header, if any.
    pub fn invalid_verdict(
        &self,
        envelope_id: &Digest32,
    ) -> Result<Option<ClaimOutcome>, JournalError> {
        let row: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT outcome FROM invalid WHERE envelope_id = ?1",
                [&envelope_id.0[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        row.map(|b| self.decode("claim outcome", &b)).transpose()
    }

    /// The recorded unclaimed certificate for this envelope, if any.
    pub fn unclaimed(
        &self,
        z_hash: &Digest32,
        envelope_id: &Digest32,
    ) -> Result<Option<Affidavit>, JournalError> {
        let row: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT affidavit FROM unclaimed WHERE z_hash = ?1 AND envelope_id = ?2",
                [&z_hash.0[..], &envelope_id.0[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        row.map(|b| self.decode("affidavit", &b)).transpose()
    }

    /// When z was first declared unclaimed (under any header), if ever.
    pub fn unclaimed_since(&self, z_hash: &Digest32) -> Result<Option<Timestamp>, JournalError> {
        let row: Option<i64> = self
            .conn()
            .query_row(
                "SELECT MIN(created_at) FROM unclaimed WHERE z_hash = ?1",
                [&z_hash.0[..]],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        Ok(row.map(|t| t as Timestamp))
    }

    /// Durably record a claim's outcome (in `resolved` or `invalid` by its
    /// kind) with Alice's receipt. Returns the outcome the journal holds
    /// afterwards: the given one, or one recorded earlier for the same key.
    pub fn record_claim(
        &self,
        outcome: &ClaimOutcome,
        receipt: &Receipt,
        created_at: Timestamp,
    ) -> Result<ClaimOutcome, JournalError> {
        let (table, key, body) = match outcome {
            ClaimOutcome::Resolved { affidavit, .. } => {
                ("resolved", affidavit.body.z_hash, &affidavit.body)
            }
            ClaimOutcome::InvalidEnvelope { affidavit } => {
                ("invalid", affidavit.body.envelope_id, &affidavit.body)
            }
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        tx.execute(
            &format!(
                "INSERT INTO {table} (z_hash, envelope_id, sender, recipient, deadline, \
                 outcome, receipt, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT DO NOTHING"
            ),
            params![
                &body.z_hash.0[..],
                &body.envelope_id.0[..],
                &body.sender.0 .0[..],
                &body.recipient.0 .0[..],
                body.deadline as i64,
                canonical(outcome),
                canonical(receipt),
                created_at as i64,
            ],
        )
        .map_err(|e| self.sql(e))?;
        let key_col = if table == "resolved" {
            "z_hash"
        } else {
            "envelope_id"
        };
        let stored: Vec<u8> = tx
            .query_row(
                &format!("SELECT outcome FROM {table} WHERE {key_col} = ?1"),
                [&key.0[..]],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        drop(conn);
        self.decode("claim outcome", &stored)
    }

    /// Durably record an unclaimed certificate; returns the one the journal
    /// holds afterwards (see [`Self::record_claim`]).
    pub fn record_unclaimed(
        &self,
        affidavit: &Affidavit,
        created_at: Timestamp,
    ) -> Result<Affidavit, JournalError> {
        let b: &AffidavitBody = &affidavit.body;
        if b.statement != Statement::Unclaimed {
            return Err(JournalError::Corrupt {
                path: self.path.clone(),
                detail: "refusing to record a non-unclaimed affidavit as unclaimed".into(),
            });
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        tx.execute(
            "INSERT INTO unclaimed (z_hash, envelope_id, sender, recipient, deadline, \
             affidavit, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            params![
                &b.z_hash.0[..],
                &b.envelope_id.0[..],
                &b.sender.0 .0[..],
                &b.recipient.0 .0[..],
                b.deadline as i64,
                canonical(affidavit),
                created_at as i64,
            ],
        )
        .map_err(|e| self.sql(e))?;
        let stored: Vec<u8> = tx
            .query_row(
                "SELECT affidavit FROM unclaimed WHERE z_hash = ?1 AND envelope_id = ?2",
                [&b.z_hash.0[..], &b.envelope_id.0[..]],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        drop(conn);
        self.decode("affidavit", &stored)
    }

    /// Every receipt the TP obtained for this sender by resolving, oldest first.
    pub fn receipts_for_sender(
        &self,
        sender: &IdentityId,
    ) -> Result<Vec<ResolvedReceipt>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT outcome, receipt FROM resolved WHERE sender = ?1 \
                 ORDER BY created_at, z_hash",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([&sender.0 .0[..]], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (outcome, receipt) = row.map_err(|e| self.sql(e))?;
            let affidavit = match self.decode::<ClaimOutcome>("claim outcome", &outcome)? {
                ClaimOutcome::Resolved { affidavit, .. } => affidavit,
                ClaimOutcome::InvalidEnvelope { .. } => {
                    return Err(JournalError::Corrupt {
                        path: self.path.clone(),
                        detail: "an invalid-envelope verdict in the resolved table".into(),
                    })
                }
            };
            out.push(ResolvedReceipt {
                receipt: self.decode("receipt", &receipt)?,
                affidavit,
            });
        }
        Ok(out)
    }

    /// Row counts of the three tables.
    pub fn stats(&self) -> Result<Stats, JournalError> {
        let conn = self.conn();
        let count = |table: &str| -> Result<u64, JournalError> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
        };
        Ok(Stats {
            resolved: count("resolved")?,
            invalid: count("invalid")?,
            unclaimed: count("unclaimed")?,
        })
    }
}

fn check_integrity(conn: &Connection, path: &Path) -> Result<(), JournalError> {
    let mut stmt =
        conn.prepare("PRAGMA integrity_check")
            .map_err(|source| JournalError::Sqlite {
                path: path.to_owned(),
                source,
            })?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|source| JournalError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(JournalError::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "integrity check failed; restore from backup: {}",
                problems.join("; ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Schema and bookkeeping only; the stored values are opaque bytes here.
    //! Real affidavits go through the journal in the end-to-end tests.
    use super::*;

    #[test]
    fn opens_with_wal_and_full_sync_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        {
            let c = j.conn();
            let mode: String = c
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
            assert_eq!(sync, 2, "FULL");
        }
        assert_eq!(j.stats().unwrap(), Stats::default());
        assert!(j.resolved(&Digest32([1; 32])).unwrap().is_none());
        assert!(j.invalid_verdict(&Digest32([1; 32])).unwrap().is_none());
        assert!(j
            .unclaimed(&Digest32([1; 32]), &Digest32([2; 32]))
            .unwrap()
            .is_none());
        assert!(j.unclaimed_since(&Digest32([1; 32])).unwrap().is_none());
        assert!(j
            .receipts_for_sender(&IdentityId(Digest32([3; 32])))
            .unwrap()
            .is_empty());
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.stats().unwrap(), Stats::default());
        let ro = Journal::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.stats().unwrap(), Stats::default());
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"this is not sqlite at all, sorry",
        )
        .unwrap();
        let e = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME), "{e}");
    }

    #[test]
    fn refuses_an_unknown_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }
}
