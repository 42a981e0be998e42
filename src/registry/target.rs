//! A server chosen for some work: what the [`Db`](crate::Db) handles hold. Its attempts are
//! [`attempt`](super::attempt)'s.

use std::fmt;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use super::server::Kind;
use super::{Server, Shared};
use crate::intent::RouteIntent;

/// A server chosen for some work, and why it was chosen: what a [`Db`](crate::Db) handle holds.
#[derive(Clone)]
pub(crate) struct Target {
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
        Target::new(shared.primary.load_full(), intent)
    }

    /// The server's name: `primary`, or the replica's configured name.
    pub(crate) fn name(&self) -> &str {
        &self.server.name
    }

    /// Whether this is the primary.
    pub(crate) fn is_primary(&self) -> bool {
        self.server.kind == Kind::Primary
    }

    /// The server's pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.server.pool
    }

    /// The intent this server was chosen for. Its reason is
    /// [`Fallback`](crate::Reason::Fallback) when a read went to the primary because no replica could
    /// serve, and [`Disabled`](crate::Reason::Disabled) when separation is off.
    pub(crate) fn intent(&self) -> RouteIntent {
        self.intent
    }

    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Whether this target refuses work now: the primary, known not to be a primary (in
    /// recovery, or refused). A primary that is only unreachable is waited for.
    pub(crate) fn primary_refuses(&self) -> bool {
        self.is_primary() && !self.server.state().awaited()
    }
}
