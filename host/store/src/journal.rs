//! The journal: one writer task that applies write requests in group-committed transactions.
//!
//! Each request is a closure over the writer's connection. The writer takes every request waiting in its queue,
//! runs each inside a savepoint (a failing request rolls back alone), commits once, and only then answers each
//! caller. So a caller that awaits [`Journal::write`] knows its change is committed — the engine acts on a
//! transition only after that — while many concurrent callers share one commit.
//!
//! The writer owns its connection (a `WriterConn`): when the store cannot write (read-only, full, an I/O error),
//! the batch's callers get an error of [`crate::ErrorKind::Unavailable`] — nothing of it was kept — the
//! connection is closed, and the next batch reconnects. A request is never retried behind its caller's back: a
//! closure runs once, and its caller decides.

use std::future::Future;
use std::pin::Pin;

use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ErrorKind, StoreError};
use crate::write::{self, TaskChange};
use crate::writer::WriterConn;

/// How many requests may wait for the writer before callers wait too (back-pressure, not loss).
const QUEUE: usize = 16 * 1024;
/// The most requests applied in one transaction.
const MAX_BATCH: usize = 4 * 1024;

/// A boxed future borrowing the writer's connection.
pub type WriteFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

/// How a request ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// It succeeded: keep its changes.
    Ok,
    /// It failed: roll its savepoint back.
    Failed,
    /// It failed because the store could not do it: roll back, and reconnect after this batch.
    Unavailable,
}

trait Job: Send {
    /// Runs the request.
    fn run<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = Ran> + Send + 'c>>;
    fn deliver(self: Box<Self>, committed: Result<(), String>);
    /// Answers the caller with `error` without running the request.
    fn refuse(self: Box<Self>, error: &StoreError);
}

struct Typed<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, T> + Send + 'static,
{
    fn run<'c>(
        &'c mut self,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = Ran> + Send + 'c>> {
        Box::pin(async move {
            let Some(f) = self.f.take() else {
                return Ran::Ok;
            };
            let result = f(conn).await;
            let ran = match &result {
                Ok(_) => Ran::Ok,
                Err(e) if e.kind() == ErrorKind::Unavailable => Ran::Unavailable,
                Err(_) => Ran::Failed,
            };
            self.out = Some(result);
            ran
        })
    }

    fn refuse(self: Box<Self>, error: &StoreError) {
        let _ = self.reply.send(Err(unavailable(error)));
    }

    fn deliver(self: Box<Self>, committed: Result<(), String>) {
        let Typed { out, reply, .. } = *self;
        let result = match (committed, out) {
            (_, Some(Err(e))) => Err(e),
            (Err(message), _) => Err(StoreError::Commit(message)),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Ok(()), None) => Err(StoreError::WriterGone),
        };
        let _ = reply.send(result);
    }
}

/// A request to the writer: a closure, or task changes (which the writer can send to the database together).
enum Request {
    Job(Box<dyn Job>),
    Tasks {
        changes: Vec<TaskChange>,
        reply: TaskReply,
    },
    /// Stop after what is queued before this, returning the connection to the pool.
    Close(oneshot::Sender<()>),
}

/// Sends write requests to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

/// The same failure for another caller of a batch (errors are not `Clone`).
fn unavailable(error: &StoreError) -> StoreError {
    StoreError::Commit(error.to_string())
}

impl Journal {
    pub(crate) fn spawn(writer: WriterConn) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(writer, rx));
        Self { tx }
    }

    /// Applies `f` in a transaction and returns its result once that transaction is committed. If `f` fails, its
    /// changes are rolled back and its error returned; other requests in the same transaction are unaffected.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            f: Some(f),
            out: None,
            reply,
        });
        self.tx
            .send(Request::Job(job))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Applies task changes (see [`write::apply`]) in a transaction and returns, once it is committed, for each
    /// change the attempt it started or recorded, or `None` if the row had moved on. A guarded settle that finds
    /// its row moved on fails the request with [`StoreError::Conflict`], and none of its changes are kept.
    ///
    /// When every waiting request is of this kind, the writer sends them all, with the transaction's `BEGIN` and
    /// `COMMIT`, in one round trip to the database.
    pub async fn apply(&self, changes: Vec<TaskChange>) -> Result<Vec<Option<i64>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Tasks { changes, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

type TaskReply = oneshot::Sender<Result<Vec<Option<i64>>, StoreError>>;

/// Applies task-change requests alone in the batch: all in one round trip (one transaction); if that fails (a
/// guard, a busy database), each request again in its own transaction, so only the failing ones fail. Returns
/// the failure of the store, if there was one (the connection must then be reopened).
async fn apply_tasks(
    conn: &mut SqliteConnection,
    requests: Vec<(Vec<TaskChange>, TaskReply)>,
) -> Result<(), StoreError> {
    use sqlx::Executor;
    let together = match write::batch_args(requests.iter().flat_map(|(c, _)| c.iter())) {
        Ok(args) => match write::run_batch(conn, args, true).await {
            Ok(returned) => Some(returned),
            Err(e) => {
                let _ = conn.execute("ROLLBACK").await;
                if e.kind() == ErrorKind::Unavailable {
                    // The store cannot write: every request would fail the same way.
                    for (_, reply) in requests {
                        let _ = reply.send(Err(unavailable(&e)));
                    }
                    return Err(e);
                }
                tracing::debug!(error = %e, "a batch of task changes failed; applying them one by one");
                None
            }
        },
        Err(_) => None,
    };
    if let Some(returned) = together {
        for (changes, reply) in requests {
            let _ = reply.send(Ok(write::batch_answers(&changes, &returned)));
        }
        return Ok(());
    }
    let mut failure = Ok(());
    for (changes, reply) in requests {
        let result = match write::batch_args(changes.iter()) {
            Ok(args) => match write::run_batch(conn, args, true).await {
                Ok(returned) => Ok(write::batch_answers(&changes, &returned)),
                Err(e) => {
                    let _ = conn.execute("ROLLBACK").await;
                    if e.kind() == ErrorKind::Unavailable && failure.is_ok() {
                        failure = Err(unavailable(&e));
                    }
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        let _ = reply.send(result);
    }
    failure
}

impl Journal {
    /// Commits what was sent before, then stops the writer and returns its connection to the pool. Writes sent
    /// afterwards fail with [`StoreError::WriterGone`].
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Request::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// A job applying task changes (for a batch that also has closures).
fn task_job(
    changes: Vec<TaskChange>,
) -> impl for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, Vec<Option<i64>>> + Send + 'static
{
    move |c| Box::pin(async move { write::apply(c, &changes).await })
}

async fn write_loop(mut writer: WriterConn, mut rx: mpsc::Receiver<Request>) {
    let mut requests: Vec<Request> = Vec::with_capacity(64);
    while rx.recv_many(&mut requests, MAX_BATCH).await > 0 {
        let mut jobs: Vec<Box<dyn Job>> = Vec::new();
        let mut tasks = Vec::new();
        let mut close = None;
        for request in requests.drain(..) {
            match request {
                Request::Job(job) => jobs.push(job),
                Request::Tasks { changes, reply } => tasks.push((changes, reply)),
                Request::Close(done) => close = Some(done),
            }
        }
        flush_batch(&mut writer, jobs, tasks).await;
        if let Some(done) = close {
            rx.close();
            // Anything that raced in after the close is refused (its sender sees `WriterGone`).
            while rx.try_recv().is_ok() {}
            writer.reset().await;
            let _ = done.send(());
            return;
        }
    }
}

/// Applies one batch of requests on the writer's connection, reconnecting next time if the store failed.
async fn flush_batch(
    writer: &mut WriterConn,
    jobs: Vec<Box<dyn Job>>,
    tasks: Vec<(Vec<TaskChange>, TaskReply)>,
) {
    if jobs.is_empty() && tasks.is_empty() {
        return;
    }
    let conn = match writer.get().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "the journal cannot reach the database; its callers are told");
            for job in jobs {
                job.refuse(&e);
            }
            for (_, reply) in tasks {
                let _ = reply.send(Err(unavailable(&e)));
            }
            return;
        }
    };
    let failure = write_batch(conn, jobs, tasks).await;
    match failure {
        Ok(()) => writer.committed(),
        Err(e) => writer.failed(&e).await,
    }
}

/// Applies one batch; the failure of the store, if there was one.
async fn write_batch(
    conn: &mut SqliteConnection,
    mut jobs: Vec<Box<dyn Job>>,
    tasks: Vec<(Vec<TaskChange>, TaskReply)>,
) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return apply_tasks(conn, tasks).await;
    }
    // Mixed: task changes become jobs of their own (each in its savepoint).
    for (changes, reply) in tasks {
        jobs.push(Box::new(Typed {
            f: Some(task_job(changes)),
            out: None,
            reply,
        }));
    }
    let (committed, unavailable) = apply(conn, &mut jobs).await;
    if let Err(e) = &committed {
        tracing::error!(error = %e, requests = jobs.len(), "journal commit failed");
    }
    let failure = match &committed {
        Err(message) => Err(StoreError::Commit(message.clone())),
        Ok(()) if unavailable => Err(StoreError::Commit(
            "a request failed because the store could not write".into(),
        )),
        Ok(()) => Ok(()),
    };
    for job in jobs.drain(..) {
        job.deliver(committed.clone());
    }
    failure
}

/// Runs the jobs in one transaction: whether it committed, and whether a job failed because the store could not
/// write (its connection is then reopened even if the rest committed).
async fn apply(
    conn: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
) -> (Result<(), String>, bool) {
    use sqlx::Executor;
    let fail = |e: sqlx::Error| e.to_string();
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        return (Err(fail(e)), false);
    }
    if let [job] = batch {
        // Alone in its transaction, a request needs no savepoint: if it fails, the whole transaction is its own.
        let ran = job.run(conn).await;
        if ran != Ran::Ok {
            let _ = conn.execute("ROLLBACK").await;
            return (Ok(()), ran == Ran::Unavailable);
        }
        if let Err(e) = conn.execute("COMMIT").await {
            let _ = conn.execute("ROLLBACK").await;
            return (Err(e.to_string()), false);
        }
        return (Ok(()), false);
    }
    let mut unavailable = false;
    for job in batch.iter_mut() {
        if let Err(e) = conn.execute("SAVEPOINT job").await {
            let _ = conn.execute("ROLLBACK").await;
            return (Err(e.to_string()), unavailable);
        }
        let ran = job.run(conn).await;
        unavailable |= ran == Ran::Unavailable;
        let end = if ran == Ran::Ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute(end).await {
            let _ = conn.execute("ROLLBACK").await;
            return (Err(e.to_string()), unavailable);
        }
    }
    if let Err(e) = conn.execute("COMMIT").await {
        let _ = conn.execute("ROLLBACK").await;
        return (Err(e.to_string()), unavailable);
    }
    (Ok(()), unavailable)
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[tokio::test]
    async fn a_failing_request_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let journal = store.journal();
        let ok = journal.write(|c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO plugin_kv VALUES ('n', 'a', x'01', 0)")
                    .execute(&mut *c)
                    .await?;
                Ok(1)
            })
        });
        let bad = journal.write(|c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO plugin_kv VALUES ('n', 'b', x'01', 0)")
                    .execute(&mut *c)
                    .await?;
                sqlx::query("INSERT INTO no_such_table VALUES (1)")
                    .execute(&mut *c)
                    .await?;
                Ok(2)
            })
        });
        let (ok, bad) = tokio::join!(ok, bad);
        assert_eq!(ok.unwrap(), 1);
        assert!(bad.is_err());
        assert!(store.kv_get("n", "a").await.unwrap().is_some());
        assert!(store.kv_get("n", "b").await.unwrap().is_none());
    }
}
