//! Store tests: the delivery lifecycle, idempotency, group commit under concurrency, reopening,
//! a full store, and a property test over accepts, outcomes and restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn delivery(id: &str, rule: &str, key: Option<&str>) -> NewDelivery {
    NewDelivery {
        id: id.to_owned(),
        target: target_id("jenkins", "main"),
        rule: Some(rule.to_owned()),
        ordering_key: None,
        body: br#"{"action":"deploy"}"#.to_vec(),
        content_type: "application/json".to_owned(),
        request_id: Some("req-1".to_owned()),
        idempotency: key.map(|k| IdempotencyKey {
            digest: k.to_owned(),
            ttl_ms: 60_000,
        }),
        replay: None,
        report: None,
    }
}

fn attempt(next: Next) -> AttemptRecord {
    AttemptRecord {
        at_ms: now_ms(),
        duration_ms: 3,
        status: match next {
            Next::Done { .. } => Some(200),
            _ => Some(503),
        },
        error: match next {
            Next::Done { .. } => None,
            _ => Some("Jenkins answered 503".to_owned()),
        },
        next,
        effects: Vec::new(),
    }
}

/// The store's reads, made in place on its reader connection: the tests call them from inside
/// and outside a runtime alike.
impl Store {
    /// What the worker's read finds for every target in the store, `limit` each, nothing in
    /// flight.
    fn ready_now(&self, now_ms: i64, limit: usize) -> Result<Ready, StoreError> {
        let conn = lock(&self.inner.reader);
        let wants: Vec<Want> = conn
            .prepare("SELECT DISTINCT target FROM deliveries ORDER BY target")?
            .query_map([], |row| row.get(0))?
            .map(|target| {
                Ok(Want {
                    target: target?,
                    free: limit,
                    running: Vec::new(),
                })
            })
            .collect::<Result<_, rusqlite::Error>>()?;
        Ok(ops::ready(&conn, now_ms, &wants)?)
    }

    /// Up to `limit` deliveries that may start now, in acceptance order.
    fn due_now(&self, now_ms: i64, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let mut due: Vec<Pending> = self
            .ready_now(now_ms, limit)?
            .due
            .into_iter()
            .map(|due| due.pending)
            .collect();
        due.sort_by_key(|pending| pending.seq);
        due.truncate(limit);
        Ok(due)
    }

    fn body_now(&self, seq: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(ops::body(&lock(&self.inner.reader), seq)?)
    }

    /// When the next delivery that may start falls due, after now.
    fn next_due_now(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.ready_now(now_ms(), usize::MAX)?.next_at)
    }

    fn get_now(&self, id: &str) -> Result<Option<DeliveryView>, StoreError> {
        Ok(ops::get(&lock(&self.inner.lookup), id)?)
    }

    /// Writes effects as the outcome of a decided call would.
    async fn apply_now(&self, effects: Vec<Effect>) -> Result<(), StoreError> {
        self.apply(effects, false).await
    }

    /// The run a queue item of `jenkins` belongs to.
    async fn run_of(
        &self,
        jenkins: String,
        queue_id: u64,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(self.lookup_run(jenkins, Some(queue_id)).await?.run)
    }

    /// Records an attempt of `id` leading to `next`, from outside a runtime.
    fn record_now(&self, id: &str, next: Next) {
        runtime()
            .block_on(self.record(id.to_owned(), attempt(next)))
            .unwrap();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_delivery_goes_from_queued_through_retrying_to_done_with_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        assert_eq!(
            store.accept(delivery("d1", "r", None)).await.unwrap(),
            Accepted::Stored
        );
        let due = store.due_now(now_ms(), 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            store.body_now(due[0].seq).unwrap().as_deref(),
            Some(&br#"{"action":"deploy"}"#[..])
        );
        assert_eq!(due[0].budget_used, 0);

        let later = now_ms() + 60_000;
        store
            .record("d1".into(), attempt(Next::Retry { at_ms: later }))
            .await
            .unwrap();
        assert!(
            store.due_now(now_ms(), 10).unwrap().is_empty(),
            "not due before its time"
        );
        assert_eq!(store.next_due_now().unwrap(), Some(later));
        let retried = store.get_now("d1").unwrap().unwrap();
        assert_eq!(retried.state, State::Retrying);

        store
            .record(
                "d1".into(),
                attempt(Next::Done {
                    receipt: Some(r#"{"jobs":[{"id":42,"url":"queue/item/42/"}]}"#.into()),
                }),
            )
            .await
            .unwrap();
        let done = store.get_now("d1").unwrap().unwrap();
        assert_eq!(done.state, State::Done);
        assert_eq!(done.receipt.as_ref().unwrap()["jobs"][0]["id"], 42);
        assert_eq!(done.attempts.len(), 2);
        assert_eq!(done.attempts[0].status, Some(503));
        assert_eq!(done.attempts[1].status, Some(200));
        assert_eq!(done.request_id.as_deref(), Some("req-1"));
        assert_eq!(store.next_due_now().unwrap(), None);
    });
}

#[test]
fn a_repeat_within_the_ttl_is_a_duplicate_and_after_it_a_new_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        assert_eq!(
            store.accept(delivery("a", "r", Some("k"))).await.unwrap(),
            Accepted::Stored
        );
        assert_eq!(
            store.accept(delivery("b", "r", Some("k"))).await.unwrap(),
            Accepted::Duplicate { first: "a".into() }
        );
        // The same key on another rule is another call.
        assert_eq!(
            store
                .accept(delivery("c", "other", Some("k")))
                .await
                .unwrap(),
            Accepted::Stored
        );
        let mut short = delivery("d", "r", Some("short"));
        short.idempotency.as_mut().unwrap().ttl_ms = 1;
        assert_eq!(store.accept(short).await.unwrap(), Accepted::Stored);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            store
                .accept(delivery("e", "r", Some("short")))
                .await
                .unwrap(),
            Accepted::Stored
        );
        let ids: Vec<String> = store
            .due_now(now_ms(), 10)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, ["a", "c", "d", "e"]);
    });
}

#[test]
fn concurrent_accepts_are_committed_together_and_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        let accepts = (0..500).map(|i| {
            let store = store.clone();
            async move {
                store
                    .accept(delivery(
                        &format!("d{i:03}"),
                        "r",
                        Some(&format!("k{}", i % 250)),
                    ))
                    .await
            }
        });
        let results = futures_util::future::join_all(accepts).await;
        let stored = results
            .iter()
            .filter(|r| matches!(r, Ok(Accepted::Stored)))
            .count();
        let duplicates = results
            .iter()
            .filter(|r| matches!(r, Ok(Accepted::Duplicate { .. })))
            .count();
        assert_eq!((stored, duplicates), (250, 250));
    });
    drop(store);
    let reopened = Store::open(dir.path(), 0).unwrap();
    assert_eq!(reopened.due_now(now_ms(), 1000).unwrap().len(), 250);
}

#[test]
fn a_schema_1_store_is_migrated_with_its_bodies() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The schema 1 layout: bodies inside `deliveries`.
        let conn = rusqlite::Connection::open(dir.path().join("deliveries.sqlite3")).unwrap();
        conn.execute_batch(
            "CREATE TABLE deliveries (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                rule TEXT NOT NULL, jenkins TEXT NOT NULL, state TEXT NOT NULL,
                body BLOB NOT NULL, content_type TEXT NOT NULL, request_id TEXT,
                accepted_at INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, budget_used INTEGER NOT NULL DEFAULT 0,
                last_error TEXT, finished_at INTEGER, queue_id INTEGER, queue_url TEXT);
             INSERT INTO deliveries (id, rule, jenkins, state, body, content_type, accepted_at, next_attempt_at)
                VALUES ('old-1', 'r', 'main', 'queued', X'7B7D', 'application/json', 1, 1);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = Store::open(dir.path(), 0).unwrap();
    let due = store.due_now(now_ms(), 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, "old-1");
    assert_eq!(
        store.body_now(due[0].seq).unwrap().as_deref(),
        Some(&b"{}"[..])
    );
    assert_eq!(store.get_now("old-1").unwrap().unwrap().body_bytes, 2);
    // New deliveries go on after the migrated ones.
    runtime().block_on(async {
        store.accept(delivery("new-1", "r", None)).await.unwrap();
    });
    let ids: Vec<String> = store
        .due_now(now_ms(), 10)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, ["old-1", "new-1"]);
}

#[test]
fn a_full_store_refuses_and_reports_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 64 * 1024).unwrap();
    runtime().block_on(async {
        let mut big = delivery("big-0", "r", None);
        big.body = vec![b'x'; 16 * 1024];
        let mut refused = None;
        for i in 0..64 {
            big.id = format!("big-{i}");
            if let Err(error) = store.accept(big.clone()).await {
                refused = Some((i, error));
                break;
            }
        }
        let (i, error) = refused.expect("a 64 KiB store fills up");
        assert!(matches!(error, StoreError::Sqlite(_)), "{error:?}");
        assert!(!store.is_healthy());
        assert!(
            store.get_now(&format!("big-{i}")).unwrap().is_none(),
            "nothing half-written"
        );
        // Health follows the last write, whichever way it went.
        let small = store.accept(delivery("small", "r", None)).await;
        assert_eq!(store.is_healthy(), small.is_ok());
    });
}

#[test]
fn operators_requeue_dead_deliveries_and_purge_done_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        for id in ["a", "b", "c"] {
            store.accept(delivery(id, "r", None)).await.unwrap();
        }
        store
            .record(
                "a".into(),
                attempt(Next::Dead {
                    reason: "Jenkins answered 404".into(),
                }),
            )
            .await
            .unwrap();
        store
            .record(
                "b".into(),
                attempt(Next::Dead {
                    reason: "Jenkins answered 401".into(),
                }),
            )
            .await
            .unwrap();
        store
            .record("c".into(), attempt(Next::Done { receipt: None }))
            .await
            .unwrap();
    });
    let mut admin = Admin::open(dir.path()).unwrap();
    let dead = admin
        .list(
            ListFilter {
                state: Some(State::Dead),
                ..ListFilter::default()
            },
            10,
        )
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("Jenkins answered 401"));
    admin.retry("a", false).unwrap();
    assert!(
        matches!(admin.retry("c", false), Err(StoreError::NotFound(_))),
        "done is not retryable"
    );
    assert_eq!(admin.retry_dead().unwrap().requeued, 1);
    let due: Vec<String> = store
        .due_now(now_ms(), 10)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(due, ["a", "b"]);
    assert_eq!(
        store.due_now(now_ms(), 10).unwrap()[0].budget_used,
        0,
        "a fresh budget"
    );
    // Done deliveries are purged once older than the cut-off, with their attempts.
    assert_eq!(admin.purge_done(Duration::from_secs(3600)).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(admin.purge_done(Duration::from_millis(1)).unwrap(), 1);
    assert!(admin.get("c").unwrap().is_none());
}

#[test]
fn a_store_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), 0).unwrap());
    let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(Store::open(dir.path(), 0).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    /// Accept `n` deliveries concurrently; some share idempotency keys.
    Accept { n: usize, key_space: u8 },
    /// Attempt the oldest due delivery with this outcome (0 done, 1 retry now, 2 dead).
    Attempt(u8),
    /// Close and reopen the store, as after a crash or restart.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..20, 1u8..8).prop_map(|(n, key_space)| Op::Accept { n, key_space }),
        (0u8..3).prop_map(Op::Attempt),
        Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever interleaving of accepts, outcomes and restarts: every delivery answered
    /// `Stored` is in the store exactly once, in its expected state; no `Duplicate` ever
    /// created a row; and ids are never duplicated.
    #[test]
    fn accepts_outcomes_and_restarts_never_lose_or_duplicate(ops in prop::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut store = Store::open(dir.path(), 0).unwrap();
        let mut expected: BTreeMap<String, State> = BTreeMap::new();
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        let mut next_id = 0usize;
        for op in ops {
            match op {
                Op::Accept { n, key_space } => {
                    let batch: Vec<NewDelivery> = (0..n)
                        .map(|i| {
                            next_id += 1;
                            let key = format!("k{}", (next_id + i) % usize::from(key_space));
                            delivery(&format!("d{next_id:05}"), "r", Some(&key))
                        })
                        .collect();
                    let results = rt.block_on(futures_util::future::join_all(
                        batch.iter().cloned().map(|d| { let s = store.clone(); async move { s.accept(d).await } }),
                    ));
                    for (d, result) in batch.iter().zip(results) {
                        let key = d.idempotency.as_ref().unwrap().digest.clone();
                        match result.unwrap() {
                            Accepted::Stored => {
                                prop_assert!(!keys.contains_key(&key), "key {key} accepted twice");
                                keys.insert(key, d.id.clone());
                                expected.insert(d.id.clone(), State::Queued);
                            }
                            Accepted::Duplicate { first } => {
                                prop_assert_eq!(keys.get(&key), Some(&first));
                            }
                        }
                    }
                }
                Op::Attempt(kind) => {
                    if let Some(p) = store.due_now(now_ms(), 1).unwrap().into_iter().next() {
                        let (next, state) = match kind {
                            0 => (Next::Done { receipt: None }, State::Done),
                            1 => (Next::Retry { at_ms: 0 }, State::Retrying),
                            _ => (Next::Dead { reason: "404".into() }, State::Dead),
                        };
                        rt.block_on(store.record(p.id.clone(), attempt(next))).unwrap();
                        expected.insert(p.id, state);
                    }
                }
                Op::Restart => {
                    drop(store);
                    store = Store::open(dir.path(), 0).unwrap();
                }
            }
        }
        drop(store);
        let admin = Admin::open(dir.path()).unwrap();
        let rows = admin.list(ListFilter::default(), 100_000).unwrap();
        let ids: BTreeSet<&String> = rows.iter().map(|r| &r.id).collect();
        prop_assert_eq!(ids.len(), rows.len(), "an id appears twice");
        let found: BTreeMap<String, State> = rows.iter().map(|r| (r.id.clone(), r.state)).collect();
        // The trigger-kept counts the gauges show agree with the rows.
        let counted = ops::stats(&admin.conn).unwrap().by_state;
        for (state, n) in counted {
            prop_assert_eq!(n, found.values().filter(|s| **s == state).count() as u64, "{:?}", state);
        }
        prop_assert_eq!(found, expected);
    }
}

#[test]
fn one_calls_deliveries_are_stored_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        store.accept(delivery("taken", "a", None)).await.unwrap();
        // The second delivery of the call cannot be stored (its id is taken): neither is.
        let call = vec![delivery("fresh", "b", None), delivery("taken", "c", None)];
        assert!(store.accept_all(call).await.is_err());
        assert!(
            store.get_now("fresh").unwrap().is_none(),
            "half a call was stored"
        );
        let call = vec![delivery("one", "a", None), delivery("two", "b", None)];
        assert_eq!(
            store.accept_all(call).await.unwrap(),
            [Accepted::Stored, Accepted::Stored]
        );
    });
}

#[test]
fn a_stored_signature_is_kept_with_its_delivery_and_reloaded_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let later = u64::try_from(now_ms() / 1000).unwrap() + 3600;
    let mut signed = delivery("first", "r", None);
    signed.replay = Some(ReplayMark {
        key: [7; 16],
        expires_at: later,
    });
    runtime().block_on(async {
        let store = Store::open(dir.path(), 0).unwrap();
        store.accept(signed).await.unwrap();
        store.accept(delivery("unsigned", "r", None)).await.unwrap();
        drop(store);
        // After a restart the signature is still known, with the delivery it made.
        let store = Store::open(dir.path(), 0).unwrap();
        let remembered = store.remembered_signatures(later - 3600, None).unwrap();
        assert_eq!(remembered.len(), 1);
        assert_eq!(
            (
                remembered[0].rule.as_str(),
                remembered[0].key,
                remembered[0].delivery_id.as_str(),
                remembered[0].expires_at
            ),
            ("r", [7; 16], "first", later)
        );
        assert!(store.remembered_signatures(later, None).unwrap().is_empty());
        // Of some rules only, as a reload asks for the rules new to its set.
        let of = |rule: &str| {
            store
                .remembered_signatures(later - 3600, Some(&[rule.to_owned()]))
                .unwrap()
                .len()
        };
        assert_eq!((of("r"), of("another")), (1, 0));
    });
}

#[test]
fn outcomes_are_recorded_when_new_calls_are_already_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 256 * 1024).unwrap();
    runtime().block_on(async {
        let mut accepted = Vec::new();
        for i in 0..64 {
            let mut d = delivery(&format!("d{i}"), "r", None);
            d.body = vec![b'x'; 4 * 1024];
            match store.accept(d).await {
                Ok(_) => accepted.push(format!("d{i}")),
                Err(_) => break,
            }
        }
        assert!(
            !accepted.is_empty() && accepted.len() < 64,
            "{}",
            accepted.len()
        );
        assert!(!store.probe().await, "not ready for new calls");
        assert!(!store.is_healthy());
        // Far more retries than 1 MiB of headroom could keep as history (a long outage):
        // past the cap they are counted without history rows, so every one is written.
        let retries = accepted.iter().flat_map(|id| {
            (0..1500).map(|_| store.record(id.clone(), attempt(Next::Retry { at_ms: 0 })))
        });
        for result in futures_util::future::join_all(retries).await {
            result.expect("an outcome is always written");
        }
        // Outcomes written into the headroom do not make a full store look ready again.
        assert!(!store.is_healthy());
        let view = store.get_now(&accepted[0]).unwrap().unwrap();
        assert_eq!(view.state, State::Retrying);
        assert!(
            view.attempts.len() < 1500,
            "history is not kept past the cap"
        );
        // A filtered call's report is a new call's write: refused like one. A decided call's
        // (Jenkins acted already) uses the headroom.
        let filtered = update("r_full", "filtered", true);
        assert!(store.apply(vec![filtered.clone()], true).await.is_err());
        store.apply(vec![filtered], false).await.unwrap();
        assert_eq!(run_updates(&store).len(), 1);
        let done = Next::Done { receipt: None };
        store
            .record(accepted[0].clone(), attempt(done))
            .await
            .unwrap();
        assert_eq!(
            store.get_now(&accepted[0]).unwrap().unwrap().state,
            State::Done
        );
    });
}

#[cfg(unix)]
#[test]
fn an_existing_store_is_made_private() {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(&file)
        .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime()
        .block_on(store.accept(delivery("d", "r", None)))
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", file.display()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

#[test]
fn queue_gauges_follow_the_writer_and_operator_commands() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    let count = |stats: &Stats, state: State| {
        stats
            .by_state
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    };
    runtime().block_on(async {
        store.accept(delivery("d", "r", None)).await.unwrap();
        let stats = store.queue_stats();
        assert_eq!(count(&stats, State::Queued), 1);
        assert!(stats.oldest_pending_age_ms(now_ms()).is_some());
        let dead = attempt(Next::Dead {
            reason: "404".into(),
        });
        store.record("d".into(), dead).await.unwrap();
        let stats = store.queue_stats();
        assert_eq!(
            (count(&stats, State::Queued), count(&stats, State::Dead)),
            (0, 1)
        );
        assert_eq!(stats.oldest_pending_age_ms(now_ms()), None);
        // An operator's retry in another connection shows at the writer's next batch.
        Admin::open(dir.path()).unwrap().retry("d", false).unwrap();
        assert!(store.probe().await);
        let stats = store.queue_stats();
        assert_eq!(
            (count(&stats, State::Queued), count(&stats, State::Dead)),
            (1, 0)
        );
    });
}

/// The tables schemas 3 and 4 had beside `deliveries`, as they wrote them.
const OLD_TABLES: &str = "CREATE TABLE bodies (
        delivery_seq INTEGER PRIMARY KEY REFERENCES deliveries (seq) ON DELETE CASCADE,
        body BLOB NOT NULL);
     CREATE TABLE attempts (
        delivery_seq INTEGER NOT NULL REFERENCES deliveries (seq) ON DELETE CASCADE,
        n INTEGER NOT NULL, at INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
        status INTEGER, error TEXT, PRIMARY KEY (delivery_seq, n));
     CREATE TABLE idempotency (rule TEXT NOT NULL, key TEXT NOT NULL,
        delivery_id TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (rule, key));
     CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
     CREATE TABLE queue_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL);";

/// A store as schema 3 wrote it: Jenkins-only rows with the queue item in their own columns,
/// holding `rows` (SQL inserts).
fn write_schema_3(dir: &Path, rows: &str) {
    let conn = rusqlite::Connection::open(dir.join("deliveries.sqlite3")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE deliveries (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            rule TEXT NOT NULL, jenkins TEXT NOT NULL, state TEXT NOT NULL,
            content_type TEXT NOT NULL, request_id TEXT,
            accepted_at INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, budget_used INTEGER NOT NULL DEFAULT 0,
            last_error TEXT, finished_at INTEGER, queue_id INTEGER, queue_url TEXT,
            replay_key BLOB, replay_expires_at INTEGER);
         {OLD_TABLES}
         {rows}
         PRAGMA user_version = 3;"
    ))
    .unwrap();
}

#[test]
fn a_schema_3_store_is_migrated_to_targets_and_receipts() {
    let dir = tempfile::tempdir().unwrap();
    write_schema_3(
        dir.path(),
        "INSERT INTO deliveries (seq, id, rule, jenkins, state, content_type, accepted_at,
                    next_attempt_at, attempts, budget_used, finished_at, queue_id, queue_url,
                    replay_key, replay_expires_at)
                VALUES (7, 'old-done', 'r', 'main', 'done', 'application/json', 1, 1, 1, 1, 2,
                        5, 'queue/item/5/', X'00112233445566778899AABBCCDDEEFF', 99999999999);
             INSERT INTO attempts VALUES (7, 1, 1, 3, 200, NULL);
             INSERT INTO bodies VALUES (7, X'7B7D');
             INSERT INTO deliveries (seq, id, rule, jenkins, state, content_type, accepted_at,
                    next_attempt_at)
                VALUES (9, 'old-queued', 'r', 'other', 'queued', 'application/x-www-form-urlencoded', 3, 3);
             INSERT INTO bodies VALUES (9, X'613D31');",
    );
    let store = Store::open(dir.path(), 0).unwrap();
    let done = store.get_now("old-done").unwrap().unwrap();
    assert_eq!(done.target, "jenkins:main");
    assert_eq!(done.rule.as_deref(), Some("r"));
    assert_eq!(done.state, State::Done);
    assert_eq!(
        done.receipt.unwrap(),
        serde_json::json!({"jobs": [{"id": 5, "url": "queue/item/5/"}]})
    );
    assert_eq!(done.attempts.len(), 1, "attempts stay with their delivery");
    assert_eq!(done.body_bytes, 2, "bodies stay with their delivery");
    let due = store.due_now(now_ms(), 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, "old-queued");
    assert_eq!(due[0].target, "jenkins:other");
    assert_eq!(due[0].content_type, "application/x-www-form-urlencoded");
    assert_eq!(
        store.body_now(due[0].seq).unwrap().as_deref(),
        Some(&b"a=1"[..])
    );
    // Remembered signatures survive, and the gauges count the migrated rows.
    assert_eq!(store.remembered_signatures(0, None).unwrap().len(), 1);
    let counts: BTreeMap<&str, u64> = {
        let conn = lock(&store.inner.reader);
        ops::stats(&conn)
            .unwrap()
            .by_state
            .into_iter()
            .map(|(state, n)| (state.as_str(), n))
            .collect()
    };
    assert_eq!(counts["done"], 1);
    assert_eq!(counts["queued"], 1);
    // New deliveries go on after the migrated ones, never reusing a sequence number.
    runtime().block_on(async {
        store.accept(delivery("new-1", "r", None)).await.unwrap();
    });
    let due = store.due_now(now_ms(), 10).unwrap();
    assert_eq!(due[1].id, "new-1");
    assert!(due[1].seq > 9, "{}", due[1].seq);
    drop(store);
    // A migrated store opens again as it is.
    let reopened = Store::open(dir.path(), 0).unwrap();
    assert_eq!(reopened.due_now(now_ms(), 10).unwrap().len(), 2);
}

#[test]
fn a_delivery_never_starts_while_an_earlier_one_with_its_key_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    let keyed = |id: &str, key: &str| NewDelivery {
        ordering_key: Some(key.to_owned()),
        ..delivery(id, "r", None)
    };
    let ids = |due: Vec<Pending>| due.into_iter().map(|p| p.id).collect::<Vec<_>>();
    runtime().block_on(async {
        store.accept(keyed("a1", "build-a")).await.unwrap();
        store.accept(keyed("b1", "build-b")).await.unwrap();
        store.accept(keyed("a2", "build-a")).await.unwrap();
        store.accept(delivery("free", "r", None)).await.unwrap();
        store.accept(keyed("a3", "build-a")).await.unwrap();
        assert_eq!(
            ids(store.due_now(now_ms(), 10).unwrap()),
            ["a1", "b1", "free"]
        );
        // The first of the key is retrying later: the rest of its key still waits, and the
        // next due time is the retry's, not the held-back deliveries' own.
        let later = now_ms() + 60_000;
        store
            .record("a1".into(), attempt(Next::Retry { at_ms: later }))
            .await
            .unwrap();
        store
            .record("b1".into(), attempt(Next::Done { receipt: None }))
            .await
            .unwrap();
        store
            .record("free".into(), attempt(Next::Done { receipt: None }))
            .await
            .unwrap();
        assert!(store.due_now(now_ms(), 10).unwrap().is_empty());
        assert_eq!(store.next_due_now().unwrap(), Some(later));
        // Dead releases the key as done does, one delivery at a time.
        store
            .record(
                "a1".into(),
                attempt(Next::Dead {
                    reason: "gone".into(),
                }),
            )
            .await
            .unwrap();
        assert_eq!(ids(store.due_now(now_ms(), 10).unwrap()), ["a2"]);
        store
            .record("a2".into(), attempt(Next::Done { receipt: None }))
            .await
            .unwrap();
        assert_eq!(ids(store.due_now(now_ms(), 10).unwrap()), ["a3"]);
    });
}

/// `migrate` reads the version again once it holds the write lock: two gateways opening a
/// schema 3 store at once (a rolling restart on shared storage) both succeed, instead of the
/// second running the 3 → 4 statements against the migrated table ("no such column: jenkins").
#[test]
fn two_openers_of_a_schema_3_store_at_once_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    write_schema_3(
        dir.path(),
        "INSERT INTO deliveries (seq, id, rule, jenkins, state, content_type, accepted_at,
                next_attempt_at)
            VALUES (9, 'old-queued', 'r', 'main', 'queued', 'application/json', 3, 3);
         INSERT INTO bodies VALUES (9, X'7B7D');",
    );
    let path = dir.path().join("deliveries.sqlite3");
    // Another process holds the write lock (a gateway mid-batch, another opener) ...
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let dir_path = dir.path().to_owned();
    // ... while the upgraded gateway opens the store: it reads version 3, then waits for the lock.
    let gateway = std::thread::spawn(move || Store::open(&dir_path, 0).map(|_| ()));
    std::thread::sleep(Duration::from_millis(400));
    holder.execute_batch("ROLLBACK").unwrap();
    // Another gateway migrates first (the waiting opener sleeps in its busy handler).
    let operator = Store::open(dir.path(), 0).map(|_| ());
    let gateway = gateway.join().unwrap();
    assert!(
        operator.is_ok() && gateway.is_ok(),
        "operator: {operator:?}, gateway: {:?}",
        gateway.map_err(|e| format!(
            "{e}: {:?}",
            std::error::Error::source(&e).map(ToString::to_string)
        ))
    );
}

#[test]
fn an_operator_command_never_migrates_a_store_an_older_gateway_may_be_writing() {
    let dir = tempfile::tempdir().unwrap();
    write_schema_3(dir.path(), "");
    let refused = Admin::open(dir.path()).err().expect("refused");
    assert!(matches!(refused, StoreError::OlderSchema(3)), "{refused:?}");
    assert!(
        refused
            .to_string()
            .contains("start this version's gateway once")
    );
    // The gateway migrates it; then the operator commands work.
    drop(Store::open(dir.path(), 0).unwrap());
    assert!(Admin::open(dir.path()).is_ok());
}

/// A store as schema 4 wrote it (before `held`), holding `rows` (SQL inserts).
fn write_schema_4(dir: &Path, rows: &str) {
    let conn = rusqlite::Connection::open(dir.join("deliveries.sqlite3")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE deliveries (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            target TEXT NOT NULL, rule TEXT, event_seq INTEGER, ordering_key TEXT,
            state TEXT NOT NULL, content_type TEXT NOT NULL, request_id TEXT,
            accepted_at INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, budget_used INTEGER NOT NULL DEFAULT 0,
            last_error TEXT, finished_at INTEGER, receipt TEXT,
            replay_key BLOB, replay_expires_at INTEGER);
         CREATE INDEX deliveries_pending_due ON deliveries (next_attempt_at)
            WHERE state IN ('queued', 'retrying');
         CREATE INDEX deliveries_pending_target ON deliveries (target, seq)
            WHERE state IN ('queued', 'retrying');
         {OLD_TABLES}
         {rows}
         PRAGMA user_version = 4;"
    ))
    .unwrap();
}

fn pending_ids(due: Vec<Pending>) -> Vec<String> {
    due.into_iter().map(|p| p.id).collect()
}

#[test]
fn a_schema_4_store_is_migrated_with_its_held_back_deliveries_still_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let row = |seq: i64, id: &str, key: &str, state: &str| {
        let key = if key.is_empty() {
            "NULL".to_owned()
        } else {
            format!("'{key}'")
        };
        format!(
            "INSERT INTO deliveries (seq, id, target, ordering_key, state, content_type,
                    accepted_at, next_attempt_at)
                VALUES ({seq}, '{id}', 'jenkins:main', {key}, '{state}', 'application/json', {seq}, {seq});
             INSERT INTO bodies VALUES ({seq}, X'7B7D');"
        )
    };
    let rows = [
        row(1, "k1", "k", "retrying"),
        row(2, "k2", "k", "queued"),
        row(3, "k3", "k", "queued"),
        row(4, "m1", "m", "done"),
        row(5, "m2", "m", "queued"),
        row(6, "free", "", "queued"),
    ]
    .concat();
    write_schema_4(dir.path(), &rows);
    let store = Store::open(dir.path(), 0).unwrap();
    // The first pending delivery of each key may start; the ones behind it wait.
    assert_eq!(
        pending_ids(store.due_now(now_ms(), 10).unwrap()),
        ["k1", "m2", "free"]
    );
    store.record_now("k1", Next::Done { receipt: None });
    assert_eq!(
        pending_ids(store.due_now(now_ms(), 10).unwrap()),
        ["k2", "m2", "free"]
    );
    // The indexes the worker's read replaced are gone.
    let old: i64 = lock(&store.inner.reader)
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN
                ('deliveries_pending_due', 'deliveries_pending_target')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
}

#[test]
fn an_operators_requeue_puts_the_older_delivery_of_a_key_first_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    let keyed = |id: &str| NewDelivery {
        ordering_key: Some("build-a".to_owned()),
        ..delivery(id, "r", None)
    };
    let refused = || Next::Dead {
        reason: "sink answered 400".into(),
    };
    runtime().block_on(async {
        for id in ["a1", "a2", "a3"] {
            store.accept(keyed(id)).await.unwrap();
        }
    });
    store.record_now("a1", refused());
    assert_eq!(pending_ids(store.due_now(now_ms(), 10).unwrap()), ["a2"]);
    let mut admin = Admin::open(dir.path()).unwrap();
    // By id: a1 goes before a2 (nothing later of its key was made yet).
    admin.retry("a1", false).unwrap();
    assert_eq!(pending_ids(store.due_now(now_ms(), 10).unwrap()), ["a1"]);
    store.record_now("a1", refused());
    assert_eq!(pending_ids(store.due_now(now_ms(), 10).unwrap()), ["a2"]);
    // Every dead one at once: the same.
    assert_eq!(admin.retry_dead().unwrap().requeued, 1);
    assert_eq!(pending_ids(store.due_now(now_ms(), 10).unwrap()), ["a1"]);
    for id in ["a1", "a2"] {
        store.record_now(id, Next::Done { receipt: None });
    }
    assert_eq!(pending_ids(store.due_now(now_ms(), 10).unwrap()), ["a3"]);
}

/// The worker's read: per target as many as it has free slots, past those in flight, and the
/// next due time only for a target with a slot left.
#[test]
fn the_ready_read_fills_each_targets_free_slots_past_those_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    let to = |id: &str, target: &str| NewDelivery {
        target: target.to_owned(),
        ..delivery(id, "r", None)
    };
    let later = now_ms() + 60_000;
    runtime().block_on(async {
        for id in ["a1", "a2", "a3", "a4"] {
            store.accept(to(id, "jenkins:a")).await.unwrap();
        }
        for id in ["b1", "b2"] {
            store.accept(to(id, "jenkins:b")).await.unwrap();
        }
        store
            .record("b2".into(), attempt(Next::Retry { at_ms: later }))
            .await
            .unwrap();
    });
    let seqs: BTreeMap<String, i64> = store
        .due_now(now_ms(), 10)
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.seq))
        .collect();
    let read = |wants: Vec<Want>| {
        let ready = ops::ready(&lock(&store.inner.reader), now_ms(), &wants).unwrap();
        let ids: Vec<String> = ready.due.iter().map(|d| d.pending.id.clone()).collect();
        (ids, ready.next_at)
    };
    let want = |target: &str, free: usize, running: &[&str]| Want {
        target: target.to_owned(),
        free,
        running: running.iter().map(|id| seqs[*id]).collect(),
    };
    // check(wants, expected ids, expected next due)
    let cases: Vec<(Vec<Want>, Vec<&str>, Option<i64>)> = vec![
        (vec![want("jenkins:a", 2, &[])], vec!["a1", "a2"], None),
        (vec![want("jenkins:a", 2, &["a1"])], vec!["a2", "a3"], None),
        (
            vec![want("jenkins:a", 8, &["a2"])],
            vec!["a1", "a3", "a4"],
            None,
        ),
        (vec![want("jenkins:a", 0, &[])], vec![], None),
        // b2 is retrying later: reported only while b has a slot left after b1.
        (vec![want("jenkins:b", 2, &[])], vec!["b1"], Some(later)),
        (vec![want("jenkins:b", 1, &[])], vec!["b1"], None),
        (vec![want("jenkins:b", 1, &["b1"])], vec![], Some(later)),
        (
            vec![want("jenkins:a", 1, &[]), want("jenkins:b", 4, &[])],
            vec!["a1", "b1"],
            Some(later),
        ),
        (vec![want("jenkins:gone", 4, &[])], vec![], None),
    ];
    for (wants, ids, next_at) in cases {
        let described = format!("{wants:?}");
        assert_eq!(
            read(wants),
            (ids.iter().map(|s| s.to_string()).collect(), next_at),
            "{described}"
        );
    }
}

#[test]
fn deliveries_of_a_target_no_longer_configured_are_found_as_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        store.accept(delivery("kept", "r", None)).await.unwrap();
        store
            .accept(NewDelivery {
                target: target_id("sink", "removed"),
                ..delivery("orphan", "r", None)
            })
            .await
            .unwrap();
    });
    let orphans = |known: &[&str]| {
        let known: Vec<String> = known.iter().map(|s| s.to_string()).collect();
        pending_ids(ops::orphans(&lock(&store.inner.reader), &known, &[], &[], 10).unwrap())
    };
    assert_eq!(orphans(&["jenkins:main"]), ["orphan"]);
    assert_eq!(
        orphans(&["jenkins:main", "sink:removed"]),
        Vec::<String>::new()
    );
}

/// A reload that removes a rule (or sends it to another Jenkins) leaves its queued calls to
/// no target: they are found at once, while the other rules' calls stay.
#[test]
fn deliveries_of_a_rule_its_target_no_longer_makes_are_found_as_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        store.accept(delivery("a1", "a", None)).await.unwrap();
        store.accept(delivery("b1", "b", None)).await.unwrap();
        store
            .accept(NewDelivery {
                target: target_id("sink", "s"),
                ..delivery("s1", "a", None)
            })
            .await
            .unwrap();
    });
    let known: Vec<String> = ["jenkins:main", "sink:s"].map(str::to_owned).to_vec();
    let orphans = |rules: &[&str]| {
        let scoped = vec![(
            "jenkins:main".to_owned(),
            rules.iter().map(|s| s.to_string()).collect(),
        )];
        pending_ids(ops::orphans(&lock(&store.inner.reader), &known, &scoped, &[], 10).unwrap())
    };
    for (rules, expected) in [
        (&["a", "b"][..], &[][..]),
        (&["a"][..], &["b1"][..]),
        (&[][..], &["a1", "b1"][..]),
    ] {
        // The sink's delivery names rule `a` too, but its target makes any rule's.
        assert_eq!(orphans(rules), expected, "{rules:?}");
    }
    // One being settled already is not found again.
    let everything = [("jenkins:main".to_owned(), Vec::new())];
    let found = ops::orphans(&lock(&store.inner.reader), &known, &everything, &[], 10).unwrap();
    let busy = [found[0].seq];
    let rest = ops::orphans(&lock(&store.inner.reader), &known, &everything, &busy, 10).unwrap();
    assert_eq!(pending_ids(rest), ["b1"]);
}

/// A store as schema 5 wrote it (before `report` and `run_items`).
fn write_schema_5(dir: &Path, rows: &str) {
    write_schema_4(dir, "");
    let conn = rusqlite::Connection::open(dir.join("deliveries.sqlite3")).unwrap();
    conn.execute_batch(&format!(
        "ALTER TABLE deliveries ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
         {rows}
         PRAGMA user_version = 5;"
    ))
    .unwrap();
}

#[test]
fn a_schema_5_store_is_migrated_and_keeps_its_pending_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    write_schema_5(
        dir.path(),
        "INSERT INTO deliveries (seq, id, target, state, content_type, accepted_at,
                next_attempt_at, held)
            VALUES (3, 'old', 'jenkins:main', 'queued', 'application/json', 3, 3, 0);
         INSERT INTO bodies VALUES (3, X'7B7D');",
    );
    let store = Store::open(dir.path(), 0).unwrap();
    let due = store.due_now(now_ms(), 10).unwrap();
    assert_eq!(pending_ids(due.clone()), ["old"]);
    assert_eq!(due[0].report, None);
}

/// Jenkins accepted a reported trigger: its queue items name the run, in the outcome's own
/// transaction, until the correlation's TTL passes.
#[test]
fn a_reported_triggers_queue_items_name_its_run_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    let report = r#"{"sink":"port","run":"r_1"}"#;
    let correlate = |items: Vec<(u64, String)>, ttl_ms: i64| Effect::Correlate {
        jenkins: "jenkins:main".to_owned(),
        sink: "port".to_owned(),
        run_id: "r_1".to_owned(),
        items,
        ttl_ms,
    };
    runtime().block_on(async {
        store
            .accept(NewDelivery {
                report: Some(report.to_owned()),
                ..delivery("d1", "r", None)
            })
            .await
            .unwrap();
        let due = store.due_now(now_ms(), 10).unwrap();
        assert_eq!(due[0].report.as_deref(), Some(report));
        store
            .record(
                "d1".into(),
                AttemptRecord {
                    effects: vec![correlate(
                        vec![
                            (7, "team/deploy-a".to_owned()),
                            (8, "team/deploy-b".to_owned()),
                        ],
                        60_000,
                    )],
                    ..attempt(Next::Done { receipt: None })
                },
            )
            .await
            .unwrap();
        for queue_id in [7, 8] {
            assert_eq!(
                store.run_of("jenkins:main".into(), queue_id).await.unwrap(),
                Some(("port".to_owned(), "r_1".to_owned())),
                "{queue_id}"
            );
        }
        assert_eq!(store.run_of("jenkins:main".into(), 9).await.unwrap(), None);
        assert_eq!(store.run_of("jenkins:other".into(), 7).await.unwrap(), None);
        // An outcome for a delivery that is no longer pending writes nothing, effects neither.
        store
            .record(
                "d1".into(),
                AttemptRecord {
                    effects: vec![correlate(vec![(9, "x".to_owned())], 60_000)],
                    ..attempt(Next::Done { receipt: None })
                },
            )
            .await
            .unwrap();
        assert_eq!(store.run_of("jenkins:main".into(), 9).await.unwrap(), None);
        // Past its TTL the correlation is gone, and the purge deletes it.
        store.accept(delivery("d2", "r", None)).await.unwrap();
        store
            .record(
                "d2".into(),
                AttemptRecord {
                    effects: vec![correlate(vec![(10, "y".to_owned())], -60_000)],
                    ..attempt(Next::Done { receipt: None })
                },
            )
            .await
            .unwrap();
        assert_eq!(store.run_of("jenkins:main".into(), 10).await.unwrap(), None);
        store.purge(0).await.unwrap();
        let left: i64 = lock(&store.inner.reader)
            .query_row(
                "SELECT COUNT(*) FROM run_items WHERE queue_id = 10",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    });
}

/// The run updates queued for the port sink `port`, oldest first: (run, update kind, held).
fn run_updates(store: &Store) -> Vec<(String, String, bool)> {
    let conn = lock(&store.inner.reader);
    let mut statement = conn
        .prepare(
            "SELECT b.body, d.held FROM deliveries AS d JOIN bodies AS b ON b.delivery_seq = d.seq
             WHERE d.target = 'sink:port' ORDER BY d.seq",
        )
        .unwrap();
    statement
        .query_map([], |row| {
            let body: Vec<u8> = row.get(0)?;
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            Ok((
                body["run"].as_str().unwrap_or_default().to_owned(),
                body["update"].as_str().unwrap_or_default().to_owned(),
                row.get(1)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn update(run: &str, kind: &str, terminal: bool) -> Effect {
    Effect::Update {
        sink: "port".to_owned(),
        run_id: run.to_owned(),
        delivery_id: ulid::Ulid::generate().to_string(),
        body: serde_json::json!({"run": run, "update": kind}).to_string(),
        terminal,
    }
}

fn finished(run: &str, queue_id: Option<u64>, job: &str) -> Effect {
    Effect::Finished {
        sink: "port".to_owned(),
        run_id: run.to_owned(),
        jenkins: "jenkins:main".to_owned(),
        queue_id,
        build: serde_json::json!({"job": job}).to_string(),
        delivery_id: ulid::Ulid::generate().to_string(),
    }
}

/// A run's updates are queued in order behind each other; it ends when the last of its queue
/// items finishes and no reported trigger of it is pending, and it gets one terminal update.
#[test]
fn a_run_ends_once_with_its_last_build_and_nothing_is_queued_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    let built = |run: &str| {
        let conn = lock(&store.inner.reader);
        conn.query_row(
            "SELECT builds, ended_at IS NOT NULL FROM runs WHERE sink = 'port' AND run_id = ?1",
            [run],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?)),
        )
        .unwrap()
    };
    runtime().block_on(async {
        store
            .accept(NewDelivery {
                report: Some(report_text("port", "r_1")),
                ..delivery("d1", "r", None)
            })
            .await
            .unwrap();
        // Its trigger is pending: a build event of that Jenkins cannot know its run yet.
        let lookup = store
            .lookup_run("jenkins:main".into(), Some(7))
            .await
            .unwrap();
        assert_eq!(
            lookup,
            RunLookup {
                run: None,
                trigger_pending: true
            }
        );
        let other = store.lookup_run("jenkins:other".into(), Some(7)).await;
        assert!(!other.unwrap().trigger_pending);
        store
            .record(
                "d1".into(),
                AttemptRecord {
                    effects: vec![
                        Effect::Correlate {
                            jenkins: "jenkins:main".to_owned(),
                            sink: "port".to_owned(),
                            run_id: "r_1".to_owned(),
                            items: vec![(7, "a".to_owned()), (8, "b".to_owned())],
                            ttl_ms: 60_000,
                        },
                        update("r_1", "queued", false),
                    ],
                    ..attempt(Next::Done { receipt: None })
                },
            )
            .await
            .unwrap();
        let lookup = store
            .lookup_run("jenkins:main".into(), Some(8))
            .await
            .unwrap();
        assert_eq!(
            lookup,
            RunLookup {
                run: Some(("port".to_owned(), "r_1".to_owned())),
                trigger_pending: false
            }
        );
        store
            .apply_now(vec![update("r_1", "running", false)])
            .await
            .unwrap();
        // One of two builds finished: the run goes on.
        store
            .apply_now(vec![finished("r_1", Some(7), "a")])
            .await
            .unwrap();
        assert_eq!(built("r_1"), (r#"[{"job":"a"}]"#.to_owned(), false));
        store
            .apply_now(vec![finished("r_1", Some(8), "b")])
            .await
            .unwrap();
        assert_eq!(
            built("r_1"),
            (r#"[{"job":"a"},{"job":"b"}]"#.to_owned(), true)
        );
        // Anything after the end is not queued: a late STARTED, a FINALIZED again, a failure.
        store
            .apply_now(vec![
                update("r_1", "running", false),
                finished("r_1", Some(8), "b"),
                update("r_1", "trigger_failed", true),
            ])
            .await
            .unwrap();
        // Updates wait for the one before them: only the oldest of the run may start.
        let run = |kind: &str, held: bool| ("r_1".to_owned(), kind.to_owned(), held);
        assert_eq!(
            run_updates(&store),
            [
                run("queued", false),
                run("running", true),
                run("finished", true)
            ]
        );
        let conn = lock(&store.inner.reader);
        let terminal: Vec<u8> = conn
            .query_row(
                "SELECT b.body FROM deliveries AS d JOIN bodies AS b ON b.delivery_seq = d.seq
                 WHERE d.target = 'sink:port' ORDER BY d.seq DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(terminal).unwrap(),
            finished_update(
                "r_1",
                &[
                    serde_json::json!({"job": "a"}),
                    serde_json::json!({"job": "b"})
                ]
            )
        );
    });
}

/// A build named by its parameters ends its run at once, unless a reported trigger of that run
/// is still pending; a terminal update ends a run whatever comes after.
#[test]
fn a_pending_trigger_of_the_run_holds_its_end_and_one_terminal_update_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        // A build started by hand with PORT_RUN_ID: no queue item recorded, no trigger.
        store
            .apply_now(vec![finished("r_hand", None, "a")])
            .await
            .unwrap();
        // A run whose trigger is still pending does not end with a build of it.
        store
            .accept(NewDelivery {
                report: Some(report_text("port", "r_2")),
                ..delivery("d2", "r", None)
            })
            .await
            .unwrap();
        store
            .apply_now(vec![finished("r_2", None, "a")])
            .await
            .unwrap();
        store
            .record(
                "d2".into(),
                AttemptRecord {
                    effects: vec![update("r_2", "trigger_failed", true)],
                    ..attempt(Next::Dead {
                        reason: "Jenkins answered 404".into(),
                    })
                },
            )
            .await
            .unwrap();
        // Two terminal updates for one run (two filtered rules): the first one is kept.
        store
            .apply_now(vec![
                update("r_3", "filtered", true),
                update("r_3", "filtered", true),
            ])
            .await
            .unwrap();
    });
    let run = |run: &str, kind: &str| (run.to_owned(), kind.to_owned(), false);
    assert_eq!(
        run_updates(&store),
        [
            run("r_hand", "finished"),
            run("r_2", "trigger_failed"),
            run("r_3", "filtered")
        ]
    );
    // Runs are kept as long as build facts are, and purged with them.
    runtime().block_on(store.purge(now_ms() + 60_000)).unwrap();
    let runs: i64 = lock(&store.inner.reader)
        .query_row("SELECT COUNT(*) FROM runs", [], |row| row.get(0))
        .unwrap();
    assert_eq!(runs, 0);
}

/// A store as schema 6 wrote it: `run_items` without `finished`, no `runs`.
#[test]
fn a_schema_6_store_is_migrated_with_its_run_items() {
    let dir = tempfile::tempdir().unwrap();
    write_schema_5(dir.path(), "");
    {
        let conn = rusqlite::Connection::open(dir.path().join("deliveries.sqlite3")).unwrap();
        conn.execute_batch(
            "ALTER TABLE deliveries ADD COLUMN report TEXT;
             CREATE TABLE run_items (jenkins TEXT NOT NULL, queue_id INTEGER NOT NULL,
                 sink TEXT NOT NULL, run_id TEXT NOT NULL, job TEXT NOT NULL,
                 expires_at INTEGER NOT NULL, PRIMARY KEY (jenkins, queue_id));
             INSERT INTO run_items VALUES ('jenkins:main', 7, 'port', 'r_1', 'a', 9000000000000);
             PRAGMA user_version = 6;",
        )
        .unwrap();
    }
    let store = Store::open(dir.path(), 0).unwrap();
    runtime().block_on(async {
        let lookup = store
            .lookup_run("jenkins:main".into(), Some(7))
            .await
            .unwrap();
        assert_eq!(lookup.run, Some(("port".to_owned(), "r_1".to_owned())));
        store
            .apply_now(vec![finished("r_1", Some(7), "a")])
            .await
            .unwrap();
    });
    assert_eq!(
        run_updates(&store),
        [("r_1".to_owned(), "finished".to_owned(), false)]
    );
}

/// A run some of whose builds Jenkins never reported is ended by the purge once their queue
/// items expire; until then it is kept, with the builds that did finish.
#[test]
fn a_run_whose_build_never_reports_ends_when_its_item_expires_and_is_kept_until_then() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    let correlate = |queue_id: u64, job: &str, ttl_ms: i64| Effect::Correlate {
        jenkins: "jenkins:main".to_owned(),
        sink: "port".to_owned(),
        run_id: "r_1".to_owned(),
        items: vec![(queue_id, job.to_owned())],
        ttl_ms,
    };
    runtime().block_on(async {
        store
            .apply_now(vec![
                correlate(1, "deploy-api", 3_600_000),
                correlate(2, "deploy-worker", 3_600_000),
                finished("r_1", Some(1), "deploy-api"),
            ])
            .await
            .unwrap();
        // A purge whose retention has passed keeps the run: one of its builds is still out.
        store.purge(now_ms() + 60_000).await.unwrap();
        let runs: i64 = lock(&store.inner.reader)
            .query_row("SELECT COUNT(*) FROM runs", [], |row| row.get(0))
            .unwrap();
        assert_eq!(runs, 1);
        assert!(run_updates(&store).is_empty());
        // The second item expires unfinished: the purge ends the run.
        store
            .apply_now(vec![correlate(2, "deploy-worker", -1)])
            .await
            .unwrap();
        store.purge(0).await.unwrap();
        // A late FINALIZED of it changes nothing.
        store
            .apply_now(vec![finished("r_1", Some(2), "deploy-worker")])
            .await
            .unwrap();
    });
    assert_eq!(
        run_updates(&store),
        [("r_1".to_owned(), "unreported".to_owned(), false)]
    );
    let conn = lock(&store.inner.reader);
    let body: Vec<u8> = conn
        .query_row(
            "SELECT b.body FROM deliveries AS d JOIN bodies AS b ON b.delivery_seq = d.seq
             WHERE d.target = 'sink:port'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        unreported_update(
            "r_1",
            &[serde_json::json!({"job": "deploy-api"})],
            &["deploy-worker".to_owned()]
        )
    );
}

/// A delivery that waits is asked again later with no attempt counted or kept.
#[test]
fn a_wait_is_not_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    runtime()
        .block_on(store.accept(delivery("d1", "r", None)))
        .unwrap();
    let later = now_ms() + 60_000;
    for _ in 0..30 {
        store.record_now("d1", Next::Wait { at_ms: later });
    }
    let view = store.get_now("d1").unwrap().unwrap();
    assert_eq!(view.state, State::Queued);
    assert_eq!(view.next_attempt_at, Some(later));
    assert!(view.attempts.is_empty());
    assert!(store.due_now(now_ms(), 10).unwrap().is_empty());
    // Its retry budget is whole: a failure after the waits is a retry, not the last attempt.
    let due = store.due_now(later, 10).unwrap();
    assert_eq!(due[0].budget_used, 0);
}

/// An ended run takes no more queue items (its trigger requeued by an operator and accepted),
/// a build of it finishing marks its item finished all the same, and the run is kept as long
/// as any of its items is, so it never ends twice.
#[test]
fn an_ended_run_takes_no_more_items_and_is_kept_while_its_items_are() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 0).unwrap();
    let correlate = |run: &str, queue_id: u64, ttl_ms: i64| Effect::Correlate {
        jenkins: "jenkins:main".to_owned(),
        sink: "port".to_owned(),
        run_id: run.to_owned(),
        items: vec![(queue_id, "deploy".to_owned())],
        ttl_ms,
    };
    let items = |store: &Store| -> Vec<(i64, bool)> {
        let conn = lock(&store.inner.reader);
        let mut statement = conn
            .prepare("SELECT queue_id, finished FROM run_items ORDER BY queue_id")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    runtime().block_on(async {
        store
            .apply_now(vec![update("r_dead", "trigger_failed", true)])
            .await
            .unwrap();
        store
            .apply_now(vec![correlate("r_dead", 1, 3_600_000)])
            .await
            .unwrap();
        assert!(items(&store).is_empty(), "no item for an ended run");
        // A run with an item that ends by another way (two rules; one trigger dead).
        store
            .apply_now(vec![
                correlate("r_two", 2, 3_600_000),
                update("r_two", "trigger_failed", true),
                finished("r_two", Some(2), "deploy"),
            ])
            .await
            .unwrap();
        assert_eq!(items(&store), [(2, true)]);
        // A purge past the run's retention keeps it while its item is kept…
        store.purge(now_ms() + 60_000).await.unwrap();
        let runs = |store: &Store| -> i64 {
            lock(&store.inner.reader)
                .query_row(
                    "SELECT COUNT(*) FROM runs WHERE run_id = 'r_two'",
                    [],
                    |row| row.get(0),
                )
                .unwrap()
        };
        assert_eq!(runs(&store), 1);
        // …and when the item expires, the run is not ended a second time.
        store
            .apply_now(vec![update("r_other", "queued", false)])
            .await
            .unwrap();
        lock(&store.inner.reader)
            .execute("UPDATE run_items SET expires_at = 0", [])
            .unwrap();
        store.purge(now_ms() + 60_000).await.unwrap();
        assert_eq!(runs(&store), 0);
    });
    let kinds: Vec<String> = run_updates(&store).into_iter().map(|u| u.1).collect();
    assert_eq!(kinds, ["trigger_failed", "trigger_failed", "queued"]);
}
