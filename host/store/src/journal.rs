//! The journal: every write of the orchestrator, group-committed on one connection, on the caller's thread.
//!
//! A write is a [`Command`](crate::Command) (or, inside the store, a closure over a [`Tx`]). The caller puts it
//! on the journal's queue and tries to become the *leader*; the leader takes everything queued, applies it in
//! one transaction (each request inside a savepoint, so a failing request rolls back alone), commits, answers
//! every caller, and looks at the queue again before it lets go. Whoever finds a leader at work just waits for
//! its answer (*flat combining*). So a caller that awaits a write knows its change is committed — the engine acts
//! on a transition only after that — and many concurrent callers share one commit, with no thread hand-off on
//! the way: SQLite runs on the thread that asked, a commit in WAL mode with `synchronous = NORMAL` being a
//! write into the OS's page cache (tens of microseconds).
//!
//! Two things would hold a tokio worker thread too long, and move the leader to a blocking thread instead
//! (`spawn_blocking`): the write lock held by another connection (the SIEM's bulk writer, another process), seen
//! as `SQLITE_BUSY` from `BEGIN IMMEDIATE` with no busy timeout on the fast path, and
//! [`Durability::Fsync`], whose every commit waits for the disk. There the connection waits for the lock up to
//! the store's busy timeout, as before.
//!
//! The connection heals: when the store cannot write (read-only, full, an I/O error) the callers of that batch get
//! an error of [`crate::ErrorKind::Unavailable`] — nothing of it was kept — the connection is closed, and the
//! next batch reconnects (checking that SQLite did not open the file read-only). A request is never retried
//! behind its caller's back: it runs once, and its caller decides.
//!
//! The journal's connection checkpoints the WAL itself, every ~40 MiB of log (`wal_autocheckpoint = 10000`
//! pages, as the store's other connections): a checkpoint run elsewhere while the journal keeps committing can
//! never catch up with the log's end, so the log would never start over and grow without bound (each write
//! then extends the file, which the file system zeroes first). A checkpoint copies the distinct pages back and
//! syncs the database file: a few milliseconds every few thousand commits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::error::{ErrorKind, StoreError};
pub use crate::sql::Tx;
use crate::sql::{Conn, PgConn};
use crate::writer::HealthCell;

/// The most requests applied in one transaction.
const MAX_BATCH: usize = 4 * 1024;
/// How many batches a caller leads on its own thread before it hands the rest of the queue to a task (so a
/// caller is not kept leading for others forever).
const INLINE_ROUNDS: usize = 4;
/// How many prepared statements the connection keeps.
const STATEMENT_CACHE: usize = 128;

/// How durable a commit is before its caller is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Survives the death of the process (`kill -9`, a panic, the OOM killer): SQLite's WAL mode with
    /// `synchronous = NORMAL` writes every commit to the log before it returns, and syncs at checkpoints. An OS
    /// crash or power loss may lose the last commits, never corrupting the database. The default.
    #[default]
    Process,
    /// Also survives an OS crash or power loss: `synchronous = FULL` syncs the log at every commit (a few
    /// milliseconds each on most disks, shared by the requests of one batch).
    Fsync,
}

impl Durability {
    /// SQLite's `synchronous` setting for it.
    pub(crate) fn synchronous(self) -> &'static str {
        match self {
            Self::Process => "NORMAL",
            Self::Fsync => "FULL",
        }
    }
}

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
    /// Runs the request (once).
    fn run(&mut self, tx: &Tx<'_>) -> Ran;
    /// Answers the caller: its result if the transaction committed (`Ok`), or the commit's failure.
    fn deliver(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Typed<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, tx: &Tx<'_>) -> Ran {
        let Some(f) = self.f.take() else {
            return Ran::Ok;
        };
        let result = f(tx);
        let ran = match &result {
            Ok(_) => Ran::Ok,
            Err(e) if e.kind() == ErrorKind::Unavailable => Ran::Unavailable,
            Err(_) => Ran::Failed,
        };
        self.out = Some(result);
        ran
    }

    fn deliver(self: Box<Self>, committed: Result<(), &StoreError>) {
        let Typed { out, reply, .. } = *self;
        let result = match (committed, out) {
            (_, Some(Err(e))) => Err(e),
            (Err(e), _) => Err(StoreError::Commit(e.to_string())),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Ok(()), None) => Err(StoreError::WriterGone),
        };
        let _ = reply.send(result);
    }
}

type Batch = Vec<Box<dyn Job>>;

/// Where writes wait for the leader.
#[derive(Default)]
struct Queue {
    jobs: Batch,
    closed: bool,
}

/// Which database the journal writes to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The SQLite file at this path.
    Sqlite(PathBuf, Durability),
    /// The PostgreSQL server at this URL.
    Postgres(String),
}

/// The connection and what it needs to reopen.
struct Writer {
    target: Target,
    conn: Option<Conn>,
    health: HealthCell,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Whether someone leads (only the leader touches `writer`).
    leading: AtomicBool,
    /// Whether the leader may apply a batch on its caller's thread ([`Durability::Process`]).
    inline: bool,
    writer: Mutex<Writer>,
}

/// Sends writes to the store's journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

/// Locks `m`, carrying on with what a panicking holder left (plain data).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lets go of the leadership when dropped (also if a request panicked).
struct Leading<'a>(&'a AtomicBool);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Journal {
    /// A journal writing to the database at `path` (opened at its first write).
    pub(crate) fn new(target: Target, health: HealthCell) -> Self {
        // SQLite commits on the caller's thread; PostgreSQL is a network round trip away, and fsync waits for
        // the disk: they lead on a blocking thread.
        let inline = matches!(target, Target::Sqlite(_, Durability::Process));
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                leading: AtomicBool::new(false),
                inline,
                writer: Mutex::new(Writer {
                    target,
                    conn: None,
                    health,
                }),
            }),
        }
    }

    /// Applies `f` in a transaction and returns its result once that transaction is committed. If `f` fails, its
    /// changes are rolled back and its error returned; other requests in the same transaction are unaffected.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = lock(&self.shared.queue);
            if queue.closed {
                return Err(StoreError::WriterGone);
            }
            queue.jobs.push(Box::new(Typed {
                f: Some(f),
                out: None,
                reply,
            }));
        }
        self.shared.lead();
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Commits what was sent before, then closes the connection. Writes sent afterwards fail with
    /// [`StoreError::WriterGone`].
    pub(crate) async fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.lead();
        loop {
            let idle = !self.shared.leading.load(Ordering::SeqCst)
                && lock(&self.shared.queue).jobs.is_empty();
            if idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lock(&self.shared.writer).conn = None;
    }
}

impl Shared {
    /// Takes the leadership if no one has it; then applies what is queued (see the module's documentation).
    fn lead(self: &Arc<Self>) {
        let inline = self.inline;
        for _ in 0..INLINE_ROUNDS {
            if self
                .leading
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // The leader looks at the queue again before it lets go.
                return;
            }
            let leading = Leading(&self.leading);
            let batch = self.take();
            if batch.is_empty() {
                drop(leading);
                if lock(&self.queue).jobs.is_empty() {
                    return;
                }
                continue;
            }
            if !inline {
                std::mem::forget(leading);
                self.lead_blocking(batch);
                return;
            }
            let left = lock(&self.writer).apply(batch, false);
            if let Some(batch) = left {
                // The write lock is held elsewhere: wait for it on a blocking thread, still leading.
                std::mem::forget(leading);
                self.lead_blocking(batch);
                return;
            }
            drop(leading);
            if lock(&self.queue).jobs.is_empty() {
                return;
            }
        }
        // Still more: a task takes over, so that this caller gets on with its own work.
        let me = self.clone();
        tokio::spawn(async move { me.lead() });
    }

    /// Leads on a blocking thread (the leadership already taken) from `batch` until the queue is empty.
    fn lead_blocking(self: &Arc<Self>, batch: Batch) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut batch = batch;
            loop {
                {
                    let _leading = Leading(&me.leading);
                    if !batch.is_empty()
                        && let Some(left) = lock(&me.writer).apply(batch, true)
                    {
                        // Cannot happen with a busy timeout, but if it did, the callers are told.
                        let e = StoreError::Commit("the database stayed locked".into());
                        for job in left {
                            job.deliver(Err(&e));
                        }
                    }
                }
                if lock(&me.queue).jobs.is_empty()
                    || me
                        .leading
                        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                        .is_err()
                {
                    return;
                }
                batch = me.take();
            }
        });
    }

    fn take(&self) -> Batch {
        let mut queue = lock(&self.queue);
        if queue.jobs.len() <= MAX_BATCH {
            std::mem::take(&mut queue.jobs)
        } else {
            queue.jobs.drain(..MAX_BATCH).collect()
        }
    }
}

impl Writer {
    /// The connection, opened (and checked writable) if there is none.
    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self.conn.is_none() {
            let opened = match &self.target {
                Target::Sqlite(path, durability) => open(path, *durability).map(Conn::Sqlite),
                Target::Postgres(url) => PgConn::connect(url).map(|c| Conn::Postgres(Box::new(c))),
            };
            match opened {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => {
                    self.health.failed(&e);
                    return Err(e);
                }
            }
        }
        self.conn.as_mut().ok_or(StoreError::WriterGone)
    }

    /// Applies `batch` in one transaction and answers its callers. Without `wait`, a database locked by another
    /// connection returns the batch untouched, to be applied where waiting is allowed.
    fn apply(&mut self, mut batch: Batch, wait: bool) -> Option<Batch> {
        let (result, unavailable) = match self.conn() {
            Ok(conn) => {
                let timeout = if wait {
                    crate::BUSY_TIMEOUT
                } else {
                    Duration::ZERO
                };
                let waits = match conn {
                    Conn::Sqlite(c) => c.busy_timeout(timeout).map_err(StoreError::from),
                    Conn::Postgres(_) => Ok(()),
                };
                if let Err(e) = waits {
                    (Err(e), false)
                } else {
                    match begin(conn) {
                        Err(e) if e.is_busy() && !wait => return Some(batch),
                        Err(e) => (Err(e), false),
                        Ok(()) => run(conn, &mut batch),
                    }
                }
            }
            Err(e) => (Err(e), false),
        };
        match &result {
            Ok(()) => self.health.committed(),
            Err(e) => {
                tracing::error!(error = %e, requests = batch.len(), "journal commit failed");
                self.health.failed(e);
            }
        }
        let failed = match &result {
            Err(e) => e.kind() == ErrorKind::Unavailable,
            Ok(()) => false,
        };
        if failed || unavailable {
            if let Some(mut conn) = self.conn.take() {
                tracing::warn!(
                    "closing the journal's connection after a failed write; the next write reconnects"
                );
                let _ = conn.control("ROLLBACK");
            }
            if unavailable && result.is_ok() {
                self.health.failed(&StoreError::Commit(
                    "a request failed because the store could not write".into(),
                ));
            }
        }
        for job in batch {
            job.deliver(result.as_ref().map(|_| ()));
        }
        None
    }
}

fn begin(conn: &mut Conn) -> Result<(), StoreError> {
    match conn {
        // Takes the write lock now, so that the batch never fails half-way for another writer.
        Conn::Sqlite(_) => conn.control("BEGIN IMMEDIATE"),
        Conn::Postgres(_) => conn.control("BEGIN"),
    }
}

fn end(conn: &mut Conn, sql: &str) -> Result<(), StoreError> {
    conn.control(sql)
}

/// Runs the jobs inside the transaction begun and ends it: whether it committed, and whether a job failed
/// because the store could not write (its connection is then reopened even if the rest committed).
fn run(conn: &mut Conn, batch: &mut Batch) -> (Result<(), StoreError>, bool) {
    if let [job] = batch.as_mut_slice() {
        // Alone in its transaction, a request needs no savepoint: if it fails, the whole transaction is its own.
        let ran = job.run(&conn.tx());
        if ran != Ran::Ok {
            let _ = end(conn, "ROLLBACK");
            return (Ok(()), ran == Ran::Unavailable);
        }
        return match end(conn, "COMMIT") {
            Ok(()) => (Ok(()), false),
            Err(e) => {
                let _ = end(conn, "ROLLBACK");
                (Err(e), false)
            }
        };
    }
    let mut unavailable = false;
    for job in batch.iter_mut() {
        if let Err(e) = end(conn, "SAVEPOINT job") {
            let _ = end(conn, "ROLLBACK");
            return (Err(e), unavailable);
        }
        let ran = job.run(&conn.tx());
        unavailable |= ran == Ran::Unavailable;
        let ended = if ran == Ran::Ok {
            end(conn, "RELEASE job")
        } else {
            end(conn, "ROLLBACK TO job").and_then(|()| end(conn, "RELEASE job"))
        };
        if let Err(e) = ended {
            let _ = end(conn, "ROLLBACK");
            return (Err(e), unavailable);
        }
    }
    match end(conn, "COMMIT") {
        Ok(()) => (Ok(()), unavailable),
        Err(e) => {
            let _ = end(conn, "ROLLBACK");
            (Err(e), unavailable)
        }
    }
}

/// Opens the journal's connection to `path` and checks that it can write.
fn open(path: &std::path::Path, durability: Durability) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 10000;",
        durability.synchronous()
    ))?;
    check_writable(&conn)?;
    Ok(conn)
}

/// Checks that `conn` can write, without writing and without waiting for the write lock (see
/// `writer::check_writable`, the same for the store's other connections).
fn check_writable(conn: &Connection) -> Result<(), StoreError> {
    if conn.is_readonly(rusqlite::DatabaseName::Main)? {
        return Err(StoreError::Io(
            conn.path().unwrap_or_default().into(),
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the database file could not be opened for writing (SQLite opened it read-only)",
            ),
        ));
    }
    conn.busy_timeout(Duration::ZERO)?;
    let probe = (|| -> Result<(), StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let set = conn.execute_batch(&format!("PRAGMA user_version = {version}"));
        conn.execute_batch("ROLLBACK")?;
        set.map_err(StoreError::from)
    })();
    match probe {
        Ok(()) => Ok(()),
        // Another connection holds the write lock: this one could write once it is released.
        Err(e) if e.is_busy() => {
            let _ = conn.execute_batch("ROLLBACK");
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;
    use crate::sql::args;

    #[tokio::test]
    async fn a_failing_request_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let journal = store.journal();
        let ok = journal.write(|tx| {
            tx.exec("INSERT INTO plugin_kv VALUES ('n', 'a', x'01', 0)", args![])?;
            Ok(1)
        });
        let bad = journal.write(|tx| {
            tx.exec("INSERT INTO plugin_kv VALUES ('n', 'b', x'01', 0)", args![])?;
            tx.exec("INSERT INTO no_such_table VALUES (1)", args![])?;
            Ok(2)
        });
        let (ok, bad) = tokio::join!(ok, bad);
        assert_eq!(ok.unwrap(), 1);
        assert!(bad.is_err());
        assert!(store.kv_get("n", "a").await.unwrap().is_some());
        assert!(store.kv_get("n", "b").await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_all_commit_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let journal = store.journal().clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..50 {
                    let key = format!("{i}-{j}");
                    journal
                        .write(move |tx| {
                            tx.exec(
                                "INSERT INTO plugin_kv VALUES ('c', ?, x'01', 0)",
                                args![key.as_str()],
                            )
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plugin_kv WHERE namespace = 'c'")
            .fetch_one(store.pool().unwrap())
            .await
            .unwrap();
        assert_eq!(count, 64 * 50);
    }

    #[tokio::test]
    async fn a_write_waits_for_a_lock_held_elsewhere_and_then_commits() {
        use sqlx::{ConnectOptions, Executor};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let mut locker = crate::connect_options(store.path().unwrap(), Default::default())
            .connect()
            .await
            .unwrap();
        locker.execute("BEGIN IMMEDIATE").await.unwrap();
        let journal = store.journal().clone();
        let write = tokio::spawn(async move {
            journal
                .write(|tx| tx.exec("INSERT INTO plugin_kv VALUES ('l', 'k', x'01', 0)", args![]))
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!write.is_finished(), "the write waits for the lock");
        locker.execute("COMMIT").await.unwrap();
        assert_eq!(write.await.unwrap().unwrap(), 1);
        assert!(store.kv_get("l", "k").await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_durability_commits_on_a_blocking_thread_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::StoreOptions {
            durability: super::Durability::Fsync,
            database: None,
        };
        let store = Store::open_with(dir.path(), options).await.unwrap();
        let synchronous = store
            .journal()
            .write(|tx| tx.row("PRAGMA synchronous", args![], |r| r.get::<i64>(0)))
            .await
            .unwrap();
        assert_eq!(synchronous, Some(2), "FULL");
        let writes = (0..20).map(|i| {
            let journal = store.journal().clone();
            async move {
                journal
                    .write(move |tx| {
                        tx.exec(
                            "INSERT INTO plugin_kv VALUES ('f', ?, x'01', 0)",
                            args![i.to_string()],
                        )
                    })
                    .await
            }
        });
        for written in futures_util::future::join_all(writes).await {
            assert_eq!(written.unwrap(), 1);
        }
        store.close().await;
        let store = Store::open(dir.path()).await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plugin_kv WHERE namespace = 'f'")
            .fetch_one(store.pool().unwrap())
            .await
            .unwrap();
        assert_eq!(count, 20);
    }

    #[tokio::test]
    async fn after_close_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.close().await;
        let refused = store.journal().write(|_| Ok(())).await;
        assert!(
            matches!(refused, Err(crate::StoreError::WriterGone)),
            "{refused:?}"
        );
    }
}
