//! Which of a replica's idle connections are pinged before they are handed out.
//!
//! sqlx pings every idle connection before handing it out (`test_before_acquire`): a round
//! trip before every query, as long as a short read itself. A replica's pool pings only a
//! connection that sat idle for [`PING_AFTER_IDLE`] or more, or that was opened before its
//! server last gave cause for doubt (a session lost, a connection refused, service left or
//! regained). Such a connection is alive but for a server restarted unnoticed; a read on one
//! that is not runs again (`query/attempt.rs`), on its server as a last resort, where the
//! doubt it raised has its other old connections pinged.
//!
//! The primary's pool pings every idle connection, as sqlx does: a write cannot run again.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

use crate::clock::ms_since;

/// How long a replica's connection may sit idle and still be handed out without a ping.
pub(crate) const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// When a server last gave cause to doubt its open connections.
#[derive(Clone)]
pub(crate) struct Doubt {
    /// The origin of `since_ms`: when its server was built.
    origin: Instant,
    /// Milliseconds since `origin`, plus one, when doubt was last raised (0: never).
    since_ms: Arc<AtomicU64>,
}

impl Doubt {
    pub(crate) fn new(origin: Instant) -> Doubt {
        Doubt {
            origin,
            since_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Every connection open now is pinged before its next use.
    pub(crate) fn raise(&self) {
        let now = ms_since(self.origin, Instant::now());
        self.since_ms.store(now, Ordering::Release);
    }

    /// Whether a connection `age` old was opened before the last doubt (or in its millisecond).
    fn predates(&self, age: Duration) -> bool {
        let since = self.since_ms.load(Ordering::Acquire);
        since != 0 && {
            let opened = Instant::now().checked_sub(age).unwrap_or(self.origin);
            ms_since(self.origin, opened) <= since
        }
    }

    /// Whether an idle connection `age` old, idle for `idle`, is pinged before it is handed out.
    fn pings(&self, idle: Duration, age: Duration) -> bool {
        idle >= PING_AFTER_IDLE || self.predates(age)
    }

    /// `pool` pinging as the module says, instead of before every use.
    pub(crate) fn hook(&self, pool: PgPoolOptions) -> PgPoolOptions {
        let doubt = self.clone();
        pool.test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                if !doubt.pings(meta.idle_for, meta.age) {
                    // A unit future: boxing it allocates nothing.
                    return Box::pin(Pass);
                }
                Box::pin(async move {
                    if let Err(error) = sqlx::Connection::ping(conn).await {
                        // As sqlx's own ping: the connection is closed, another is taken.
                        tracing::debug!(%error, "ping on an idle connection failed");
                        return Ok(false);
                    }
                    Ok(true)
                })
            })
    }
}

/// A connection handed out as it is.
struct Pass;

impl Future for Pass {
    type Output = Result<bool, sqlx::Error>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_used_lately_goes_without_a_ping_until_doubt_is_raised() {
        let doubt = Doubt::new(Instant::now());
        let short = Duration::from_millis(20);
        assert!(!doubt.pings(short, Duration::from_secs(60)));
        assert!(doubt.pings(PING_AFTER_IDLE, Duration::from_secs(60)));

        std::thread::sleep(Duration::from_millis(5));
        doubt.raise();
        // Opened before the doubt: pinged, however lately used.
        assert!(doubt.pings(short, Duration::from_secs(60)));
        assert!(doubt.pings(short, Duration::from_millis(4)));
        // Opened after it.
        std::thread::sleep(Duration::from_millis(5));
        assert!(!doubt.pings(short, Duration::ZERO));
        assert!(doubt.pings(PING_AFTER_IDLE, Duration::ZERO));
    }
}
