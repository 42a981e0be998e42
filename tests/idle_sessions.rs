//! A replica's pool hands out a connection used within the last second without sqlx's ping,
//! which saves a round trip per read. These tests take away what the ping guarded against,
//! under load and with the default 30 s checks, and hold rwsplit to a plain pool that pings,
//! run beside it: sessions ended while idle fail no read; a replica whose only group has no
//! fallback still serves its group after its sessions ended; a replica that freezes with its
//! sessions open holds no read much past the connect timeout, and fails none.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use common::load::{self, Load, Report};
use common::{cluster, replicated};
use rwsplit::{Config, Registry};
use rwsplit_testkit::{Cluster, Node};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
const FROZEN: Duration = Duration::from_secs(8);
const CLIENTS: usize = 4;
const SEED: i64 = 1_000_000;

/// One test at a time: the timing assertions assume the machine is not also running two
/// other clusters under load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's `db:` block as users run it (checks every 30 s), with a 1 s connect timeout.
fn settings(yaml: &str) -> Config {
    Config::from_yaml(yaml)
        .expect("the cluster's configuration parses")
        .connect_timeout(CONNECT_TIMEOUT)
}

async fn seeded() -> Cluster {
    let cluster = cluster().await;
    replicated(
        &cluster,
        &format!("INSERT INTO items (id, name) VALUES ({SEED}, 'seed')"),
    )
    .await;
    cluster
}

/// A plain sqlx pool (sqlx's defaults: every idle connection pinged before use).
async fn plain_pool(node: &Node) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(node.connect_options())
        .await
        .unwrap()
}

/// A seeded cluster, a registry on it (checks every 30 s, as users run them, timing out after
/// `CHECK_TIMEOUT`), the load's app on it, and the same app on plain pools (reads at replica1).
async fn beside_a_plain_pool() -> (Cluster, Registry, Router, Router) {
    let cluster = seeded().await;
    let config = settings(&cluster.config_yaml()).health_check_timeout(CHECK_TIMEOUT);
    let registry = Registry::connect(config).await.unwrap();
    let app = load::app(registry.clone());
    let plain = load::plain_app(
        plain_pool(cluster.primary()).await,
        plain_pool(cluster.replica(0)).await,
    );
    (cluster, registry, app, plain)
}

/// Ends every client session on `node` but the caller's, waiting until they are gone;
/// returns how many.
async fn end_sessions(node: &Node) -> i64 {
    let mut admin = node.connect().await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_ended_while_idle_fail_no_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, _registry, app, plain) = beside_a_plain_pool().await;
    let rwsplit_load = Load::start(&app, CLIENTS, false, SEED);
    let plain_load = Load::start(&plain, CLIENTS, false, SEED);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every session on both replicas ends, five times over: the pools' idle connections die
    // while their last use is milliseconds old.
    let mut ended = 0;
    for _ in 0..5 {
        for replica in cluster.replicas() {
            ended += end_sessions(replica).await;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let report = rwsplit_load.finish().await;
    let plain = plain_load.finish().await;
    println!("{ended} sessions ended\nrwsplit: {report}\nplain pool: {plain}");

    assert!(ended >= 10, "{ended} sessions ended");
    assert_eq!(report.failed_reads(), 0, "{report}");
    assert_eq!(report.stale, 0, "{report}");
    assert!(report.failed_reads() <= plain.failed_reads());
    // The replicas kept serving: the reads did not settle on the primary.
    for replica in cluster.replicas() {
        assert!(report.served_by(replica) > 0, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_replica_lost_its_idle_sessions_reads_there_without_a_fallback() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = seeded().await;
    let yaml = cluster
        .config_yaml()
        .replace("name: replica1,", "name: replica1, group: analytics,")
        + "  replicaGroups:\n    analytics: { fallback: none }\n";
    let registry = Registry::connect(settings(&yaml)).await.unwrap();
    let port = |registry: Registry| async move {
        sqlx::query_scalar::<_, i32>("SELECT inet_server_port()")
            .fetch_one(&registry.read_from("analytics"))
            .await
    };
    let reads = |n: usize| {
        let registry = registry.clone();
        async move {
            let handles: Vec<_> = (0..n)
                .map(|_| tokio::spawn(port(registry.clone())))
                .collect();
            let mut ports = Vec::new();
            for handle in handles {
                ports.push(handle.await.unwrap());
            }
            ports
        }
    };
    let expected = i32::from(cluster.replica(0).port());
    // Eight connections open and used.
    for port in reads(8).await {
        assert_eq!(port.unwrap(), expected);
    }
    for round in 0..3 {
        let ended = end_sessions(cluster.replica(0)).await;
        assert!(ended >= 1, "round {round}: {ended} sessions ended");
        // Nobody else may serve the group: each read runs again on its replica.
        for port in reads(8).await {
            assert_eq!(port.expect("a read of the group failed"), expected);
        }
    }
}

/// A load's slowest read took at most `limit`.
fn assert_bounded(name: &str, report: &Report, limit: Duration) {
    assert!(
        report.worst_read <= limit,
        "{name}: worst read {:?}, limit {limit:?}: {report}",
        report.worst_read
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_with_its_sessions_open_holds_no_read_past_the_connect_timeout() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, registry, app, plain) = beside_a_plain_pool().await;
    let rwsplit_load = Load::start(&app, CLIENTS, false, SEED);
    let plain_load = Load::start(&plain, CLIENTS, false, SEED);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Every process of replica1 stops, its open sessions included: nothing it was sent is
    // answered, nothing is refused, and no connection closes.
    cluster.replica(0).freeze_all().await.unwrap();
    let frozen = Instant::now();
    tokio::time::sleep(FROZEN).await;
    let out = !common::in_rotation(&registry, "replica1");
    cluster.replica(0).thaw_all().await.unwrap();
    println!("thawed after {:?}", frozen.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = rwsplit_load.finish().await;
    let plain = plain_load.finish().await;
    println!("rwsplit: {report}\nplain pool on replica1: {plain}");

    assert!(out, "the frozen replica stayed in rotation");
    assert_eq!(report.failed_reads(), 0, "{report}");
    assert!(report.served_by(cluster.replica(1)) > 0, "{report}");
    // The reads it held: a connect timeout without an answer, a look (a quarter second), the
    // probe that finds it unreachable (a check timeout), and slack for a busy machine; the
    // plain pool's reads that were out when it froze wait until it thaws.
    let limit = CONNECT_TIMEOUT + CHECK_TIMEOUT + Duration::from_millis(1750);
    assert!(limit < FROZEN);
    assert_bounded("rwsplit", &report, limit);
}
