//! The attempts of one piece of work (a query, an `acquire`, a `begin`): where each runs, what
//! a failure says about the server it ran on, and where the next one runs. This file owns
//! failover; which server comes next is [`route`](super::route)'s to decide.
//!
//! - A server that gives no connection (refused, timed out, TLS or authentication failure,
//!   starting up or shutting down) leaves service at once, and a read moves on.
//! - A session lost under a query only makes its server suspect (a probe decides); a read
//!   that had returned nothing yet runs again elsewhere.
//! - A read on a replica cancelled by a conflict with recovery runs once more elsewhere.
//! - An error that is the statement's own goes back to the caller as it is: it would fail
//!   anywhere, and says nothing about the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;

use super::target::{Checkout, Target};
use crate::db_error::WriteThroughRead;
use crate::fault::{Fault, Phase, fault};
use crate::registry::{Event, Shared};
use crate::route::{Decision, Role};
use crate::server::{Server, State};

/// One piece of work's attempts so far.
pub(crate) struct Attempts<'t> {
    target: &'t Target,
    shared: &'t Arc<Shared>,
    /// Where the next attempt runs.
    next: Arc<Server>,
    /// The servers that failed this work so far.
    tried: Vec<Arc<Server>>,
    /// Whether a conflict with recovery was retried already (once is enough).
    conflict_retried: bool,
    /// The work is a `DbRead`'s: a write in it is the caller's mistake.
    read_only: bool,
    /// When the wait for the last connection handed out began: its work's latency starts then.
    pub(crate) began: Option<Instant>,
}

impl<'t> Attempts<'t> {
    pub(crate) fn new(target: &'t Target, read_only: bool) -> Attempts<'t> {
        let mut attempts = Attempts {
            target,
            shared: target.shared(),
            next: Arc::clone(target.server()),
            tried: Vec::new(),
            conflict_retried: false,
            read_only,
            began: None,
        };
        attempts.start_where_it_would_go_now();
        attempts
    }

    /// A handle kept while its server left service (a job's long-lived `registry.read()`, a
    /// request that waited): its work starts where the registry would send it now, not on the
    /// server it was made for, which would be tried as a last resort first. A read moves on
    /// from a replica out of service; any work moves from a primary the writes left (cloning
    /// no `Arc` for a server still in service: its count is shared by every core).
    fn start_where_it_would_go_now(&mut self) {
        let next = &self.next;
        if (next.is_primary() && !next.is_retired()) || (!next.is_primary() && next.is_healthy()) {
            return;
        }
        let chosen = Arc::clone(next);
        if chosen.is_primary() {
            if let Some(now) = self.moved_primary(&chosen) {
                self.next = now;
            }
        } else if self.fails_over() {
            let now = match self.shared.route(self.target.intent(), &[]) {
                Decision::Replica(server, _) => server,
                Decision::Primary(_) => self.shared.primary(),
                Decision::Refuse(_) => return,
            };
            // The same server again: it is the last resort now too.
            if !Arc::ptr_eq(&now, &chosen) {
                crate::metrics::failover(&chosen.name, "left");
                self.next = now;
            }
        }
    }

    /// Whether this work may move to another server: reads only (a write may have committed).
    pub(crate) fn fails_over(&self) -> bool {
        self.target.intent().role() == Role::Read
    }

    /// A connection for the next attempt, with its server. A server that cannot give one is
    /// dealt with by what its error says, and a read moves on; the error is the last server's.
    pub(crate) async fn checkout(&mut self) -> Result<Checkout, sqlx::Error> {
        self.target.admitted()?;
        let exhaustion_failover = self.shared.topology().config.failover_on_pool_exhausted;
        loop {
            let server = Arc::clone(&self.next);
            if exhaustion_failover && !server.is_primary() && server.exhausted() {
                // Another replica only: a busy replica's overflow must not land on the primary.
                if let Some(next) = self.next_replica(&server) {
                    crate::metrics::failover(&server.name, "exhausted");
                    self.next = next;
                    continue;
                }
            }
            let start = Instant::now();
            let waiting = server.load.wait();
            let error = match self.wait_for(&server).await {
                Waited::Got(Ok(conn)) => {
                    drop(waiting);
                    self.began = Some(start);
                    // sqlx pings an idle connection before handing it out: the server answers.
                    let now = Instant::now();
                    server.served(now);
                    // A server out of service gave a connection: its probe runs now, not
                    // after its backoff.
                    if !server.is_healthy() {
                        server.wanted.notify_one();
                    }
                    server
                        .metrics
                        .acquired(now.saturating_duration_since(start));
                    return Ok((conn, server));
                }
                Waited::Got(Err(error)) => error,
                // The primary moved while this work waited for a connection: nothing was sent,
                // so even a write goes to the new primary.
                Waited::Left if server.is_primary() => match self.moved_primary(&server) {
                    Some(next) => {
                        self.next = next;
                        continue;
                    }
                    // A read that waited on a primary out of service moves to a replica back
                    // in the meantime.
                    None if self.move_on(&server, "left") => continue,
                    None => return Err(sqlx::Error::PoolTimedOut),
                },
                // The replica left service while this read waited for it.
                Waited::Left => match self.move_on(&server, "left") {
                    true => continue,
                    false => return Err(sqlx::Error::PoolTimedOut),
                },
            };
            match self.connect_failed(&server, &error) {
                Some(cause) if self.move_on(&server, cause) => {}
                _ => return Err(error),
            }
        }
    }

    /// Records that `server` gave no connection (`error`): counts a timeout, and takes the
    /// server out of service when the failure is the server's (not a full pool, not a removed
    /// replica, not too many connections on the primary). Returns why it failed when that is a
    /// reason to try another server.
    pub(crate) fn connect_failed(
        &self,
        server: &Arc<Server>,
        error: &sqlx::Error,
    ) -> Option<&'static str> {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            crate::metrics::acquire_timeout(&server.name);
        }
        // A pooler refusing the read-only startup option: the next connection does without it.
        if server.startup_option_refused(error) {
            return Some("startup_option");
        }
        let cause = match fault(error, Phase::Connect) {
            Fault::Server("timeout") if server.full() => return Some("exhausted"),
            // No new connection in time, but the server answered other work meanwhile: it is
            // busy, not gone. This work moves on; the server stays in service.
            Fault::Server("timeout") if server.answered_within(server.connect_timeout()) => {
                crate::metrics::slow_check(&server.name, "connect");
                return Some("slow");
            }
            // The primary is the only server that can write: refusing every write for a
            // moment of saturation would cost more than waiting for a connection.
            Fault::Server("too_many_connections") if server.is_primary() => return None,
            Fault::Server(cause) => cause,
            Fault::Pool(cause) => return Some(cause),
            Fault::Session(_) | Fault::Statement | Fault::Conflict => return None,
        };
        self.shared.apply(server, Event::Failed { cause, error });
        Some(cause)
    }

    /// After `error` on a connection from `used`: `Ok` when the work is to run again on the
    /// next server (`may_retry`: it can run again and nothing has gone out yet), otherwise the
    /// error, for the caller.
    pub(crate) fn failed(
        &mut self,
        used: &Arc<Server>,
        error: sqlx::Error,
        may_retry: bool,
    ) -> Result<(), sqlx::Error> {
        match self.blame(used, &error) {
            Some(cause) if may_retry && self.move_on(used, cause) => Ok(()),
            _ => Err(self.mark(used, error)),
        }
    }

    /// As [`failed`](Self::failed), for work that runs once: acts on the error and returns it.
    pub(crate) fn settle(&mut self, used: &Arc<Server>, error: sqlx::Error) -> sqlx::Error {
        self.blame(used, &error);
        self.mark(used, error)
    }

    /// A read-only error (`25006`) in a `DbRead`'s work is a write through it, a programming
    /// error, not a server that cannot write: marked so, and logged once per query.
    fn mark(&self, used: &Server, error: sqlx::Error) -> sqlx::Error {
        if !self.read_only {
            return error;
        }
        match error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("25006") => {
                tracing::error!(
                    server = %used.name,
                    route = self.target.route().unwrap_or_default(),
                    error = %db,
                    "a write through DbRead, which is read-only wherever it runs: use DbWrite"
                );
                sqlx::Error::Database(Box::new(WriteThroughRead(db)))
            }
            error => error,
        }
    }

    /// Acts on what `error` on a connection from `used` says: a lost session makes `used`
    /// suspect, a server that refuses work leaves service, a conflict with recovery on a
    /// replica may run once more. Returns the cause when running elsewhere may help.
    fn blame(&mut self, used: &Arc<Server>, error: &sqlx::Error) -> Option<&'static str> {
        match fault(error, Phase::Query) {
            Fault::Session(cause) => {
                self.shared.apply(used, Event::Suspected { cause, error });
                Some(cause)
            }
            Fault::Server(cause) => {
                self.shared.apply(used, Event::Failed { cause, error });
                Some(cause)
            }
            Fault::Conflict if !used.is_primary() && !self.conflict_retried => {
                self.conflict_retried = true;
                Some("conflict")
            }
            Fault::Conflict | Fault::Statement | Fault::Pool(_) => None,
        }
    }

    /// Moves the next attempt of a read off `failed` (for `cause`), counting the failover.
    /// Returns `false` when the work cannot move (a write) or nobody else can do it.
    fn move_on(&mut self, failed: &Arc<Server>, cause: &'static str) -> bool {
        if !self.fails_over() {
            return false;
        }
        self.tried.push(Arc::clone(failed));
        let next = match self.shared.route(self.target.intent(), &self.tried) {
            Decision::Replica(server, _) => server,
            Decision::Primary(_) => self.shared.primary(),
            Decision::Refuse(_) => return false,
        };
        crate::metrics::failover(&failed.name, cause);
        if failed.group.is_some() {
            crate::registry::group_fallback(self.target.intent(), Some(&next));
        }
        tracing::debug!(from = %failed.name, to = %next.name, cause, "read failed over");
        self.next = next;
        true
    }

    /// Whether a read waiting on `primary`, out of service, may leave it for a replica that can
    /// serve it now (in service, or out but caught up, as a last resort). With none, the read
    /// waits for the primary as a plain pool would.
    fn may_leave(&self, primary: &Arc<Server>) -> bool {
        if !self.fails_over() || primary.state().in_service() {
            return false;
        }
        let mut tried = self.tried.clone();
        tried.push(Arc::clone(primary));
        matches!(
            self.shared.route(self.target.intent(), &tried),
            Decision::Replica(..)
        )
    }

    /// The primary now, when it is not `old` (the writes moved).
    fn moved_primary(&self, old: &Arc<Server>) -> Option<Arc<Server>> {
        let now = self.shared.primary();
        (!Arc::ptr_eq(&now, old)).then_some(now)
    }

    /// For a replica whose pool is full: the next replica with a free connection, never the
    /// primary. When every other replica is full too, `None`, and nothing counts as tried: the
    /// read then waits for its first choice.
    fn next_replica(&mut self, busy: &Arc<Server>) -> Option<Arc<Server>> {
        let shared = Arc::clone(self.shared);
        let before = self.tried.len();
        self.tried.push(Arc::clone(busy));
        while let Decision::Replica(next, _) = shared.route(self.target.intent(), &self.tried) {
            if !next.is_healthy() {
                break;
            }
            if !next.exhausted() {
                return Some(next);
            }
            self.tried.push(next);
        }
        self.tried.truncate(before);
        None
    }
}

/// How long work waits for a new connection before asking whether the server refuses
/// connections (see `health/reach.rs`): a pool hides a refused connection behind its
/// retries until the acquire timeout, while a plain connect sees the refusal at once.
const SLOW_CONNECT: Duration = Duration::from_millis(100);

/// The longest the refusal check waits for an answer: no answer is no refusal.
const REACH_WITHIN: Duration = Duration::from_secs(1);

/// How one wait for a connection ended.
enum Waited {
    /// The pool's answer.
    Got(Result<PoolConnection<Postgres>, sqlx::Error>),
    /// A replica left service (another read lost its connection, a check failed, or it refuses
    /// connections), or the primary moved to another server.
    Left,
}

impl Attempts<'_> {
    /// Waits for a connection from `server`.
    ///
    /// A primary that leaves service is waited for (it may be restarting), as a plain pool
    /// waits. A replica already out of service (tried as a last resort) is waited for as a
    /// plain pool would, its acquire timeout, unless it refuses connections: then the refusal
    /// is the answer at once. A wait for a new connection (the pool not full) longer than
    /// [`SLOW_CONNECT`] asks whether the server refuses connections, at most once a second per
    /// server; a server in service that does leaves service at once, and the work moves on.
    ///
    /// The common wait is one round trip (sqlx pings an idle connection before handing it
    /// out): the watch for the server leaving and the slow-connect timer are set up only when
    /// the pool has not answered by its second poll, so that a query pays for neither.
    async fn wait_for(&self, server: &Arc<Server>) -> Waited {
        if let Some(waited) = self.wait_for_return(server).await {
            return waited;
        }
        let last_resort = !server.is_primary() && !server.is_healthy();
        let acquire = server.pool.acquire();
        tokio::pin!(acquire);
        let left = server.left.notified();
        tokio::pin!(left);
        let mut watching = false;
        let mut slow: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut polls = 0u32;
        let mut looked = false;
        let gone = || match server.is_primary() {
            true => server.is_retired() || self.may_leave(server),
            false => !last_resort && !server.is_healthy(),
        };
        // Left between the choice and now: a read moves on without taking a connection.
        if gone() {
            return Waited::Left;
        }
        loop {
            let step = std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = acquire.as_mut().poll(cx) {
                    return Poll::Ready(Step::Got(result));
                }
                polls += 1;
                if polls < 2 {
                    return Poll::Pending;
                }
                if !last_resort {
                    if !watching {
                        left.as_mut().enable();
                        watching = true;
                    }
                    if left.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Step::Left);
                    }
                    if gone() {
                        return Poll::Ready(Step::Gone);
                    }
                }
                if last_resort && looked && server.refused_recently() {
                    return Poll::Ready(Step::Refused);
                }
                if !looked {
                    let timer =
                        slow.get_or_insert_with(|| Box::pin(tokio::time::sleep(SLOW_CONNECT)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Step::Slow);
                    }
                }
                Poll::Pending
            })
            .await;
            match step {
                Step::Got(result) => return Waited::Got(result),
                Step::Gone => return Waited::Left,
                // A primary out of service is waited for: only a move ends its wait, or, for
                // a read, a replica that can take it now.
                Step::Left if server.is_primary() && !gone() => {
                    left.set(server.left.notified());
                    watching = false;
                }
                Step::Left => return Waited::Left,
                Step::Refused => return Waited::Got(Err(refused())),
                Step::Slow => {
                    looked = true;
                    if let Some(waited) =
                        self.ask_reach(server, last_resort, acquire.as_mut()).await
                    {
                        return waited;
                    }
                }
            }
        }
    }

    /// For a primary out of service for being unreachable: waits for its probe to put it back
    /// (this work brings the probe forward, to its shortest step), up to its connect timeout,
    /// rather than opening connections of its own to a server known to be out. However many
    /// requests wait, each instance knocks on it at the probe's pace, not theirs. `None`: it is
    /// in service (again), and the pool's wait follows.
    async fn wait_for_return(&self, server: &Arc<Server>) -> Option<Waited> {
        // Only the primary: a replica out of service is tried only as a last resort, by reads
        // nothing else can serve, and its pool answers as soon as it is back, before its probe.
        if !server.is_primary() || server.state() != State::Unreachable {
            return None;
        }
        let back = server.back.notified();
        tokio::pin!(back);
        back.as_mut().enable();
        let left = server.left.notified();
        tokio::pin!(left);
        left.as_mut().enable();
        if server.state() != State::Unreachable {
            return None;
        }
        server.wanted.notify_one();
        let timeout = tokio::time::sleep(server.connect_timeout());
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                () = &mut back => return None,
                () = &mut left => {
                    // The primary moved: the work goes to the new one.
                    if server.is_retired() {
                        return Some(Waited::Left);
                    }
                    // Reachable again, if not in service (a replica that lags).
                    if server.state() != State::Unreachable {
                        return None;
                    }
                    left.set(server.left.notified());
                }
                () = &mut timeout => return Some(Waited::Got(Err(sqlx::Error::PoolTimedOut))),
            }
        }
    }

    /// Asks whether `server`, slow to give a connection, refuses connections (at most once a
    /// second per server), while the pool's wait goes on. A refusal takes a server in service
    /// out (the work then moves on) and is the answer for a last resort.
    async fn ask_reach<F>(
        &self,
        server: &Arc<Server>,
        last_resort: bool,
        acquire: Pin<&mut F>,
    ) -> Option<Waited>
    where
        F: Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>>,
    {
        if server.full() || !server.claim_reach_check() {
            return None;
        }
        let check = crate::health::reach::refused(&server.options, REACH_WITHIN);
        tokio::pin!(check);
        let mut acquire = acquire;
        let refusal = tokio::select! {
            biased;
            result = &mut acquire => return Some(Waited::Got(result)),
            refusal = &mut check => refusal,
        };
        let error = refusal?;
        server.note_refusal();
        let error = sqlx::Error::Io(error);
        if last_resort {
            return Some(Waited::Got(Err(error)));
        }
        self.shared.apply(
            server,
            Event::Failed {
                cause: "refused",
                error: &error,
            },
        );
        None
    }
}

/// The error of a server that refused connections just now.
fn refused() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
}

/// What one poll of a wait for a connection found.
enum Step {
    Got(Result<PoolConnection<Postgres>, sqlx::Error>),
    /// The server left service (or the primary moved): woken.
    Left,
    /// The server is out of service (or the primary moved): seen.
    Gone,
    /// A last resort that refused connections just now.
    Refused,
    /// The wait for a new connection runs long.
    Slow,
}
