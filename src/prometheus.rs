//! A Prometheus recorder with sensible buckets, and `GET /metrics` as an axum route or on a
//! listener of its own. Needs the `prometheus` feature.
//!
//! rwsplit itself only records through the `metrics` facade; this is the optional wiring for
//! applications that have no recorder yet. It uses `metrics-exporter-prometheus` without its
//! HTTP listener and push-gateway features, so no extra HTTP or TLS stack comes along.
//!
//! ```
//! use axum::{Router, routing::get};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = rwsplit::prometheus::install_recorder()?;
//! let app: Router = Router::new()
//!     .route("/metrics", rwsplit::prometheus::metrics_route(handle.clone()))
//!     .route("/", get(|| async { "hello" }));
//! // Or on its own port: rwsplit::prometheus::serve(handle, "127.0.0.1:9100".parse()?).await?;
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodRouter, get};
use http::{HeaderValue, header};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for every `*_seconds` histogram: from half a millisecond (a pool acquire, a query
/// on a local replica) to ten seconds (a timeout).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs a global Prometheus recorder with [`DURATION_BUCKETS`] and returns its handle.
/// Inside a Tokio runtime it also starts the handle's periodic upkeep (every 5 s), which
/// keeps histogram memory bounded. Fails if a recorder is already installed.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &DURATION_BUCKETS)?
        .install_recorder()?;
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let upkeep = handle.clone();
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                upkeep.run_upkeep();
            }
        });
    }
    Ok(handle)
}

/// `GET` answering with the metrics in the Prometheus text format, for any router state.
pub fn metrics_route<S>(handle: PrometheusHandle) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move || {
        let handle = handle.clone();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                )],
                handle.render(),
            )
        }
    })
}

/// Serves `GET /metrics` on `addr` until the task is dropped or the listener fails.
pub async fn serve(handle: PrometheusHandle, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app: Router = Router::new().route("/metrics", metrics_route(handle));
    axum::serve(listener, app).await
}
