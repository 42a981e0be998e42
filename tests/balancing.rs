//! `loadBalancing` with one replica made slow for real: its PostgreSQL processes capped at a
//! small share of one CPU by a cgroup (as a small host, a noisy neighbour or a long vacuum
//! would leave it), the other replica as it is. The same closed-loop read load runs with each
//! strategy in turn, against the same cluster, in one run; each read's server is the one that
//! answered it (`inet_server_port()`), and its latency is measured by the client.
//!
//! `cargo test --test balancing -- --nocapture` prints the p50/p99 table.

mod common;

use common::*;
use std::time::{Duration, Instant};

use rwsplit::{LoadBalancing, Registry};
use rwsplit_testkit::CpuCap;

/// About two milliseconds of one CPU on any server, the same on each.
const QUERY: &str = "SELECT inet_server_port(), count(*) FROM generate_series(1, 40000) g \
                     WHERE g % 7 = 3";

/// Concurrent readers, each reading again as soon as its last read returned.
const READERS: usize = 16;

/// What one strategy's run saw.
struct Run {
    strategy: LoadBalancing,
    on_slow: usize,
    on_fast: usize,
    failed: usize,
    latencies: Vec<Duration>,
}

impl Run {
    fn slow_share(&self) -> f64 {
        self.on_slow as f64 / (self.on_slow + self.on_fast).max(1) as f64
    }

    fn quantile(&self, q: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[index]
    }
}

/// The registry's settings for the run, its checks at their 30 s default.
fn settings(cluster: &rwsplit_testkit::Cluster, strategy: LoadBalancing) -> rwsplit::Config {
    config(cluster)
        .health_check_interval(Duration::from_secs(30))
        .max_connections(8)
        .load_balancing(strategy)
}

/// Runs the read load on `registry` for `time`.
async fn run(registry: &Registry, slow_port: u16, time: Duration) -> Run {
    let strategy = match registry.status().load_balancing {
        "roundRobin" => LoadBalancing::RoundRobin,
        "leastOutstanding" => LoadBalancing::LeastOutstanding,
        _ => LoadBalancing::PeakEwma,
    };
    let until = Instant::now() + time;
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while Instant::now() < until {
                    let start = Instant::now();
                    let read = sqlx::query_as::<_, (i32, i64)>(QUERY)
                        .fetch_one(&registry.read())
                        .await;
                    seen.push((read.map(|(port, _)| port).ok(), start.elapsed()));
                }
                seen
            })
        })
        .collect();
    let mut result = Run {
        strategy,
        on_slow: 0,
        on_fast: 0,
        failed: 0,
        latencies: Vec::new(),
    };
    for reader in readers {
        for (port, latency) in reader.await.unwrap() {
            match port {
                Some(port) if port == i32::from(slow_port) => result.on_slow += 1,
                Some(_) => result.on_fast += 1,
                None => result.failed += 1,
            }
            result.latencies.push(latency);
        }
    }
    result.latencies.sort();
    result
}

/// Round-robin gives the slow replica its full half of the reads; least-outstanding and
/// peak-EWMA give it much less, so that the reads' tail is shorter, and no read fails with
/// any strategy. The strategy changes live, by a reload of one registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_gets_fewer_reads_with_the_load_aware_strategies() {
    let cluster = cluster().await;
    let slow = cluster.replica(0);
    let _cap = CpuCap::new(slow, 10).expect("cap replica1's CPU (needs root and cgroup v1 cpu)");
    let registry = Registry::connect(settings(&cluster, LoadBalancing::RoundRobin))
        .await
        .unwrap();
    let mut runs = vec![run(&registry, slow.port(), Duration::from_secs(6)).await];
    for (strategy, change) in [
        (
            LoadBalancing::LeastOutstanding,
            "loadBalancing roundRobin -> leastOutstanding",
        ),
        (
            LoadBalancing::PeakEwma,
            "loadBalancing leastOutstanding -> peakEwma",
        ),
    ] {
        let changes = registry.reload(settings(&cluster, strategy)).await.unwrap();
        assert_eq!(changes, vec![change.to_owned()]);
        runs.push(run(&registry, slow.port(), Duration::from_secs(6)).await);
    }
    let status = registry.status();
    let slow_status = &status.replicas[0];
    assert!(
        slow_status.latency.is_some() && status.replicas[1].latency.is_some(),
        "peak-EWMA's estimates are in the status"
    );
    assert!(slow_status.latency > status.replicas[1].latency);
    println!("| strategy | reads | on the slow replica | p50 | p99 | failed |");
    println!("|---|---:|---:|---:|---:|---:|");
    for run in &runs {
        println!(
            "| {:?} | {} | {:.1} % | {:.1} ms | {:.1} ms | {} |",
            run.strategy,
            run.latencies.len(),
            run.slow_share() * 100.0,
            run.quantile(0.5).as_secs_f64() * 1000.0,
            run.quantile(0.99).as_secs_f64() * 1000.0,
            run.failed,
        );
    }
    for run in &runs {
        assert_eq!(run.failed, 0, "{:?}: no read fails", run.strategy);
    }
    let round_robin = runs[0].slow_share();
    assert!(
        (0.45..=0.55).contains(&round_robin),
        "round-robin keeps the weights: {round_robin:.3} on the slow replica"
    );
    for run in &runs[1..] {
        assert!(
            run.slow_share() < round_robin / 2.0,
            "{:?} sends the slow replica under half round-robin's share: {:.3} against {:.3}",
            run.strategy,
            run.slow_share(),
            round_robin
        );
    }
}
