//! A fleet of app instances against one local cluster: many registries in one process, each
//! with its own pools (sized down), as tens to hundreds of app instances behind a load
//! balancer would run. For each fleet size it reports, per server:
//!
//! - idle: monitoring statements per second per instance (from `pg_stat_statements`) and the
//!   connections the fleet holds (`pg_stat_activity`);
//! - an outage of the primary while every instance sends a write every 100 ms, and of replica2
//!   while every instance reads: connection attempts per second during the outage and in the
//!   5 s after it ends;
//! - every replica lagging past `replicaLagThreshold` while every instance reads: the share of
//!   reads the primary serves.
//!
//! The primary and replica2 are reached through a counting TCP relay (`rwsplit_testkit::Relay`):
//! it counts every connection the fleet opens, and an outage there closes every connection and
//! accepts and closes each new one at once, as a server that is down behind a load balancer.
//!
//! `cargo run --release --example fleet -- 1 50 200`

use std::time::{Duration, Instant};

use rwsplit::{Config, Registry};
use rwsplit_testkit::{Cluster, ClusterOptions, Node, Relay};

/// Statements run on `node` so far, by every client.
async fn statements(node: &Node) -> i64 {
    let mut conn = node.connect().await.unwrap();
    sqlx::query_scalar("SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Connections the fleet holds on `node`.
async fn connections(node: &Node) -> i64 {
    let mut conn = node.connect().await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*)::int8 FROM pg_stat_activity WHERE application_name = 'rwsplit'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Each instance runs `work` every `every` until `stop`; the outcomes, in order.
async fn each_instance<F, Fut>(
    fleet: &[Registry],
    every: Duration,
    stop: Duration,
    work: F,
) -> Vec<String>
where
    F: Fn(Registry) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    let until = Instant::now() + stop;
    for (i, registry) in fleet.iter().enumerate() {
        let (registry, work) = (registry.clone(), work.clone());
        // Each instance starts at its own point of the period, as requests arrive.
        let offset = every.mul_f64(i as f64 / fleet.len() as f64);
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut seen = Vec::new();
            while Instant::now() < until {
                seen.push(work(registry.clone()).await);
                tokio::time::sleep(every).await;
            }
            seen
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

async fn write(registry: Registry) -> String {
    let done = sqlx::query("INSERT INTO items (name) VALUES ('fleet')")
        .execute(&registry.write())
        .await;
    match done {
        Ok(_) => "ok".to_owned(),
        Err(_) => "failed".to_owned(),
    }
}

async fn read(registry: Registry) -> String {
    let port: Result<i32, _> = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&registry.read())
        .await;
    port.map_or_else(|_| "failed".to_owned(), |p| p.to_string())
}

/// Connections asked of `relay` per second while `during` runs, and in the `after` that
/// follows once `relay` is up again.
async fn outage(relay: &Relay, during: impl std::future::Future, after: Duration) -> (f64, f64) {
    let before = relay.accepted();
    let start = Instant::now();
    relay.set_down(true);
    during.await;
    let in_outage = relay.accepted() - before;
    let took = start.elapsed().as_secs_f64();
    relay.set_down(false);
    let back = relay.accepted();
    tokio::time::sleep(after).await;
    let after_outage = relay.accepted() - back;
    (
        in_outage as f64 / took,
        after_outage as f64 / after.as_secs_f64(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 50, 200]
    } else {
        sizes
    };
    let cluster = Cluster::start_with(ClusterOptions {
        replicas: 2,
        extra_conf: vec!["max_connections = 1500".to_owned()],
        tls: false,
    })
    .await?;
    let (primary, replica1, replica2) = (cluster.primary(), cluster.replica(0), cluster.replica(1));
    primary
        .execute("CREATE TABLE items (id bigserial PRIMARY KEY, name text)")
        .await?;
    cluster.wait_caught_up(Duration::from_secs(10)).await?;
    let to_primary = Relay::start(primary.port()).await?;
    let to_replica2 = Relay::start(replica2.port()).await?;
    // The defaults, but for pools sized for a fleet and a short lag threshold (so that the
    // lagging phase is short); the primary is named by its relay.
    let yaml = format!(
        "db:\n  host: 127.0.0.1\n  port: {}\n  username: {}\n  password: \"{}\"\n  \
         database: postgres\n  sslMode: disable\n  maxConnections: 2\n  \
         enableReadWriteSeparation: true\n  replicaLagThreshold: 2s\n  \
         replicaLagBytesThreshold: null\n  primaryCandidates: [primary]\n  consistency:\n    \
         signingKey: \"fleet-simulation-signing-key-0123456789\"\n  readReplicas:\n    \
         - {{ name: replica1, host: 127.0.0.1, port: {} }}\n    \
         - {{ name: replica2, host: 127.0.0.1, port: {} }}\n",
        to_primary.port(),
        rwsplit_testkit::USER,
        rwsplit_testkit::PASSWORD,
        replica1.port(),
        to_replica2.port()
    );
    let config = Config::from_yaml(&yaml)?;
    let servers = [
        ("primary", primary),
        ("replica1", replica1),
        ("replica2", replica2),
    ];
    println!(
        "| instances | server | idle statements/s per instance | connections held | \
         attempts/s in its outage | attempts/s in the 5 s after |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    let mut shares = Vec::new();
    for &size in &sizes {
        let mut fleet = Vec::with_capacity(size);
        for _ in 0..size {
            fleet.push(Registry::connect(config.clone()).await?);
        }
        // Idle: nothing but the registries' own monitoring.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let window = Duration::from_secs(10);
        let mut before = Vec::new();
        for (_, node) in &servers {
            before.push(statements(node).await);
        }
        tokio::time::sleep(window).await;
        let mut idle = Vec::new();
        for ((_, node), before) in servers.iter().zip(&before) {
            // The counting query itself is one statement.
            let ran = statements(node).await - before - 1;
            idle.push(ran as f64 / window.as_secs_f64() / size as f64);
        }
        let mut held = Vec::new();
        for (_, node) in &servers {
            held.push(connections(node).await);
        }

        // The primary out for 5 s while every instance writes every 100 ms.
        let writes = each_instance(
            &fleet,
            Duration::from_millis(100),
            Duration::from_secs(5),
            write,
        );
        let primary_outage = outage(&to_primary, writes, Duration::from_secs(5)).await;
        // replica2 out for 5 s while every instance reads every 100 ms.
        let reads = each_instance(
            &fleet,
            Duration::from_millis(100),
            Duration::from_secs(5),
            read,
        );
        let replica_outage = outage(&to_replica2, reads, Duration::from_secs(5)).await;

        for (i, (name, _)) in servers.iter().enumerate() {
            let (during, after) = match *name {
                "primary" => (
                    format!("{:.1}", primary_outage.0),
                    format!("{:.1}", primary_outage.1),
                ),
                "replica2" => (
                    format!("{:.1}", replica_outage.0),
                    format!("{:.1}", replica_outage.1),
                ),
                _ => ("-".to_owned(), "-".to_owned()),
            };
            println!(
                "| {size} | {name} | {:.2} | {} | {during} | {after} |",
                idle[i], held[i]
            );
        }

        // Every replica lagging: replay paused on both while the primary takes writes.
        for replica in [replica1, replica2] {
            replica.pause_replay().await?;
        }
        let writing = tokio::spawn({
            let fleet = fleet[..1].to_vec();
            async move {
                each_instance(
                    &fleet,
                    Duration::from_millis(50),
                    Duration::from_secs(12),
                    write,
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let reads = each_instance(
            &fleet,
            Duration::from_millis(100),
            Duration::from_secs(5),
            read,
        )
        .await;
        let on_primary = reads
            .iter()
            .filter(|p| **p == primary.port().to_string())
            .count();
        let failed = reads.iter().filter(|p| *p == "failed").count();
        shares.push((
            size,
            on_primary as f64 / reads.len().max(1) as f64,
            reads.len(),
            failed,
        ));
        writing.await?;
        for replica in [replica1, replica2] {
            replica.resume_replay().await?;
        }
        cluster.wait_caught_up(Duration::from_secs(30)).await?;
        for registry in fleet {
            registry.shutdown().await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!();
    println!("| instances | reads while every replica lags | served by the primary | failed |");
    println!("|---:|---:|---:|---:|");
    for (size, share, reads, failed) in shares {
        println!("| {size} | {reads} | {:.0} % | {failed} |", share * 100.0);
    }
    Ok(())
}
