//! The attempts of one piece of work (a query, an `acquire`, a `begin`): where each runs, what
//! a failure says about the server it ran on, and where the next one runs. This file owns
//! failover; which server comes next is [`route`](super::route)'s to decide.
//!
//! - A server that gives no connection (refused, timed out, TLS or authentication failure,
//!   starting up or shutting down) leaves service at once, and a read moves on.
//! - A session lost under a query only makes its server suspect (a probe decides); a read
//!   that had returned nothing yet runs again elsewhere. A replica's pool hands out a
//!   connection used lately without a ping (`server/idle.rs`), so the session may have died
//!   while idle: when nobody else can serve the read, it runs once more on that replica, whose
//!   other old connections are now pinged.
//! - A read on a replica cancelled by a conflict with recovery runs once more elsewhere.
//! - An error that is the statement's own goes back to the caller as it is: it would fail
//!   anywhere, and says nothing about the server.

use std::sync::Arc;
use std::time::Instant;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;

use self::wait::Waited;
use super::target::Target;
use crate::db_error::WriteThroughRead;
use crate::fault::{Fault, Phase, fault};
use crate::registry::{Event, Shared};
use crate::route::{Decision, Role};
use crate::server::Server;

mod unreachable;
mod wait;

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
    /// The first replica that lost a session under this work: the last resort of a read that
    /// nobody else can serve, once.
    again: Again,
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
            again: Again::None,
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

    /// The server the next attempt runs on; after a [`checkout`](Self::checkout), the one whose
    /// connection it handed out.
    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.next
    }

    /// After the work succeeded on the connection just checked out: a replica answered (its
    /// pool hands out connections without a ping, so a checkout alone says nothing); with
    /// `sampled`, the work's latency feeds the server's estimate.
    pub(crate) fn done(&self, sampled: bool) {
        let used = &self.next;
        let sampled = self.began.filter(|_| sampled);
        if used.is_primary() && sampled.is_none() {
            return;
        }
        let now = Instant::now();
        if !used.is_primary() {
            used.served(now);
        }
        if let Some(began) = sampled {
            used.load.observe(now.saturating_duration_since(began), now);
        }
    }

    /// Whether this work may move to another server: reads only (a write may have committed).
    pub(crate) fn fails_over(&self) -> bool {
        self.target.intent().role() == Role::Read
    }

    /// A connection for the next attempt (from [`server`](Self::server)). A server that cannot
    /// give one is dealt with by what its error says, and a read moves on; the error is the
    /// last server's.
    pub(crate) async fn checkout(&mut self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        self.target.admitted()?;
        let exhaustion_failover = self.target.exhaustion_failover();
        loop {
            if exhaustion_failover && !self.next.is_primary() && self.next.exhausted() {
                // Another replica only: a busy replica's overflow must not land on the primary.
                let busy = Arc::clone(&self.next);
                if let Some(next) = self.next_replica(&busy) {
                    crate::metrics::failover(&busy.name, "exhausted");
                    self.next = next;
                    continue;
                }
            }
            let start = Instant::now();
            // The server is borrowed, not cloned, while the work waits: its `Arc`'s count is
            // shared by every core, and the common case needs no copy of it.
            let waited = {
                let server = &self.next;
                let _waiting = server.load.wait();
                let waited = self.wait_for(server).await;
                if let Waited::Got(Ok(_)) = waited {
                    let now = Instant::now();
                    // The primary's pool pings an idle connection before handing it out: the
                    // server answers. A replica answers with the work's result (`done`).
                    if server.is_primary() {
                        server.served(now);
                    }
                    // A server out of service gave a connection: its probe runs now, not
                    // after its backoff.
                    if !server.is_healthy() {
                        server.wanted.notify_one();
                    }
                    server
                        .metrics
                        .acquired(now.saturating_duration_since(start));
                }
                waited
            };
            let error = match waited {
                Waited::Got(Ok(conn)) => {
                    self.began = Some(start);
                    return Ok(conn);
                }
                Waited::Got(Err(error)) => Some(error),
                Waited::Left => None,
            };
            let server = Arc::clone(&self.next);
            let Some(error) = error else {
                match self.left_while_waiting(&server) {
                    true => continue,
                    false => return Err(sqlx::Error::PoolTimedOut),
                }
            };
            match self.connect_failed(&server, &error) {
                Some(cause) if self.move_on(&server, cause) => {}
                _ => return Err(error),
            }
        }
    }

    /// After `server` left service (or, the primary, moved) while this work waited for its
    /// connection: whether the work goes on elsewhere.
    fn left_while_waiting(&mut self, server: &Arc<Server>) -> bool {
        match server.is_primary() {
            // The primary moved while this work waited for a connection: nothing was sent, so
            // even a write goes to the new primary.
            true => match self.moved_primary(server) {
                Some(next) => {
                    self.next = next;
                    true
                }
                // A read that waited on a primary out of service moves to a replica back in
                // the meantime.
                None => self.move_on(server, "left"),
            },
            // The replica left service while this read waited for it.
            false => self.move_on(server, "left"),
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

    /// After `error` on the connection just checked out (from [`server`](Self::server)): `Ok`
    /// when the work is to run again on the next server (`may_retry`: it can run again and
    /// nothing has gone out yet), otherwise the error, for the caller.
    pub(crate) fn failed(
        &mut self,
        error: sqlx::Error,
        may_retry: bool,
    ) -> Result<(), sqlx::Error> {
        let used = Arc::clone(&self.next);
        match self.blame(&used, &error) {
            Some(cause) if may_retry && self.move_on(&used, cause) => Ok(()),
            _ => Err(self.mark(&used, error)),
        }
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
                if !used.is_primary() && matches!(self.again, Again::None) {
                    self.again = Again::Kept(Arc::clone(used));
                }
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
            Decision::Refuse(_) => match std::mem::replace(&mut self.again, Again::Given) {
                Again::Kept(server) => server,
                _ => return false,
            },
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
    /// serve it now (in service, or out but caught up, as a last resort; or the one whose
    /// session it lost, in service again). With none, the read waits for the primary as a
    /// plain pool would.
    fn may_leave(&self, primary: &Arc<Server>) -> bool {
        if !self.fails_over() || primary.state().in_service() {
            return false;
        }
        // The replica whose session this read lost, back in service: its last resort.
        if matches!(&self.again, Again::Kept(again) if again.is_healthy()) {
            return true;
        }
        matches!(self.route_without(primary), Decision::Replica(..))
    }

    /// Where the work would go next were `server` tried too (the servers that failed it are).
    fn route_without(&self, server: &Arc<Server>) -> Decision<Arc<Server>> {
        let mut tried = self.tried.clone();
        tried.push(Arc::clone(server));
        self.shared.route(self.target.intent(), &tried)
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

/// A replica that lost a session under a read, kept as the read's last resort.
enum Again {
    None,
    Kept(Arc<Server>),
    /// Tried already: once is enough.
    Given,
}
