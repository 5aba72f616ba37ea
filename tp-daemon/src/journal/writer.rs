//! The journal's sequencer and its single writer: **group commit**.
//!
//! Every record of the chain (see [`crate::journal::chain`]) goes through here:
//!
//! 1. **Sequencer** ([`Writer::append`]): under one mutex, assign the next
//!    chain position `(seq, prev)`, have the caller's closure sign the
//!    affidavit at that position (the device's cheap half: one ECDSA
//!    signature; the expensive RSA decryption happened before, outside the
//!    lock, in parallel), hash the record, and queue it. Positions are
//!    therefore handed out strictly in order and every queued record chains
//!    onto the one queued before it.
//! 2. **Writer** (one thread with its own SQLite connection): wakes when
//!    records are queued, takes *all* of them, writes them in one
//!    transaction (`BEGIN IMMEDIATE` … `COMMIT`, one WAL fsync with
//!    `synchronous=FULL`), then wakes every waiter. While it commits, new
//!    records queue up for the next batch, so under load one fsync serves
//!    many claims and the commit costs no throughput. While claims are
//!    queued for the device threads, the writer also holds a batch open for
//!    about two device operations (at most `[limits] commit_delay_us`) so
//!    that the records on their way share its commit
//!    ([`Writer::hold_batches`]); with nothing queued it commits at once.
//! 3. The caller holds a [`Ticket`] and gets its record back only from
//!    [`Ticket::committed`], i.e. only once its batch is durable. **No
//!    record is answered before its batch committed.**
//!
//! **A failed batch** (I/O error, full disk, the test fault
//! `fail-commit-every`, another process appended to the chain behind our
//! back): the transaction is rolled back; every record in it *and every
//! record queued since* (they were signed at positions chained onto the
//! failed ones) is answered with [`CommitError`] — the service answers
//! `Unavailable`, nothing was released — and the chain's tail is reset to
//! the last record the database really holds. Those signed-but-unrecorded
//! affidavits are dropped unreleased; the clients retry and get new ones.
//!
//! **A crash** at any point loses only queued records, none of which was
//! answered. At start-up the writer continues after the last committed
//! record.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};
use vtp_protocol::affidavit::ChainPosition;

use crate::faults;
use crate::journal::chain::{self, Head, JournalRecord, Sealed};
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;

/// Why a record was not committed. Nothing of it was released.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("the journal batch failed and was rolled back: {0}")]
    Failed(BatchError),
    #[error("the journal writer has stopped")]
    Stopped,
}

/// Why a batch was rolled back. Every claim in it (and after it) shares the
/// error, so it is `Clone` and keeps SQLite's words as text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("BEGIN: {0}")]
    Begin(String),
    #[error("reading the chain head: {0}")]
    HeadUnreadable(String),
    #[error("the chain head is damaged: {0}")]
    HeadDamaged(chain::DamagedHead),
    #[error(
        "the journal's last record is {found}, expected {expected}: another process appended \
         to the chain"
    )]
    Forked { found: Head, expected: Head },
    #[error("record #{seq}: {detail}")]
    Record { seq: u64, detail: String },
    #[error("record #{seq} ({table} index): {detail}")]
    Index {
        seq: u64,
        table: &'static str,
        detail: String,
    },
    #[error("test fault fail-commit-every: rolling the batch back")]
    InjectedFault,
    #[error("COMMIT: {0}")]
    Commit(String),
}

/// Why [`Writer::append`] queued nothing.
#[derive(Debug)]
pub enum AppendError<E> {
    /// The closure (the device's signature) failed; the position was not
    /// used.
    Make(E),
    /// The writer has stopped (shutdown).
    Stopped,
    /// The closure made a record for another position (a bug).
    Misplaced(String),
}

/// A queued record: redeem it with [`Ticket::committed`].
#[derive(Debug)]
pub struct Ticket {
    position: ChainPosition,
    record: JournalRecord,
    done: oneshot::Receiver<Result<(), CommitError>>,
}

impl Ticket {
    pub fn position(&self) -> ChainPosition {
        self.position
    }
    /// Wait until the record's batch is durable, then hand the record out;
    /// if the batch failed, the record is dropped unreleased.
    pub async fn committed(self) -> Result<JournalRecord, CommitError> {
        match self.done.await {
            Ok(Ok(())) => Ok(self.record),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CommitError::Stopped),
        }
    }
}

struct Pending {
    sealed: Sealed,
    done: oneshot::Sender<Result<(), CommitError>>,
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub records: u64,
    pub batches: u64,
    pub failed_batches: u64,
    pub largest_batch: u64,
}

/// How long to hold the next batch open for more records (`None`: commit
/// at once); asked once per batch. See [`Writer::hold_batches`].
pub type HoldProbe = Arc<dyn Fn() -> Option<Duration> + Send + Sync>;

/// Never more records in one transaction than this (a bound on the memory
/// and the time a batch takes, not a throughput knob).
const MAX_BATCH: usize = 256;

struct State {
    /// The last record queued (or committed, when the queue is empty): the
    /// next record chains onto it.
    tail: Head,
    /// The last record committed.
    committed: Head,
    pending: Vec<Pending>,
    stopping: bool,
    stats: WriterStats,
    hold: Option<HoldProbe>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    metrics: Arc<Metrics>,
    path: PathBuf,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sequencer and the writer thread; see the module docs.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// Open the writer's own connection: WAL, `synchronous=FULL` (a commit that
/// returned survives a power loss), a busy timeout for operator commands
/// writing the key ring at the same time.
fn open_connection(path: &Path) -> Result<Connection, JournalError> {
    let sql = |source| JournalError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(JournalError::Corrupt {
            path: path.to_owned(),
            detail: format!("cannot switch to WAL mode (journal_mode is {mode})"),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    Ok(conn)
}

fn read_head(conn: &Connection, path: &Path) -> Result<Head, JournalError> {
    chain::head(conn)
        .map_err(|source| JournalError::Sqlite {
            path: path.to_owned(),
            source,
        })?
        .map_err(|damaged| JournalError::Corrupt {
            path: path.to_owned(),
            detail: damaged.to_string(),
        })
}

impl Writer {
    /// Start the writer on `journal`'s file, continuing its chain (whose
    /// last record is checked first).
    pub fn start(journal: &Journal, metrics: Arc<Metrics>) -> Result<Writer, JournalError> {
        let path = journal.path().to_owned();
        let conn = open_connection(&path)?;
        let head = read_head(&conn, &path)?;
        info!(head = %head, "journal chain head");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tail: head,
                committed: head,
                pending: Vec::new(),
                stopping: false,
                stats: WriterStats::default(),
                hold: None,
            }),
            work: Condvar::new(),
            metrics,
            path,
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || run(s, conn))
            .map_err(|e| JournalError::Task(format!("cannot start the journal writer: {e}")))?;
        Ok(Writer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The sequencer: at the next chain position, run `make` (which signs
    /// the affidavit at that position and builds the record), then queue the
    /// record. Blocking (the closure talks to the token): call it from a
    /// blocking thread. If `make` fails, the position stays free.
    pub fn append<E>(
        &self,
        make: impl FnOnce(ChainPosition) -> Result<JournalRecord, E>,
    ) -> Result<Ticket, AppendError<E>> {
        let mut st = lock(&self.shared.state);
        if st.stopping {
            return Err(AppendError::Stopped);
        }
        let position = st.tail.next_position();
        let record = make(position).map_err(AppendError::Make)?;
        let named = record.affidavit().body.journal;
        if named != position {
            return Err(AppendError::Misplaced(format!(
                "a record signed for position {named} offered at {position}"
            )));
        }
        // TEST HOOK: crash point `after-sign` (signed, not yet queued).
        faults::point(faults::Point::AfterSign);
        let sealed = Sealed::new(position, &record);
        st.tail = sealed.head();
        let (tx, rx) = oneshot::channel();
        st.pending.push(Pending { sealed, done: tx });
        // Wake the writer only when there is something new for it to do:
        // the first record of a batch, or a full batch. (It looks at the
        // queue, under this lock, before every wait, so no wake-up is lost.)
        let wake = st.pending.len() == 1 || st.pending.len() >= MAX_BATCH;
        drop(st);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(Ticket {
            position,
            record,
            done: rx,
        })
    }

    /// Group commit under load: before committing a batch, ask `hold` how
    /// long to keep it open for more records (claims are waiting for a
    /// device thread, so records are on their way); `None` commits at once,
    /// so a lone claim never waits. The service's rule is in
    /// [`crate::service::commit_hold`]: about two device operations.
    ///
    /// Why: with a few device threads, records arrive one at a time, a
    /// little slower than one fsync; without holding, nearly every claim
    /// paid a whole commit (~0.25 ms CPU on the development machine) and the
    /// wake-ups that go with it. A claim that waits here was going to wait
    /// for its turn at the device anyway.
    pub fn hold_batches(&self, hold: HoldProbe) {
        lock(&self.shared.state).hold = Some(hold);
    }

    /// Whether the writer still takes records (not shut down, its thread
    /// not gone); for `/healthz`.
    pub fn is_running(&self) -> bool {
        !lock(&self.shared.state).stopping
    }

    /// The last committed record.
    pub fn committed_head(&self) -> Head {
        lock(&self.shared.state).committed
    }

    pub fn stats(&self) -> WriterStats {
        lock(&self.shared.state).stats
    }

    /// Commit what is queued, stop the thread and log what it did. Later
    /// appends fail with [`AppendError::Stopped`]. Idempotent.
    pub fn shutdown(&self) {
        lock(&self.shared.state).stopping = true;
        self.shared.work.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
            let st = lock(&self.shared.state);
            info!(
                records = st.stats.records,
                batches = st.stats.batches,
                failed_batches = st.stats.failed_batches,
                largest_batch = st.stats.largest_batch,
                head = %st.committed,
                "journal writer stopped: {} records in {} batches",
                st.stats.records,
                st.stats.batches
            );
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// On the writer thread's exit, even by panic: refuse new appends and fail
/// whatever is still queued (its waiters answer `Unavailable`).
struct ExitGuard<'s>(&'s Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let leftover = {
            let mut st = lock(&self.0.state);
            st.stopping = true;
            std::mem::take(&mut st.pending)
        };
        if !leftover.is_empty() {
            warn!(
                records = leftover.len(),
                "journal writer exiting with queued records; they are not answered"
            );
        }
        for p in leftover {
            let _ = p.done.send(Err(CommitError::Stopped));
        }
    }
}

fn run(shared: Arc<Shared>, mut conn: Connection) {
    let _exit = ExitGuard(&shared);
    loop {
        let (batch, base) = {
            let mut st = lock(&shared.state);
            while st.pending.is_empty() && !st.stopping {
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.pending.is_empty() {
                return;
            }
            // Group commit under load (see `Writer::hold_batches`).
            let hold = st.hold.as_ref().and_then(|probe| probe());
            if let Some(delay) = hold {
                if !st.stopping {
                    let until = Instant::now() + delay;
                    while !st.stopping && st.pending.len() < MAX_BATCH {
                        let now = Instant::now();
                        if now >= until {
                            break;
                        }
                        st = shared
                            .work
                            .wait_timeout(st, until - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
            let n = st.pending.len().min(MAX_BATCH);
            let rest = st.pending.split_off(n);
            (std::mem::replace(&mut st.pending, rest), st.committed)
        };
        let started = Instant::now();
        match write_batch(&mut conn, base, &batch) {
            Ok(()) => {
                // TEST HOOK: crash point `after-commit` (durable, unanswered).
                faults::point(faults::Point::AfterCommit);
                let n = batch.len() as u64;
                let last = batch.last().expect("a batch is never empty").sealed.head();
                {
                    let mut st = lock(&shared.state);
                    st.committed = last;
                    st.stats.records += n;
                    st.stats.batches += 1;
                    st.stats.largest_batch = st.stats.largest_batch.max(n);
                }
                shared.metrics.journal_batch(n, started.elapsed());
                debug!(
                    records = n,
                    head = last.seq,
                    took_us = started.elapsed().as_micros() as u64,
                    "journal batch committed"
                );
                for p in batch {
                    let _ = p.done.send(Ok(()));
                }
            }
            Err(e) => {
                // What the journal really holds now (normally `base`).
                let head = match read_head(&conn, &shared.path) {
                    Ok(h) => h,
                    Err(e2) => {
                        warn!(error = %e2, "cannot read the journal's chain head after a failed batch");
                        base
                    }
                };
                let mut failed = batch;
                {
                    let mut st = lock(&shared.state);
                    failed.append(&mut st.pending);
                    st.committed = head;
                    st.tail = head;
                    st.stats.failed_batches += 1;
                }
                shared.metrics.journal_batch_failed(failed.len() as u64);
                warn!(
                    error = %e,
                    records = failed.len(),
                    head = %head,
                    "journal batch failed: none of its records (nor those queued after them) \
                     is answered; clients retry; the chain continues after the last committed \
                     record"
                );
                let why = CommitError::Failed(e);
                for p in failed {
                    let _ = p.done.send(Err(why.clone()));
                }
            }
        }
    }
}

/// One transaction: check the database's chain head is the one the batch
/// chains onto, insert every record and its index row, commit.
fn write_batch(conn: &mut Connection, base: Head, batch: &[Pending]) -> Result<(), BatchError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| BatchError::Begin(e.to_string()))?;
    let db_head = chain::head(&tx)
        .map_err(|e| BatchError::HeadUnreadable(e.to_string()))?
        .map_err(BatchError::HeadDamaged)?;
    if db_head != base {
        return Err(BatchError::Forked {
            found: db_head,
            expected: base,
        });
    }
    {
        let mut rec = tx
            .prepare_cached(
                "INSERT INTO records (seq, kind, prev_hash, hash, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(|e| BatchError::Record {
                seq: batch.first().map_or(0, |p| p.sealed.seq),
                detail: e.to_string(),
            })?;
        for p in batch {
            let s = &p.sealed;
            rec.execute(params![
                s.seq as i64,
                s.kind,
                &s.prev.0[..],
                &s.hash.0[..],
                &s.body
            ])
            .map_err(|e| BatchError::Record {
                seq: s.seq,
                detail: e.to_string(),
            })?;
            let i = &s.index;
            tx.prepare_cached(&format!(
                "INSERT INTO {} (z_hash, envelope_id, sender, recipient, deadline, created_at, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                i.table
            ))
            .and_then(|mut st| {
                st.execute(params![
                    &i.z_hash.0[..],
                    &i.envelope_id.0[..],
                    &i.sender.0[..],
                    &i.recipient.0[..],
                    i.deadline as i64,
                    i.created_at as i64,
                    i.seq as i64,
                ])
            })
            // A conflict means the key was recorded already (by another
            // daemon on the same file): fail the batch; the retry is
            // answered from the journal.
            .map_err(|e| BatchError::Index {
                seq: s.seq,
                table: i.table,
                detail: e.to_string(),
            })?;
        }
    }
    if faults::fail_this_commit() {
        return Err(BatchError::InjectedFault);
    }
    tx.commit().map_err(|e| BatchError::Commit(e.to_string()))
}
