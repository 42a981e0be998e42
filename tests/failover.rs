//! Faults injected into a real cluster under a steady mixed load (nine reads to one write,
//! several clients): replicas stopped, the primary stopped, replay paused, a replica frozen;
//! and the topology changed at runtime (drained, removed, added, reweighted). Each test prints its report; run with `--nocapture` to see them.

mod common;

use std::time::Duration;

use common::load::{self, Load, Report, present_on_primary, time_until};
use common::{INTERVAL, cluster, config, in_rotation, replicated};
use rwsplit::Registry;
use rwsplit_testkit::{Cluster, StopMode};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CLIENTS: usize = 4;

/// One fault test at a time: their timing assertions assume the machine is not also running
/// four other clusters under load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup() -> (Cluster, Registry, axum::Router, i64) {
    let cluster = cluster().await;
    replicated(
        &cluster,
        "INSERT INTO items (id, name) VALUES (1000000, 'seed')",
    )
    .await;
    let config = config(&cluster).connect_timeout(CONNECT_TIMEOUT);
    let registry = Registry::connect(config).await.unwrap();
    let app = load::app(registry.clone());
    (cluster, registry, app, 1_000_000)
}

fn print(name: &str, report: &Report) {
    println!("{name}: {report}");
}

async fn assert_nothing_lost(cluster: &Cluster, report: &Report) {
    assert!(!report.acked.is_empty(), "no write was acknowledged");
    let found = present_on_primary(cluster, &report.acked).await;
    assert_eq!(found, report.acked.len(), "acknowledged writes missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_and_restarted_fails_no_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, registry, app, seed) = setup().await;
    let sticky = Load::start(&app, CLIENTS, true, seed);
    let plain = Load::start(&app, CLIENTS, false, seed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    cluster.replica(0).stop(StopMode::Immediate).await.unwrap();
    let out = time_until(Duration::from_secs(5), || {
        !in_rotation(&registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.replica(0).start().await.unwrap();
    let back = time_until(Duration::from_secs(10), || {
        in_rotation(&registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut report = sticky.finish().await;
    let plain = plain.finish().await;
    print("sticky clients", &report);
    print("plain clients", &plain);
    println!("replica1 out after {out:?}, back {back:?} after its restart");
    assert!(out.is_some(), "the stopped replica stayed in rotation");
    let back = back.unwrap_or_else(|| {
        panic!(
            "the restarted replica never came back: {:?}",
            registry.status().replicas
        )
    });
    // The next check after its restart, once it has replayed the writes it missed.
    assert!(back < INTERVAL * 5, "back only after {back:?}");
    for report in [&report, &plain] {
        report.assert_clean();
        assert!(report.reads > 200, "{report}");
    }
    report.acked.extend(plain.acked);
    assert_nothing_lost(&cluster, &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_stopped_the_primary_serves_every_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, registry, app, seed) = setup().await;
    let load = Load::start(&app, CLIENTS, true, seed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    cluster.replica(0).stop(StopMode::Immediate).await.unwrap();
    cluster.replica(1).stop(StopMode::Immediate).await.unwrap();
    let empty = time_until(Duration::from_secs(5), || {
        registry.status().replicas.iter().all(|r| !r.in_rotation)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.replica(0).start().await.unwrap();
    cluster.replica(1).start().await.unwrap();
    let back = time_until(Duration::from_secs(10), || {
        registry.status().replicas.iter().all(|r| r.in_rotation)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = load.finish().await;
    print("both replicas down", &report);
    assert!(empty.is_some() && back.is_some(), "{empty:?} {back:?}");
    report.assert_clean();
    assert_nothing_lost(&cluster, &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_stopped_reads_go_on_and_writes_fail_fast_with_503() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, registry, app, seed) = setup().await;
    // Clients without a token: their reads never need the primary.
    let load = Load::start(&app, CLIENTS, false, seed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    cluster.primary().stop(StopMode::Immediate).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = load.finish().await;
    print("primary down", &during);

    cluster.primary().start().await.unwrap();
    let healthy = time_until(Duration::from_secs(10), || {
        registry.status().primary.healthy
    })
    .await;
    let after = Load::start(&app, CLIENTS, true, seed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = after.finish().await;
    print("primary back", &after);

    assert_eq!(during.failed_reads(), 0, "{during}");
    assert!(during.failed_writes() > 0, "no write failed: {during}");
    assert_eq!(
        during.failed_writes.keys().copied().collect::<Vec<_>>(),
        [503],
        "writes fail with 503 only (none hung): {during}"
    );
    assert!(
        during.worst_failed_write < CONNECT_TIMEOUT + Duration::from_millis(500),
        "a failed write took {:?}",
        during.worst_failed_write
    );
    assert!(during.worst_read < CONNECT_TIMEOUT * 2, "{during}");
    assert!(healthy.is_some(), "the primary never came back");
    assert_eq!(after.failed_writes(), 0, "{after}");
    assert_eq!(after.failed_reads(), 0, "{after}");
    assert!(after.writes > 10, "{after}");
    let mut acked = during.clone();
    acked.acked.extend(after.acked.iter().copied());
    assert_nothing_lost(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_leaves_and_returns_without_a_stale_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, registry, app, seed) = setup().await;
    let load = Load::start(&app, CLIENTS, true, seed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    cluster.replica(0).pause_replay().await.unwrap();
    let out = time_until(Duration::from_secs(10), || {
        !in_rotation(&registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.replica(0).resume_replay().await.unwrap();
    let back = time_until(Duration::from_secs(10), || {
        in_rotation(&registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = load.finish().await;
    print("replica1 paused", &report);
    println!("replica1 out after {out:?}, back {back:?} after resume");
    assert!(out.is_some() && back.is_some(), "{out:?} {back:?}");
    report.assert_clean();
    assert_nothing_lost(&cluster, &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_delays_no_read_past_the_connect_timeout() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, registry, app, seed) = setup().await;
    let load = Load::start(&app, CLIENTS, false, seed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Freeze replica1's postmaster (it still accepts TCP connections but answers none), then
    // end the sessions it already has, as a restarted host or a middlebox would: every read
    // that picks replica1 now needs a new connection, which never answers.
    let mut admin = cluster.replica(0).connect().await.unwrap();
    let sessions: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    cluster.replica(0).freeze().await.unwrap();
    for pid in &sessions {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let out = time_until(Duration::from_secs(5), || {
        !in_rotation(&registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still_out = !in_rotation(&registry, "replica1");
    cluster.replica(0).thaw().await.unwrap();
    let back = time_until(Duration::from_secs(10), || {
        in_rotation(&registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(admin);

    let report = load.finish().await;
    print("replica1 frozen", &report);
    println!(
        "{} sessions ended; replica1 out after {out:?}, back {back:?} after thaw",
        sessions.len()
    );
    assert!(!sessions.is_empty());
    assert!(out.is_some(), "the frozen replica stayed in rotation");
    assert!(still_out, "the frozen replica came back while frozen");
    assert!(back.is_some(), "the thawed replica never came back");
    assert_eq!(report.failed_reads(), 0, "{report}");
    assert!(
        report.worst_read < CONNECT_TIMEOUT + Duration::from_millis(500),
        "{report}"
    );
}

/// Sessions that rwsplit holds open on `node` (its pools and its health checker).
async fn rwsplit_sessions(node: &rwsplit_testkit::Node) -> i64 {
    let mut admin = node.connect().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rwsplit'")
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_replicas_change_under_load_without_a_failed_request() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (cluster, registry, app, seed) = setup().await;
    let (primary, replica1, replica2) = (cluster.primary(), cluster.replica(0), cluster.replica(1));
    let phase = Duration::from_secs(1);

    // Drain replica1 while reads run on both replicas.
    let load = Load::start(&app, CLIENTS, false, seed);
    tokio::time::sleep(phase).await;
    registry.set_weight("replica1", 0).unwrap();
    tokio::time::sleep(phase).await;
    let draining = load.finish().await;
    print("replica1 drained under load", &draining);

    let load = Load::start(&app, CLIENTS, false, seed);
    tokio::time::sleep(phase).await;
    let drained = load.finish().await;
    print("replica1 at weight 0", &drained);

    // Remove replica2, which now serves every read, in the middle of its reads: the primary
    // takes them (replica1 is drained), and replica2's pool closes once they are done.
    let load = Load::start(&app, CLIENTS, false, seed);
    tokio::time::sleep(phase).await;
    assert!(rwsplit_sessions(replica2).await > 0);
    registry.remove_replica("replica2").unwrap();
    tokio::time::sleep(phase).await;
    let removing = load.finish().await;
    print("replica2 removed under load", &removing);
    let mut left = rwsplit_sessions(replica2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while left > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = rwsplit_sessions(replica2).await;
    }
    assert_eq!(left, 0, "the removed replica's connections were not closed");
    assert!(
        registry
            .status()
            .replicas
            .iter()
            .all(|r| r.name != "replica2")
    );

    // Add replica2 back and give replica1 weight 2, under load.
    let load = Load::start(&app, CLIENTS, false, seed);
    tokio::time::sleep(phase).await;
    registry
        .add_replica(
            rwsplit::ReplicaConfig::new("replica2", "127.0.0.1")
                .port(replica2.port())
                .weight(1),
        )
        .await
        .unwrap();
    registry.set_weight("replica1", 2).unwrap();
    tokio::time::sleep(phase).await;
    let adding = load.finish().await;
    print("replica2 added, replica1 at weight 2, under load", &adding);

    let load = Load::start(&app, CLIENTS, false, seed);
    tokio::time::sleep(phase * 2).await;
    let after = load.finish().await;
    print("after the changes", &after);

    for report in [&draining, &drained, &removing, &adding, &after] {
        assert_eq!(report.failed_reads(), 0, "{report}");
        assert_eq!(report.failed_writes(), 0, "{report}");
        assert!(report.reads > 100, "{report}");
    }
    assert_eq!(
        drained.served_by(replica1),
        0,
        "a drained replica served reads: {drained}"
    );
    assert_eq!(drained.served_by(primary), 0, "{drained}");
    assert!(removing.served_by(primary) > 0, "{removing}");
    assert_eq!(after.served_by(primary), 0, "{after}");
    let (one, two) = (after.served_by(replica1), after.served_by(replica2));
    let share = one as f64 / (one + two) as f64;
    assert!(
        (share - 2.0 / 3.0).abs() < 0.05,
        "weights 2:1 gave {one}:{two}"
    );
    let mut acked = draining;
    for report in [drained, removing, adding, after] {
        acked.acked.extend(report.acked);
    }
    assert_nothing_lost(&cluster, &acked).await;
}
