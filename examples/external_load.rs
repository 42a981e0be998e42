//! End to end with the client outside the measured process: a local primary with two
//! streaming replicas (weights 2 and 1), `GET /items/{id}` served over HTTP by the demo's own
//! app as it ships (`examples/demo/app.rs`: the Prometheus recorder installed, logs at INFO,
//! request metrics, the `x-db-target` header, every route), by a minimal axum app with the same
//! query and JSON on two plain sqlx pools taken 2:1 by a counter (the same spread without
//! rwsplit), by that minimal app on rwsplit, by one plain pool at replica1, and by the two
//! plain pools without sqlx's ping before each query (`test_before_acquire(false)`: what the
//! ping's round trip costs), driven in alternating rounds by `wrk` (Debian's `wrk` package).
//!
//! `cargo run --release --example external_load [-- --seconds N --rounds N --connections N
//! --pair]` (defaults: 5 s per contender per round, 8 rounds, 16 connections; `--pair` runs
//! only the demo's app, the two plain pools and their control, so that the same minutes give
//! more rounds of the ratio that matters). The control is the plain pools' app a second
//! time, on a server of its own: its ratio to the first shows what the machine's noise alone
//! gives in the same run. On a two-core machine rounds swing by 10 % and more; the
//! ratio over all rounds is the figure to read, with the 95 % interval printed beside it
//! (rounds resampled).

use std::process::Command;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use rwsplit::{Config, ConsistencyConfig, DbError, Registry, RwSplitLayer};
use sqlx::PgPool;

#[path = "common/mod.rs"]
mod common;
use common::{arg, flag, process_cpu_seconds};

#[path = "demo/app.rs"]
mod app;

#[path = "common/minimal.rs"]
mod minimal;
use minimal::{Item, Pools, SHOW, items_cluster, plain_pool, show, show_pools};

const ROWS: u64 = 10_000;

/// Picks a random item per request, so that every contender reads the same spread of rows.
const SCRIPT: &str = r#"
request = function()
  return wrk.format("GET", "/items/" .. math.random(1, 10000))
end
"#;

async fn show_pool(
    State(pool): State<PgPool>,
    Path(id): Path<i64>,
) -> Result<axum::Json<Item>, DbError> {
    Ok(axum::Json(
        sqlx::query_as(SHOW).bind(id).fetch_one(&pool).await?,
    ))
}

/// A listener on a free port of 127.0.0.1, and its base URL.
async fn bound() -> std::io::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

/// Serves `app` on a free port of 127.0.0.1; returns its base URL.
async fn serve(app: Router) -> std::io::Result<String> {
    let (listener, url) = bound().await?;
    tokio::spawn(axum::serve(listener, app).into_future());
    Ok(url)
}

/// Serves the demo's app (its layer around the router) as [`serve`] does.
async fn serve_service(
    app: axum::routing::IntoMakeService<rwsplit::RwSplit<Router>>,
) -> std::io::Result<String> {
    let (listener, url) = bound().await?;
    tokio::spawn(axum::serve(listener, app).into_future());
    Ok(url)
}

/// What one wrk run reported.
struct Wrk {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// CPU time this process (the servers) spent per request, in microseconds.
    cpu_us_per_request: f64,
    /// Read and write system calls this process made per request (`/proc/self/io`).
    syscalls_per_request: f64,
}

/// Read and write system calls this process has made so far (`syscr` + `syscw` of
/// `/proc/self/io`; 0 where there is none): sockets to the clients and to PostgreSQL.
fn process_syscalls() -> f64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    (io.lines())
        .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

/// Runs wrk against `url` (blocking: wrk is another process, the servers keep running on
/// this runtime's other threads).
async fn wrk(url: &str, script: &std::path::Path, seconds: u64, connections: u64) -> Wrk {
    let output = {
        let (url, script) = (url.to_owned(), script.to_owned());
        tokio::task::spawn_blocking(move || {
            Command::new("wrk")
                .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
                .arg("--latency")
                .arg("-s")
                .arg(script)
                .arg(url)
                .output()
        })
        .await
        .expect("wrk's task")
        .expect("wrk runs (apt-get install wrk)")
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    let millis = |value: Option<&str>| -> f64 {
        let value = value.unwrap_or("0ms");
        let (number, unit) = value.split_at(value.find(|c: char| c.is_alphabetic()).unwrap_or(0));
        let number: f64 = number.parse().unwrap_or(0.0);
        match unit {
            "us" => number / 1000.0,
            "s" => number * 1000.0,
            _ => number,
        }
    };
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Wrk {
        requests_per_second: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50_ms: millis(field("50%")),
        p99_ms: millis(field("99%")),
        errors,
        cpu_us_per_request: 0.0,
        syscalls_per_request: 0.0,
    }
}

fn spread(mut ratios: Vec<f64>) -> String {
    ratios.sort_by(f64::total_cmp);
    format!(
        "min {:.3} / median {:.3} / max {:.3}",
        ratios[0],
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1]
    )
}

/// The ratio of all of `a`'s requests to all of `b`'s, over every round.
fn pooled(a: &[Wrk], b: &[Wrk]) -> f64 {
    let total = |runs: &[Wrk]| runs.iter().map(|r| r.requests_per_second).sum::<f64>();
    total(a) / total(b)
}

/// [`pooled`] with its 95 % interval: the rounds (each a pair run back to back) resampled with
/// replacement 2,000 times, by a fixed generator so that a run repeats.
fn pooled_interval(a: &[Wrk], b: &[Wrk]) -> String {
    let n = a.len().min(b.len());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut draws: Vec<f64> = (0..2_000)
        .map(|_| {
            let (mut x, mut y) = (0.0, 0.0);
            for _ in 0..n {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let i = (seed >> 33) as usize % n;
                x += a[i].requests_per_second;
                y += b[i].requests_per_second;
            }
            x / y
        })
        .collect();
    draws.sort_by(f64::total_cmp);
    format!(
        "{:.3} (95 % interval {:.3} to {:.3})",
        pooled(a, b),
        draws[50],
        draws[1_949]
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = arg("--seconds", 5);
    let rounds = arg("--rounds", 8);
    let connections = arg("--connections", 16);
    // As an application runs: logs at INFO (here to nowhere), metrics recorded.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .init();
    let metrics = rwsplit::prometheus::install_recorder()?;

    let cluster = items_cluster(ROWS).await?;

    let max_connections = 16;
    let registry = Registry::connect(
        Config::from_yaml(&cluster.config_yaml_weighted(&[2, 1]))?
            .max_connections(max_connections)
            .consistency(ConsistencyConfig::off()),
    )
    .await?;
    let pool =
        |node: &rwsplit_testkit::Node, ping: bool| plain_pool(&node.url(), max_connections, ping);
    let (first, second) = (
        pool(cluster.replica(0), true),
        pool(cluster.replica(1), true),
    );
    let unpinged = (
        pool(cluster.replica(0), false),
        pool(cluster.replica(1), false),
    );
    // The same app on two pools, 2:1 by a counter of its own.
    let pools_app = |(first, second): (&PgPool, &PgPool)| {
        Router::new()
            .route("/items/{id}", get(show_pools))
            .with_state(Pools::new(first.clone(), second.clone()))
    };
    let contenders = [
        (
            "the demo's app (rwsplit, 2 replicas 2:1, metrics and logs on)",
            serve_service(app::service(registry.clone(), metrics.clone())).await?,
        ),
        (
            "minimal app on rwsplit (2 replicas, 2:1)",
            serve(
                Router::new()
                    .route("/items/{id}", get(show))
                    .layer(RwSplitLayer::new(registry.clone()).request_metrics(false)),
            )
            .await?,
        ),
        (
            "two plain pools (2 replicas, 2:1)",
            serve(pools_app((&first, &second))).await?,
        ),
        (
            "one plain pool (replica1)",
            serve(
                Router::new()
                    .route("/items/{id}", get(show_pool))
                    .with_state(first.clone()),
            )
            .await?,
        ),
        (
            "two plain pools again, on a server of their own (the control)",
            serve(pools_app((&first, &second))).await?,
        ),
        (
            "two plain pools that do not ping before a query (as rwsplit's replica pools)",
            serve(pools_app((&unpinged.0, &unpinged.1))).await?,
        ),
    ];
    // Which contenders run: all, or with `--pair` the demo's app, the two plain pools and their
    // control.
    let running: Vec<usize> = match flag("--pair") {
        true => vec![0, 2, 4],
        false => (0..contenders.len()).collect(),
    };
    let script = std::env::temp_dir().join(format!("rwsplit-wrk-{}.lua", std::process::id()));
    std::fs::write(&script, SCRIPT)?;

    // Warm up every contender (connections, caches), then alternate: each round runs them all,
    // in an order rotated by one each round, so that drift hits all alike.
    for &i in &running {
        wrk(&contenders[i].1, &script, 1, connections).await;
    }
    let mut results: Vec<Vec<Wrk>> = contenders.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds as usize {
        for k in 0..running.len() {
            let i = running[(round + k) % running.len()];
            let (cpu, calls) = (process_cpu_seconds(), process_syscalls());
            let mut run = wrk(&contenders[i].1, &script, seconds, connections).await;
            let requests = run.requests_per_second * seconds as f64;
            run.cpu_us_per_request = (process_cpu_seconds() - cpu) * 1e6 / requests.max(1.0);
            run.syscalls_per_request = (process_syscalls() - calls) / requests.max(1.0);
            results[i].push(run);
        }
    }
    let _ = std::fs::remove_file(&script);

    println!();
    println!(
        "# wrk -t2 -c{connections}, GET /items/{{random id}}, {rounds} rounds of {seconds} s each, \
         release build"
    );
    println!();
    println!(
        "| | requests/s (mean of rounds) | p50 | p99 | non-2xx | server CPU per request | \
         reads + writes per request |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for ((name, _), runs) in contenders.iter().zip(&results) {
        if runs.is_empty() {
            continue;
        }
        let n = runs.len() as f64;
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.1} µs | {:.2} |",
            runs.iter().map(|r| r.requests_per_second).sum::<f64>() / n,
            runs.iter().map(|r| r.p50_ms).sum::<f64>() / n,
            runs.iter().map(|r| r.p99_ms).sum::<f64>() / n,
            runs.iter().map(|r| r.errors).sum::<u64>(),
            runs.iter().map(|r| r.cpu_us_per_request).sum::<f64>() / n,
            runs.iter().map(|r| r.syscalls_per_request).sum::<f64>() / n,
        );
    }
    let ratios = |a: usize, b: usize| -> Vec<f64> {
        results[a]
            .iter()
            .zip(&results[b])
            .map(|(x, y)| x.requests_per_second / y.requests_per_second)
            .collect()
    };
    println!();
    println!(
        "throughput ratio the demo's app / minimal app on two plain pools: {} over all rounds; \
         round by round {} (target >= 0.97)",
        pooled_interval(&results[0], &results[2]),
        spread(ratios(0, 2))
    );
    println!(
        "throughput ratio the control / two plain pools (the same app twice: what noise alone \
         gives): {} over all rounds; round by round {}",
        pooled_interval(&results[4], &results[2]),
        spread(ratios(4, 2))
    );
    if !results[1].is_empty() {
        println!(
            "throughput ratio two plain pools that do not ping / that do (what sqlx's ping \
             before each query costs): {} over all rounds; round by round {}",
            pooled_interval(&results[5], &results[2]),
            spread(ratios(5, 2))
        );
        println!(
            "throughput ratio minimal app on rwsplit / on two plain pools: {} over all rounds; \
             round by round {}",
            pooled_interval(&results[1], &results[2]),
            spread(ratios(1, 2))
        );
        println!(
            "throughput ratio minimal app on rwsplit / one plain pool, round by round: {}",
            spread(ratios(1, 3))
        );
    }

    registry.shutdown().await;
    for pool in [first, second, unpinged.0, unpinged.1] {
        pool.close().await;
    }
    Ok(())
}
