//! The Tower layer that decides each request's [`RouteIntent`] and puts it into the request's
//! extensions, in the request's state.
//!
//! Add [`RwSplitLayer`] around an axum `Router` (or any Tower service taking `http::Request`).
//! For every request it asks its [`RoutePolicy`] (by default [`MethodPolicy`]: GET, HEAD and
//! OPTIONS read, everything else writes) and inserts the answer. With read/write separation
//! disabled in the registry, every request gets a write intent with reason
//! [`Disabled`](crate::Reason::Disabled). Optionally it names the server that served the
//! request in a response header (`x-db-target`), which helps when testing a deployment.
//!
//! The request's state is one extension: the registry, the intent (which a
//! [`RouteOverride`](crate::RouteOverride) may change on its way down) and a slot where the
//! extractors note which server they handed out (for the consistency token after a write, the
//! header and the request metrics). The layer keeps a handle to it: what the response needs
//! travels with the request, wherever it is extracted (a middleware that spawns the rest of
//! the request included), and a request costs one allocation for it and one for the extension.
//!
//! ```
//! use axum::{Router, routing::get};
//! use rwsplit::{Config, DbRead, Registry, ReplicaConfig, RwSplitLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::connect_lazy(
//!     Config::new("127.0.0.1")
//!         .read_write_separation(true)
//!         .replica(ReplicaConfig::new("replica1", "127.0.0.1").port(5433)),
//! )?;
//!
//! // A handler that only reports where its reads would go (no query, so no database needed).
//! async fn where_reads_go(db: DbRead) -> String {
//!     db.name().to_owned()
//! }
//!
//! let app = Router::new()
//!     .route("/", get(where_reads_go).post(where_reads_go))
//!     .layer(RwSplitLayer::new(registry.clone()).target_header(true))
//!     .with_state(registry);
//!
//! let get = http::Request::get("/").body(axum::body::Body::empty())?;
//! let response = app.clone().oneshot(get).await?;
//! assert_eq!(response.headers()["x-db-target"], "replica1");
//!
//! // A POST's `DbRead` reads from the primary, so it sees its own request's writes.
//! let post = http::Request::post("/").body(axum::body::Body::empty())?;
//! let response = app.oneshot(post).await?;
//! assert_eq!(response.headers()["x-db-target"], "primary");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderName, HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::instrument::Instrumented;
use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
use tracing::{Instrument, Level};

use crate::config::StickyMode;
use crate::consistency::ConsistencyToken;
use crate::metrics::RouteMetrics;
use crate::registry::Registry;
use crate::route::{MethodPolicy, RouteIntent, RoutePolicy};
use crate::server::Server;

/// The default name of the header that names the server behind a response.
pub const TARGET_HEADER: HeaderName = HeaderName::from_static("x-db-target");

/// Decides each request's [`RouteIntent`]. See the [module docs](crate::RwSplitLayer).
#[derive(Clone)]
pub struct RwSplitLayer<P = MethodPolicy> {
    registry: Registry,
    policy: P,
    target_header: Option<HeaderName>,
    request_metrics: bool,
}

impl RwSplitLayer {
    /// A layer routing by HTTP method, with the `x-db-target` header off.
    pub fn new(registry: Registry) -> Self {
        RwSplitLayer {
            registry,
            policy: MethodPolicy,
            target_header: None,
            request_metrics: true,
        }
    }
}

impl<P> RwSplitLayer<P> {
    /// Decides intents with `policy` instead of by method alone. A
    /// [`RouteOverride`](crate::RouteOverride) on a route still wins.
    pub fn policy<Q: RoutePolicy>(self, policy: Q) -> RwSplitLayer<Q> {
        RwSplitLayer {
            registry: self.registry,
            policy,
            target_header: self.target_header,
            request_metrics: self.request_metrics,
        }
    }

    /// Records `rwsplit_request_duration_seconds` by serving server and route. Default on; it
    /// costs a clock read at each end of the request (no allocation: the histogram handle of
    /// each server and route is registered once and kept).
    pub fn request_metrics(mut self, enabled: bool) -> Self {
        self.request_metrics = enabled;
        self
    }

    /// Adds an `x-db-target` header to each response that used the database, naming the
    /// server (`primary` or the replica's name; `primary` when a request used both). Default
    /// off: it tells clients about your topology, which is useful in tests and demos and
    /// rarely wanted in production.
    pub fn target_header(mut self, enabled: bool) -> Self {
        self.target_header = enabled.then_some(TARGET_HEADER);
        self
    }

    /// As [`target_header`](Self::target_header)`(true)`, with a header name of your own.
    pub fn target_header_name(mut self, name: HeaderName) -> Self {
        self.target_header = Some(name);
        self
    }
}

impl<P: fmt::Debug> fmt::Debug for RwSplitLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwSplitLayer")
            .field("policy", &self.policy)
            .field("target_header", &self.target_header)
            .field("request_metrics", &self.request_metrics)
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone> Layer<S> for RwSplitLayer<P> {
    type Service = RwSplit<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RwSplit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RwSplitLayer`] wraps around its inner service.
#[derive(Clone)]
pub struct RwSplit<S, P = MethodPolicy> {
    inner: S,
    layer: RwSplitLayer<P>,
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for RwSplit<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwSplit")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for RwSplit<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: RoutePolicy,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let registry = &self.layer.registry;
        let separation = registry.separation_enabled();
        let sticky = separation && registry.sticky().mode != StickyMode::Off;
        // Only requests that carry a token pay for it: one HMAC, no I/O.
        let intent =
            RouteIntent::of_request(&self.layer.policy, &request, separation, || match sticky {
                true => registry.required_position(request.headers()),
                false => 0,
            });
        // The extractors find the intent and the request's state here, whatever the router's
        // state; the state is also where they note what they handed out, for the response.
        let header = self.layer.target_header.is_some();
        let state = Arc::new(RequestState::new(registry.clone(), intent, header));
        request.extensions_mut().insert(Routing(Arc::clone(&state)));
        let inner = match spans_enabled() {
            true => {
                let span = tracing::debug_span!(
                    "rwsplit",
                    db.role = intent.role().as_str(),
                    db.reason = intent.reason().as_str(),
                    db.server = tracing::field::Empty,
                );
                Inner::Traced {
                    future: self.inner.call(request).instrument(span),
                }
            }
            // No subscriber wants DEBUG spans: the inner future runs as it is, with no span to
            // enter at each poll.
            false => Inner::Plain {
                future: self.inner.call(request),
            },
        };
        ResponseFuture {
            inner,
            target_header: self.layer.target_header.clone(),
            state: Some(state),
            // Whether the response gets a token is decided when it is ready, from what the
            // request used: a `DbWrite` (a read writes nothing, whatever the method).
            issues_token: sticky,
            started: self.layer.request_metrics.then(Instant::now),
            token: None,
        }
    }
}

type TokenFuture<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

pin_project! {
    /// The inner service's future, in the request's span when one is wanted.
    #[project = InnerProjection]
    enum Inner<F> {
        Traced { #[pin] future: Instrumented<F> },
        Plain { #[pin] future: F },
    }
}

impl<F: Future> Future for Inner<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            InnerProjection::Traced { future } => future.poll(cx),
            InnerProjection::Plain { future } => future.poll(cx),
        }
    }
}

pin_project! {
    /// The response future of [`RwSplit`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        inner: Inner<F>,
        target_header: Option<HeaderName>,
        state: Option<Arc<RequestState>>,
        issues_token: bool,
        started: Option<Instant>,
        token: Option<TokenFuture<B>>,
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(token) = this.token.as_mut() {
            return Poll::Ready(Ok(ready!(token.as_mut().poll(cx))));
        }
        let mut response = ready!(this.inner.as_mut().poll(cx))?;
        let Some(mut state) = this.state.take() else {
            return Poll::Ready(Ok(response));
        };
        // What the extractors handed out, moved out of the state when the request's extension
        // is gone (the usual case), copied otherwise.
        let handed = match Arc::get_mut(&mut state) {
            Some(only) => only.take_handed(),
            None => state.handed().cloned(),
        };
        if let Some(started) = this.started.take() {
            let took = started.elapsed();
            match &handed {
                Some(handed) => handed.metrics.served(took),
                None => state
                    .registry
                    .unserved_duration()
                    .record(took.as_secs_f64()),
            }
        }
        if let Some(name) = this.target_header.take()
            && let Some(value) = handed.and_then(|h| h.header)
        {
            response.headers_mut().insert(name, value);
        }
        let status = response.status();
        if *this.issues_token && state.wrote() && (status.is_success() || status.is_redirection()) {
            let registry = state.registry.clone();
            drop(state);
            let mut token = Box::pin(attach_token(registry, response));
            return match token.as_mut().poll(cx) {
                Poll::Ready(response) => Poll::Ready(Ok(response)),
                Poll::Pending => {
                    *this.token = Some(token);
                    Poll::Pending
                }
            };
        }
        Poll::Ready(Ok(response))
    }
}

/// Adds a consistency token for the write this response acknowledges: the primary's WAL
/// position now, signed, as a cookie and a header. A failure to read the position costs the
/// client its stickiness for this write, never the response.
async fn attach_token<B>(registry: Registry, mut response: Response<B>) -> Response<B> {
    let token = match registry.sticky().mode {
        // The window counts from the issue time; the position plays no part.
        StickyMode::Window => Ok(ConsistencyToken::new(0)),
        _ => registry.consistency_token().await,
    };
    match token {
        Ok(token) => {
            let text = registry.sign_token(&token);
            let sticky = registry.sticky();
            let headers = response.headers_mut();
            if let Some(cookie) = sticky.set_cookie(&text) {
                headers.append(header::SET_COOKIE, cookie);
            }
            if let Ok(value) = HeaderValue::try_from(text) {
                headers.insert(sticky.header_name.clone(), value);
            }
            registry.token_issued();
        }
        Err(error) => tracing::warn!(
            %error,
            "could not read the primary's WAL position: no consistency token for this write"
        ),
    }
    response
}

/// Whether a subscriber may want the request span (DEBUG, as libraries' per-request spans
/// are): one atomic load.
pub(crate) fn spans_enabled() -> bool {
    Level::DEBUG <= STATIC_MAX_LEVEL && Level::DEBUG <= LevelFilter::current()
}

/// One request's view of rwsplit: its registry, and what the extractors handed out during it,
/// which the layer reads when the response is ready (for the token, the header and the request
/// metrics). Written without a lock: the first server noted and the primary each once.
pub(crate) struct RequestState {
    pub(crate) registry: Registry,
    /// The intent, packed ([`RouteIntent::packed`]): the layer's, or a route override's.
    kind: AtomicU8,
    min_position: AtomicU64,
    first: OnceLock<Handed>,
    primary: OnceLock<Handed>,
    wrote: AtomicBool,
    /// The layer names the server in a header: keep its value.
    header: bool,
}

/// A server handed out: its header value (when the layer sends one) and the metrics of the
/// route it served. Not the server itself: its `Arc`'s count is shared by every core.
#[derive(Clone)]
struct Handed {
    header: Option<HeaderValue>,
    metrics: Arc<RouteMetrics>,
}

/// The request extension that carries a request's [`RequestState`] to the extractors.
#[derive(Clone)]
pub(crate) struct Routing(pub(crate) Arc<RequestState>);

impl RequestState {
    fn new(registry: Registry, intent: RouteIntent, header: bool) -> RequestState {
        let (kind, min_position) = intent.packed();
        RequestState {
            registry,
            kind: AtomicU8::new(kind),
            min_position: AtomicU64::new(min_position),
            first: OnceLock::new(),
            primary: OnceLock::new(),
            wrote: AtomicBool::new(false),
            header,
        }
    }

    /// The request's intent now.
    pub(crate) fn intent(&self) -> RouteIntent {
        RouteIntent::unpacked(
            self.kind.load(Ordering::Relaxed),
            self.min_position.load(Ordering::Relaxed),
        )
    }

    /// Replaces the request's intent (a route override, on the request's way down).
    pub(crate) fn set_intent(&self, intent: RouteIntent) {
        let (kind, min_position) = intent.packed();
        self.kind.store(kind, Ordering::Relaxed);
        self.min_position.store(min_position, Ordering::Relaxed);
    }

    /// The server to report: the primary, once noted (a request that wrote is reported as
    /// served by the primary), else the first one handed out.
    fn handed(&self) -> Option<&Handed> {
        self.primary.get().or_else(|| self.first.get())
    }

    /// As [`handed`](Self::handed), moved out.
    fn take_handed(&mut self) -> Option<Handed> {
        self.primary.take().or_else(|| self.first.take())
    }

    fn wrote(&self) -> bool {
        self.wrote.load(Ordering::Relaxed)
    }

    /// Notes that `server` was handed out (and whether for writing), with the route's metrics.
    pub(crate) fn note(&self, server: &Arc<Server>, wrote: bool, metrics: Arc<RouteMetrics>) {
        if wrote {
            self.wrote.store(true, Ordering::Relaxed);
        }
        let slot = match server.is_primary() {
            true => &self.primary,
            false => &self.first,
        };
        if slot.get().is_none() {
            let _ = slot.set(Handed {
                header: self.header.then(|| server.header_value.clone()).flatten(),
                metrics,
            });
        }
    }
}
