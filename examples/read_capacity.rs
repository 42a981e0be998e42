//! Read capacity with every PostgreSQL server of the local cluster capped at the same CPU share
//! by a cgroup (the cgroup v1 `cpu` controller, `cpu.cfs_quota_us`), so that one machine
//! behaves like three small database hosts: a database-heavy read route (a sequential scan and
//! an aggregate over 20,000 rows) served by an axum app on rwsplit, driven by `wrk`, with
//!
//! - separation off: every read on the primary;
//! - separation on: the two replicas (weights 1 and 1);
//! - separation on and `primaryReadWeight: 1`: the replicas and the primary, 1:1:1.
//!
//! Contenders take turns for several rounds; each round reports requests per second, and the
//! table gives each contender's total against separation off, measured in the same run.
//!
//! `cargo run --release --example read_capacity [-- --quota 20 --seconds 8 --rounds 3]`
//! (`--quota`: each server's share of one CPU, in percent). Needs root, a cgroup v1 `cpu`
//! hierarchy at `/sys/fs/cgroup/cpu`, and Debian's `wrk`.

use std::path::Path;
use std::process::Command;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use rwsplit::{Config, DbRead, Registry, RwSplitLayer};
use rwsplit_testkit::{Cluster, CpuCap, Node};

#[path = "common/mod.rs"]
mod common;
use common::arg;

/// Work for the server's CPU alone, the same on every server: a scan of a table would not
/// be, as a standby checks every row's visibility where the primary skips all-visible pages
/// (measured here: a replica alone answers a scan of a frozen 20,000-row table at 0.7 to 0.95
/// of the primary's rate).
const QUERY: &str = "SELECT count(*), coalesce(sum(length(md5(g::text))), 0)::int8 \
                     FROM generate_series(1, 3000) g WHERE md5(g::text) LIKE '%7%'";

/// The route: one scan of the table and an aggregate, on whichever server the read gets.
async fn heavy(db: DbRead) -> Result<String, (StatusCode, String)> {
    let (count, total): (i64, i64) = sqlx::query_as(QUERY)
        .fetch_one(&db)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(format!("{count} {total}"))
}

/// Queries per second `node` alone answers to 8 clients running the route's query for
/// `seconds` (`pgbench`, from the same directory as the server's binaries): its capacity
/// without rwsplit, HTTP or the app.
fn alone(node: &Node, seconds: u64) -> f64 {
    let script = std::env::temp_dir().join("rwsplit-capacity.sql");
    std::fs::write(&script, format!("{QUERY};\n")).unwrap();
    let bin =
        std::env::var("RWSPLIT_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let output = Command::new(Path::new(&bin).join("pgbench"))
        .args(["-n", "-c8", "-j2", "-T", &seconds.to_string(), "-f"])
        .arg(&script)
        .arg(node.url())
        .output()
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no rate in pgbench's output: {text}"))
}

/// Requests per second `wrk` got from `address` in `seconds`.
fn drive(address: std::net::SocketAddr, seconds: u64) -> f64 {
    let output = Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s")])
        .arg(format!("http://{address}/heavy"))
        .output()
        .expect("wrk runs (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let errors = text.lines().find(|l| l.contains("Non-2xx"));
    assert!(errors.is_none(), "failed requests: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output: {text}"))
}

#[tokio::main]
async fn main() {
    let (quota, seconds, rounds) = (
        arg("--quota", 20) as u32,
        arg("--seconds", 8),
        arg("--rounds", 3),
    );
    let cluster = Cluster::start(2).await.expect("start the local cluster");
    let capped: Vec<CpuCap> = std::iter::once(cluster.primary())
        .chain(cluster.replicas())
        .map(|node| CpuCap::new(node, quota).expect("cap the server (needs root and cgroup v1)"))
        .collect();

    let nodes: Vec<&Node> = std::iter::once(cluster.primary())
        .chain(cluster.replicas())
        .collect();
    let mut rates = Vec::new();
    for node in &nodes {
        let rate = alone(node, seconds);
        rates.push(rate);
        println!(
            "{} alone (pgbench, 8 clients): {rate:.1} queries/s",
            node.name()
        );
    }
    let base = Config::from_yaml(&cluster.config_yaml_weighted(&[1, 1])).unwrap();
    let contenders = [
        ("separation off", base.clone().read_write_separation(false)),
        ("replicas (1:1)", base.clone().read_write_separation(true)),
        (
            "replicas and primary (1:1:1)",
            base.read_write_separation(true).primary_read_weight(1),
        ),
    ];
    let mut totals = vec![0.0; contenders.len()];
    println!("each server capped at {quota} % of a CPU; {seconds} s per contender per round");
    for round in 1..=rounds {
        for (i, (name, config)) in contenders.iter().enumerate() {
            let registry = Registry::connect(config.clone()).await.unwrap();
            let app = Router::new()
                .route("/heavy", get(heavy))
                .layer(RwSplitLayer::new(registry.clone()));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            // Warm the pools and the servers' caches.
            tokio::task::spawn_blocking(move || drive(address, 1))
                .await
                .unwrap();
            let rate = tokio::task::spawn_blocking(move || drive(address, seconds))
                .await
                .unwrap();
            server.abort();
            registry.shutdown().await;
            totals[i] += rate;
            println!("round {round}: {name}: {rate:.1} requests/s");
        }
    }
    println!();
    println!("| reads from | requests/s (mean of {rounds}) | against separation off |");
    println!("|---|---:|---:|");
    for (i, (name, _)) in contenders.iter().enumerate() {
        let mean = totals[i] / rounds as f64;
        println!("| {name} | {mean:.1} | {:.2}x |", totals[i] / totals[0]);
    }
    let ideal: f64 = rates.iter().sum();
    println!(
        "\nthe three servers alone, summed: {ideal:.1} queries/s ({:.2}x the primary alone)",
        ideal / rates[0]
    );
    drop(capped);
}
