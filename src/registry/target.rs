//! A server chosen for some work: the handle that [`Registry::read`](crate::Registry::read),
//! [`Registry::write`](crate::Registry::write) and the extractors hand out. Its attempts are
//! [`attempt`](super::attempt)'s.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Transaction};

use super::attempt::Attempts;
use super::server::Kind;
use super::{Server, Shared};
use crate::error::Error;
use crate::intent::RouteIntent;

/// A server chosen for some work: derefs to its [`PgPool`], and knows its name and why it was
/// chosen. Queries run on the target itself (`fetch_one(&target)`) fail over; see
/// [`acquire`](Self::acquire).
///
/// Returned by [`Registry::read`](crate::Registry::read) and
/// [`Registry::write`](crate::Registry::write), and held by the [`DbRead`](crate::DbRead) and
/// [`DbWrite`](crate::DbWrite) extractors.
#[derive(Clone)]
pub struct Target {
    // The registry is reached through the server (`Server::registry`) when failing over, so
    // that handing out a target touches one reference count, not two.
    server: Arc<Server>,
    intent: RouteIntent,
}

/// A connection and the server it belongs to.
pub(crate) type Checkout = (PoolConnection<Postgres>, Arc<Server>);

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server.name)
            .field("intent", &self.intent)
            .finish()
    }
}

impl Target {
    pub(super) fn new(server: Arc<Server>, intent: RouteIntent) -> Target {
        Target { server, intent }
    }

    pub(super) fn primary(shared: &Shared, intent: RouteIntent) -> Target {
        Target::new(Arc::clone(&shared.primary), intent)
    }

    /// The server's name: `primary`, or the replica's configured name.
    pub fn name(&self) -> &str {
        &self.server.name
    }

    /// Whether this is the primary.
    pub fn is_primary(&self) -> bool {
        self.server.kind == Kind::Primary
    }

    /// The server's pool. Queries run on it directly take their connection inside sqlx, so
    /// they get no failover; run them on the target itself (`&target`, `&db`) instead.
    pub fn pool(&self) -> &PgPool {
        &self.server.pool
    }

    /// The intent this server was chosen for. Its reason is
    /// [`Fallback`](crate::Reason::Fallback) when a read went to the primary because no replica could
    /// serve, and [`Disabled`](crate::Reason::Disabled) when separation is off.
    pub fn intent(&self) -> RouteIntent {
        self.intent
    }

    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Whether this target cannot work now: the primary, known to be down (or not a primary).
    pub(crate) fn primary_down(&self) -> bool {
        self.is_primary() && !self.server.is_healthy()
    }

    /// Takes a connection for this target's work, timing the wait
    /// (`rwsplit_pool_acquire_duration_seconds`) and counting timeouts
    /// (`rwsplit_pool_acquire_timeouts_total`).
    ///
    /// For a read this fails over: when the server cannot give a connection (refused, timed
    /// out, authentication or TLS failure, shutting down) it leaves service at once and the
    /// next replica in rotation, or the primary, is tried; with `failoverOnPoolExhausted`, a
    /// replica whose pool is full is passed over for the next one. A primary that gives no
    /// connection is marked down, so requests that need it get a fast 503 until its next
    /// probe (at most about a second away).
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, Error> {
        let mut attempts = Attempts::new(self);
        match attempts.checkout().await {
            Ok((conn, _)) => Ok(conn),
            Err(error) => Err(Error::database(&self.server, error)),
        }
    }

    /// Begins a transaction on this server (the primary, for a write target), timed as
    /// [`acquire`](Self::acquire). Transactions do not fail over.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, Error> {
        let server = &self.server;
        let start = Instant::now();
        match server.pool.begin().await {
            Ok(tx) => {
                crate::metrics::acquired(server, start.elapsed());
                Ok(tx)
            }
            Err(error) => {
                Attempts::new(self).connect_failed(server, &error);
                Err(Error::database(server, error))
            }
        }
    }
}

impl Deref for Target {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.server.pool
    }
}
