//! The durable delivery store (queue mode): SQLite in WAL mode with `synchronous = FULL`, so a
//! delivery is on disk before hookgate answers 202.
//!
//! One writer thread owns the write connection and commits whatever requests are waiting as one
//! transaction (group commit), so durability costs one fsync per batch, not per request. Reads
//! (the worker's scan, `GET /deliveries/{id}`) use a separate connection, and the operator
//! commands open their own, which SQLite's locking makes safe while the gateway runs.

mod ops;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde::Serialize;

pub use ops::{
    Accepted, AttemptRecord, AttemptView, DeliverySummary, DeliveryView, IdempotencyKey,
    NewDelivery, Next, Pending, Stats,
};

/// The store's file inside `delivery.store`.
pub const FILE_NAME: &str = "deliveries.sqlite3";

/// How long a connection waits for another (an operator command, the writer) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the store directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("no delivery {0}")]
    NotFound(String),
}

/// Delivery states, as stored and as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Accepted, not yet attempted.
    Queued,
    /// Attempted at least once without success; another attempt is scheduled.
    Retrying,
    /// Given up: a permanent error or `max_attempts`; kept with every attempt.
    Dead,
    /// Jenkins accepted it (2xx).
    Done,
}

impl State {
    pub const ALL: [State; 4] = [State::Queued, State::Retrying, State::Dead, State::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Retrying => "retrying",
            State::Dead => "dead",
            State::Done => "done",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Milliseconds since the Unix epoch, the store's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Opens (creating if needed) the store file with the pragmas every connection needs.
fn connect(path: &Path, max_bytes: u64) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsync'd at every commit, so a committed delivery survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 16 MiB of page cache (the default is 2 MiB): the worker reads back bodies it has just
    // seen written, and the pending indexes stay hot, instead of paying a pread per page.
    conn.pragma_update(None, "cache_size", -16_384)?;
    if max_bytes > 0 {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let pages = i64::try_from(max_bytes).unwrap_or(i64::MAX) / page_size.max(1);
        conn.pragma_update(None, "max_page_count", pages.max(16))?;
    }
    Ok(conn)
}

/// The store as the gateway uses it. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: writer::Handle,
    reader: Mutex<Connection>,
    healthy: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `dir`, creating the directory and schema, and starts the writer.
    /// `max_bytes` (0 = unlimited) caps the database; past it, accepts fail as on a full disk.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let mut conn = connect(&path, max_bytes)?;
        ops::migrate(&mut conn)?;
        let reader = connect(&path, max_bytes)?;
        let writer = writer::Handle::spawn(conn);
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                reader: Mutex::new(reader),
                healthy: AtomicBool::new(true),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the last write succeeded (reported by `/readyz`).
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.inner.healthy.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    /// Durably stores a delivery (or finds the earlier one with the same idempotency key).
    /// Returns only after the commit, fsync included.
    pub async fn accept(&self, delivery: NewDelivery) -> Result<Accepted, StoreError> {
        let result = self
            .inner
            .writer
            .run(move |tx| ops::accept(tx, &delivery, now_ms()))
            .await;
        self.note(result)
    }

    /// Records one attempt and the delivery's next state.
    pub async fn record(&self, id: String, attempt: AttemptRecord) -> Result<(), StoreError> {
        let result = self
            .inner
            .writer
            .run(move |tx| ops::record(tx, &id, &attempt))
            .await;
        self.note(result)
    }

    /// A write that changes nothing, to find out whether the store is writable again.
    pub async fn probe(&self) -> bool {
        let result = self.inner.writer.run(ops::probe).await;
        self.note(result).is_ok()
    }

    /// Deletes done deliveries finished before `before_ms` and expired idempotency keys.
    pub async fn purge(&self, before_ms: i64) -> Result<usize, StoreError> {
        let result = self
            .inner
            .writer
            .run(move |tx| {
                let purged = ops::purge_done(tx, before_ms)?;
                ops::purge_expired_keys(tx, now_ms())?;
                Ok(purged)
            })
            .await;
        self.note(result)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deliveries due at `now_ms` and accepted after `after_seq`, oldest accepted first.
    pub fn due(
        &self,
        now_ms: i64,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        Ok(ops::due(&self.reader(), now_ms, after_seq, limit)?)
    }

    /// The body of a stored delivery (`None` once purged).
    pub fn body(&self, seq: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(ops::body(&self.reader(), seq)?)
    }

    /// When the next queued or retrying delivery falls due, if any.
    pub fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        Ok(ops::next_due_at(&self.reader())?)
    }

    pub fn get(&self, id: &str) -> Result<Option<ops::DeliveryView>, StoreError> {
        Ok(ops::get(&self.reader(), id)?)
    }

    pub fn stats(&self, now_ms: i64) -> Result<ops::Stats, StoreError> {
        Ok(ops::stats(&self.reader(), now_ms)?)
    }
}

/// Direct access for the operator commands (`hookgate deliveries …`), which run in their own
/// process beside a running gateway.
pub struct Admin {
    conn: Connection,
}

impl Admin {
    /// Opens an existing store; it is an error if there is none in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Err(StoreError::Directory {
                path,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no store here"),
            });
        }
        let mut conn = connect(&path, 0)?;
        ops::migrate(&mut conn)?;
        Ok(Self { conn })
    }

    pub fn list(
        &self,
        state: Option<State>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ops::DeliverySummary>, StoreError> {
        Ok(ops::list(&self.conn, state, rule, limit)?)
    }

    pub fn get(&self, id: &str) -> Result<Option<ops::DeliveryView>, StoreError> {
        Ok(ops::get(&self.conn, id)?)
    }

    /// Puts a dead or retrying delivery back in the queue, due now, with a fresh attempt budget.
    pub fn retry(&mut self, id: &str) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = ops::requeue(&tx, Some(id), now_ms())?;
        tx.commit()?;
        if changed == 0 {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Requeues every dead delivery; returns how many.
    pub fn retry_dead(&mut self) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = ops::requeue(&tx, None, now_ms())?;
        tx.commit()?;
        Ok(changed)
    }

    /// Deletes done deliveries older than `older_than`; returns how many.
    pub fn purge_done(&mut self, older_than: Duration) -> Result<usize, StoreError> {
        let cutoff = now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let purged = ops::purge_done(&tx, cutoff)?;
        ops::purge_expired_keys(&tx, now_ms())?;
        tx.commit()?;
        Ok(purged)
    }
}
