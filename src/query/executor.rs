//! Running queries on a [`DbRead`](crate::DbRead) or [`DbWrite`](crate::DbWrite) directly:
//! `fetch_one(&db)`. One `Executor` implementation serves both ([`Db`]).
//!
//! Each query takes its connection as [`Db::acquire`] does, so a read whose replica cannot
//! give a connection fails over to the next replica in rotation, or the primary, and the
//! replica leaves rotation at once. A read whose session is lost before it returned a row, or
//! that a replica cancels for a conflict with recovery, runs again on another server; the
//! server that lost the session is only suspected until a probe decides. An error that is the
//! statement's own goes to the handler untouched and never takes a server out. See
//! [`DbError`](crate::DbError) for what a handler can retry.
//!
//! A `DbRead`'s query on the primary runs in a `BEGIN READ ONLY` transaction (one round trip
//! more; replicas need none): a write through it fails with
//! [`DbErrorKind::WriteThroughRead`](crate::DbErrorKind::WriteThroughRead) on every server.
//! Queries run on the pool behind a `DbWrite` (`&*db`) still work, without failover.
//!
//! ```
//! use rwsplit::{DbError, DbRead};
//!
//! async fn count(db: DbRead) -> Result<String, DbError> {
//!     let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&db).await?;
//!     Ok(n.to_string())
//! }
//! # let _ = count;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::future::BoxFuture;
use futures_core::stream::{BoxStream, Stream};
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Connection, Describe, Either, Execute, Executor, PgConnection, Postgres, SqlStr};

use super::attempt::Attempts;
use super::handle::{Access, BEGIN_READ_ONLY, Db};
use super::target::Target;

type Item = Result<Either<PgQueryResult, PgRow>, sqlx::Error>;

impl<'c, A: Access> Executor<'c> for &'c Db<A> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Item>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let target = self.target();
        Box::pin(Yielding::new(move |out: Sender| async move {
            let mut run = match Run::new(target, A::READ_ONLY, query) {
                Ok(run) => run,
                Err(error) => return out.send(Err(error)).await,
            };
            loop {
                let mut conn = match run.attempts.checkout().await {
                    Ok(conn) => conn,
                    Err(error) => return out.send(Err(error)).await,
                };
                let attempt = run.query.attempt();
                let read_only_here = run.read_only_here();
                let sent = AtomicBool::new(false);
                let work = async {
                    if read_only_here {
                        match conn.begin_with(BEGIN_READ_ONLY).await {
                            Ok(mut tx) => stream(&mut tx, attempt, &out, &sent).await,
                            Err(error) => Some(error),
                        }
                    } else {
                        stream(&mut conn, attempt, &out, &sent).await
                    }
                };
                let error = match run
                    .attempts
                    .unless_unreachable(work, || sent.load(Ordering::Relaxed))
                    .await
                {
                    Some(None) => return run.finished(),
                    Some(Some(error)) => error,
                    None => {
                        conn.close_on_drop();
                        match run.attempts.abandoned() {
                            Ok(()) => continue,
                            Err(error) => return out.send(Err(error)).await,
                        }
                    }
                };
                // Nothing handed out yet: the read can start over elsewhere.
                if let Err(error) = run.failed(error, sent.load(Ordering::Relaxed)) {
                    return out.send(Err(error)).await;
                }
            }
        }))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let target = self.target();
        Box::pin(async move {
            let mut run = Run::new(target, A::READ_ONLY, query)?;
            loop {
                let mut conn = run.attempts.checkout().await?;
                let attempt = run.query.attempt();
                let read_only_here = run.read_only_here();
                let work = async {
                    if read_only_here {
                        match conn.begin_with(BEGIN_READ_ONLY).await {
                            Ok(mut tx) => tx.fetch_optional(attempt).await,
                            Err(error) => Err(error),
                        }
                    } else {
                        conn.fetch_optional(attempt).await
                    }
                };
                let Some(result) = run.attempts.unless_unreachable(work, || false).await else {
                    conn.close_on_drop();
                    run.attempts.abandoned()?;
                    continue;
                };
                match result {
                    Ok(row) => {
                        run.finished();
                        return Ok(row);
                    }
                    Err(error) => run.failed(error, false)?,
                }
            }
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        let target = self.target();
        Box::pin(async move {
            let mut attempts = Attempts::new(target, A::READ_ONLY);
            // Preparing changes nothing: a read's runs again on the next server.
            loop {
                let mut conn = attempts.checkout().await?;
                match conn.prepare_with(sql.clone(), parameters).await {
                    Ok(prepared) => {
                        attempts.done(false);
                        return Ok(prepared);
                    }
                    Err(error) => attempts.failed(error, true)?,
                }
            }
        })
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        let target = self.target();
        Box::pin(async move {
            let mut attempts = Attempts::new(target, A::READ_ONLY);
            loop {
                let mut conn = attempts.checkout().await?;
                match conn.describe(sql.clone()).await {
                    Ok(described) => {
                        attempts.done(false);
                        return Ok(described);
                    }
                    Err(error) => attempts.failed(error, true)?,
                }
            }
        })
    }
}

/// Runs `query` on `conn`, handing its items to `out` (`sent` set once one has gone out).
/// `None` when it ran to the end; else the error.
async fn stream<'q, E: Execute<'q, Postgres> + 'q>(
    conn: &mut PgConnection,
    query: E,
    out: &Sender,
    sent: &AtomicBool,
) -> Option<sqlx::Error> {
    let mut rows = conn.fetch_many(query);
    while let Some(item) = futures_util::StreamExt::next(&mut rows).await {
        match item {
            Ok(item) => {
                sent.store(true, Ordering::Relaxed);
                out.send(Ok(item)).await;
            }
            Err(error) => return Some(error),
        }
    }
    None
}

/// One query on a target, run on the target's server and, each time its connection is lost
/// before it returned anything (or a replica cancelled it for a conflict with recovery), again
/// on the next server: its [`Attempts`] decide where.
struct Run<'t, E> {
    attempts: Attempts<'t>,
    query: Query<E>,
    read_only: bool,
    /// Whether its latency feeds the servers' estimates (`loadBalancing: peakEwma`).
    sampled: bool,
}

impl<'t, 'q, E: Execute<'q, Postgres>> Run<'t, E> {
    fn new(target: &'t Target, read_only: bool, query: E) -> Result<Self, sqlx::Error> {
        let attempts = Attempts::new(target, read_only);
        Ok(Run {
            query: Query::new(attempts.fails_over(), query)?,
            attempts,
            read_only,
            sampled: target.sampled(),
        })
    }

    /// After the attempt just checked out returned all it had: its server answered, and its
    /// latency, from the wait for its connection on, goes into the server's estimate when the
    /// strategy reads it.
    fn finished(&self) {
        self.attempts.done(self.sampled);
    }

    /// Whether the attempt just checked out runs in a read-only transaction: a `DbRead`'s on
    /// the primary (a replica's sessions are read-only already).
    fn read_only_here(&self) -> bool {
        self.read_only && self.attempts.server().reads_in_read_only_transaction()
    }

    /// After `error` on the connection just checked out: `Ok` when the query is to run again
    /// on the next server (it may run again and, `sent_any` false, no row has gone out yet);
    /// otherwise the error, for the caller.
    fn failed(&mut self, error: sqlx::Error, sent_any: bool) -> Result<(), sqlx::Error> {
        let may_retry = self.query.replays() && !sent_any;
        self.attempts.failed(error, may_retry)
    }
}

/// A query as an executor gets it, kept so that a read can run again on another server when its
/// connection is lost before it returns anything. Queries with a prepared statement (tied to one
/// connection) and work that is not a read run once.
enum Query<E> {
    Once(Option<E>),
    Again(Replay),
}

/// What running a query again takes: its SQL and a copy of its arguments.
#[derive(Clone)]
struct Replay {
    sql: SqlStr,
    arguments: Option<PgArguments>,
    persistent: bool,
}

/// One run of a [`Query`].
enum Attempt<E> {
    Once(E),
    Again(Replay),
}

impl<'q, E: Execute<'q, Postgres>> Query<E> {
    /// `replayable`: the work may move to another server.
    fn new(replayable: bool, mut query: E) -> Result<Self, sqlx::Error> {
        if !replayable || query.statement().is_some() {
            return Ok(Query::Once(Some(query)));
        }
        let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
        Ok(Query::Again(Replay {
            persistent: query.persistent(),
            arguments,
            sql: query.sql(),
        }))
    }

    fn replays(&self) -> bool {
        matches!(self, Query::Again(_))
    }

    fn attempt(&mut self) -> Attempt<E> {
        match self {
            Query::Once(query) => Attempt::Once(query.take().expect("a query that runs once")),
            Query::Again(replay) => Attempt::Again(replay.clone()),
        }
    }
}

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Attempt<E> {
    fn sql(self) -> SqlStr {
        match self {
            Attempt::Once(query) => query.sql(),
            Attempt::Again(replay) => replay.sql,
        }
    }

    fn statement(&self) -> Option<&PgStatement> {
        match self {
            Attempt::Once(query) => query.statement(),
            Attempt::Again(_) => None,
        }
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, sqlx::error::BoxDynError> {
        match self {
            Attempt::Once(query) => query.take_arguments(),
            Attempt::Again(replay) => Ok(replay.arguments.take()),
        }
    }

    fn persistent(&self) -> bool {
        match self {
            Attempt::Once(query) => query.persistent(),
            Attempt::Again(replay) => replay.persistent,
        }
    }
}

/// A stream driven by a future that hands out items through a [`Sender`]: the future can own
/// the connection that the rows borrow from, which a plain stream adapter cannot.
struct Yielding<F> {
    slot: Arc<Mutex<Option<Item>>>,
    driver: Pin<Box<F>>,
    done: bool,
}

/// Where the driving future puts the next item.
struct Sender {
    slot: Arc<Mutex<Option<Item>>>,
}

impl<F: Future<Output = ()>> Yielding<F> {
    fn new(start: impl FnOnce(Sender) -> F) -> Self {
        let slot = Arc::new(Mutex::new(None));
        let driver = Box::pin(start(Sender {
            slot: Arc::clone(&slot),
        }));
        Yielding {
            slot,
            driver,
            done: false,
        }
    }

    fn take(&self) -> Option<Item> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl<F: Future<Output = ()>> Stream for Yielding<F> {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(this.take());
        }
        let finished = this.driver.as_mut().poll(cx).is_ready();
        this.done = finished;
        match this.take() {
            Some(item) => Poll::Ready(Some(item)),
            None if finished => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl Sender {
    /// Hands `item` to the stream and waits until the stream has passed it on.
    fn send(&self, item: Item) -> impl Future<Output = ()> + '_ {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(item);
        Handed { polled: false }
    }
}

/// Pending once, so the stream returns the item before the driver goes on. No waker is
/// needed: the stream returns `Ready`, and its consumer polls again for the next item.
struct Handed {
    polled: bool,
}

impl Future for Handed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.polled {
            Poll::Ready(())
        } else {
            self.polled = true;
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_and_the_stream_ends() {
        let stream = Yielding::new(|out: Sender| async move {
            for _ in 0..3 {
                out.send(Ok(Either::Left(PgQueryResult::default()))).await;
            }
            out.send(Err(sqlx::Error::RowNotFound)).await;
        });
        let mut stream = Box::pin(stream);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut seen = Vec::new();
        loop {
            match stream.as_mut().poll_next(&mut cx) {
                Poll::Ready(Some(item)) => seen.push(item.is_ok()),
                Poll::Ready(None) => break,
                Poll::Pending => panic!("nothing here waits"),
            }
        }
        assert_eq!(seen, [true, true, true, false]);
    }
}
