//! A read on a replica that stops answering under it.
//!
//! A replica's pool hands out a connection used lately without a ping (`server/idle.rs`), so a
//! read can be sent to a server that has just frozen or dropped off the network, where it
//! would wait for an answer as long as TCP keeps trying. Such a read, while it has returned
//! nothing, is watched: when its server leaves service as unreachable (a probe that started
//! because its reads got no answer, `registry/silence.rs`; other work that found no connection
//! in time; a check) and another server can take the read, the attempt is given up and the
//! read runs there. A read on a server that leaves for any other reason (lag, role) finishes
//! where it is, and so does one sent to a replica already out of service, its last resort.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use super::Attempts;
use crate::route::Decision;
use crate::server::{Server, State};

impl Attempts<'_> {
    /// Runs `work`, the attempt on the connection just checked out, to its end: `Some` of its
    /// output. For a read on a replica in service, `None` when its server leaves service as
    /// unreachable before `answered()` (an item has gone out) and another server can take the
    /// read; the caller then closes the connection and calls [`abandoned`](Self::abandoned).
    ///
    /// The watch is set up when the work first waits (the query is out): one registration on
    /// the server's `left`, no timer. Whether the server still answers is
    /// `registry/silence.rs`'s to find out.
    pub(crate) async fn unless_unreachable<T>(
        &self,
        work: impl Future<Output = T>,
        answered: impl Fn() -> bool,
    ) -> Option<T> {
        let server = self.server();
        // A replica already out of service is a last resort: its read is not given up.
        if server.is_primary() || !self.fails_over() || !server.is_healthy() {
            return Some(work.await);
        }
        let mut work = pin!(work);
        let mut left = pin!(server.left.notified());
        let mut watching = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            loop {
                if answered() {
                    // An item has gone out: the read finishes here, whatever happens.
                    return Poll::Pending;
                }
                if !watching {
                    left.as_mut().enable();
                    watching = true;
                } else if left.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                } else {
                    // Woken: the server's service changed. Watch for the next change.
                    left.set(server.left.notified());
                    watching = false;
                    continue;
                }
                if server.state() == State::Unreachable && self.others_can(server) {
                    return Poll::Ready(None);
                }
            }
        })
        .await
    }

    /// After the attempt on the server just checked out was given up (its server unreachable):
    /// the read moves on, counted as a failover.
    pub(crate) fn abandoned(&mut self) -> Result<(), sqlx::Error> {
        let server = Arc::clone(self.server());
        tracing::debug!(server = %server.name, "a read given up on a server that stopped answering");
        match self.move_on(&server, "unreachable") {
            true => Ok(()),
            false => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the server stopped answering",
            ))),
        }
    }

    /// Whether a server other than `server` (and those that failed this work) can take it.
    fn others_can(&self, server: &Arc<Server>) -> bool {
        !matches!(self.route_without(server), Decision::Refuse(_))
    }
}
