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
    Accepted, AttemptRecord, AttemptView, DeliverySummary, DeliveryView, Due, Effect,
    EventAccepted, EventRef, EventSink, IdempotencyKey, ListFilter, NewDelivery, NewEvent, Next,
    Payload, Pending, Ready, RememberedSignature, ReplayMark, Requeued, RunLookup, Stats,
    StoredEvent, Want, finished_update, report_text, run_key, target_id, unreported_update,
};

/// Merges a build event into the facts kept for its build (JSON in, JSON out); shared with the
/// writer thread, which may run it twice (see `writer::Handle::run`).
pub type SharedMerge = Arc<dyn Fn(Option<&str>) -> String + Send + Sync>;

/// The store's file inside `delivery.store`.
pub const FILE_NAME: &str = "deliveries.sqlite3";

/// Probes closer together than this share one result.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a connection waits for another (an operator command, the writer) to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Room above `delivery.max_store_bytes` that only the outcomes of attempts may use: when new
/// calls are refused (503), the attempts already made must still be recorded, or they would
/// be made again. A tenth of the cap, at least 1 MiB: some 5,000 attempt records per MiB.
fn outcome_headroom(max_bytes: u64) -> u64 {
    (max_bytes / 10).max(1 << 20)
}

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
    #[error(
        "delivery {0} was overtaken: a later event of the same build (or, for an alert sink, job) was already delivered to this sink, so retrying it would send it out of order; add --force to send it anyway"
    )]
    Superseded(String),
    #[error("the store's reader thread has stopped")]
    ReaderGone,
    #[error(
        "the store was written by an older hookgate (schema {0}): start this version's gateway once to migrate it; an operator command never migrates a store an older gateway may still be writing"
    )]
    OlderSchema(i64),
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
        let pages = pages(max_bytes, page_size(&conn)?);
        conn.pragma_update(None, "max_page_count", pages.max(16))?;
    }
    Ok(conn)
}

fn page_size(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    Ok(size.max(1))
}

/// Whole pages of `page_size` in `bytes`.
fn pages(bytes: u64, page_size: i64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX) / page_size
}

/// The store holds every accepted body: only hookgate's user may read it. The directory is
/// created 0700, and the database is created 0600 before SQLite opens it (SQLite gives its
/// `-wal` and `-shm` files the database's mode); an existing store is tightened the same way.
#[cfg(unix)]
fn create_private(dir: &Path, path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let directory = |source| StoreError::Directory {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(directory)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(directory)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            // SQLite removes `-wal` and `-shm` when its last connection closes.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {}
            result => result.map_err(directory)?,
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private(dir: &Path, _path: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
        path: dir.to_owned(),
        source,
    })
}

/// The pages in use as the writer last measured them (after each batch), and the bytes calls
/// accepted since may have added: checking `room` per call then costs no query (two PRAGMA
/// statements per call showed up as a tenth of the writer's time). The writer's hard cap
/// (`max_page_count`, room plus headroom) still holds whatever the estimate says.
#[derive(Debug, Default)]
struct Usage {
    page_size: i64,
    /// Pages new calls may fill (`None`: no cap); outcomes may use the headroom above.
    room: Option<i64>,
    pages_in_use: std::sync::atomic::AtomicI64,
    added_bytes: std::sync::atomic::AtomicI64,
}

impl Usage {
    fn measured(&self, pages: i64) {
        self.pages_in_use.store(pages, Ordering::Relaxed);
        self.added_bytes.store(0, Ordering::Relaxed);
    }

    fn add(&self, bytes: i64) {
        self.added_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Whether `extra` more bytes would take the store past its room.
    fn over(&self, extra: i64) -> bool {
        self.room.is_some_and(|room| {
            let used = self
                .pages_in_use
                .load(Ordering::Relaxed)
                .saturating_mul(self.page_size)
                .saturating_add(self.added_bytes.load(Ordering::Relaxed))
                .saturating_add(extra);
            used > room.saturating_mul(self.page_size)
        })
    }
}

/// The store as the gateway uses it. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: writer::Handle,
    /// The worker's scans and payload reads, run on the blocking pool.
    reader: Arc<Mutex<Connection>>,
    /// Operator lookups (`GET /deliveries/{id}`), apart so they never wait on the worker's.
    lookup: Arc<Mutex<Connection>>,
    healthy: AtomicBool,
    /// How full the store is, for checking its room per call without a query.
    usage: Arc<Usage>,
    /// The queue gauges, refreshed by the writer after each batch.
    gauges: Arc<Mutex<Stats>>,
    /// When the last probe ran, and what it found.
    last_probe: Mutex<Option<(std::time::Instant, bool)>>,
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
        let path = dir.join(FILE_NAME);
        create_private(dir, &path)?;
        let writer_cap = if max_bytes > 0 {
            max_bytes.saturating_add(outcome_headroom(max_bytes))
        } else {
            0
        };
        let mut conn = connect(&path, writer_cap)?;
        ops::migrate(&mut conn)?;
        let reader = connect(&path, 0)?;
        let lookup = connect(&path, 0)?;
        let page_size = page_size(&conn)?;
        let usage = Arc::new(Usage {
            page_size,
            room: (max_bytes > 0).then(|| pages(max_bytes, page_size)),
            ..Usage::default()
        });
        let gauges = Arc::new(Mutex::new(Stats::default()));
        let published = Arc::clone(&gauges);
        let measured = Arc::clone(&usage);
        let writer = writer::Handle::spawn(
            conn,
            Box::new(move |conn| {
                match ops::stats(conn) {
                    Ok(stats) => *lock(&published) = stats,
                    Err(error) => tracing::warn!(%error, "Cannot read the queue counts."),
                }
                match ops::pages_in_use(conn) {
                    Ok(pages) => measured.measured(pages),
                    Err(error) => tracing::warn!(%error, "Cannot read the store's size."),
                }
            }),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                reader: Arc::new(Mutex::new(reader)),
                lookup: Arc::new(Mutex::new(lookup)),
                healthy: AtomicBool::new(true),
                usage,
                gauges,
                last_probe: Mutex::new(None),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the last write of a new call (or probe) succeeded and no write failed since
    /// (reported by `/readyz`).
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.inner.healthy.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    /// Outcomes and purges may use the headroom above `max_store_bytes`, so their success says
    /// nothing about room for new calls; only their failure is news.
    fn note_failure<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.inner.healthy.store(false, Ordering::Relaxed);
        }
        result
    }

    /// Durably stores one delivery (or finds the stored one it repeats); the gateway stores a
    /// call's deliveries together with [`Store::accept_all`].
    #[cfg(test)]
    pub async fn accept(&self, delivery: NewDelivery) -> Result<Accepted, StoreError> {
        let mut accepted = self.accept_all(vec![delivery]).await?;
        accepted.pop().ok_or(StoreError::WriterGone)
    }

    /// Durably stores the deliveries of one call in one transaction: all of them or none.
    /// Returns only after the commit, fsync included.
    pub async fn accept_all(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> Result<Vec<Accepted>, StoreError> {
        let usage = Arc::clone(&self.inner.usage);
        // What the call adds, rows and indexes included, counted until the writer measures again.
        let adds = deliveries
            .iter()
            .map(|d| {
                i64::try_from(d.body.len())
                    .unwrap_or(i64::MAX)
                    .saturating_add(512)
            })
            .fold(0i64, i64::saturating_add);
        let result = self
            .inner
            .writer
            .run(move |tx| {
                if usage.over(adds) {
                    return Err(ops::store_full());
                }
                let now = now_ms();
                let accepted = deliveries
                    .iter()
                    .map(|delivery| ops::accept(tx, delivery, now))
                    .collect::<Result<Vec<_>, _>>()?;
                usage.add(adds);
                Ok(accepted)
            })
            .await;
        self.note(result)
    }

    /// Records one attempt and the delivery's next state.
    pub async fn record(&self, id: String, attempt: AttemptRecord) -> Result<(), StoreError> {
        let usage = Arc::clone(&self.inner.usage);
        let result = self
            .inner
            .writer
            .run(move |tx| ops::record(tx, &id, &attempt, !usage.over(0)))
            .await;
        self.note_failure(result)
    }

    /// A write that changes nothing, to find out whether the store is writable again. At most
    /// one a second: `/readyz` asks while the store is unhealthy, and each probe is a 64 KiB
    /// write and an fsync on the single writer.
    pub async fn probe(&self) -> bool {
        if let Some((at, ok)) = *lock(&self.inner.last_probe)
            && at.elapsed() < PROBE_EVERY
        {
            return ok;
        }
        let room = self.inner.usage.room;
        let result = self.inner.writer.run(move |tx| ops::probe(tx, room)).await;
        let ok = self.note(result).is_ok();
        *lock(&self.inner.last_probe) = Some((std::time::Instant::now(), ok));
        ok
    }

    /// Stores a Notification event, its build's facts (merged by `merge` from those kept) and
    /// one delivery per matched sink, in one transaction, fsync'd before it returns; a repeat
    /// of (target, build, phase) received after `duplicate_since_ms` is answered with the
    /// first one and stores nothing.
    pub async fn accept_event(
        &self,
        event: NewEvent,
        merge: SharedMerge,
        duplicate_since_ms: i64,
    ) -> Result<EventAccepted, StoreError> {
        let usage = Arc::clone(&self.inner.usage);
        let adds = i64::try_from(event.body.len())
            .unwrap_or(i64::MAX)
            .saturating_mul(2)
            .saturating_add(512 * (event.sinks.len() as i64 + 2));
        let result = self
            .inner
            .writer
            .run(move |tx| {
                if usage.over(adds) {
                    return Err(ops::store_full());
                }
                let accepted =
                    ops::accept_event(tx, &event, &*merge, now_ms(), duplicate_since_ms)?;
                usage.add(adds);
                Ok(accepted)
            })
            .await;
        self.note(result)
    }

    /// Deletes done deliveries finished before `before_ms`, expired idempotency keys, and
    /// events and build facts past the same retention that no kept delivery needs.
    pub async fn purge(&self, before_ms: i64) -> Result<usize, StoreError> {
        let result = self
            .inner
            .writer
            .run(move |tx| {
                let purged = ops::purge_done(tx, before_ms)?;
                ops::purge_expired_keys(tx, now_ms())?;
                ops::purge_events(tx, before_ms)?;
                Ok(purged)
            })
            .await;
        self.note_failure(result)
    }

    /// Runs a read on `conn` on the blocking pool, never on the async threads.
    async fn read<T, F>(conn: &Arc<Mutex<Connection>>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let conn = Arc::clone(conn);
        tokio::task::spawn_blocking(move || read(&lock(&conn)))
            .await
            .map_err(|_| StoreError::ReaderGone)?
            .map_err(StoreError::Sqlite)
    }

    /// What each target of `wants` may start at `now_ms`, with payloads, and when the next
    /// delivery falls due at a target with a slot left: the worker's one read per wake-up.
    pub async fn ready(&self, now_ms: i64, wants: Vec<Want>) -> Result<Ready, StoreError> {
        Self::read(&self.inner.reader, move |conn| {
            ops::ready(conn, now_ms, &wants)
        })
        .await
    }

    /// Up to `limit` startable deliveries of targets not among `known`.
    pub async fn orphans(
        &self,
        known: Vec<String>,
        rules: Vec<(String, Vec<String>)>,
        busy: Vec<i64>,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        Self::read(&self.inner.reader, move |conn| {
            ops::orphans(conn, &known, &rules, &busy, limit)
        })
        .await
    }

    /// Which run a build event of `jenkins` (a target id) with `queue_id` belongs to, and
    /// whether a reported trigger to that target is still pending.
    pub async fn lookup_run(
        &self,
        jenkins: String,
        queue_id: Option<u64>,
    ) -> Result<RunLookup, StoreError> {
        Self::read(&self.inner.reader, move |conn| {
            ops::lookup_run(conn, &jenkins, queue_id, now_ms())
        })
        .await
    }

    /// Writes what a call decided outside the outbox (a direct-mode dispatch, a filtered call)
    /// leads to, in one transaction. A `new_call`'s effects (a filtered call) are held to
    /// `max_store_bytes` like a call; the others, like an attempt's outcome, may use the
    /// headroom above it: Jenkins has acted already, and the run must still hear of it.
    pub async fn apply(&self, effects: Vec<Effect>, new_call: bool) -> Result<(), StoreError> {
        let usage = Arc::clone(&self.inner.usage);
        let adds = 1024 * i64::try_from(effects.len()).unwrap_or(i64::MAX);
        let result = self
            .inner
            .writer
            .run(move |tx| {
                if new_call && usage.over(adds) {
                    return Err(ops::store_full());
                }
                ops::apply_all(tx, &effects, now_ms())?;
                usage.add(adds);
                Ok(())
            })
            .await;
        if new_call {
            self.note(result)
        } else {
            self.note_failure(result)
        }
    }

    /// One delivery for an operator, on a connection of its own.
    pub async fn get(&self, id: &str) -> Result<Option<ops::DeliveryView>, StoreError> {
        let id = id.to_owned();
        Self::read(&self.inner.lookup, move |conn| ops::get(conn, &id)).await
    }

    /// The queue gauges as of the writer's last batch; reads memory only, never the store.
    pub fn queue_stats(&self) -> Stats {
        lock(&self.inner.gauges).clone()
    }

    /// Signatures of stored calls still inside their replay window, to reload at start-up
    /// (before the gateway serves, so it reads in place).
    /// The signatures stored calls remember, of every rule, or only of `rules`.
    pub fn remembered_signatures(
        &self,
        now_secs: u64,
        rules: Option<&[String]>,
    ) -> Result<Vec<RememberedSignature>, StoreError> {
        Ok(ops::remembered(&lock(&self.inner.reader), now_secs, rules)?)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let version = ops::schema_version(&conn)?;
        if ops::is_older(version) {
            return Err(StoreError::OlderSchema(version));
        }
        // A newer store is refused by `migrate`, with its version.
        ops::migrate(&mut conn)?;
        Ok(Self { conn })
    }

    pub fn list(
        &self,
        filter: ListFilter<'_>,
        limit: usize,
    ) -> Result<Vec<ops::DeliverySummary>, StoreError> {
        Ok(ops::list(&self.conn, filter, limit)?)
    }

    pub fn get(&self, id: &str) -> Result<Option<ops::DeliveryView>, StoreError> {
        Ok(ops::get(&self.conn, id)?)
    }

    /// Puts a dead or retrying delivery back in the queue, due now, with a fresh attempt budget.
    /// One that a later delivery of its ordering key (the same sink and build, or job) has
    /// overtaken is refused unless `force`: it would reach the sink out of order.
    pub fn retry(&mut self, id: &str, force: bool) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done = ops::requeue(&tx, Some(id), force, now_ms())?;
        tx.commit()?;
        if done.superseded > 0 {
            return Err(StoreError::Superseded(id.to_owned()));
        }
        if done.requeued == 0 {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Requeues every dead delivery but those a later delivery of their ordering key has
    /// overtaken.
    pub fn retry_dead(&mut self) -> Result<Requeued, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done = ops::requeue(&tx, None, false, now_ms())?;
        tx.commit()?;
        Ok(done)
    }

    /// Deletes done deliveries older than `older_than`; returns how many.
    pub fn purge_done(&mut self, older_than: Duration) -> Result<usize, StoreError> {
        let cutoff = now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let purged = ops::purge_done(&tx, cutoff)?;
        ops::purge_expired_keys(&tx, now_ms())?;
        ops::purge_events(&tx, cutoff)?;
        tx.commit()?;
        Ok(purged)
    }
}
