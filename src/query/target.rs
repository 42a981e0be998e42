//! A server chosen for some work, with the registry it belongs to and the intent it was chosen
//! for: what the [`Db`](crate::Db) handles hold. The registry travels with the work (as sqlx's
//! pool passes itself down), so that a read can fail over; the server never points back at it.

use std::fmt;
use std::sync::Arc;

use sqlx::PgPool;

use crate::registry::{Registry, Routed, Shared, WorkSettings};
use crate::route::RouteIntent;
use crate::server::Server;

/// A server chosen for some work, and why it was chosen.
#[derive(Clone)]
pub(crate) struct Target {
    server: Arc<Server>,
    intent: RouteIntent,
    registry: Registry,
    /// The route template of the request it was chosen for, when an extractor chose it.
    route: Option<Arc<str>>,
    /// Refused for its replica group: none of it in service, and `fallback: none`.
    unavailable: bool,
    /// The live settings its work reads, as they were when the server was chosen.
    settings: WorkSettings,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server.name)
            .field("intent", &self.intent)
            .finish()
    }
}

impl Target {
    pub(crate) fn new(registry: &Registry, routed: Routed) -> Target {
        Target {
            server: routed.server,
            intent: routed.intent,
            registry: registry.clone(),
            route: None,
            unavailable: routed.unavailable,
            settings: routed.settings,
        }
    }

    /// The same target, chosen for a request of `route` (a template, for the logs).
    pub(crate) fn for_route(mut self, route: Arc<str>) -> Target {
        self.route = Some(route);
        self
    }

    /// The route template of the request it was chosen for, if any.
    pub(crate) fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The server's name: `primary`, or the replica's configured name.
    pub(crate) fn name(&self) -> &str {
        &self.server.name
    }

    /// Whether this is the primary.
    pub(crate) fn is_primary(&self) -> bool {
        self.server.is_primary()
    }

    /// The server's pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.server.pool
    }

    /// The intent this server was chosen for. Its reason is
    /// [`Fallback`](crate::Reason::Fallback) when a read went to the primary because no replica
    /// could serve, and [`Disabled`](crate::Reason::Disabled) when separation is off.
    pub(crate) fn intent(&self) -> RouteIntent {
        self.intent
    }

    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The registry the work belongs to.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.registry.shared
    }

    /// `failoverOnPoolExhausted`, as it was when the server was chosen.
    pub(crate) fn exhaustion_failover(&self) -> bool {
        self.settings.exhaustion_failover
    }

    /// Whether each query's latency feeds its server's estimate (`loadBalancing: peakEwma`).
    pub(crate) fn sampled(&self) -> bool {
        self.settings.sampled
    }

    /// Whether it was refused for its replica group (none in service, `fallback: none`).
    pub(crate) fn is_refused(&self) -> bool {
        self.unavailable
    }

    /// `Ok` for work on this target; the error, naming the group, when it was refused for
    /// its replica group.
    pub(crate) fn admitted(&self) -> Result<(), sqlx::Error> {
        match self.intent.group().filter(|_| self.unavailable) {
            None => Ok(()),
            Some(group) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("no replica of group {group} is in service, and its fallback is none"),
            ))),
        }
    }

    /// Whether this target refuses work now: the primary, known not to be a primary (in
    /// recovery, or refused). A primary that is only unreachable is waited for.
    pub(crate) fn primary_refuses(&self) -> bool {
        self.is_primary() && !self.server.state().awaited()
    }
}
