//! What the benchmarks share: registries that do no I/O, the routers compared, and a way to
//! run a request that never waits.

#![allow(dead_code)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use rwsplit::{
    Config, ConsistencyConfig, DbRead, LoadBalancing, Registry, ReplicaConfig, RwSplitLayer,
};

/// Polls a future that completes without waiting (nothing here does I/O).
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the request waited: this benchmark must not do I/O"),
    }
}

/// A runtime to build registries in that is never driven, so their health loops never run.
pub fn idle_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A registry with `replicas` replicas (none reachable: their health is never checked).
pub fn registry(replicas: usize, consistency: ConsistencyConfig) -> Registry {
    balanced(replicas, consistency, LoadBalancing::RoundRobin)
}

/// As [`registry`], choosing with `strategy`.
pub fn balanced(
    replicas: usize,
    consistency: ConsistencyConfig,
    strategy: LoadBalancing,
) -> Registry {
    let mut config = Config::new("127.0.0.1")
        .read_write_separation(true)
        .health_check_interval(Duration::from_secs(3600))
        .load_balancing(strategy)
        .consistency(consistency);
    for i in 0..replicas {
        config = config.replica(
            ReplicaConfig::new(format!("replica{}", i + 1), "127.0.0.1").port(20_000 + i as u16),
        );
    }
    Registry::connect_lazy(config).expect("a valid configuration")
}

pub fn request() -> Request<Body> {
    Request::get("/items/7").body(Body::empty()).unwrap()
}

async fn plain() -> &'static str {
    "ok"
}

async fn with_db(db: DbRead) -> &'static str {
    black_box(db.name());
    "ok"
}

/// The same route five ways: without rwsplit; behind a layer that does nothing (what any Tower
/// layer costs through axum's `Router::layer`, which boxes the layered route's future once
/// more); with the rwsplit layer and a handler that takes no extractor; with the layer and
/// `DbRead` (defaults: request metrics on); and the same with request metrics off.
pub fn routers(registry: &Registry) -> [(&'static str, Router); 5] {
    let bare = Router::new()
        .route("/items/{id}", get(plain))
        .with_state(registry.clone());
    let noop = Router::new()
        .route("/items/{id}", get(plain))
        .layer(tower::layer::util::Identity::new())
        .with_state(registry.clone());
    let layer_only = Router::new()
        .route("/items/{id}", get(plain))
        .layer(RwSplitLayer::new(registry.clone()))
        .with_state(registry.clone());
    let layered = |layer: RwSplitLayer| {
        Router::new()
            .route("/items/{id}", get(with_db))
            .layer(layer)
            .with_state(registry.clone())
    };
    [
        ("without rwsplit", bare),
        ("a layer that does nothing", noop),
        ("layer, no extractor", layer_only),
        (
            "layer + DbRead",
            layered(RwSplitLayer::new(registry.clone())),
        ),
        (
            "layer + DbRead, request metrics off",
            layered(RwSplitLayer::new(registry.clone()).request_metrics(false)),
        ),
    ]
}
