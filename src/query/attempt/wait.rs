//! The wait for one attempt's connection: the pool's answer, or the server leaving service
//! meanwhile, or (a new connection taking long) the answer to whether it refuses connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;

use super::Attempts;
use crate::registry::Event;
use crate::server::{Server, State};

/// How long work waits for a new connection before asking whether the server refuses
/// connections (see `health/reach.rs`): a pool hides a refused connection behind its
/// retries until the acquire timeout, while a plain connect sees the refusal at once.
const SLOW_CONNECT: Duration = Duration::from_millis(100);

/// The longest the refusal check waits for an answer: no answer is no refusal.
const REACH_WITHIN: Duration = Duration::from_secs(1);

/// How one wait for a connection ended.
pub(super) enum Waited {
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
    /// The common wait is none on a replica (its pool hands out a connection used lately as
    /// it is, `server/idle.rs`) and one round trip on the primary (its pool pings): the watch
    /// for the server leaving and the slow-connect timer are set up only when the pool has not
    /// answered by its second poll, so that a query pays for neither.
    pub(super) async fn wait_for(&self, server: &Arc<Server>) -> Waited {
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
