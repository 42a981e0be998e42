//! A server chosen for some work, and how work gets a connection to it: failover for reads,
//! passive ejection of servers whose connections fail.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Transaction};

use super::server::Kind;
use super::{Server, Shared};
use crate::db_error::connection_failure;
use crate::error::Error;
use crate::intent::{Role, RouteIntent};

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

    /// The registry this target came from, for failover; `None` once every handle to it is
    /// gone (the target's own server still serves, without failover).
    fn shared(&self) -> Option<Arc<Shared>> {
        self.server.registry()
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
    /// For a read on a replica this fails over: when the replica cannot give a connection
    /// (refused, timed out, authentication or TLS failure, shutting down) it leaves rotation at
    /// once and the next replica in rotation, or the primary, is tried; with
    /// `failoverOnPoolExhausted`, a replica whose pool is full is passed over for the next one.
    /// A connection to the primary that fails marks the primary down, so requests that need it
    /// get a fast 503 until it passes a check.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, Error> {
        match self.checkout().await {
            Ok((conn, _)) => Ok(conn),
            Err((server, error)) => Err(Error::database(&server, error)),
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
                self.acquire_failed(server, &error);
                Err(Error::database(server, error))
            }
        }
    }

    /// A connection for this target, failing over as [`acquire`](Self::acquire) describes.
    /// Returns the connection with its server; the error names the server that failed last.
    pub(crate) async fn checkout(&self) -> Result<Checkout, (Arc<Server>, sqlx::Error)> {
        self.checkout_from(Arc::clone(&self.server), &mut Vec::new())
            .await
    }

    /// Whether a read that lost its connection before it returned anything may run again on
    /// another server: reads only (a write may have committed), and only where there is
    /// another server to go to.
    pub(crate) fn retries(&self) -> bool {
        self.intent.role() == Role::Read && !self.server.is_primary()
    }

    /// As [`checkout`](Self::checkout), starting at `server`; servers that fail are added to
    /// `tried`.
    pub(crate) async fn checkout_from(
        &self,
        mut server: Arc<Server>,
        tried: &mut Vec<Arc<Server>>,
    ) -> Result<Checkout, (Arc<Server>, sqlx::Error)> {
        let exhaustion_failover = self
            .shared()
            .is_some_and(|shared| shared.config.failover_on_pool_exhausted);
        loop {
            if exhaustion_failover && !server.is_primary() && server.exhausted() {
                // Another replica only: a busy replica's overflow must not land on the primary.
                if let Some(next) = self.next_replica(&server, tried) {
                    crate::metrics::failover(&server, "exhausted");
                    server = next;
                    continue;
                }
            }
            let start = Instant::now();
            let error = match self.acquire_from(&server).await {
                Some(Ok(conn)) => {
                    crate::metrics::acquired(&server, start.elapsed());
                    return Ok((conn, server));
                }
                Some(Err(error)) => error,
                // The replica left service while this read waited for it.
                None => match self.next_after(&server, tried, "left") {
                    Some(next) => {
                        server = next;
                        continue;
                    }
                    None => return Err((server, sqlx::Error::PoolTimedOut)),
                },
            };
            let Some(cause) = self.acquire_failed(&server, &error) else {
                return Err((server, error));
            };
            if server.is_primary() || self.intent.role() == Role::Write {
                return Err((server, error));
            }
            match self.next_after(&server, tried, cause) {
                Some(next) => server = next,
                None => return Err((server, error)),
            }
        }
    }

    /// Waits for a connection from `server`; `None` when a replica leaves service meanwhile
    /// (another read lost its connection, or a check failed): sqlx keeps retrying a refused
    /// server until the acquire timeout, as it may be starting up.
    async fn acquire_from(
        &self,
        server: &Server,
    ) -> Option<Result<PoolConnection<Postgres>, sqlx::Error>> {
        if server.is_primary() {
            return Some(server.pool.acquire().await);
        }
        let left = server.left.notified();
        tokio::pin!(left);
        left.as_mut().enable();
        if !server.is_healthy() {
            return None;
        }
        tokio::select! {
            biased;
            result = server.pool.acquire() => Some(result),
            () = left => None,
        }
    }

    /// Records a failed acquisition from `server`: counts a timeout, and takes the server out
    /// of service when the failure is the server's (not a full pool, not a removed replica).
    /// Returns why it failed when that is a reason to try another server.
    fn acquire_failed(&self, server: &Arc<Server>, error: &sqlx::Error) -> Option<&'static str> {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            crate::metrics::acquire_timeout(server);
        }
        let cause = match connection_failure(error)? {
            "timeout" if server.full() => "exhausted",
            cause => cause,
        };
        if cause != "exhausted"
            && cause != "closed"
            && let Some(shared) = self.shared()
        {
            shared.eject(server, cause, error);
        }
        Some(cause)
    }

    /// Passes on an error from work on `server`'s connection, taking the server out of service
    /// when the error says the connection or the server went away; the flag says whether it
    /// did.
    pub(crate) fn lost(&self, server: &Arc<Server>, error: sqlx::Error) -> (sqlx::Error, bool) {
        match connection_failure(&error) {
            Some(cause) => {
                if let Some(shared) = self.shared() {
                    shared.eject(server, cause, &error);
                }
                (error, true)
            }
            None => (error, false),
        }
    }

    /// The server for this read after `failed` could not serve it (`cause`), counting the
    /// failover; `failed` joins `tried`.
    pub(crate) fn next_after(
        &self,
        failed: &Arc<Server>,
        tried: &mut Vec<Arc<Server>>,
        cause: &'static str,
    ) -> Option<Arc<Server>> {
        tried.push(Arc::clone(failed));
        let next = self.shared()?.next_read(self.intent, tried)?;
        crate::metrics::failover(failed, cause);
        tracing::debug!(from = %failed.name, to = %next.name, cause, "read failed over");
        Some(next)
    }

    /// As [`next_after`](Self::next_after) for a replica whose pool is full: the next replica
    /// in rotation with a free connection, never the primary. When every other replica is full
    /// too, `None`, and `tried` is left as it was: the read then waits for its first choice.
    fn next_replica(
        &self,
        busy: &Arc<Server>,
        tried: &mut Vec<Arc<Server>>,
    ) -> Option<Arc<Server>> {
        let shared = self.shared()?;
        let before = tried.len();
        tried.push(Arc::clone(busy));
        while let Some(next) = shared
            .next_read(self.intent, tried)
            .filter(|s| !s.is_primary())
        {
            if !next.exhausted() {
                return Some(next);
            }
            tried.push(next);
        }
        tried.truncate(before);
        None
    }
}

impl Deref for Target {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.server.pool
    }
}
