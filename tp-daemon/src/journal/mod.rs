//! The TP's journal: every answer it ever gave that must never change.
//!
//! The rule it exists for: a resolution is committed here **before** Bob sees
//! it, so a crash leaves either nothing released or a durable record from
//! which Bob and Alice are both served. Hence SQLite in WAL mode with
//! `synchronous=FULL` (the WAL is fsynced before a commit returns) and
//! `PRAGMA integrity_check` when the daemon starts.
//!
//! Since schema version 3 the answers form a **tamper-evident hash chain**
//! (see [`crate::journal::chain`] and `docs/journal.md`): the `records` table holds
//! every resolution, invalid-envelope verdict and unclaimed certificate as
//! record `seq = 1, 2, ...`, each with the hash of the one before, and each
//! affidavit names (and the TP signs) its record's position. Records are
//! written only by the daemon's single writer, in batches (group commit,
//! [`crate::journal::writer`]); this module reads them.
//!
//! Three lookup tables index the chain, each keyed by what its statement is
//! about, each row naming its record's `seq`:
//! - `resolved`: keyed by `z_hash`. A resolution is about z (any header that
//!   agrees with z's inside), so a second claim for the same z gets it back.
//! - `invalid`: keyed by `envelope_id`. An invalid-envelope verdict is about
//!   one signed header: a forged header around someone else's z must not
//!   block the genuine envelope's claim.
//! - `unclaimed`: keyed by `(z_hash, envelope_id)`. The certificate names the
//!   envelope it is about; lookups by z alone tell the claim path that z was
//!   declared unclaimed.
//!
//! `tp_cards` keeps every TP card the daemon served (self-signed), so that
//! `tp-daemon journal verify` can check every affidavit's signature offline.
//!
//! The journal also holds the TP's **key ring** (which encryption keys
//! exist, which is current, which are retired), the **audit log** of key and
//! subscriber events, and the **subscribers**; see [`crate::journal::keyring`].
//!
//! **Upgrades.** A version-1 or -2 journal (before the chain) is upgraded in
//! place when opened read-write *if it holds no answers* (as `tp-daemon
//! init` leaves it): the answer tables are replaced, the key ring, audit log
//! and subscribers are kept. One that holds answers is refused with an
//! explanation: its affidavits name no chain position and cannot be
//! re-signed; keep it (read-only) with the build that wrote it.
//!
//! Blocking: one read connection behind a `std::sync::Mutex`; async callers
//! go through [`Journal::blocking`], which runs on tokio's blocking pool.

pub mod audit;
pub mod chain;
pub mod keyring;
pub mod subscribers;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::decide::{Recorded, RecordedResolution, Subject};
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{ClaimOutcome, PageBuilder, ReceiptPage, ResolvedReceipt};
use vtp_protocol::{Digest32, IdentityId, Timestamp};

use chain::{Head, JournalRecord};

/// File name of the journal inside the data directory.
pub const FILE_NAME: &str = "journal.sqlite3";

/// Bumped when the schema or the stored encodings change.
const SCHEMA_VERSION: i64 = 3;

/// The chain and its index (schema version 3).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq        INTEGER PRIMARY KEY,  -- 1, 2, 3, ... without gaps
    kind       TEXT NOT NULL,        -- resolved | invalid-envelope | unclaimed
    prev_hash  BLOB NOT NULL,        -- hash of record seq-1 (zeros for seq 1)
    hash       BLOB NOT NULL,        -- H(domain, seq, prev_hash, body)
    body       BLOB NOT NULL         -- postcard JournalRecord
);

CREATE TABLE IF NOT EXISTS resolved (
    z_hash      BLOB PRIMARY KEY NOT NULL,
    envelope_id BLOB NOT NULL,
    sender      BLOB NOT NULL,
    recipient   BLOB NOT NULL,
    deadline    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,    -- the affidavit's `at`
    seq         INTEGER NOT NULL UNIQUE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resolved_by_sender ON resolved (sender, seq);

CREATE TABLE IF NOT EXISTS invalid (
    envelope_id BLOB PRIMARY KEY NOT NULL,
    z_hash      BLOB NOT NULL,
    sender      BLOB NOT NULL,
    recipient   BLOB NOT NULL,
    deadline    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    seq         INTEGER NOT NULL UNIQUE
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS unclaimed (
    z_hash      BLOB NOT NULL,
    envelope_id BLOB NOT NULL,
    sender      BLOB NOT NULL,
    recipient   BLOB NOT NULL,
    deadline    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    seq         INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (z_hash, envelope_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tp_cards (
    tp_id      BLOB PRIMARY KEY NOT NULL,
    card       BLOB NOT NULL,        -- the card file (self-signed)
    first_seen INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Why a [`Journal::write_tx`] body stopped: SQLite or a corrupt row (which
/// `write_tx` names with the journal's path), or a refusal of its own.
#[derive(Debug)]
pub(crate) enum TxError {
    Sql(rusqlite::Error),
    /// What the body read makes no sense (named with the journal's path).
    Corrupt(String),
    Journal(JournalError),
}

impl TxError {
    /// The body refuses the change (nothing is written).
    pub(crate) fn refused(why: String) -> TxError {
        TxError::Journal(JournalError::Refused(why))
    }
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> TxError {
        TxError::Sql(e)
    }
}

impl From<JournalError> for TxError {
    fn from(e: JournalError) -> TxError {
        TxError::Journal(e)
    }
}

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
    /// Records in the chain (the sum of the three above).
    pub records: u64,
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
            // Tables added since without a version bump (see
            // `keyring::SCHEMA`): every statement is IF NOT EXISTS.
            SCHEMA_VERSION => conn
                .execute_batch(crate::journal::keyring::SCHEMA)
                .map_err(sql)?,
            0..=2 => upgrade(&conn, &path, version)?,
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

    /// Open an existing journal read-only (`journal verify | stats | audit`,
    /// `check`), without writing anything, also beside it. A journal no
    /// daemon is using and with no `-wal` file (a backup, a copy, a
    /// stopped TP) is opened `immutable`: plain read-only SQLite would
    /// create `-wal` and `-shm` files next to it (and fail in a read-only
    /// directory). One in use, or with a `-wal` file holding commits not
    /// yet in the main file, is opened normally read-only, which reads the
    /// WAL and is safe beside the daemon.
    pub fn open_read_only(data_dir: &Path) -> Result<Journal, JournalError> {
        let path = data_dir.join(FILE_NAME);
        let sql = |source| JournalError::Sqlite {
            path: path.clone(),
            source,
        };
        if !path.is_file() {
            return Err(JournalError::Corrupt {
                path,
                detail: "no such file".into(),
            });
        }
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let live =
            Path::new(&wal).exists() || crate::data_lock::DataDirLock::holder(data_dir).is_some();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if live {
            Connection::open_with_flags(&path, flags)
        } else {
            Connection::open_with_flags(immutable_uri(&path), flags | OpenFlags::SQLITE_OPEN_URI)
        }
        .map_err(sql)?;
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

    /// Run `f` in one `IMMEDIATE` transaction and commit it. The write lock
    /// is taken at `BEGIN`, so what `f` reads is still true when it writes
    /// (an operator command and the daemon may write at once); an error
    /// from `f` rolls everything back. SQLite errors get this journal's path.
    pub(crate) fn write_tx<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, TxError>,
    ) -> Result<T, JournalError> {
        let run = || {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run().map_err(|e| match e {
            TxError::Sql(e) => self.sql(e),
            TxError::Corrupt(detail) => JournalError::Corrupt {
                path: self.path.clone(),
                detail,
            },
            TxError::Journal(e) => e,
        })
    }

    /// The record a lookup row points to.
    fn record_via(
        &self,
        sql: &str,
        keys: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<JournalRecord>, JournalError> {
        let row: Option<Vec<u8>> = self
            .conn()
            .prepare_cached(sql)
            .and_then(|mut st| st.query_row(keys, |r| r.get(0)).optional())
            .map_err(|e| self.sql(e))?;
        row.map(|b| {
            JournalRecord::decode(&b).map_err(|e| JournalError::Corrupt {
                path: self.path.clone(),
                detail: format!("cannot decode a stored record: {e}"),
            })
        })
        .transpose()
    }

    fn claim_outcome(
        &self,
        r: Option<JournalRecord>,
    ) -> Result<Option<ClaimOutcome>, JournalError> {
        match r {
            None => Ok(None),
            Some(JournalRecord::Claim { outcome, .. }) => Ok(Some(outcome)),
            Some(other) => Err(JournalError::Corrupt {
                path: self.path.clone(),
                detail: format!("a {} record where a claim outcome belongs", other.kind()),
            }),
        }
    }

    /// Everything the journal holds about one subject (a z under one
    /// header), for the decision core (`vtp_protocol::decide`) to weigh:
    /// the resolution of z (under whatever header it was claimed with), the
    /// invalid-envelope verdict for this header, the unclaimed certificate
    /// for this z under this header. Lookups by key only; no rule here.
    pub fn recorded(&self, subject: &Subject) -> Result<Recorded, JournalError> {
        Ok(Recorded {
            resolution: self.resolution(&subject.z_hash)?,
            invalid: self.invalid_verdict(&subject.envelope_id)?,
            unclaimed: self.unclaimed(&subject.z_hash, &subject.envelope_id)?,
        })
    }

    /// The recorded resolution of z, if any, with the receipt it was
    /// claimed with.
    pub fn resolution(
        &self,
        z_hash: &Digest32,
    ) -> Result<Option<RecordedResolution>, JournalError> {
        match self.record_via(
            "SELECT r.body FROM resolved x JOIN records r ON r.seq = x.seq WHERE x.z_hash = ?1",
            &[&&z_hash.0[..]],
        )? {
            None => Ok(None),
            Some(JournalRecord::Claim { outcome, receipt }) => {
                Ok(Some(RecordedResolution { outcome, receipt }))
            }
            Some(other) => Err(JournalError::Corrupt {
                path: self.path.clone(),
                detail: format!("a {} record where a resolution belongs", other.kind()),
            }),
        }
    }

    /// The recorded invalid-envelope verdict for this signed header, if any.
    pub fn invalid_verdict(
        &self,
        envelope_id: &Digest32,
    ) -> Result<Option<ClaimOutcome>, JournalError> {
        let r = self.record_via(
            "SELECT r.body FROM invalid x JOIN records r ON r.seq = x.seq \
             WHERE x.envelope_id = ?1",
            &[&&envelope_id.0[..]],
        )?;
        self.claim_outcome(r)
    }

    /// The recorded unclaimed certificate for this envelope, if any.
    pub fn unclaimed(
        &self,
        z_hash: &Digest32,
        envelope_id: &Digest32,
    ) -> Result<Option<Affidavit>, JournalError> {
        match self.record_via(
            "SELECT r.body FROM unclaimed x JOIN records r ON r.seq = x.seq \
             WHERE x.z_hash = ?1 AND x.envelope_id = ?2",
            &[&&z_hash.0[..], &&envelope_id.0[..]],
        )? {
            None => Ok(None),
            Some(JournalRecord::Unclaimed { affidavit }) => Ok(Some(affidavit)),
            Some(other) => Err(JournalError::Corrupt {
                path: self.path.clone(),
                detail: format!("a {} record in the unclaimed index", other.kind()),
            }),
        }
    }

    /// The next page of receipts the TP obtained for this sender by
    /// resolving: those recorded after journal position `after_seq`, oldest
    /// first, as many as `page` holds (keyset paging on the
    /// `resolved_by_sender` index, so a page costs the same wherever it
    /// starts). `more` says whether any remain after it.
    pub fn receipts_for_sender(
        &self,
        sender: &IdentityId,
        after_seq: u64,
        mut page: PageBuilder,
    ) -> Result<ReceiptPage, JournalError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT r.body FROM resolved x JOIN records r ON r.seq = x.seq \
                 WHERE x.sender = ?1 AND x.seq > ?2 ORDER BY x.seq",
            )
            .map_err(|e| self.sql(e))?;
        // Positions are SQLite integers; anything past i64::MAX is past them all.
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![&sender.0 .0[..], after])
            .map_err(|e| self.sql(e))?;
        let corrupt = |detail: String| JournalError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
            if page.is_full() {
                return Ok(page.finish(true));
            }
            let body: Vec<u8> = row.get(0).map_err(|e| self.sql(e))?;
            let item = match JournalRecord::decode(&body)
                .map_err(|e| corrupt(format!("cannot decode a stored record: {e}")))?
            {
                JournalRecord::Claim {
                    outcome: ClaimOutcome::Resolved { affidavit, .. },
                    receipt,
                } => ResolvedReceipt { receipt, affidavit },
                other => {
                    return Err(corrupt(format!(
                        "a {} record in the resolved index",
                        other.kind()
                    )))
                }
            };
            if page.push(item).is_err() {
                return Ok(page.finish(true));
            }
        }
        Ok(page.finish(false))
    }

    /// The last committed record of the chain (checked against its
    /// contents).
    pub fn head(&self) -> Result<Head, JournalError> {
        chain::head(&self.conn())
            .map_err(|e| self.sql(e))?
            .map_err(|damaged| JournalError::Corrupt {
                path: self.path.clone(),
                detail: damaged.to_string(),
            })
    }

    /// Remember a TP card (for `journal verify`); a card seen before is
    /// kept with its first time.
    pub fn record_card(&self, card: &TpCard, now: Timestamp) -> Result<(), JournalError> {
        self.conn()
            .execute(
                "INSERT INTO tp_cards (tp_id, card, first_seen) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
                params![&card.id().0 .0[..], card.to_file(), now as i64],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Every TP card recorded, oldest first. A stored card that does not
    /// parse (or whose id is not its key) is an error.
    pub fn cards(&self) -> Result<Vec<TpCard>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT tp_id, card FROM tp_cards ORDER BY first_seen, tp_id")
            .map_err(|e| self.sql(e))?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(id, bytes)| {
                let card = TpCard::from_file(&bytes).map_err(|e| JournalError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("a stored TP card does not parse: {e}"),
                })?;
                if card.id().0 .0[..] != id[..] {
                    return Err(JournalError::Corrupt {
                        path: self.path.clone(),
                        detail: format!(
                            "the stored TP card {} is filed under another id",
                            card.id()
                        ),
                    });
                }
                Ok(card)
            })
            .collect()
    }

    /// Check the whole chain (see [`chain::verify`]) against the recorded
    /// TP cards, or only against `trusted` ones if given. SQLite's own
    /// integrity check runs first.
    pub fn verify(&self, trusted: Option<&[TpCard]>) -> Result<chain::Report, JournalError> {
        {
            let conn = self.conn();
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            if version != SCHEMA_VERSION {
                return Err(JournalError::Corrupt {
                    path: self.path.clone(),
                    detail: format!(
                        "schema version {version}: only version {SCHEMA_VERSION} journals are \
                         chained (open it once read-write to upgrade an empty one)"
                    ),
                });
            }
            check_integrity(&conn, &self.path)?;
        }
        let cards = self.cards()?;
        let mut conn = self.conn();
        chain::verify(&mut conn, &cards, trusted).map_err(|e| self.sql(e))
    }

    /// Row counts of the lookup tables and of the chain.
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
            records: count("records")?,
        })
    }
}

/// `file:PATH?mode=ro&immutable=1`, the path percent-encoded.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    uri
}

/// Bring a journal of schema version 0 (new), 1 or 2 to version 3; see the
/// module docs. One immediate transaction, so two processes opening a new
/// journal at once do not race.
fn upgrade(conn: &Connection, path: &Path, version: i64) -> Result<(), JournalError> {
    let sql = |source| JournalError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let tx =
        rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(sql)?;
    // Another process may have upgraded it while we waited for the lock.
    let now: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    if now == SCHEMA_VERSION {
        return Ok(());
    }
    if now != version {
        return Err(JournalError::Corrupt {
            path: path.to_owned(),
            detail: format!("schema version changed from {version} to {now} while opening"),
        });
    }
    if version > 0 {
        let mut answers = 0i64;
        for table in ["resolved", "invalid", "unclaimed"] {
            let exists: bool = tx
                .query_row(
                    "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            if exists {
                answers += tx
                    .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map_err(sql)?;
            }
        }
        if answers > 0 {
            return Err(JournalError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "this journal has schema version {version} and holds {answers} answers made \
                     before the tamper-evident chain (schema {SCHEMA_VERSION}); their affidavits \
                     name no chain position and cannot be converted. Keep this journal (and \
                     serve it) with the build that wrote it, or move it aside to start a new \
                     journal (docs/journal.md, \"Upgrading\")"
                ),
            });
        }
        tx.execute_batch(
            "DROP TABLE IF EXISTS resolved; DROP TABLE IF EXISTS invalid; \
             DROP TABLE IF EXISTS unclaimed;",
        )
        .map_err(sql)?;
    }
    tx.execute_batch(SCHEMA).map_err(sql)?;
    tx.execute_batch(crate::journal::keyring::SCHEMA)
        .map_err(sql)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    if version > 0 {
        tracing::info!(journal = %path.display(), from = version, "journal upgraded to schema version 3 (tamper-evident chain); it held no answers");
    }
    Ok(())
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
    use std::num::NonZeroU32;
    use vtp_protocol::wire::RECEIPTS_PAGE_MAX_FRAME;

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
        assert!(j.resolution(&Digest32([1; 32])).unwrap().is_none());
        assert!(j.invalid_verdict(&Digest32([1; 32])).unwrap().is_none());
        assert!(j
            .unclaimed(&Digest32([1; 32]), &Digest32([2; 32]))
            .unwrap()
            .is_none());
        let page = j
            .receipts_for_sender(
                &IdentityId(Digest32([3; 32])),
                0,
                PageBuilder::new(RECEIPTS_PAGE_MAX_FRAME, NonZeroU32::MAX),
            )
            .unwrap();
        assert!(page.receipts.is_empty() && !page.more);
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.stats().unwrap(), Stats::default());
        let ro = Journal::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.stats().unwrap(), Stats::default());
    }

    #[test]
    fn read_only_opens_write_nothing_beside_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::open(dir.path()).unwrap());
        let copy = dir.path().join("odd dir %?#");
        std::fs::create_dir(&copy).unwrap();
        std::fs::copy(dir.path().join(FILE_NAME), copy.join(FILE_NAME)).unwrap();
        let ro = Journal::open_read_only(&copy).unwrap();
        assert_eq!(ro.stats().unwrap(), Stats::default());
        assert!(ro.verify(None).unwrap().first_bad.is_none());
        drop(ro);
        let names: Vec<_> = std::fs::read_dir(&copy)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        let e = Journal::open_read_only(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
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
