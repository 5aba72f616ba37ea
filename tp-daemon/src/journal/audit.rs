//! The audit log, in the journal: every key and subscriber event, with who
//! did it (command, uid, pid) and when. Written in the same transaction as
//! the change it records, so the log never disagrees with the key ring.

use rusqlite::params;
use vtp_protocol::Timestamp;

use crate::journal::{Journal, JournalError};

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: Timestamp,
    pub event: String,
    pub subject: String,
    pub detail: String,
    pub actor: String,
}

/// Who is acting, for audit records: the command, uid and pid.
pub fn actor(command: &str) -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    format!("{command} (uid {uid}, pid {})", std::process::id())
}

/// Append an audit record inside the caller's transaction.
pub(crate) fn insert_audit(
    tx: &rusqlite::Connection,
    at: Timestamp,
    event: &str,
    subject: &str,
    detail: &str,
    actor: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit (at, event, subject, detail, actor) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at as i64, event, subject, detail, actor],
    )?;
    Ok(())
}

impl Journal {
    /// Append one audit record.
    pub fn audit(
        &self,
        at: Timestamp,
        event: &str,
        subject: &str,
        detail: &str,
        actor: &str,
    ) -> Result<(), JournalError> {
        let conn = self.conn();
        insert_audit(&conn, at, event, subject, detail, actor).map_err(|e| self.sql(e))
    }

    /// The audit log, oldest first (at most `limit` most recent records).
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT seq, at, event, subject, detail, actor FROM \
                 (SELECT * FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(AuditRecord {
                    seq: r.get(0)?,
                    at: r.get::<_, i64>(1)? as Timestamp,
                    event: r.get(2)?,
                    subject: r.get(3)?,
                    detail: r.get(4)?,
                    actor: r.get(5)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}
