//! Per-route overrides of the route intent: force the primary, or allow replicas.
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
}

impl RouteOverride {
    /// Every request through this layer uses the primary, whatever its method.
    pub fn primary() -> Self {
        RouteOverride { role: Role::Write }
    }

    /// Requests through this layer may read from replicas, whatever their method. Use it only
    /// for handlers that do not write: their `DbWrite` still reaches the primary, but a
    /// `DbRead` would not see what the same request wrote.
    pub fn replica() -> Self {
        RouteOverride { role: Role::Read }
    }
}

impl<S> Layer<S> for RouteOverride {
    type Service = RouteOverrideService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteOverrideService {
            inner,
            role: self.role,
        }
    }
}

/// The service [`RouteOverride`] wraps around its inner service.
#[derive(Clone, Copy, Debug)]
pub struct RouteOverrideService<S> {
    inner: S,
    role: Role,
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Without the request's state the `RwSplitLayer` is missing; the extractors say so.
        if let Some(Routing(state)) = request.extensions().get::<Routing>() {
            state.set_intent(state.intent().overridden(self.role));
        }
        self.inner.call(request)
    }
}
