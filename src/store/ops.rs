//! The store's schema and every statement it runs, as plain functions over a connection or
//! transaction, shared by the gateway's writer thread and the operator commands.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::State;

/// 2: bodies moved to their own table (1 kept them in `deliveries`).
/// 3: the verified signature kept with each delivery (`replay_key`, `replay_expires_at`) and
///    per-state counts kept by triggers (`queue_counts`).
/// 4: one outbox for every kind of delivery: a row names its `target` (`jenkins:<name>`,
///    `sink:<name>`) instead of a Jenkins target, keeps what the target answered as a generic
///    `receipt` (Jenkins' queue items were `queue_id`/`queue_url`), may carry an `ordering_key`
///    and the `event_seq` of the build event it relays; `events` and `builds` hold Jenkins'
///    build events and what earlier phases said about each build.
/// 5: `held` marks a pending delivery an earlier pending one with its ordering key goes
///    before, kept by every write, so the worker's reads never visit a held-back row.
/// 6: a trigger's `report` (the Port run it stands for, and the port sink told of it), and
///    `run_items`: the Jenkins queue items each reported run's trigger was answered with.
/// 7: `runs`: what each Port run has been told (its finished builds, and whether it has had
///    its one terminal update), and which of a run's queue items have `finished`.
const SCHEMA_VERSION: i64 = 7;

/// The `deliveries` table of the current schema, created under the name given (the migration builds it
/// beside the old one, then swaps).
fn deliveries_table(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    -- Where it goes: `jenkins:<name>` for a trigger, `sink:<name>` for a build event.
    target          TEXT    NOT NULL,
    -- The rule a trigger came through (Jenkins deliveries).
    rule            TEXT,
    -- The build event a sink delivery relays (`events.seq`).
    event_seq       INTEGER,
    -- Never attempted while an earlier delivery with the same key is queued or retrying.
    ordering_key    TEXT,
    -- 1 while such an earlier delivery is pending: only the oldest pending delivery of a key
    -- has 0, so the ready index holds nothing the worker could not start.
    held            INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL,
    content_type    TEXT    NOT NULL,
    request_id      TEXT,
    accepted_at     INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    budget_used     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    finished_at     INTEGER,
    -- What the target answered that later steps need (JSON; Jenkins: its queue items).
    receipt         TEXT,
    -- A trigger whose rule reports to Port: its sink and run id (JSON).
    report          TEXT,
    -- The verified signature the call was accepted with (a digest, never the MAC), reloaded
    -- into the replay memory at start-up while it is inside its window. Kept in the row that
    -- is written anyway: a table of its own would add a random B-tree insert per call.
    replay_key        BLOB,
    replay_expires_at INTEGER
);"
    )
}

const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS deliveries_pending_seq ON deliveries (seq)
    WHERE state IN ('queued', 'retrying');
-- What each target may start, soonest due first: the worker reads a target's first rows and
-- stops, whatever the backlog behind them or the rows other targets and ordering keys hold.
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries (target, next_attempt_at, seq)
    WHERE state IN ('queued', 'retrying') AND held = 0;
CREATE INDEX IF NOT EXISTS deliveries_pending_key ON deliveries (ordering_key, seq)
    WHERE state IN ('queued', 'retrying') AND ordering_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (finished_at) WHERE state = 'done';
CREATE INDEX IF NOT EXISTS deliveries_rule ON deliveries (rule, seq) WHERE rule IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_target ON deliveries (target, seq);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq) WHERE event_seq IS NOT NULL;
-- Bodies live apart from the rows the worker scans and updates: a state change then rewrites a
-- small row, not the page holding a body, and a scan reads dense pages of metadata only.
CREATE TABLE IF NOT EXISTS bodies (
    delivery_seq INTEGER PRIMARY KEY REFERENCES deliveries (seq) ON DELETE CASCADE,
    body         BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    delivery_seq INTEGER NOT NULL REFERENCES deliveries (seq) ON DELETE CASCADE,
    n            INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    status       INTEGER,
    error        TEXT,
    PRIMARY KEY (delivery_seq, n)
);
CREATE TABLE IF NOT EXISTS idempotency (
    rule        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (rule, key)
);
-- Jenkins' build events; a repeat of (target, build, phase) within the retention is the
-- plugin's duplicate and is not stored again.
-- `facts` is what the build's events up to this one said (JSON), so a sink builds its record
-- from the event and the facts as they were when it arrived.
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    jenkins     TEXT    NOT NULL,
    build       TEXT    NOT NULL,
    phase       TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    request_id  TEXT,
    body        BLOB    NOT NULL,
    facts       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_phase ON events (jenkins, build, phase, received_at);
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
-- What a build's earlier phases said (start time, scm, parameters), and which sinks that send
-- one record per build already have theirs.
CREATE TABLE IF NOT EXISTS builds (
    jenkins    TEXT    NOT NULL,
    build      TEXT    NOT NULL,
    facts      TEXT    NOT NULL,
    recorded   TEXT    NOT NULL DEFAULT '[]',
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (jenkins, build)
);
CREATE INDEX IF NOT EXISTS builds_updated ON builds (updated_at);
-- The queue items Jenkins answered a reported trigger with: a build event whose
-- `build.queue_id` is here belongs to that Port run (until `expires_at`).
CREATE TABLE IF NOT EXISTS run_items (
    jenkins    TEXT    NOT NULL,
    queue_id   INTEGER NOT NULL,
    sink       TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    job        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    -- 1 once the item's build has finalized: the run ends when none of its items is left.
    finished   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (jenkins, queue_id)
);
CREATE INDEX IF NOT EXISTS run_items_run ON run_items (sink, run_id);
CREATE INDEX IF NOT EXISTS run_items_expiry ON run_items (expires_at);
-- Each Port run hookgate has sent an update: the builds of it that finished (JSON array, each
-- as the port sink recorded it), and when it had its terminal update (then nothing more is
-- queued for it).
CREATE TABLE IF NOT EXISTS runs (
    sink       TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    builds     TEXT    NOT NULL DEFAULT '[]',
    ended_at   INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (sink, run_id)
);
CREATE INDEX IF NOT EXISTS runs_updated ON runs (updated_at);
-- Reported triggers not yet answered: few rows (only those in flight), read by Jenkins target
-- when a build event's run is looked up, and whole when a run's last build finishes. One index,
-- so a call that reports nothing pays for one partial index's check, not two.
CREATE INDEX IF NOT EXISTS deliveries_reported ON deliveries (target, report)
    WHERE report IS NOT NULL AND state IN ('queued', 'retrying');
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- Deliveries per state, kept by triggers in the same transaction as every change (the
-- gateway's and the operator commands' alike), so the queue gauges never count rows.
CREATE TABLE IF NOT EXISTS queue_counts (
    state TEXT    PRIMARY KEY,
    n     INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS deliveries_count_insert AFTER INSERT ON deliveries BEGIN
    UPDATE queue_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER IF NOT EXISTS deliveries_count_update AFTER UPDATE OF state ON deliveries
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE queue_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER IF NOT EXISTS deliveries_count_delete AFTER DELETE ON deliveries BEGIN
    UPDATE queue_counts SET n = n - 1 WHERE state = OLD.state;
END;
";

/// Counts the rows once, when the counts table is created (a new store or a migration).
const SEED_COUNTS: &str = "
INSERT OR REPLACE INTO queue_counts (state, n)
    SELECT column1, (SELECT COUNT(*) FROM deliveries WHERE state = column1)
    FROM (VALUES ('queued'), ('retrying'), ('dead'), ('done'));
";

/// Schema 4 had no `held`: the pending deliveries an earlier pending one of their key goes
/// before get it (a no-op for older stores, which had no keys). The scan indexes it replaces go.
const MIGRATE_4_TO_5: &str = "
DROP INDEX IF EXISTS deliveries_pending_due;
DROP INDEX IF EXISTS deliveries_pending_target;
UPDATE deliveries SET held = 1
    WHERE state IN ('queued', 'retrying') AND ordering_key IS NOT NULL
      AND EXISTS (SELECT 1 FROM deliveries AS e
                  WHERE e.ordering_key = deliveries.ordering_key AND e.seq < deliveries.seq
                    AND e.state IN ('queued', 'retrying'));
";

/// Schema 2 rows have no signature columns.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE deliveries ADD COLUMN replay_key BLOB;
ALTER TABLE deliveries ADD COLUMN replay_expires_at INTEGER;
";

/// Schema 1 kept each body in its `deliveries` row.
const MIGRATE_1_TO_2: &str = "
CREATE TABLE IF NOT EXISTS bodies (
    delivery_seq INTEGER PRIMARY KEY REFERENCES deliveries (seq) ON DELETE CASCADE,
    body         BLOB    NOT NULL
);
INSERT INTO bodies (delivery_seq, body) SELECT seq, body FROM deliveries;
ALTER TABLE deliveries DROP COLUMN body;
";

/// Schema 3 rows were Jenkins deliveries only: each becomes a `jenkins:<name>` delivery whose
/// receipt holds the queue item Jenkins answered with. The table is rebuilt (its `rule` is no
/// longer required), keeping `seq`, so bodies and attempts stay attached and acceptance order
/// is unchanged; its indexes and triggers are made again by `SCHEMA`.
const MIGRATE_3_TO_4: &str = "
INSERT INTO deliveries_new (seq, id, target, rule, state, content_type, request_id, accepted_at,
        next_attempt_at, attempts, budget_used, last_error, finished_at, receipt, replay_key,
        replay_expires_at)
    SELECT seq, id, 'jenkins:' || jenkins, rule, state, content_type, request_id, accepted_at,
        next_attempt_at, attempts, budget_used, last_error, finished_at,
        CASE WHEN queue_id IS NULL THEN NULL
             ELSE json_object('jobs', json_array(json_object('id', queue_id, 'url', queue_url)))
        END,
        replay_key, replay_expires_at
    FROM deliveries ORDER BY seq;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
";

/// The schema version this store was written with (0 for a new file).
pub(super) fn schema_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Whether a store of `version` needs migrating (0, a file with no schema yet, does not: it
/// is created).
pub(super) fn is_older(version: i64) -> bool {
    version != 0 && version < SCHEMA_VERSION
}

/// Creates the schema, or migrates an older store to it. A current store is only read, so an
/// operator command never waits on a busy gateway here.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "the store was written by a newer hookgate (schema {version}, this one knows {SCHEMA_VERSION})"
            )),
        ));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // Rebuilding `deliveries` drops the table bodies and attempts refer to; with foreign keys
    // on, that would delete them. The pragma cannot change inside a transaction.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let migrated = migrate_from(conn);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrated
}

fn migrate_from(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    // IMMEDIATE takes the write lock up front, waiting through the busy timeout, instead of
    // failing when a read lock cannot be upgraded.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process (the gateway and an operator command starting together) may have
    // migrated the store while this one waited for the lock: read the version again under it.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    migrate_from_locked(&tx, version)?;
    tx.commit()
}

fn migrate_from_locked(tx: &Transaction<'_>, version: i64) -> Result<(), rusqlite::Error> {
    if version == 0 {
        tx.execute_batch(&deliveries_table("deliveries"))?;
    } else {
        if version == 1 {
            tx.execute_batch(MIGRATE_1_TO_2)?;
        }
        if version <= 2 {
            tx.execute_batch(MIGRATE_2_TO_3)?;
        }
        if version <= 3 {
            // The rebuilt table has the current columns, `held` included.
            tx.execute_batch(&deliveries_table("deliveries_new"))?;
            tx.execute_batch(MIGRATE_3_TO_4)?;
        } else {
            if version == 4 {
                tx.execute_batch(
                    "ALTER TABLE deliveries ADD COLUMN held INTEGER NOT NULL DEFAULT 0;",
                )?;
            }
            if version <= 5 {
                tx.execute_batch("ALTER TABLE deliveries ADD COLUMN report TEXT;")?;
            }
            if version == 6 {
                tx.execute_batch(
                    "ALTER TABLE run_items ADD COLUMN finished INTEGER NOT NULL DEFAULT 0;",
                )?;
            }
        }
        if version <= 4 {
            tx.execute_batch(MIGRATE_4_TO_5)?;
        }
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(SEED_COUNTS)?;
    let broken: Option<String> = tx
        .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
        .optional()?;
    if let Some(table) = broken {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            Some(format!(
                "the migrated store has rows in {table} without their delivery"
            )),
        ));
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
}

/// The idempotency key of a delivery: its digest, never the raw value.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// Hex SHA-256 of the key's value.
    pub digest: String,
    pub ttl_ms: i64,
}

/// The verified signature a delivery was accepted with, remembered against replays.
#[derive(Debug, Clone, Copy)]
pub struct ReplayMark {
    /// Digest of the decoded MAC and timestamp.
    pub key: [u8; 16],
    /// Unix seconds.
    pub expires_at: u64,
}

/// A delivery about to be accepted.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: String,
    /// `jenkins:<name>` or `sink:<name>` (see [`target_id`]).
    pub target: String,
    /// The rule a trigger came through.
    pub rule: Option<String>,
    /// Never attempted while an earlier delivery with the same key is pending.
    pub ordering_key: Option<String>,
    pub body: Vec<u8>,
    pub content_type: String,
    pub request_id: Option<String>,
    pub idempotency: Option<IdempotencyKey>,
    pub replay: Option<ReplayMark>,
    /// The Port run the call stands for (`{"sink", "run"}`, JSON), when its rule reports.
    pub report: Option<String>,
}

/// The `target` of a delivery: the kind of target and its configured name.
pub fn target_id(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

/// What `accept` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Stored,
    /// A delivery with the same idempotency key was accepted within its TTL. (A repeated
    /// signature is recognised before the store, by the rule's replay memory.)
    Duplicate {
        first: String,
    },
}

/// Accepts one delivery: a repeat of a stored call (its idempotency key inside the TTL) is
/// answered with the first delivery; otherwise it is stored, with the signature it was verified
/// by.
pub(super) fn accept(
    tx: &Transaction<'_>,
    delivery: &NewDelivery,
    now_ms: i64,
) -> Result<Accepted, rusqlite::Error> {
    if let (Some(key), Some(rule)) = (&delivery.idempotency, &delivery.rule) {
        let first: Option<String> = tx
            .prepare_cached(
                "SELECT delivery_id FROM idempotency WHERE rule = ?1 AND key = ?2 AND expires_at > ?3",
            )?
            .query_row(params![rule, key.digest, now_ms], |row| {
                row.get(0)
            })
            .optional()?;
        if let Some(first) = first {
            return Ok(Accepted::Duplicate { first });
        }
        tx.prepare_cached(
            "INSERT INTO idempotency (rule, key, delivery_id, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (rule, key) DO UPDATE SET delivery_id = excluded.delivery_id,
                                                   expires_at = excluded.expires_at",
        )?
        .execute(params![
            rule,
            key.digest,
            delivery.id,
            now_ms.saturating_add(key.ttl_ms)
        ])?;
    }
    let held = held_by_key(tx, delivery.ordering_key.as_deref())?;
    tx.prepare_cached("INSERT INTO deliveries (id, rule, target, state, content_type, request_id, accepted_at, next_attempt_at, replay_key, replay_expires_at, ordering_key, held, report)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11)")?.execute(params![
            delivery.id,
            delivery.rule,
            delivery.target,
            delivery.content_type,
            delivery.request_id,
            now_ms,
            delivery.replay.as_ref().map(|mark| mark.key.to_vec()),
            delivery
                .replay
                .as_ref()
                .map(|mark| i64::try_from(mark.expires_at).unwrap_or(i64::MAX)),
            delivery.ordering_key,
            held,
            delivery.report,
        ],
    )?;
    tx.prepare_cached("INSERT INTO bodies (delivery_seq, body) VALUES (?1, ?2)")?
        .execute(params![tx.last_insert_rowid(), delivery.body])?;
    Ok(Accepted::Stored)
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The target accepted it; `receipt` is what it answered that later steps need (JSON).
    Done {
        receipt: Option<String>,
    },
    Retry {
        at_ms: i64,
    },
    /// Not attempted: the target waits for something else first. Asked again at `at_ms`, with
    /// no attempt counted or kept.
    Wait {
        at_ms: i64,
    },
    Dead {
        reason: String,
    },
}

/// One attempt to deliver, as kept for operators.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub at_ms: i64,
    pub duration_ms: i64,
    /// The target's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next: Next,
    /// What the outcome leads to, written in the outcome's own transaction.
    pub effects: Vec<Effect>,
}

/// A write an attempt's outcome (or a call's) leads to, committed with it (never without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Jenkins accepted a reported trigger: its queue items (id, job) belong to the run, for
    /// `ttl_ms`.
    Correlate {
        jenkins: String,
        sink: String,
        run_id: String,
        items: Vec<(u64, String)>,
        ttl_ms: i64,
    },
    /// An update of a Port run (`body`), queued for its port sink behind the run's earlier
    /// updates, unless the run has had its terminal update; `terminal` makes it that one.
    Update {
        sink: String,
        run_id: String,
        delivery_id: String,
        body: String,
        terminal: bool,
    },
    /// A build of a run finalized (`build`: the port sink's record of it, JSON). It is kept
    /// with the run and its queue item (if any) is finished; once none of the run's items is
    /// left and no reported trigger of the run is pending, the terminal update is queued, as
    /// [`finished_update`] writes it.
    Finished {
        sink: String,
        run_id: String,
        jenkins: String,
        queue_id: Option<u64>,
        build: String,
        delivery_id: String,
    },
}

/// A reported trigger's `report` column: the sink and run it stands for. The one spelling both
/// the accept and the run's bookkeeping compare.
pub fn report_text(sink: &str, run_id: &str) -> String {
    serde_json::json!({"sink": sink, "run": run_id}).to_string()
}

/// The ordering key of a run's updates: one after the other, in the order they were queued.
pub fn run_key(sink: &str, run_id: &str) -> String {
    format!("{sink}\nrun {run_id}")
}

/// The terminal update a run's last finished build queues: `{"run", "update": "finished",
/// "builds": [...]}` (what `sinks::port::runs::Intent` reads).
pub fn finished_update(run_id: &str, builds: &[serde_json::Value]) -> String {
    serde_json::json!({"run": run_id, "update": "finished", "builds": builds}).to_string()
}

/// The terminal update of a run some of whose queue items Jenkins never reported finished
/// within their TTL: `{"run", "update": "unreported", "builds": [...], "jobs": [...]}`.
pub fn unreported_update(run_id: &str, builds: &[serde_json::Value], jobs: &[String]) -> String {
    serde_json::json!({"run": run_id, "update": "unreported", "builds": builds, "jobs": jobs})
        .to_string()
}

/// Ends each run with a queue item that Jenkins never reported finished before it expired (a job
/// without a Notification endpoint, a cancelled queue item, an event lost on the way), so no run
/// stays in progress forever. Runs before the expired items are deleted.
pub(super) fn expire_runs(tx: &Transaction<'_>, now_ms: i64) -> Result<usize, rusqlite::Error> {
    let stale: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT DISTINCT sink, run_id FROM run_items WHERE expires_at <= ?1 AND finished = 0",
        )?
        .query_map([now_ms], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut ended = 0;
    for (sink, run_id) in stale {
        if run_ended(tx, &sink, &run_id)? {
            continue;
        }
        let jobs: Vec<String> = tx
            .prepare_cached(
                "SELECT job FROM run_items WHERE sink = ?1 AND run_id = ?2 AND finished = 0
                 ORDER BY queue_id",
            )?
            .query_map(params![sink, run_id], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let builds = run_builds(tx, &sink, &run_id)?;
        touch_run(tx, &sink, &run_id, None, true, now_ms)?;
        queue_update(
            tx,
            &sink,
            &run_id,
            &ulid::Ulid::generate().to_string(),
            &unreported_update(&run_id, &builds, &jobs),
            now_ms,
        )?;
        ended += 1;
    }
    Ok(ended)
}

/// Writes `effect` as of `now_ms`.
fn apply(tx: &Transaction<'_>, effect: &Effect, now_ms: i64) -> Result<(), rusqlite::Error> {
    match effect {
        Effect::Correlate {
            jenkins,
            sink,
            run_id,
            items,
            ttl_ms,
        } => {
            // A run that has ended (its trigger was dead-lettered, then requeued by an
            // operator) takes no more builds: they would only wait to end it a second time.
            if run_ended(tx, sink, run_id)? {
                return Ok(());
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO run_items (jenkins, queue_id, sink, run_id, job, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (jenkins, queue_id) DO UPDATE SET sink = excluded.sink,
                     run_id = excluded.run_id, job = excluded.job,
                     expires_at = excluded.expires_at, finished = 0",
            )?;
            for (queue_id, job) in items {
                insert.execute(params![
                    jenkins,
                    i64::try_from(*queue_id).unwrap_or(i64::MAX),
                    sink,
                    run_id,
                    job,
                    now_ms.saturating_add(*ttl_ms)
                ])?;
            }
            Ok(())
        }
        Effect::Update {
            sink,
            run_id,
            delivery_id,
            body,
            terminal,
        } => {
            if run_ended(tx, sink, run_id)? {
                return Ok(());
            }
            touch_run(tx, sink, run_id, None, *terminal, now_ms)?;
            queue_update(tx, sink, run_id, delivery_id, body, now_ms)
        }
        Effect::Finished {
            sink,
            run_id,
            jenkins,
            queue_id,
            build,
            delivery_id,
        } => {
            // The item is finished whatever the run's state, so its expiry never ends the run.
            if let Some(queue_id) = queue_id {
                tx.prepare_cached(
                    "UPDATE run_items SET finished = 1
                     WHERE jenkins = ?1 AND queue_id = ?2 AND sink = ?3 AND run_id = ?4",
                )?
                .execute(params![
                    jenkins,
                    i64::try_from(*queue_id).unwrap_or(i64::MAX),
                    sink,
                    run_id
                ])?;
            }
            if run_ended(tx, sink, run_id)? {
                return Ok(());
            }
            let mut builds = run_builds(tx, sink, run_id)?;
            builds.extend(serde_json::from_str::<serde_json::Value>(build).ok());
            let left: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM run_items
                                    WHERE sink = ?1 AND run_id = ?2 AND finished = 0
                                      AND expires_at > ?3)
                         OR EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_reported
                                    WHERE report = ?4 AND report IS NOT NULL
                                      AND state IN ('queued', 'retrying'))",
                )?
                .query_row(
                    params![sink, run_id, now_ms, report_text(sink, run_id)],
                    |row| row.get(0),
                )?;
            let text = serde_json::Value::from(builds.clone()).to_string();
            touch_run(tx, sink, run_id, Some(&text), !left, now_ms)?;
            if left {
                return Ok(());
            }
            queue_update(
                tx,
                sink,
                run_id,
                delivery_id,
                &finished_update(run_id, &builds),
                now_ms,
            )
        }
    }
}

/// The records of the run's finished builds (none for a run not kept).
fn run_builds(
    tx: &Transaction<'_>,
    sink: &str,
    run_id: &str,
) -> Result<Vec<serde_json::Value>, rusqlite::Error> {
    let known: Option<String> = tx
        .prepare_cached("SELECT builds FROM runs WHERE sink = ?1 AND run_id = ?2")?
        .query_row(params![sink, run_id], |row| row.get(0))
        .optional()?;
    Ok(known
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default())
}

/// Whether the run has had its terminal update.
fn run_ended(tx: &Transaction<'_>, sink: &str, run_id: &str) -> Result<bool, rusqlite::Error> {
    tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM runs
                        WHERE sink = ?1 AND run_id = ?2 AND ended_at IS NOT NULL)",
    )?
    .query_row(params![sink, run_id], |row| row.get(0))
}

/// Keeps the run (and `builds`, when given); `ended` marks its terminal update as queued.
fn touch_run(
    tx: &Transaction<'_>,
    sink: &str,
    run_id: &str,
    builds: Option<&str>,
    ended: bool,
    now_ms: i64,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO runs (sink, run_id, builds, ended_at, updated_at)
         VALUES (?1, ?2, COALESCE(?3, '[]'), CASE WHEN ?4 THEN ?5 END, ?5)
         ON CONFLICT (sink, run_id) DO UPDATE SET
             builds = COALESCE(?3, runs.builds),
             ended_at = COALESCE(runs.ended_at, excluded.ended_at),
             updated_at = excluded.updated_at",
    )?
    .execute(params![sink, run_id, builds, ended, now_ms])?;
    Ok(())
}

/// Queues one update of a run for its port sink, behind the run's earlier pending ones.
fn queue_update(
    tx: &Transaction<'_>,
    sink: &str,
    run_id: &str,
    delivery_id: &str,
    body: &str,
    now_ms: i64,
) -> Result<(), rusqlite::Error> {
    let key = run_key(sink, run_id);
    let held = held_by_key(tx, Some(&key))?;
    tx.prepare_cached(
        "INSERT INTO deliveries (id, target, ordering_key, held, state, content_type,
                                 accepted_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', 'application/json', ?5, ?5)",
    )?
    .execute(params![
        delivery_id,
        target_id("sink", sink),
        key,
        held,
        now_ms
    ])?;
    tx.prepare_cached("INSERT INTO bodies (delivery_seq, body) VALUES (?1, ?2)")?
        .execute(params![tx.last_insert_rowid(), body.as_bytes()])?;
    Ok(())
}

/// Writes `effects` of something decided outside an attempt (a direct-mode call, a filtered
/// call) as of `now_ms`.
pub(super) fn apply_all(
    tx: &Transaction<'_>,
    effects: &[Effect],
    now_ms: i64,
) -> Result<(), rusqlite::Error> {
    effects
        .iter()
        .try_for_each(|effect| apply(tx, effect, now_ms))
}

/// The Port run (sink, run id) a queue item of `jenkins` belongs to, while it is kept.
pub(super) fn run_of(
    conn: &Connection,
    jenkins: &str,
    queue_id: u64,
    now_ms: i64,
) -> Result<Option<(String, String)>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT sink, run_id FROM run_items
         WHERE jenkins = ?1 AND queue_id = ?2 AND expires_at > ?3",
    )?
    .query_row(
        params![jenkins, i64::try_from(queue_id).unwrap_or(i64::MAX), now_ms],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
}

/// Which run a build event of `jenkins` (a target id) belongs to, as far as the store knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLookup {
    /// The run (sink, run id) its queue item was recorded for, while kept.
    pub run: Option<(String, String)>,
    /// A reported trigger to `jenkins` is still pending: its queue items are not recorded yet.
    pub trigger_pending: bool,
}

pub(super) fn lookup_run(
    conn: &Connection,
    jenkins: &str,
    queue_id: Option<u64>,
    now_ms: i64,
) -> Result<RunLookup, rusqlite::Error> {
    // Pending first: a trigger's outcome committed between the two reads is then seen by the
    // second (its queue items), never missed by both.
    let trigger_pending: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_reported
                            WHERE target = ?1 AND report IS NOT NULL
                              AND state IN ('queued', 'retrying'))",
        )?
        .query_row([jenkins], |row| row.get(0))?;
    let run = match queue_id {
        Some(queue_id) => run_of(conn, jenkins, queue_id, now_ms)?,
        None => None,
    };
    Ok(RunLookup {
        run,
        trigger_pending,
    })
}

/// Longest error text kept per attempt and delivery: bounds what an outcome adds to the store.
const MAX_ERROR_TEXT: usize = 512;

fn bounded(text: Option<&str>) -> Option<&str> {
    text.map(|text| {
        let mut end = text.len().min(MAX_ERROR_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    })
}

/// Records an attempt and the delivery's next state. Without `keep_history` (the store is at
/// `max_store_bytes`) the attempt is counted but its history row is not kept, so outcomes stay
/// about the size of the row they update: retries during a long outage on a full store can
/// never use up the headroom that keeps outcomes writable.
pub(super) fn record(
    tx: &Transaction<'_>,
    id: &str,
    attempt: &AttemptRecord,
    keep_history: bool,
) -> Result<(), rusqlite::Error> {
    let found: Option<(i64, i64, Option<String>)> = tx
        .prepare_cached(
            "SELECT seq, attempts, ordering_key FROM deliveries
             WHERE id = ?1 AND state IN ('queued', 'retrying')",
        )?
        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    // Purged or changed by an operator meanwhile: the attempt has nothing left to update.
    let Some((seq, attempts, key)) = found else {
        return Ok(());
    };
    if let Next::Wait { at_ms } = attempt.next {
        tx.prepare_cached(
            "UPDATE deliveries SET next_attempt_at = ?2, last_error = ?3 WHERE seq = ?1",
        )?
        .execute(params![seq, at_ms, bounded(attempt.error.as_deref())])?;
        return Ok(());
    }
    let n = attempts + 1;
    let error = bounded(attempt.error.as_deref());
    if keep_history {
        tx.prepare_cached("INSERT INTO attempts (delivery_seq, n, at, duration_ms, status, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![seq, n, attempt.at_ms, attempt.duration_ms, attempt.status, error],
        )?;
    }
    match &attempt.next {
        Next::Done { receipt } => tx.prepare_cached("UPDATE deliveries SET state = 'done', attempts = ?2, budget_used = budget_used + 1,
                    finished_at = ?3, receipt = ?4, last_error = NULL
             WHERE seq = ?1")?.execute(params![
                seq,
                n,
                attempt.at_ms + attempt.duration_ms,
                receipt
            ],
        )?,
        Next::Retry { at_ms } => tx.prepare_cached("UPDATE deliveries SET state = 'retrying', attempts = ?2, budget_used = budget_used + 1,
                    next_attempt_at = ?3, last_error = ?4
             WHERE seq = ?1")?.execute(params![seq, n, at_ms, error],
        )?,
        Next::Wait { .. } => 0,
        Next::Dead { reason } => tx.prepare_cached("UPDATE deliveries SET state = 'dead', attempts = ?2, budget_used = budget_used + 1,
                    finished_at = ?3, last_error = ?4
             WHERE seq = ?1")?.execute(params![seq, n, attempt.at_ms + attempt.duration_ms, bounded(Some(reason))],
        )?,
    };
    // Done or dead releases the key to the next delivery that has it.
    if let (Some(key), Next::Done { .. } | Next::Dead { .. }) = (&key, &attempt.next) {
        release(tx, key)?;
    }
    let now = attempt.at_ms + attempt.duration_ms;
    for effect in &attempt.effects {
        apply(tx, effect, now)?;
    }
    Ok(())
}

/// Whether a delivery with `key` accepted now waits: an earlier one with the key is pending.
fn held_by_key(tx: &Transaction<'_>, key: Option<&str>) -> Result<bool, rusqlite::Error> {
    let Some(key) = key else {
        return Ok(false);
    };
    tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM deliveries
                        WHERE ordering_key = ?1 AND state IN ('queued', 'retrying'))",
    )?
    .query_row([key], |row| row.get(0))
}

/// Lets the oldest pending delivery with `key` start, once the one before it is done or dead.
/// The rest stay held: only the oldest of a key is ever released, so one change is one row.
fn release(tx: &Transaction<'_>, key: &str) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "UPDATE deliveries SET held = 0
         WHERE seq = (SELECT seq FROM deliveries
                      WHERE ordering_key = ?1 AND state IN ('queued', 'retrying')
                      ORDER BY seq LIMIT 1)
           AND held = 1",
    )?
    .execute([key])?;
    Ok(())
}

/// Marks again which pending deliveries of `key` are held, after an operator put an older one
/// back in the queue (it goes first again). Visits every pending delivery of the key, so it is
/// for operators' requeues only.
fn relink(tx: &Transaction<'_>, key: &str) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "UPDATE deliveries SET held = (seq <> (SELECT MIN(seq) FROM deliveries
                                               WHERE ordering_key = ?1
                                                 AND state IN ('queued', 'retrying')))
         WHERE ordering_key = ?1 AND state IN ('queued', 'retrying')",
    )?
    .execute([key])?;
    Ok(())
}

/// One sink a build event matched, before the store decides (one record per build).
#[derive(Debug, Clone)]
pub struct EventSink {
    /// The delivery's id, should it be queued.
    pub delivery_id: String,
    pub sink: String,
    /// The sink sends one record per build: a later phase of a build it already has a delivery
    /// for is skipped.
    pub once_per_build: bool,
    /// Never attempted while an earlier delivery with this key is pending.
    pub ordering_key: String,
}

/// A Notification event about to be stored, with the sinks it matched.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub jenkins: String,
    /// The build's identity (`build.url`).
    pub build: String,
    pub phase: String,
    pub request_id: Option<String>,
    pub body: Vec<u8>,
    pub sinks: Vec<EventSink>,
}

/// What `accept_event` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAccepted {
    /// Stored; for each matched sink, whether a delivery was queued (false: the build already
    /// has its one record).
    Stored { queued: Vec<(String, bool)> },
    /// The same (target, build, phase) was stored within the retention as `first`.
    Duplicate { first: String },
}

/// Merges an event into the facts kept for its build (JSON in, JSON out).
pub type MergeFacts<'a> = &'a dyn Fn(Option<&str>) -> String;

/// Stores a build event and its sink deliveries: the dedupe check, the build's facts, and one
/// delivery per matched sink (each ordered behind the earlier ones of the same sink and build).
pub(super) fn accept_event(
    tx: &Transaction<'_>,
    event: &NewEvent,
    merge: MergeFacts<'_>,
    now_ms: i64,
    duplicate_since_ms: i64,
) -> Result<EventAccepted, rusqlite::Error> {
    let first: Option<String> = tx
        .prepare_cached(
            "SELECT id FROM events WHERE jenkins = ?1 AND build = ?2 AND phase = ?3
               AND received_at > ?4 ORDER BY received_at LIMIT 1",
        )?
        .query_row(
            params![event.jenkins, event.build, event.phase, duplicate_since_ms],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(first) = first {
        return Ok(EventAccepted::Duplicate { first });
    }
    let known: Option<(String, String)> = tx
        .prepare_cached("SELECT facts, recorded FROM builds WHERE jenkins = ?1 AND build = ?2")?
        .query_row(params![event.jenkins, event.build], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let (facts, recorded) = match &known {
        Some((facts, recorded)) => (merge(Some(facts)), recorded.as_str()),
        None => (merge(None), "[]"),
    };
    let mut recorded: Vec<String> = serde_json::from_str(recorded).unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO events (id, jenkins, build, phase, received_at, request_id, body, facts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        event.id,
        event.jenkins,
        event.build,
        event.phase,
        now_ms,
        event.request_id,
        event.body,
        facts
    ])?;
    let event_seq = tx.last_insert_rowid();
    let mut queued = Vec::with_capacity(event.sinks.len());
    for sink in &event.sinks {
        if sink.once_per_build && recorded.contains(&sink.sink) {
            queued.push((sink.sink.clone(), false));
            continue;
        }
        if sink.once_per_build {
            recorded.push(sink.sink.clone());
        }
        let held = held_by_key(tx, Some(&sink.ordering_key))?;
        tx.prepare_cached(
            "INSERT INTO deliveries (id, target, event_seq, ordering_key, state, content_type,
                                     request_id, accepted_at, next_attempt_at, held)
             VALUES (?1, ?2, ?3, ?4, 'queued', 'application/json', ?5, ?6, ?6, ?7)",
        )?
        .execute(params![
            sink.delivery_id,
            target_id("sink", &sink.sink),
            event_seq,
            sink.ordering_key,
            event.request_id,
            now_ms,
            held
        ])?;
        queued.push((sink.sink.clone(), true));
    }
    let recorded = serde_json::to_string(&recorded).unwrap_or_else(|_| "[]".to_owned());
    tx.prepare_cached(
        "INSERT INTO builds (jenkins, build, facts, recorded, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (jenkins, build) DO UPDATE SET facts = excluded.facts,
             recorded = excluded.recorded, updated_at = excluded.updated_at",
    )?
    .execute(params![event.jenkins, event.build, facts, recorded, now_ms])?;
    Ok(EventAccepted::Stored { queued })
}

/// A stored build event, as a sink delivery is made from it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: String,
    pub jenkins: String,
    pub body: Vec<u8>,
    /// The build's facts as of this event (JSON).
    pub facts: String,
}

/// What one attempt sends: a trigger's stored body, or the event a sink delivery relays.
#[derive(Debug, Clone)]
pub enum Payload {
    Body(Vec<u8>),
    Event(StoredEvent),
}

/// The payload of a pending delivery (`None`: purged or changed by an operator meanwhile).
fn payload(
    conn: &Connection,
    seq: i64,
    event_seq: Option<i64>,
) -> Result<Option<Payload>, rusqlite::Error> {
    match event_seq {
        None => Ok(body(conn, seq)?.map(Payload::Body)),
        Some(event_seq) => conn
            .prepare_cached("SELECT id, jenkins, body, facts FROM events WHERE seq = ?1")?
            .query_row([event_seq], |row| {
                Ok(Payload::Event(StoredEvent {
                    id: row.get(0)?,
                    jenkins: row.get(1)?,
                    body: row.get(2)?,
                    facts: row.get(3)?,
                }))
            })
            .optional(),
    }
}

/// Deletes events past the retention that no kept delivery relays any more, and the facts of
/// builds not heard of since.
pub(super) fn purge_events(tx: &Transaction<'_>, before_ms: i64) -> Result<usize, rusqlite::Error> {
    let events = tx.execute(
        "DELETE FROM events WHERE received_at < ?1
           AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_seq = events.seq)",
        [before_ms],
    )?;
    tx.execute("DELETE FROM builds WHERE updated_at < ?1", [before_ms])?;
    // A run is kept while any of its queue items is (until they expire, an unfinished one
    // ending it): forgetting it sooner would forget its finished builds, or that it has ended.
    tx.execute(
        "DELETE FROM runs WHERE updated_at < ?1
           AND NOT EXISTS (SELECT 1 FROM run_items
                           WHERE run_items.sink = runs.sink AND run_items.run_id = runs.run_id)",
        [before_ms],
    )?;
    Ok(events)
}

/// Room a probe asks for: ready means a typical call still fits, not merely a tiny write.
const PROBE_BYTES: i64 = 64 * 1024;

/// Writes (and removes, in the same transaction) a row the size of a typical call, within the
/// room new calls may use.
pub(super) fn probe(tx: &Transaction<'_>, room: Option<i64>) -> Result<(), rusqlite::Error> {
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', zeroblob(?1))",
        [PROBE_BYTES],
    )?;
    let fits = ensure_room(tx, room);
    tx.execute("DELETE FROM meta WHERE key = 'probe'", [])?;
    fits
}

/// Fails like a full disk when the pages in use pass `room` (pages). New calls are held to
/// it, while outcomes of attempts may use the headroom above it: an attempt whose outcome
/// cannot be written would otherwise be made again.
pub(super) fn ensure_room(tx: &Transaction<'_>, room: Option<i64>) -> Result<(), rusqlite::Error> {
    match room {
        Some(room) if pages_in_use(tx)? > room => Err(store_full()),
        _ => Ok(()),
    }
}

/// Pages holding data (the file's pages less the free list).
pub(super) fn pages_in_use(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let pages: i64 = conn
        .prepare_cached("PRAGMA page_count")?
        .query_row([], |row| row.get(0))?;
    let free: i64 = conn
        .prepare_cached("PRAGMA freelist_count")?
        .query_row([], |row| row.get(0))?;
    Ok(pages - free)
}

/// The error a write past `delivery.max_store_bytes` fails with, as a full disk would.
pub(super) fn store_full() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("the store has reached delivery.max_store_bytes".to_owned()),
    )
}

/// A delivery the worker may attempt.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Acceptance order.
    pub seq: i64,
    pub id: String,
    pub target: String,
    pub rule: Option<String>,
    /// The build event a sink delivery relays.
    pub event_seq: Option<i64>,
    pub ordering_key: Option<String>,
    pub content_type: String,
    pub accepted_at: i64,
    /// Attempts since it was accepted or last requeued by an operator.
    pub budget_used: u32,
    /// The Port run a trigger stands for (`{"sink", "run"}`, JSON).
    pub report: Option<String>,
}

/// The columns a [`Pending`] is read from, in its fields' order.
const PENDING_COLUMNS: &str = "seq, id, target, rule, event_seq, ordering_key, content_type, accepted_at, budget_used, report";

fn pending_row(row: &Row<'_>) -> Result<Pending, rusqlite::Error> {
    Ok(Pending {
        seq: row.get(0)?,
        id: row.get(1)?,
        target: row.get(2)?,
        rule: row.get(3)?,
        event_seq: row.get(4)?,
        ordering_key: row.get(5)?,
        content_type: row.get(6)?,
        accepted_at: row.get(7)?,
        budget_used: row.get(8)?,
        report: row.get(9)?,
    })
}

/// What the worker asks of one target: up to `free` deliveries it may start now, passing over
/// the ones in flight (`running`: their `seq`s, sorted).
#[derive(Debug, Clone)]
pub struct Want {
    pub target: String,
    pub free: usize,
    pub running: Vec<i64>,
}

/// A delivery the worker may start, with what it sends.
#[derive(Debug, Clone)]
pub struct Due {
    pub pending: Pending,
    pub payload: Payload,
}

/// What one read found for the worker.
#[derive(Debug, Default)]
pub struct Ready {
    /// Soonest due first within each target.
    pub due: Vec<Due>,
    /// When the next delivery falls due at a target that still has a free slot after `due`.
    pub next_at: Option<i64>,
}

/// For each want, the deliveries its target may start at `now_ms`, payloads included: the
/// worker's one read per wake-up, however many it starts. Held-back deliveries are not in the
/// index read, and each target's rows are read only as far as its free slots (and those in
/// flight) reach, so the cost does not grow with the backlog.
pub(super) fn ready(
    conn: &Connection,
    now_ms: i64,
    wants: &[Want],
) -> Result<Ready, rusqlite::Error> {
    let mut ready = Ready::default();
    // INDEXED BY: a plan that cannot use the index fails here (and in the tests) instead of
    // silently scanning every pending row.
    let mut due = conn.prepare_cached(&format!(
        "SELECT {PENDING_COLUMNS} FROM deliveries INDEXED BY deliveries_ready
         WHERE target = ?1 AND state IN ('queued', 'retrying') AND held = 0
           AND next_attempt_at <= ?2
         ORDER BY next_attempt_at, seq LIMIT ?3"
    ))?;
    let mut later = conn.prepare_cached(
        "SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_ready
         WHERE target = ?1 AND state IN ('queued', 'retrying') AND held = 0
           AND next_attempt_at > ?2
         ORDER BY next_attempt_at LIMIT 1",
    )?;
    for want in wants.iter().filter(|want| want.free > 0) {
        let limit = want.free.saturating_add(want.running.len());
        let mut taken = 0;
        let rows = due.query_map(
            params![
                want.target,
                now_ms,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            pending_row,
        )?;
        for pending in rows {
            let pending = pending?;
            if want.running.binary_search(&pending.seq).is_ok() {
                continue;
            }
            // Purged by an operator since the row was read: nothing to start.
            if let Some(payload) = payload(conn, pending.seq, pending.event_seq)? {
                ready.due.push(Due { pending, payload });
                taken += 1;
            }
            if taken == want.free {
                break;
            }
        }
        if taken < want.free
            && let Some(at) = later
                .query_row(params![want.target, now_ms], |row| row.get::<_, i64>(0))
                .optional()?
        {
            ready.next_at = Some(ready.next_at.map_or(at, |next| next.min(at)));
        }
    }
    Ok(ready)
}

/// Up to `limit` startable deliveries, oldest first, that no target in use makes (a sink, a
/// Jenkins target or a rule removed from the config while they were pending).
/// Pending deliveries no target in use makes: their target is not in `known`, or it is one of
/// `rules`' targets and their rule is not among its rules. `busy` (attempts in flight) are left
/// out. The pairs are one uncorrelated list, built once per search, not once per row.
pub(super) fn orphans(
    conn: &Connection,
    known: &[String],
    rules: &[(String, Vec<String>)],
    busy: &[i64],
    limit: usize,
) -> Result<Vec<Pending>, rusqlite::Error> {
    let known = serde_json::to_string(known).unwrap_or_else(|_| "[]".to_owned());
    let pairs: Vec<[&str; 2]> = rules
        .iter()
        .flat_map(|(target, names)| {
            names
                .iter()
                .map(move |name| [target.as_str(), name.as_str()])
        })
        .collect();
    let scoped: Vec<&str> = rules.iter().map(|(target, _)| target.as_str()).collect();
    let pairs = serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_owned());
    let scoped = serde_json::to_string(&scoped).unwrap_or_else(|_| "[]".to_owned());
    let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".to_owned());
    conn.prepare_cached(&format!(
        "SELECT {PENDING_COLUMNS} FROM deliveries
         WHERE state IN ('queued', 'retrying') AND held = 0
           AND seq NOT IN (SELECT value FROM json_each(?5))
           AND (target NOT IN (SELECT value FROM json_each(?1))
                OR (target IN (SELECT value FROM json_each(?3))
                    AND (target, coalesce(rule, '')) NOT IN
                        (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
                         FROM json_each(?4))))
         ORDER BY seq LIMIT ?2"
    ))?
    .query_map(
        params![
            known,
            i64::try_from(limit).unwrap_or(i64::MAX),
            scoped,
            pairs,
            busy
        ],
        pending_row,
    )?
    .collect()
}

pub(super) fn body(conn: &Connection, seq: i64) -> Result<Option<Vec<u8>>, rusqlite::Error> {
    conn.prepare_cached("SELECT body FROM bodies WHERE delivery_seq = ?1")?
        .query_row([seq], |row| row.get(0))
        .optional()
}

/// A later delivery with the same ordering key was made already: sending this one now would
/// reach the target out of order (a STARTED alert after the build's resolve).
const SUPERSEDED: &str = "EXISTS (SELECT 1 FROM deliveries AS later
    WHERE later.ordering_key = deliveries.ordering_key AND later.seq > deliveries.seq
      AND later.state = 'done')";

/// What `requeue` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requeued {
    pub requeued: usize,
    /// Dead deliveries left dead because a later one with their ordering key was made.
    pub superseded: usize,
}

/// Puts deliveries back in the queue, due at `now_ms`: one (dead or retrying) by id, or every
/// dead one. A delivery a later one of its ordering key has overtaken is left alone unless
/// `force` (by id only).
pub(super) fn requeue(
    tx: &Transaction<'_>,
    id: Option<&str>,
    force: bool,
    now_ms: i64,
) -> Result<Requeued, rusqlite::Error> {
    match id {
        Some(id) => {
            let superseded: bool = tx
                .query_row(
                    &format!("SELECT {SUPERSEDED} FROM deliveries WHERE id = ?1"),
                    [id],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(false);
            if superseded && !force {
                return Ok(Requeued {
                    requeued: 0,
                    superseded: 1,
                });
            }
            let requeued = tx.execute(
                "UPDATE deliveries SET state = 'queued', next_attempt_at = ?2, budget_used = 0, finished_at = NULL
                 WHERE id = ?1 AND state IN ('dead', 'retrying')",
                params![id, now_ms],
            )?;
            let key: Option<String> = tx
                .query_row(
                    "SELECT ordering_key FROM deliveries WHERE id = ?1",
                    [id],
                    |row| row.get(0),
                )
                .optional()?
                .flatten();
            if let (Some(key), 1..) = (key, requeued) {
                relink(tx, &key)?;
            }
            Ok(Requeued {
                requeued,
                superseded: 0,
            })
        }
        None => {
            let superseded = tx.query_row(
                &format!("SELECT COUNT(*) FROM deliveries WHERE state = 'dead' AND {SUPERSEDED}"),
                [],
                |row| row.get::<_, i64>(0),
            )?;
            let keys: Vec<String> = tx
                .prepare(&format!(
                    "SELECT DISTINCT ordering_key FROM deliveries
                     WHERE state = 'dead' AND ordering_key IS NOT NULL AND NOT {SUPERSEDED}"
                ))?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let requeued = tx.execute(
                &format!(
                    "UPDATE deliveries SET state = 'queued', next_attempt_at = ?1, budget_used = 0, finished_at = NULL
                     WHERE state = 'dead' AND NOT {SUPERSEDED}"
                ),
                [now_ms],
            )?;
            for key in &keys {
                relink(tx, key)?;
            }
            Ok(Requeued {
                requeued,
                superseded: usize::try_from(superseded).unwrap_or(0),
            })
        }
    }
}

pub(super) fn purge_done(tx: &Transaction<'_>, before_ms: i64) -> Result<usize, rusqlite::Error> {
    tx.execute(
        "DELETE FROM deliveries WHERE state = 'done' AND finished_at < ?1",
        [before_ms],
    )
}

/// Deletes idempotency keys and run items whose TTL has passed.
pub(super) fn purge_expired_keys(
    tx: &Transaction<'_>,
    now_ms: i64,
) -> Result<usize, rusqlite::Error> {
    expire_runs(tx, now_ms)?;
    tx.execute("DELETE FROM run_items WHERE expires_at <= ?1", [now_ms])?;
    tx.execute("DELETE FROM idempotency WHERE expires_at <= ?1", [now_ms])
}

/// A remembered signature, reloaded into the rule's replay memory at start-up.
#[derive(Debug, Clone)]
pub struct RememberedSignature {
    pub rule: String,
    pub key: [u8; 16],
    pub delivery_id: String,
    pub expires_at: u64,
}

/// Signatures still inside their window at `now_secs`, the soonest to expire first (so a full
/// memory keeps the newest).
pub(super) fn remembered(
    conn: &Connection,
    now_secs: u64,
    rules: Option<&[String]>,
) -> Result<Vec<RememberedSignature>, rusqlite::Error> {
    let now = i64::try_from(now_secs).unwrap_or(i64::MAX);
    let row = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(String, Vec<u8>, String, i64)> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    };
    let rows: Vec<(String, Vec<u8>, String, i64)> = match rules {
        // At start-up, every rule's: a scan of the deliveries (no index is kept for it, so
        // accepting a call pays nothing for it).
        None => conn
            .prepare(
                "SELECT rule, replay_key, id, replay_expires_at FROM deliveries
                 WHERE replay_key IS NOT NULL AND replay_expires_at > ?1
                 ORDER BY replay_expires_at",
            )?
            .query_map([now], row)?
            .collect::<Result<_, _>>()?,
        // On a reload, only those of the rules new to the set, through the rule index.
        Some(rules) => conn
            .prepare(
                "SELECT rule, replay_key, id, replay_expires_at FROM deliveries
                 WHERE rule IN (SELECT value FROM json_each(?2))
                   AND replay_key IS NOT NULL AND replay_expires_at > ?1
                 ORDER BY replay_expires_at",
            )?
            .query_map(
                params![
                    now,
                    serde_json::to_string(rules).unwrap_or_else(|_| "[]".to_owned())
                ],
                row,
            )?
            .collect::<Result<_, _>>()?,
    };
    let mut out = Vec::new();
    for (rule, key, delivery_id, expires) in rows {
        // A key of another length was not written by this version; it is skipped.
        if let Ok(key) = <[u8; 16]>::try_from(key.as_slice()) {
            out.push(RememberedSignature {
                rule,
                key,
                delivery_id,
                expires_at: u64::try_from(expires).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// One line of `hookgate deliveries list`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliverySummary {
    pub id: String,
    pub target: String,
    pub rule: Option<String>,
    /// The Notification event a sink delivery relays: `<build url> <phase>`.
    pub event: Option<String>,
    pub state: State,
    pub attempts: u32,
    pub accepted_at: i64,
    pub last_error: Option<String>,
}

fn state(row: &Row<'_>, index: usize) -> Result<State, rusqlite::Error> {
    let text: String = row.get(index)?;
    State::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown delivery state `{text}`").into(),
        )
    })
}

/// What `deliveries list` selects.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter<'a> {
    pub state: Option<State>,
    pub rule: Option<&'a str>,
    /// A whole `target` (`sink:dora`, `jenkins:main`).
    pub target: Option<&'a str>,
}

pub(super) fn list(
    conn: &Connection,
    filter: ListFilter<'_>,
    limit: usize,
) -> Result<Vec<DeliverySummary>, rusqlite::Error> {
    let mut statement = conn.prepare(
        "SELECT d.id, d.target, d.rule, e.build || ' ' || e.phase, d.state, d.attempts,
                d.accepted_at, d.last_error
         FROM deliveries AS d LEFT JOIN events AS e ON e.seq = d.event_seq
         WHERE (?1 IS NULL OR d.state = ?1) AND (?2 IS NULL OR d.rule = ?2)
           AND (?3 IS NULL OR d.target = ?3)
         ORDER BY d.seq DESC LIMIT ?4",
    )?;
    let rows = statement.query_map(
        params![
            filter.state.map(State::as_str),
            filter.rule,
            filter.target,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |row| {
            Ok(DeliverySummary {
                id: row.get(0)?,
                target: row.get(1)?,
                rule: row.get(2)?,
                event: row.get(3)?,
                state: state(row, 4)?,
                attempts: row.get(5)?,
                accepted_at: row.get(6)?,
                last_error: row.get(7)?,
            })
        },
    )?;
    rows.collect()
}

/// One attempt, as `deliveries show` and `GET /deliveries/{id}` report it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub n: u32,
    pub at: i64,
    pub duration_ms: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// The build event a sink delivery relays, as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRef {
    pub id: String,
    pub jenkins: String,
    pub build: String,
    pub phase: String,
}

/// A delivery's state and history. Never the body, which may hold the sender's data.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: String,
    pub target: String,
    pub rule: Option<String>,
    pub event: Option<EventRef>,
    pub state: State,
    pub request_id: Option<String>,
    pub accepted_at: i64,
    pub next_attempt_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub last_error: Option<String>,
    /// What the target answered that later steps need (Jenkins: its queue items), once done.
    pub receipt: Option<serde_json::Value>,
    pub body_bytes: usize,
    pub attempts: Vec<AttemptView>,
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<DeliveryView>, rusqlite::Error> {
    let found = conn
        .query_row(
            "SELECT d.seq, d.id, d.target, d.rule, d.state, d.request_id, d.accepted_at,
                    d.next_attempt_at, d.finished_at, d.last_error, d.receipt,
                    COALESCE((SELECT length(body) FROM bodies WHERE delivery_seq = d.seq),
                             length(e.body)),
                    e.id, e.jenkins, e.build, e.phase
             FROM deliveries AS d LEFT JOIN events AS e ON e.seq = d.event_seq
             WHERE d.id = ?1",
            [id],
            |row| {
                let state = state(row, 4)?;
                let pending = matches!(state, State::Queued | State::Retrying);
                let next: i64 = row.get(7)?;
                let seq: i64 = row.get(0)?;
                let receipt: Option<String> = row.get(10)?;
                let body_bytes: Option<i64> = row.get(11)?;
                let event_id: Option<String> = row.get(12)?;
                let event = match event_id {
                    Some(id) => Some(EventRef {
                        id,
                        jenkins: row.get(13)?,
                        build: row.get(14)?,
                        phase: row.get(15)?,
                    }),
                    None => None,
                };
                Ok((
                    seq,
                    DeliveryView {
                        id: row.get(1)?,
                        target: row.get(2)?,
                        rule: row.get(3)?,
                        event,
                        state,
                        request_id: row.get(5)?,
                        accepted_at: row.get(6)?,
                        next_attempt_at: pending.then_some(next),
                        finished_at: row.get(8)?,
                        last_error: row.get(9)?,
                        receipt: receipt.and_then(|text| serde_json::from_str(&text).ok()),
                        body_bytes: body_bytes
                            .and_then(|n| usize::try_from(n).ok())
                            .unwrap_or(0),
                        attempts: Vec::new(),
                    },
                ))
            },
        )
        .optional()?;
    let Some((seq, mut view)) = found else {
        return Ok(None);
    };
    let mut statement = conn.prepare_cached(
        "SELECT n, at, duration_ms, status, error FROM attempts WHERE delivery_seq = ?1 ORDER BY n",
    )?;
    view.attempts = statement
        .query_map([seq], |row| {
            Ok(AttemptView {
                n: row.get(0)?,
                at: row.get(1)?,
                duration_ms: row.get(2)?,
                status: row.get(3)?,
                error: row.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(view))
}

/// Queue depth by state and the age of the oldest undelivered call, for metrics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub by_state: Vec<(State, u64)>,
    /// When the oldest queued or retrying delivery was accepted (ms since the epoch).
    pub oldest_pending_accepted_at: Option<i64>,
}

impl Stats {
    /// How long the oldest queued or retrying delivery has waited at `now_ms`.
    pub fn oldest_pending_age_ms(&self, now_ms: i64) -> Option<i64> {
        self.oldest_pending_accepted_at
            .map(|at| (now_ms - at).max(0))
    }
}

/// Reads the trigger-kept counts and the oldest pending delivery: a few rows through
/// indexes, whatever the store's size.
pub(super) fn stats(conn: &Connection) -> Result<Stats, rusqlite::Error> {
    let mut by_state: Vec<(State, u64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
    let mut statement = conn.prepare_cached("SELECT state, n FROM queue_counts")?;
    let rows = statement.query_map([], |row| Ok((state(row, 0)?, row.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, count) = row?;
        if let Some(slot) = by_state.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = u64::try_from(count).unwrap_or(0);
        }
    }
    // Acceptance order is `seq` order, so the oldest pending call is the first one in the
    // pending index (an operator's requeue keeps both).
    let oldest: Option<i64> = conn
        .prepare_cached(
            "SELECT accepted_at FROM deliveries WHERE state IN ('queued', 'retrying')
             ORDER BY seq LIMIT 1",
        )?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(Stats {
        by_state,
        oldest_pending_accepted_at: oldest,
    })
}
