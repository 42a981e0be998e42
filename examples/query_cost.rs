//! What a query costs the application's process through rwsplit against a plain sqlx pool:
//! CPU time (user and system, from `/proc/self/stat`) per query, for the same point query run
//! one after another on one replica of a local cluster, through
//!
//! - a plain `PgPool` at the replica;
//! - `registry.read()` for each query (a pick, then the query);
//! - one `DbRead` kept for every query (the query path alone).
//!
//! The three alternate for several rounds; the machine's noise is the spread between rounds.
//!
//! `cargo run --release --example query_cost [-- --queries 20000 --rounds 5]`

use std::time::Instant;

use rwsplit::{Config, ConsistencyConfig, Registry};
use rwsplit_testkit::Cluster;
use sqlx::PgPool;

#[path = "common/mod.rs"]
mod common;
use common::{arg, process_cpu_seconds};

const SHOW: &str = "SELECT id, name FROM items WHERE id = $1";

/// Runs `queries` point queries through `run`; returns CPU and wall time per query, in µs.
async fn measure<F, Fut>(queries: u64, mut run: F) -> (f64, f64)
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (cpu, wall) = (process_cpu_seconds(), Instant::now());
    for i in 0..queries {
        run((i % 10_000) as i64 + 1).await;
    }
    let per = |total: f64| total * 1e6 / queries as f64;
    (
        per(process_cpu_seconds() - cpu),
        per(wall.elapsed().as_secs_f64()),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queries: u64 = arg("--queries", 20_000);
    let rounds: u64 = arg("--rounds", 5);
    println!("starting a primary with one streaming replica on 127.0.0.1 ...");
    let cluster = Cluster::start(1).await?;
    cluster
        .primary()
        .execute(
            "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL); \
             INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 10000) g",
        )
        .await?;
    cluster
        .wait_caught_up(std::time::Duration::from_secs(30))
        .await?;
    let registry = Registry::connect(
        Config::from_yaml(&cluster.config_yaml())?.consistency(ConsistencyConfig::off()),
    )
    .await?;
    let pool: PgPool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(cluster.replica(0).connect_options())
        .await?;
    let kept = registry.read();

    let names = [
        "a plain PgPool",
        "registry.read() per query",
        "one DbRead kept",
    ];
    let mut results = vec![Vec::new(); names.len()];
    for round in 0..rounds as usize {
        for k in 0..names.len() {
            let i = (round + k) % names.len();
            let result = match i {
                0 => {
                    measure(queries, |id| {
                        let pool = &pool;
                        async move {
                            let _: (i64, String) =
                                sqlx::query_as(SHOW).bind(id).fetch_one(pool).await.unwrap();
                        }
                    })
                    .await
                }
                1 => {
                    measure(queries, |id| {
                        let registry = &registry;
                        async move {
                            let _: (i64, String) = sqlx::query_as(SHOW)
                                .bind(id)
                                .fetch_one(&registry.read())
                                .await
                                .unwrap();
                        }
                    })
                    .await
                }
                _ => {
                    measure(queries, |id| {
                        let kept = &kept;
                        async move {
                            let _: (i64, String) =
                                sqlx::query_as(SHOW).bind(id).fetch_one(kept).await.unwrap();
                        }
                    })
                    .await
                }
            };
            results[i].push(result);
        }
    }
    println!();
    println!("# {queries} point queries in a row per round, {rounds} rounds, release build");
    println!();
    println!("| | CPU per query (mean) | rounds | wall per query (mean) |");
    println!("|---|---:|---|---:|");
    let mean =
        |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    for (name, runs) in names.iter().zip(&results) {
        let each: Vec<String> = runs.iter().map(|r| format!("{:.1}", r.0)).collect();
        println!(
            "| {name} | {:.1} µs | {} | {:.1} µs |",
            mean(runs, |r| r.0),
            each.join(", "),
            mean(runs, |r| r.1)
        );
    }
    registry.shutdown().await;
    pool.close().await;
    Ok(())
}
