//! The store's single writer: a thread that owns the write connection and commits every waiting
//! piece of work in one transaction (group commit).
//!
//! Under load many requests wait on the same fsync instead of each paying for its own. If a
//! batch fails (a full disk, a constraint), each piece is retried alone so one bad write cannot
//! fail its neighbours.

use std::any::Any;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::StoreError;

/// Most pieces of work committed together; bounds the latency one commit adds.
const MAX_BATCH: usize = 1024;

/// How often an idle writer calls `after` anyway, so changes made by other processes (the
/// operator commands) show up without a write of the gateway's own.
const IDLE_REFRESH: Duration = Duration::from_secs(2);

/// Called on the writer's connection after every batch (and when idle), to publish what
/// readers of the gateway's memory need (the queue gauges) without them reading the store.
pub(super) type After = Box<dyn FnMut(&Connection) + Send>;

type Output = Box<dyn Any + Send>;
type Work = Box<dyn Fn(&Transaction<'_>) -> Result<Output, rusqlite::Error> + Send>;

struct Task {
    work: Work,
    reply: oneshot::Sender<Result<Output, StoreError>>,
}

/// Sends work to the writer thread.
pub(super) struct Handle {
    tasks: mpsc::Sender<Task>,
}

impl Handle {
    pub(super) fn spawn(conn: Connection, after: After) -> Self {
        let (tasks, receiver) = mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("hookgate-store".to_owned())
            .spawn(move || writer_loop(conn, &receiver, after))
            .map(|_| ())
            .unwrap_or_else(|error| {
                // Without a writer every write answers WriterGone, which the gateway reports
                // as an unavailable store (503) rather than crashing.
                tracing::error!(%error, "Cannot start the store writer thread.");
            });
        Self { tasks }
    }

    /// Runs `work` inside the next committed batch and returns its result after the commit.
    /// `work` may run twice (once in a batch that failed, once alone), so it must only write
    /// through the transaction it is given.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Transaction<'_>) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task = Task {
            work: Box::new(move |tx| work(tx).map(|value| Box::new(value) as Output)),
            reply,
        };
        self.tasks.send(task).map_err(|_| StoreError::WriterGone)?;
        let output = answer.await.map_err(|_| StoreError::WriterGone)??;
        output
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| StoreError::WriterGone)
    }
}

fn writer_loop(mut conn: Connection, receiver: &mpsc::Receiver<Task>, mut after: After) {
    after(&conn);
    loop {
        let first = match receiver.recv_timeout(IDLE_REFRESH) {
            Ok(task) => task,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                after(&conn);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(task) => batch.push(task),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch, &mut after);
    }
}

/// Commits the batch, publishes through `after` (before answering, so a caller that reads the
/// gauges after its write sees it), then answers each caller.
fn run_batch(conn: &mut Connection, batch: Vec<Task>, after: &mut After) {
    let committed = commit(conn, &batch);
    after(conn);
    match committed {
        Ok(outputs) => {
            for (task, output) in batch.into_iter().zip(outputs) {
                let _ = task.reply.send(Ok(output));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(task) = batch.into_iter().next() {
                let _ = task.reply.send(Err(StoreError::Sqlite(error)));
            }
        }
        Err(error) => {
            tracing::warn!(%error, size = batch.len(), "Store batch failed; committing its writes one by one.");
            let results: Vec<_> = batch
                .iter()
                .map(|task| {
                    commit(conn, std::slice::from_ref(task))
                        .map(|mut outputs| outputs.remove(0))
                        .map_err(StoreError::Sqlite)
                })
                .collect();
            after(conn);
            for (task, result) in batch.into_iter().zip(results) {
                let _ = task.reply.send(result);
            }
        }
    }
}

fn commit(conn: &mut Connection, batch: &[Task]) -> Result<Vec<Output>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outputs = Vec::with_capacity(batch.len());
    for task in batch {
        outputs.push((task.work)(&tx)?);
    }
    tx.commit()?;
    Ok(outputs)
}
