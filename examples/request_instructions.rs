//! Instructions per request, counted by callgrind, against a real local primary with two
//! streaming replicas: `GET /items/{id}` through the demo's app as it ships
//! (`examples/demo/app.rs`: the Prometheus recorder installed, request metrics, both headers),
//! through a minimal axum app on rwsplit, and through the same minimal app on two plain sqlx
//! pools taken 2:1 by a counter.
//!
//! Wall-clock ratios on a shared two-core machine swing by several percent between runs
//! (`examples/external_load.rs` prints their 95 % interval); an instruction count repeats to a
//! few hundred instructions, so a change of a few hundred shows. It counts the work of the
//! request itself (everything under `Oneshot::poll`: the router, the layer, the extractors, the
//! query and its connection's checkout, not hyper's parsing), not what the cores wait on.
//!
//! `cargo run --release --example request_instructions [-- --requests 6000]` (needs
//! `valgrind`). Each app runs twice under `valgrind --tool=callgrind`, with a warm-up only and
//! with `--requests` more, one after another; the difference over `--requests` is one request.
//! Opening connections (a pool opens a few more now and then, at its own pace, each a SCRAM
//! exchange of millions of instructions) is left out of both.
//! After each request the runtime waits 2 ms, so that the task that gives its connection back
//! has finished and no request opens a connection of its own.

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rwsplit::{Config, ConsistencyConfig, Registry, RwSplitLayer};
use tower::ServiceExt;

#[path = "common/mod.rs"]
mod common;
use common::arg;

#[path = "demo/app.rs"]
mod app;

#[path = "common/minimal.rs"]
mod minimal;
use minimal::{Pools, items_cluster, plain_pool, show, show_pools};

const WARM_UP: u64 = 50;
const APPS: [&str; 3] = ["plain", "minimal", "demo"];
/// Only the request's own work is counted: what runs under this function.
const COLLECT: &str =
    "<tower::util::oneshot::Oneshot<S,Req> as core::future::future::Future>::poll";

/// Sends `requests` requests (after a warm-up) to `app`, one after another.
async fn drive<S>(app: S, requests: u64)
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response> + Clone,
    S::Error: std::fmt::Debug,
{
    for i in 0..WARM_UP + requests {
        let request = http::Request::get(format!("/items/{}", i % 1000 + 1))
            .body(axum::body::Body::empty())
            .expect("a request");
        let response = app.clone().oneshot(request).await.expect("a response");
        assert!(response.status().is_success(), "{}", response.status());
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("the body");
        // The connection goes back to its pool in a task of its own: let it finish, so that
        // the next request finds it idle and opens no connection of its own.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The child, under callgrind: serves `requests` requests through `name`'s app.
fn child(name: &str, requests: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        // As an application runs: logs at INFO (here to nowhere), metrics recorded.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .init();
        let metrics = rwsplit::prometheus::install_recorder().expect("the recorder");
        let yaml = std::env::var("RWSPLIT_BENCH_YAML").expect("the configuration");
        let config = Config::from_yaml(&yaml).expect("a configuration");
        let registry = Registry::connect(config.consistency(ConsistencyConfig::off()))
            .await
            .expect("the registry");
        let url = |key: &str| std::env::var(key).expect("a replica's URL");
        // sqlx's default pool size.
        let pool = |key: &str| plain_pool(&url(key), 10, true);
        match name {
            "plain" => {
                let pools = Pools::new(
                    pool("RWSPLIT_BENCH_REPLICA1"),
                    pool("RWSPLIT_BENCH_REPLICA2"),
                );
                let app = Router::new()
                    .route("/items/{id}", get(show_pools))
                    .with_state(pools);
                drive(app, requests).await
            }
            "minimal" => {
                let app = Router::new()
                    .route("/items/{id}", get(show))
                    .layer(RwSplitLayer::new(registry.clone()).request_metrics(false))
                    .with_state(());
                drive(app, requests).await
            }
            _ => drive(app::app(registry.clone(), metrics), requests).await,
        }
        registry.shutdown().await;
    });
}

/// Instructions callgrind counts under [`COLLECT`] for `name`'s app serving `requests`, less
/// those of opening connections (a pool opens a few more now and then, at its own pace).
fn instructions(name: &str, requests: u64, env: &[(&str, String)]) -> u64 {
    let profile = std::env::temp_dir().join(format!(
        "rwsplit-callgrind-{}-{name}-{requests}",
        std::process::id()
    ));
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--cache-sim=no"])
        .arg(format!("--toggle-collect={COLLECT}"))
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(std::env::current_exe().expect("this program"))
        .args(["--child", name, &requests.to_string()])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("valgrind runs (apt-get install valgrind)");
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let annotated = Command::new("callgrind_annotate")
        .arg("--inclusive=yes")
        .arg(&profile)
        .output()
        .expect("callgrind_annotate runs (it comes with valgrind)");
    let _ = std::fs::remove_file(&profile);
    let text = String::from_utf8_lossy(&annotated.stdout);
    // Lines are "  1,234,567 (12.34%)  file:function": the count where `what` is named.
    let count = |what: &str| -> u64 {
        text.lines()
            .find(|line| line.contains(what))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|n| n.replace(',', "").parse().ok())
            .unwrap_or(0)
    };
    count("PROGRAM TOTALS") - count("PgConnection>::establish::{{closure}} ")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--child") {
        Some(i) => {
            child(&args[i + 1], args[i + 2].parse()?);
            Ok(())
        }
        None => tokio::runtime::Runtime::new()?.block_on(measure()),
    }
}

/// Starts the cluster and counts each app's requests in a child under callgrind.
async fn measure() -> Result<(), Box<dyn std::error::Error>> {
    let requests = arg("--requests", 6_000);
    let cluster = items_cluster(1_000).await?;
    let env = [
        ("RWSPLIT_BENCH_YAML", cluster.config_yaml_weighted(&[2, 1])),
        ("RWSPLIT_BENCH_REPLICA1", cluster.replica(0).url()),
        ("RWSPLIT_BENCH_REPLICA2", cluster.replica(1).url()),
    ];
    println!();
    println!("# instructions per request, GET /items/{{id}}, {requests} requests, release build");
    println!();
    println!("| app | instructions per request | more than the plain pools |");
    println!("|---|---:|---:|");
    let mut plain = 0.0;
    for name in APPS {
        let (env, name_) = (env.clone(), name.to_owned());
        let per_request = tokio::task::spawn_blocking(move || {
            let base = instructions(&name_, 0, &env);
            let all = instructions(&name_, requests, &env);
            all.saturating_sub(base) as f64 / requests as f64
        })
        .await?;
        if name == "plain" {
            plain = per_request;
        }
        println!(
            "| {name} | {per_request:.0} | {:+.0} ({:.2}x) |",
            per_request - plain,
            per_request / plain
        );
    }
    Ok(())
}
