//! Checkpoints the store's write-ahead log on a thread of its own, so a commit (and the caller
//! waiting for its 202) never waits while WAL pages are copied into the database and fsync'd.
//!
//! SQLite's automatic checkpoint runs inside the commit that pushes the WAL past 1,000 pages:
//! that caller, and every call batched with it, waits for the copy and an fsync of the database
//! file, which on a slow disk took hundreds of milliseconds (BENCHMARKS.md, issue 12). Here the
//! writer's connection has automatic checkpoints off, and this thread runs a PASSIVE
//! checkpoint, which never blocks the writer, soon after commits.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use rusqlite::Connection;

/// Longest time commits accumulate in the WAL before a checkpoint copies them.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Tells the checkpoint thread that the WAL has grown.
#[derive(Clone)]
pub(super) struct Nudge(SyncSender<()>);

impl Nudge {
    /// Never blocks: one pending nudge stands for any number of commits.
    pub(super) fn send(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the checkpoint thread on `conn`; it ends when every [`Nudge`] is dropped. `None` when
/// the thread cannot start: the caller then keeps SQLite's automatic checkpoints.
pub(super) fn spawn(conn: Connection) -> Option<Nudge> {
    let (nudge, nudged) = sync_channel(1);
    std::thread::Builder::new()
        .name("hookgate-checkpoint".to_owned())
        .spawn(move || run(&conn, &nudged))
        .map_err(|error| {
            tracing::warn!(%error, "Cannot start the store's checkpoint thread; commits checkpoint the WAL themselves.");
        })
        .ok()?;
    Some(Nudge(nudge))
}

fn run(conn: &Connection, nudged: &Receiver<()>) {
    while nudged.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_EVERY);
        while nudged.try_recv().is_ok() {}
        // (busy, frames in the WAL, frames copied): busy only while another connection (an
        // operator command's) checkpoints; the next nudge tries again.
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        });
        if let Err(error) = result {
            tracing::warn!(%error, "Cannot checkpoint the store's WAL.");
        }
    }
}
