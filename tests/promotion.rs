//! Primary failover against a real cluster under a steady load of clients with tokens, with the
//! health checks at their 30 s default: the primary stopped and a replica promoted, the other
//! replica re-pointed, the former primary started again as a primary (split brain) and then
//! rebuilt as a standby; and a replica stranded ahead of the promoted one. Each test prints
//! its report; run with `--nocapture` to see them.

mod common;

use std::time::{Duration, Instant};

use common::load::{Load, Report, time_until};
use common::{Logs, TestRecorder, call, cluster, in_rotation, replicated};
use rwsplit::{Config, Promotion, Registry};
use rwsplit_testkit::{Cluster, Node, StopMode};

const CLIENTS: usize = 4;

/// One failover test at a time: their timings assume the machine is not also running another
/// cluster under load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's configuration as users run it: every check setting at its default.
fn defaults(cluster: &Cluster) -> Config {
    let config = Config::from_yaml(&cluster.config_yaml()).unwrap();
    assert_eq!(config.health_interval(), Duration::from_secs(30));
    config
}

fn replica_status(registry: &Registry, name: &str) -> rwsplit::ServerStatus {
    registry
        .status()
        .replicas
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no replica {name} in {:?}", registry.status()))
}

/// Rows of `ids` present on `node`.
async fn present_on(node: &Node, ids: &[i64]) -> usize {
    let mut conn = node.connect().await.unwrap();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    found as usize
}

async fn rows_on(node: &Node) -> i64 {
    let mut conn = node.connect().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// A cluster with the `items` table and a seed row every server has (its id is returned).
async fn seeded_cluster() -> (Cluster, i64) {
    let cluster = cluster().await;
    let seed = 1_000_000;
    replicated(
        &cluster,
        &format!("INSERT INTO items (id, name) VALUES ({seed}, 'seed')"),
    )
    .await;
    (cluster, seed)
}

/// Stops `load` and starts the next phase's at once.
async fn next_phase(load: Load, app: &axum::Router, seed: i64) -> (Report, Load) {
    let report = load.finish().await;
    (report, Load::start(app, CLIENTS, true, seed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promotion_and_nothing_is_read_from_a_dead_timeline() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, seed) = seeded_cluster().await;
    let (old, promoted, other) = (cluster.primary(), cluster.replica(0), cluster.replica(1));
    let old_member = format!("127.0.0.1:{}", old.port());
    let registry = Registry::connect(defaults(&cluster)).await.unwrap();
    assert_eq!(registry.status().primary.timeline, Some(1));
    let app = common::load::app(registry.clone());
    let load = Load::start(&app, CLIENTS, true, seed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_token = registry.consistency_token().await.unwrap();
    assert_eq!(old_token.timeline(), 1);

    // The primary goes (a clean stop: the standbys get all its WAL), replica1 is promoted.
    let stopped = Instant::now();
    old.stop(StopMode::Fast).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let promoting = Instant::now();
    promoted.promote().await.unwrap();
    let promotion_took = promoting.elapsed();
    let moved_after = time_until(Duration::from_secs(10), || {
        registry.status().primary_member == "replica1"
    })
    .await
    .expect("writes move to the promoted replica without a restart");
    let moved = Instant::now();
    let (before, load) = next_phase(load, &app, seed).await;
    let status = registry.status();
    assert_eq!(
        status.primary.address,
        format!("127.0.0.1:{}", promoted.port())
    );
    assert_eq!(status.primary.timeline, Some(2), "{status:?}");
    assert!(status.primary.healthy, "{status:?}");

    // The former primary is a replica now, known on its old timeline until it is seen again.
    assert_eq!(replica_status(&registry, &old_member).timeline, Some(1));
    assert!(!in_rotation(&registry, &old_member));

    // replica2 still follows the dead primary's timeline: out, with the reason shown.
    let stranded = replica_status(&registry, "replica2");
    assert!(!stranded.in_rotation, "{stranded:?}");
    assert_eq!(stranded.state, "diverged", "{stranded:?}");
    let reason = stranded.last_error.clone().unwrap_or_default();
    assert!(reason.contains("timeline 1"), "{reason}");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Re-pointed at replica1, it follows the new timeline and comes back.
    let (while_diverged, load) = next_phase(load, &app, seed).await;
    other.follow(promoted).await.unwrap();
    let back_after = time_until(Duration::from_secs(15), || {
        in_rotation(&registry, "replica2")
    })
    .await
    .expect("replica2 back once it follows the new timeline");
    assert_eq!(replica_status(&registry, "replica2").timeline, Some(2));

    // A token from before the failover is read on the primary, though replica2's position is
    // past the token's now.
    replicated_on(promoted, other).await;
    assert!(other.replay_position().await.unwrap() as u64 > old_token.position());
    for _ in 0..20 {
        assert!(registry.read_after(&old_token).is_primary());
    }

    // Split brain: the former primary is started again, as a primary (timeline 1).
    old.start().await.unwrap();
    let rows_before = rows_on(old).await;
    let refused_after = time_until(Duration::from_secs(10), || {
        replica_status(&registry, &old_member).state == "wrong_role"
    })
    .await
    .expect("the former primary is seen and refused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after_promotion, load) = next_phase(load, &app, seed).await;
    assert_eq!(registry.status().primary_member, "replica1");
    let rows_after = rows_on(old).await;
    assert_eq!(
        rows_after, rows_before,
        "a write reached the former primary"
    );
    let since_move: Vec<i64> = [&while_diverged, &after_promotion]
        .iter()
        .flat_map(|phase| phase.acked.iter().copied())
        .collect();
    assert_eq!(present_on(old, &since_move).await, 0);

    // Rebuilt as a standby of replica1, the former primary serves reads.
    old.stop(StopMode::Fast).await.unwrap();
    old.rejoin_as_standby(promoted).await.unwrap();
    let rejoined_after = time_until(Duration::from_secs(15), || {
        in_rotation(&registry, &old_member)
    })
    .await
    .expect("the former primary serves reads as a standby");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rejoined = load.finish().await;

    println!(
        "promotion: pg_ctl promote took {promotion_took:?}; writes moved {moved_after:?} after \
         it ({:?} after the stop)",
        moved - stopped
    );
    println!("  before and during the move: {before}");
    println!("  replica2 on the dead timeline: {while_diverged}");
    println!(
        "  replica2 back {back_after:?} after re-pointing; former primary refused {refused_after:?} \
         after its restart as a primary: {after_promotion}"
    );
    println!("  former primary in rotation {rejoined_after:?} after its rebuild: {rejoined}");

    // Writes failed only from the stop until about a probe after the promotion.
    let last_failed_write = before.writes_back_after(promoting);
    assert!(
        last_failed_write <= promotion_took + Duration::from_secs(2),
        "writes still failed {last_failed_write:?} after the promotion began"
    );
    assert!(moved_after < Duration::from_secs(3), "{moved_after:?}");
    for phase in [&while_diverged, &after_promotion, &rejoined] {
        phase.assert_clean();
    }
    assert_eq!(before.stale, 0, "{before}");
    assert_eq!(before.failed_reads(), 0, "{before}");
    // Nothing was read from replica2 while it was on the dead timeline, nor from the former
    // primary until it was rebuilt.
    assert_eq!(while_diverged.served_by(other), 0, "{while_diverged}");
    assert_eq!(after_promotion.served_by(old), 0, "{after_promotion}");
    assert!(after_promotion.served_by(other) > 0, "{after_promotion}");
    assert!(rejoined.served_by(old) > 0, "{rejoined}");
    // Every acknowledged write is on the new primary (the stop was clean: none lost).
    let mut acked = before.acked.clone();
    for phase in [&while_diverged, &after_promotion, &rejoined] {
        acked.extend(&phase.acked);
    }
    assert_eq!(present_on(promoted, &acked).await, acked.len());
    registry.shutdown().await;
}

/// Waits until `standby` has replayed what `primary` has written.
async fn replicated_on(primary: &Node, standby: &Node) {
    let mut conn = primary.connect().await.unwrap();
    let target: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let start = Instant::now();
    while standby.replay_position().await.unwrap() < target {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} behind",
            standby.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stranded_ahead_of_the_promoted_one_is_never_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, seed) = seeded_cluster().await;
    let (old, promoted, stranded) = (cluster.primary(), cluster.replica(0), cluster.replica(1));
    let registry = Registry::connect(defaults(&cluster)).await.unwrap();
    let app = common::load::app(registry.clone());

    // replica1 stops receiving; the load's writes reach replica2 only.
    promoted.detach().await.unwrap();
    let load = Load::start(&app, CLIENTS, true, seed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = load.finish().await;
    // The primary goes and replica1, behind replica2, is promoted. No traffic: the promotion
    // is seen by the replicas' position polls.
    old.stop(StopMode::Fast).await.unwrap();
    promoted.promote().await.unwrap();
    let moved_after = time_until(Duration::from_secs(10), || {
        registry.status().primary_member == "replica1"
    })
    .await
    .expect("writes move to the promoted replica");
    let promoted_at: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8")
            .fetch_one(&mut promoted.connect().await.unwrap())
            .await
            .unwrap();
    let ahead_by = stranded.replay_position().await.unwrap() - promoted_at;
    let lost = before.acked.len() - present_on(promoted, &before.acked).await;
    let load = Load::start(&app, CLIENTS, true, seed);

    // Re-pointed at replica1, replica2 cannot follow (it replayed past the fork); whatever its
    // position says, it stays out.
    stranded.follow(promoted).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = load.finish().await;
    let status = replica_status(&registry, "replica2");
    println!(
        "stranded replica: {ahead_by} bytes of WAL ahead of the promoted one at the promotion; \
         {lost} acknowledged writes lost by PostgreSQL (asynchronous replication, replica1 \
         detached); writes moved {moved_after:?} after the promotion; before: {before}; \
         after: {after}; replica2: {} ({})",
        status.state,
        status.last_error.clone().unwrap_or_default()
    );
    assert!(ahead_by > 0, "replica2 was not ahead: {ahead_by}");
    assert!(
        lost > 0,
        "the detached replica1 had every write: nothing was stranded"
    );
    assert!(!status.in_rotation, "{status:?}");
    assert_eq!(status.state, "diverged", "{status:?}");
    assert_eq!(after.served_by(stranded), 0, "{after}");
    assert_eq!(after.failed_writes(), 0, "{after}");
    assert_eq!(after.failed_reads(), 0, "{after}");
    assert_eq!(after.stale, 0, "{after}");
    // Every write acknowledged after the move is on the new primary.
    assert_eq!(present_on(promoted, &after.acked).await, after.acked.len());
    registry.shutdown().await;
}

/// A configuration written before a failover names a standby as `host` and the promoted
/// server as a replica: the registry finds the primary at startup, and the standby serves reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_is_found_at_startup_whatever_the_configuration_calls_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await;
    let (primary, standby) = (cluster.primary(), cluster.replica(0));
    let yaml = format!(
        "db:\n  host: 127.0.0.1\n  port: {}\n  username: {}\n  password: \"{}\"\n  \
         sslMode: disable\n  enableReadWriteSeparation: true\n  readReplicas:\n    \
         - {{ name: old, host: 127.0.0.1, port: {} }}\n",
        standby.port(),
        rwsplit_testkit::USER,
        rwsplit_testkit::PASSWORD,
        primary.port()
    );
    let registry = Registry::connect(Config::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let status = registry.status();
    assert_eq!(status.primary_member, "old", "{status:?}");
    assert_eq!(
        status.primary.address,
        format!("127.0.0.1:{}", primary.port())
    );
    assert!(status.primary.healthy, "{status:?}");
    let standby_member = format!("127.0.0.1:{}", standby.port());
    assert!(in_rotation(&registry, &standby_member), "{status:?}");
    let mut tx = registry.begin().await.unwrap();
    let port: i32 =
        sqlx::query_scalar("INSERT INTO items (name) VALUES ('w') RETURNING inet_server_port()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(port, i32::from(primary.port()));

    // With roles configured, the configured host stays the primary (and refuses writes).
    let fixed =
        Config::from_yaml(&yaml.replace("  readReplicas", "  roles: configured\n  readReplicas"))
            .unwrap();
    let registry = Registry::connect(fixed).await.unwrap();
    let status = registry.status();
    assert_eq!(status.primary_member, standby_member, "{status:?}");
    assert!(!status.primary.healthy, "{status:?}");
}

/// An operator promotes a replica while the primary serves (to detach a copy for a report, a
/// restore test, a clone): with the default `promotion: confirmed` the writes stay on the
/// primary, the copy is refused as a split brain (logged, counted), and the writes move only
/// when the primary stops being one. `promotion: fenced` moves them at once.
#[tokio::test]
async fn a_replica_promoted_while_the_primary_serves_takes_no_writes_unless_fenced() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let logs = Logs::default();
    let _guard = logs.install();
    let recorder = TestRecorder::new();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let (cluster, seed) = seeded_cluster().await;
    let (primary, copy) = (cluster.primary(), cluster.replica(0));
    let registry = Registry::connect(defaults(&cluster)).await.unwrap();
    assert_eq!(defaults(&cluster).promotion_setting(), Promotion::Confirmed);
    let app = common::app(registry.clone());
    let member = registry.status().primary_member;

    // Under a steady load of clients with tokens, an operator promotes replica1.
    let load = Load::start(&common::load::app(registry.clone()), CLIENTS, true, seed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    copy.promote().await.unwrap();
    let promoted = Instant::now();
    let refused = "a server answering as a primary is refused";
    time_until(Duration::from_secs(10), || logs.count(refused) > 0)
        .await
        .unwrap_or_else(|| panic!("the copy is not refused: {}", logs.text()));
    let refused_after = promoted.elapsed();
    let (mut report, load) = next_phase(load, &common::load::app(registry.clone()), seed).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let since_refused = load.finish().await;
    // Once refused, the copy serves nothing.
    assert_eq!(since_refused.served_by(copy), 0, "{since_refused}");
    report.merge(since_refused);
    report.assert_clean();
    // Every acknowledged write is on the real primary, and those after the promotion are not
    // on the copy: they went nowhere else.
    assert_eq!(present_on(primary, &report.acked).await, report.acked.len());
    let after = report.acked.len() - present_on(copy, &report.acked).await;
    assert!(after > 0, "no write after the promotion: {report}");
    let mut landed = Vec::new();
    for _ in 0..20 {
        let answer = call(&app, &cluster, "POST", "/write").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        landed.push(answer.node.unwrap());
    }
    assert!(landed.iter().all(|n| n == primary.name()), "{landed:?}");
    let status = registry.status();
    assert_eq!(status.primary_member, member, "{status:?}");
    assert!(logs.text().contains("split brain"), "{}", logs.text());
    let counted = recorder.value("rwsplit_primary_refusals_total", &[("server", copy.name())]);
    assert!(counted.unwrap_or(0.0) >= 1.0, "{counted:?}");
    // The copy is no replica either: out of rotation, and no read goes to it.
    assert!(!in_rotation(&registry, copy.name()));
    for _ in 0..10 {
        let answer = call(&app, &cluster, "GET", "/whoami").await;
        assert_ne!(answer.node.as_deref(), Some(copy.name()), "{answer:?}");
    }

    // Fenced: the writes go to the promoted one at once.
    let fenced = Registry::connect(defaults(&cluster).promotion(Promotion::Fenced))
        .await
        .unwrap();
    assert_eq!(fenced.status().primary_member, copy.name());
    let fenced_app = common::app(fenced.clone());
    let answer = call(&fenced_app, &cluster, "POST", "/write").await;
    assert_eq!(answer.node.as_deref(), Some(copy.name()), "{answer:?}");
    fenced.shutdown().await;

    // Confirmed: once the primary stops being one, the promoted one takes the writes.
    primary.stop(StopMode::Fast).await.unwrap();
    let moved = time_until(Duration::from_secs(20), || {
        registry.status().primary_member == copy.name()
    });
    let mut moved = std::pin::pin!(moved);
    let mut attempts = 0;
    let took = loop {
        tokio::select! {
            took = &mut moved => break took,
            // Writes waiting on the stopped primary find it gone.
            _ = call(&app, &cluster, "POST", "/write") => attempts += 1,
        }
    };
    assert!(
        took.is_some(),
        "writes did not move: {:?}",
        registry.status()
    );
    let answer = call(&app, &cluster, "POST", "/write").await;
    assert_eq!(answer.node.as_deref(), Some(copy.name()), "{answer:?}");
    println!(
        "a copy promoted beside a serving primary under load: refused {:?} after the \
         promotion; load: {report}; {after} acknowledged writes after it, all on the primary, \
         none on the copy; fenced: moved at connect; confirmed: moved {:?} after the primary \
         stopped ({attempts} writes meanwhile)",
        refused_after,
        took.unwrap()
    );
    registry.shutdown().await;
}
