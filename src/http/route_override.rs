//! Per-route overrides of the route intent: force the primary, allow replicas, or read from a
//! replica group.
//!
//! Apply [`RouteOverride`] to a route (or a nested router) with axum's `route_layer` or
//! `layer`, inside the [`RwSplitLayer`](crate::RwSplitLayer). The override wins over the
//! method: a GET that must see the latest data can be forced to the primary, and a read-only
//! POST (a search with a JSON body) can be allowed on replicas. With separation disabled,
//! overrides change nothing: everything stays on the primary.
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use rwsplit::{Config, DbRead, Registry, ReplicaConfig, RouteOverride, RwSplitLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::connect_lazy(
//!     Config::new("127.0.0.1")
//!         .read_write_separation(true)
//!         .replica(ReplicaConfig::new("replica1", "127.0.0.1").port(5433)),
//! )?;
//! async fn server(db: DbRead) -> String {
//!     db.name().to_owned()
//! }
//!
//! let app = Router::new()
//!     .route("/balance", get(server).route_layer(RouteOverride::primary()))
//!     .route("/search", post(server).route_layer(RouteOverride::replica()))
//!     .layer(RwSplitLayer::new(registry.clone()))
//!     .with_state(registry);
//!
//! let body = |r: http::Response<axum::body::Body>| async move {
//!     axum::body::to_bytes(r.into_body(), 1024).await.unwrap()
//! };
//! let get = http::Request::get("/balance").body(axum::body::Body::empty())?;
//! assert_eq!(body(app.clone().oneshot(get).await?).await, "primary");
//! let post = http::Request::post("/search").body(axum::body::Body::empty())?;
//! assert_eq!(body(app.oneshot(post).await?).await, "replica1");
//! # Ok(())
//! # }
//! ```

use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::layer::Routing;
use crate::route::Role;

/// A layer that sets the route intent of the requests it sees. See the
/// [module docs](crate::RouteOverride).
#[derive(Clone, Copy, Debug)]
pub struct RouteOverride {
    role: Role,
    group: Option<&'static str>,
}

/// The replica group a route reads from, in the request's extensions: a route override nearer
/// the handler replaces one further out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplicaGroup(pub(crate) &'static str);

impl RouteOverride {
    /// Every request through this layer uses the primary, whatever its method.
    pub fn primary() -> Self {
        RouteOverride {
            role: Role::Write,
            group: None,
        }
    }

    /// Requests through this layer may read from replicas, whatever their method. Use it only
    /// for handlers that do not write: their `DbWrite` still reaches the primary, but a
    /// `DbRead` would not see what the same request wrote.
    pub fn replica() -> Self {
        RouteOverride {
            role: Role::Read,
            group: None,
        }
    }

    /// Requests through this layer read from the replicas of the group `group` (`group:` on a
    /// replica), whatever their method: an analytics or reporting route kept off the replicas
    /// that serve everything else, and they off it. While none of the group's replicas is in
    /// service, its reads go where `db.replicaGroups.<group>.fallback` says (the replicas of
    /// no group by default; the primary; another group; or `503` with `none`), counted in
    /// `rwsplit_group_fallbacks_total`. A read that must see the client's recent write still
    /// goes to the primary unless a replica of the group has it. As with
    /// [`replica`](Self::replica), only for handlers that do not write.
    pub fn replica_group(group: &'static str) -> Self {
        RouteOverride {
            role: Role::Read,
            group: Some(group),
        }
    }
}

impl<S> Layer<S> for RouteOverride {
    type Service = RouteOverrideService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteOverrideService {
            inner,
            role: self.role,
            group: self.group,
        }
    }
}

/// The service [`RouteOverride`] wraps around its inner service.
#[derive(Clone, Copy, Debug)]
pub struct RouteOverrideService<S> {
    inner: S,
    role: Role,
    group: Option<&'static str>,
}

impl<S, B> Service<Request<B>> for RouteOverrideService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Without the request's state the `RwSplitLayer` is missing; the extractors say so.
        if let Some(Routing(state)) = request.extensions().get::<Routing>() {
            state.set_intent(state.intent().overridden(self.role));
        }
        let extensions = request.extensions_mut();
        match self.group {
            Some(group) => extensions.insert(ReplicaGroup(group)),
            None => extensions.remove::<ReplicaGroup>(),
        };
        self.inner.call(request)
    }
}
