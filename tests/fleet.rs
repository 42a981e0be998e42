//! Many app instances against one cluster: a server out of service is probed at the backoff's
//! pace however many requests wait, every replica lagging does not send every read to the
//! primary, and a replica at its connection limit is back-pressure, not a failure. The
//! configuration is the default but for pools sized for a fleet and, where the test needs a
//! replica to lag, a short lag threshold.

mod common;

use std::time::{Duration, Instant};

use common::load::Load;
use common::{TestRecorder, cluster, in_rotation, keep_writing, resume_all, wait_for};
use rwsplit::{Config, Registry};
use rwsplit_testkit::{Cluster, Relay};

const INSTANCES: usize = 50;

/// One test at a time: fifty registries keep a two-core machine busy, and the others judge
/// lag and connections.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `name` is out of rotation for lag (not for being unreachable).
fn lagging(registry: &Registry, name: &str) -> bool {
    registry
        .status()
        .replicas
        .iter()
        .any(|r| r.name == name && r.state == "lagging")
}

/// The cluster's configuration with `replica2` reached through `relay`, pools of two.
fn fleet_config(cluster: &Cluster, relay: &Relay) -> Config {
    let yaml = format!(
        "db:\n  host: 127.0.0.1\n  port: {}\n  username: {}\n  password: \"{}\"\n  \
         database: postgres\n  sslMode: disable\n  maxConnections: 2\n  \
         enableReadWriteSeparation: true\n  readReplicas:\n    \
         - {{ name: replica1, host: 127.0.0.1, port: {} }}\n    \
         - {{ name: replica2, host: 127.0.0.1, port: {} }}\n",
        cluster.primary().port(),
        rwsplit_testkit::USER,
        rwsplit_testkit::PASSWORD,
        cluster.replica(0).port(),
        relay.port()
    );
    Config::from_yaml(&yaml).unwrap()
}

/// While replica2 is out, 50 instances each reading every 20 ms (2,500 reads a second) knock
/// on it at the pace of their probes' backoff, not of their requests: at most one connection
/// per instance per half-second step once the backoff has grown, and no read fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_out_of_service_is_probed_at_the_backoffs_pace_whatever_the_request_rate() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    let relay = Relay::start(cluster.replica(1).port()).await.unwrap();
    let config = fleet_config(&cluster, &relay);
    let mut fleet = Vec::new();
    for _ in 0..INSTANCES {
        fleet.push(Registry::connect(config.clone()).await.unwrap());
    }
    let reading = Instant::now() + Duration::from_secs(9);
    let mut readers = tokio::task::JoinSet::new();
    for registry in &fleet {
        let registry = registry.clone();
        readers.spawn(async move {
            let (mut reads, mut failed) = (0u32, 0u32);
            while Instant::now() < reading {
                let port: Result<i32, _> = sqlx::query_scalar("SELECT inet_server_port()")
                    .fetch_one(&registry.read())
                    .await;
                reads += 1;
                failed += u32::from(port.is_err());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (reads, failed)
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.set_down(true);
    wait_for("replica2 out everywhere", Duration::from_secs(10), || {
        fleet.iter().all(|r| !in_rotation(r, "replica2"))
    })
    .await;
    // The backoff has reached its cap (1 s, each wait spread over its second half): count a
    // window of it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (start, window) = (relay.accepted(), Duration::from_secs(4));
    tokio::time::sleep(window).await;
    let knocked = relay.accepted() - start;
    relay.set_down(false);
    let up = Instant::now();
    let (mut reads, mut failed) = (0, 0);
    for (r, f) in readers.join_all().await {
        reads += r;
        failed += f;
    }
    let per_instance_per_second = knocked as f64 / INSTANCES as f64 / window.as_secs_f64();
    println!(
        "{INSTANCES} instances, {reads} reads ({failed} failed): replica2 asked for {knocked} \
         connections in {window:?} out of service, {per_instance_per_second:.2} per instance \
         per second"
    );
    // A probe at least every 0.5 s, and a full check (30 s) now and then: at most 2 a second.
    assert!(per_instance_per_second <= 2.0, "{per_instance_per_second}");
    assert!(knocked > 0, "nobody probed the replica");
    // Reads failed only while replica2 went out (a connection cut under a query), never after.
    assert!(failed as usize <= INSTANCES * 2, "{failed} of {reads}");
    // Each instance's next probe puts it back; on a saturated machine a probe's fresh
    // connection may take its whole timeout (5 s) more than once.
    wait_for("replica2 back everywhere", Duration::from_secs(60), || {
        fleet.iter().all(|r| in_rotation(r, "replica2"))
    })
    .await;
    println!(
        "replica2 back in every instance {:?} after the relay came up",
        up.elapsed()
    );
}

/// Every replica lagging past the threshold: reads without a token go to the replica least
/// behind (within `replicaMaxStaleness`), the primary keeps the writes and the reads of
/// clients that wrote, and no client misses its own write.
#[tokio::test]
async fn every_replica_lagging_sends_only_token_reads_to_the_primary() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let recorder = TestRecorder::new();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    let registry = Registry::connect(common::config(&cluster)).await.unwrap();
    let app = common::load::app(registry.clone());
    let seed = 1_000_000;
    common::replicated(
        &cluster,
        &format!("INSERT INTO items (id, name) VALUES ({seed}, 'seed')"),
    )
    .await;
    let writer = keep_writing(&cluster);
    for replica in cluster.replicas() {
        replica.pause_replay().await.unwrap();
    }
    wait_for("both replicas out for lag", Duration::from_secs(10), || {
        lagging(&registry, "replica1") && lagging(&registry, "replica2")
    })
    .await;
    let writers = Load::start(&app, 2, true, seed);
    let readers = Load::start(&app, 2, false, seed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (writers, readers) = (writers.finish().await, readers.finish().await);
    drop(writer);
    resume_all(&cluster).await;
    writers.assert_clean();
    readers.assert_clean();
    let plain_on_primary = readers.served_by(cluster.primary());
    println!("every replica lagging: clients that write: {writers}; plain readers: {readers}");
    assert!(readers.reads > 0 && writers.reads > 0);
    assert_eq!(plain_on_primary, 0, "{readers}");
    // Token-carrying reads of the writing clients: on the primary, none stale.
    assert_eq!(writers.stale, 0, "{writers}");
    let stale = recorder.total("rwsplit_route_decisions_total", &[("reason", "stale")]);
    assert!(stale >= readers.reads as f64, "{stale}");

    // Off (`replicaMaxStaleness: null`): every read goes to the primary, as before.
    let off = Registry::connect(common::config(&cluster).replica_max_staleness(None))
        .await
        .unwrap();
    for replica in cluster.replicas() {
        replica.pause_replay().await.unwrap();
    }
    let writer = keep_writing(&cluster);
    wait_for("both replicas out for lag", Duration::from_secs(10), || {
        lagging(&off, "replica1") && lagging(&off, "replica2")
    })
    .await;
    let readers = Load::start(&common::load::app(off.clone()), 2, false, seed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let readers = readers.finish().await;
    drop(writer);
    resume_all(&cluster).await;
    readers.assert_clean();
    assert_eq!(
        readers.served_by(cluster.primary()),
        readers.reads,
        "{readers}"
    );
}

/// A replica at its connection limit (`53300`, here the role's `CONNECTION LIMIT`) turns reads
/// away to another server once its pool gives up opening a connection (sqlx retries `53300`
/// until `connectTimeout`); it stays in service and serves the reads it has connections for.
#[tokio::test]
async fn a_replica_at_its_connection_limit_moves_reads_without_leaving_service() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let recorder = TestRecorder::new();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    common::replicated(
        &cluster,
        "CREATE ROLE capped LOGIN PASSWORD 'capped-password' CONNECTION LIMIT 3; \
         GRANT SELECT ON items TO capped",
    )
    .await;
    let yaml = format!(
        "db:\n  host: 127.0.0.1\n  port: {}\n  username: {}\n  password: \"{}\"\n  \
         database: postgres\n  sslMode: disable\n  enableReadWriteSeparation: true\n  \
         readReplicas:\n    \
         - {{ name: replica1, host: 127.0.0.1, port: {}, username: capped, password: \
         capped-password, maxConnections: 10, connectTimeout: 1s }}\n",
        cluster.primary().port(),
        rwsplit_testkit::USER,
        rwsplit_testkit::PASSWORD,
        cluster.replica(0).port(),
    );
    let registry = Registry::connect(Config::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let registry = registry.clone();
        reads.spawn(async move {
            sqlx::query_scalar::<_, i32>("SELECT inet_server_port() FROM pg_sleep(0.5)")
                .fetch_one(&registry.read())
                .await
        });
    }
    let served: Vec<i32> = reads
        .join_all()
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let on_replica = served
        .iter()
        .filter(|&&p| p == i32::from(cluster.replica(0).port()))
        .count();
    println!("8 reads at once, replica1 takes 3 connections: {on_replica} on replica1");
    assert!((1..8).contains(&on_replica), "{served:?}");
    assert!(
        in_rotation(&registry, "replica1"),
        "{:?}",
        registry.status()
    );
    let moved = recorder.total("rwsplit_read_failovers_total", &[("server", "replica1")]);
    assert!(moved >= 1.0, "{moved}");
    // And it serves the next read.
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&registry.read())
        .await
        .unwrap();
    assert_eq!(port, i32::from(cluster.replica(0).port()));
}

/// With `replicasPerInstance: 1`, each of 20 instances connects to one replica of two, always
/// the same for its `instanceId`, and the fleet spreads over both: each replica holds the
/// checker connections of its own instances only.
#[tokio::test]
async fn each_instance_connects_to_its_own_replicas_only() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    let mut fleet = Vec::new();
    for i in 0..20 {
        let config = common::config(&cluster)
            .replicas_per_instance(1)
            .instance_id(format!("app-{i}"));
        fleet.push(Registry::connect(config).await.unwrap());
    }
    let mut uses = std::collections::BTreeMap::new();
    for registry in &fleet {
        let replicas = registry.status().replicas;
        assert_eq!(replicas.len(), 1, "{replicas:?}");
        *uses.entry(replicas[0].name.clone()).or_insert(0i64) += 1;
    }
    assert_eq!(uses.len(), 2, "{uses:?}");
    // The same instance id picks the same replica again.
    let again = Registry::connect(
        common::config(&cluster)
            .replicas_per_instance(1)
            .instance_id("app-0"),
    )
    .await
    .unwrap();
    assert_eq!(
        again.status().replicas[0].name,
        fleet[0].status().replicas[0].name
    );
    again.shutdown().await;
    for (i, replica) in cluster.replicas().iter().enumerate() {
        let mut conn = replica.connect().await.unwrap();
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*)::int8 FROM pg_stat_activity WHERE application_name = 'rwsplit'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let name = format!("replica{}", i + 1);
        let mine = uses.get(&name).copied().unwrap_or(0);
        println!("{name}: used by {mine} of 20 instances, {held} connections from them");
        // Its instances' checkers, and pool connections only from them.
        assert!(
            held >= mine && held <= mine * 3,
            "{name}: {held} for {mine}"
        );
    }
}

/// Monitoring statements (position polls and full checks) `node` ran since the last reset.
async fn monitoring_statements(node: &rwsplit_testkit::Node) -> i64 {
    let mut conn = node.connect().await.unwrap();
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements \
         WHERE query LIKE '%pg_is_in_recovery%' OR query LIKE '%pg_current_wal_insert_lsn%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// An idle instance's monitoring statements per server over `window`, for `config`: the
/// primary's, then each replica's; then 1 when the status shows every replica's position read
/// from the primary at the end, 0 otherwise.
async fn idle_statements(cluster: &Cluster, config: Config, window: Duration) -> Vec<i64> {
    let registry = Registry::connect(config).await.unwrap();
    let nodes: Vec<_> = std::iter::once(cluster.primary())
        .chain(cluster.replicas())
        .collect();
    for node in &nodes {
        let mut conn = node.connect().await.unwrap();
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    tokio::time::sleep(window).await;
    let status = registry.status();
    for replica in &status.replicas {
        assert_eq!(replica.stream_name.as_deref(), Some(replica.name.as_str()));
    }
    let from_primary = status.replicas.iter().all(|r| r.positions_from_primary);
    let mut counts = Vec::new();
    for node in &nodes {
        counts.push(monitoring_statements(node).await);
    }
    registry.shutdown().await;
    counts.push(i64::from(from_primary));
    counts
}

/// Where the role may read `pg_stat_replication` (`pg_monitor`) and each standby streams under
/// a name of its own (here its `cluster_name`), an idle instance's position polls run on the
/// primary only, one statement for every replica, and the replicas see only their full
/// checks; a role without the grant polls each replica itself, in the same run. Lag is found
/// as before: a replica whose replay is paused under writes leaves rotation, and returns.
#[tokio::test]
async fn replicas_positions_come_from_one_query_on_the_primary() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = common::app_role::cluster_with_app_role().await;
    common::replicated(
        &cluster,
        "CREATE ROLE monitored_app LOGIN PASSWORD 'monitored-Secret-42' IN ROLE pg_monitor; \
         GRANT SELECT, INSERT ON items TO monitored_app; \
         GRANT USAGE ON SEQUENCE items_id_seq TO monitored_app",
    )
    .await;
    let plain = common::app_role::app_config(&cluster);
    let monitored = plain
        .clone()
        .username("monitored_app")
        .password("monitored-Secret-42");
    let window = Duration::from_secs(10);

    let with_grant = idle_statements(&cluster, monitored.clone(), window).await;
    let without = idle_statements(&cluster, plain, window).await;
    println!(
        "idle monitoring statements in {window:?} (primary, replica1, replica2): with \
         pg_monitor {with_grant:?}, without {without:?}"
    );
    // Polls every 1 to 1.25 s: 8 to 10 in the window, on the primary either way.
    // The status says where the replicas' positions came from (the last number).
    assert_eq!(with_grant[3], 1, "{with_grant:?}");
    assert_eq!(without[3], 0, "{without:?}");
    assert!(
        with_grant[0] >= 6 && without[0] >= 6,
        "{with_grant:?} {without:?}"
    );
    // With the grant, no poll on the replicas (a full check, every 30 s, may fall in).
    assert!(with_grant[1..3].iter().all(|&n| n <= 1), "{with_grant:?}");
    // Without it, each replica is polled itself.
    assert!(without[1..3].iter().all(|&n| n >= 6), "{without:?}");

    let registry = Registry::connect(monitored).await.unwrap();
    let writing = keep_writing(&cluster);
    cluster.replica(0).pause_replay().await.unwrap();
    let out = wait_for("replica1 out for lag", Duration::from_secs(20), || {
        lagging(&registry, "replica1")
    })
    .await;
    assert!(in_rotation(&registry, "replica2"));
    cluster.replica(0).resume_replay().await.unwrap();
    let back = wait_for("replica1 back", Duration::from_secs(20), || {
        in_rotation(&registry, "replica1")
    })
    .await;
    let _ = writing.send(());
    println!("replica1 paused: out for lag after {out:?}; resumed: back after {back:?}");
}
