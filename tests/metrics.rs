//! The metrics a dashboard relies on, after a scripted set of requests against the real cluster:
//! reads counted per replica, writes on the primary, a paused replica's lag rising and its
//! health dropping to 0.

mod common;

use std::time::Duration;

use common::*;
use rwsplit::Registry;

#[tokio::test]
async fn routing_health_lag_and_pool_metrics_follow_the_cluster() {
    let recorder = TestRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());

    for _ in 0..10 {
        assert_eq!(call(&app, &cluster, "GET", "/whoami").await.status, 200);
    }
    assert_eq!(call(&app, &cluster, "POST", "/write").await.status, 200);

    let decisions = |server: &str, role: &str| {
        recorder.value(
            "rwsplit_route_decisions_total",
            &[("server", server), ("role", role), ("route", "/whoami")],
        )
    };
    assert_eq!(
        decisions("replica1", "read"),
        Some(5.0),
        "reads counted per replica"
    );
    assert_eq!(decisions("replica2", "read"), Some(5.0));
    let write = recorder.value(
        "rwsplit_route_decisions_total",
        &[
            ("server", "primary"),
            ("role", "write"),
            ("reason", "method"),
            ("route", "/write"),
        ],
    );
    assert_eq!(write, Some(1.0), "the write counted on the primary");
    let timed = recorder.value(
        "rwsplit_request_duration_seconds",
        &[("server", "replica1"), ("route", "/whoami")],
    );
    assert_eq!(
        timed,
        Some(5.0),
        "request durations by serving server and route"
    );
    let acquired = recorder.value(
        "rwsplit_pool_acquire_duration_seconds",
        &[("server", "primary")],
    );
    assert!(
        acquired.unwrap() >= 1.0,
        "the transaction's acquire is timed"
    );
    assert_eq!(
        recorder.value("rwsplit_consistency_tokens_issued_total", &[]),
        Some(1.0)
    );

    // Let a check round publish the state gauges.
    tokio::time::sleep(INTERVAL * 2).await;
    for replica in ["replica1", "replica2"] {
        assert_eq!(
            recorder.value("rwsplit_server_healthy", &[("server", replica)]),
            Some(1.0)
        );
        assert_eq!(
            recorder.value("rwsplit_replica_in_rotation", &[("server", replica)]),
            Some(1.0)
        );
        assert_eq!(
            recorder.value("rwsplit_replica_weight", &[("server", replica)]),
            Some(1.0)
        );
    }
    assert_eq!(
        recorder.value("rwsplit_replicas_in_rotation", &[]),
        Some(2.0)
    );
    assert_eq!(
        recorder.value("rwsplit_pool_max_connections", &[("server", "primary")]),
        Some(10.0)
    );
    let ok_checks = recorder.value(
        "rwsplit_health_checks_total",
        &[("server", "replica1"), ("result", "ok")],
    );
    assert!(ok_checks.unwrap() >= 2.0, "{ok_checks:?}");

    // Pause replica1 and keep writing: its lag gauge rises and its health drops to 0.
    cluster.replica(0).pause_replay().await.unwrap();
    let writer = keep_writing(&cluster);
    let healthy = || recorder.value("rwsplit_server_healthy", &[("server", "replica1")]);
    let deadline = std::time::Instant::now() + LAG_THRESHOLD + INTERVAL * 10;
    while healthy() != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "healthy gauge {:?}, registry sees {:?}",
            healthy(),
            registry.status().replicas[0]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(writer);
    let lag = recorder
        .value("rwsplit_replica_lag_seconds", &[("server", "replica1")])
        .unwrap();
    assert!(lag > LAG_THRESHOLD.as_secs_f64(), "lag gauge {lag}");
    let lag_bytes = recorder
        .value("rwsplit_replica_lag_bytes", &[("server", "replica1")])
        .unwrap();
    assert!(lag_bytes > 0.0, "lag bytes gauge {lag_bytes}");
    assert_eq!(
        recorder.value("rwsplit_replica_in_rotation", &[("server", "replica1")]),
        Some(0.0)
    );
    assert_eq!(
        recorder.value("rwsplit_replicas_in_rotation", &[]),
        Some(1.0)
    );
    let lagging = recorder.value(
        "rwsplit_health_checks_total",
        &[("server", "replica1"), ("result", "lagging")],
    );
    assert!(lagging.unwrap() >= 1.0);
    cluster.replica(0).resume_replay().await.unwrap();
}

/// Sends four reads and returns, per read, the serving node and how long it took.
async fn four_reads(
    app: &axum::Router,
    cluster: &rwsplit_testkit::Cluster,
) -> Vec<(String, Duration)> {
    let mut reads = Vec::new();
    for _ in 0..4 {
        let start = std::time::Instant::now();
        let answer = call(app, cluster, "GET", "/whoami").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        reads.push((answer.node.unwrap(), start.elapsed()));
    }
    reads
}

#[tokio::test]
async fn an_exhausted_replica_pool_is_counted_and_reads_move_on() {
    let recorder = TestRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    let acquire_timeout = Duration::from_secs(1);
    // replica1's pool has one connection, held below, so it is exhausted.
    let yaml = cluster
        .config_yaml()
        .replace("name: replica1,", "name: replica1, maxConnections: 1,");
    assert!(yaml.contains("maxConnections: 1"), "{yaml}");
    let config = rwsplit::Config::from_yaml(&yaml)
        .unwrap()
        .health_check_interval(INTERVAL)
        .connect_timeout(acquire_timeout);

    for failover in [false, true] {
        let registry = Registry::connect(config.clone().failover_on_pool_exhausted(failover))
            .await
            .unwrap();
        let app = app(registry.clone());
        // Open a connection to each replica first, so that no read below waits for one to be
        // opened (which, on a busy machine, can take longer than the acquire timeout).
        four_reads(&app, &cluster).await;
        wait_for("both replicas in rotation", INTERVAL * 20, || {
            in_rotation(&registry, "replica1") && in_rotation(&registry, "replica2")
        })
        .await;
        // Hold replica1's only connection. `acquire` may fail over (sqlx returns a connection
        // to its pool in a task of its own, so a pool of one can look full for a moment): keep
        // the connection only once the server itself says it is replica1.
        let replica1 = i32::from(cluster.replica(0).port());
        let held = loop {
            let target = registry.read();
            if target.name() != "replica1" {
                continue;
            }
            let mut conn = target.acquire().await.unwrap();
            let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            if port == replica1 {
                break conn;
            }
        };
        let reads = four_reads(&app, &cluster).await;
        let slowest = reads.iter().map(|(_, took)| *took).max().unwrap();
        assert!(
            reads.iter().all(|(node, _)| node == "replica2"),
            "every read served by the replica with a free connection: {reads:?} {:?} {:?}",
            registry.status(),
            recorder.value("rwsplit_read_failovers_total", &[])
        );
        if failover {
            // The full pool is passed over at once.
            assert!(slowest < acquire_timeout, "{reads:?}");
            let moved = recorder.value(
                "rwsplit_read_failovers_total",
                &[("server", "replica1"), ("cause", "exhausted")],
            );
            assert!(moved.unwrap_or(0.0) >= 2.0, "{moved:?}");
        } else {
            // Reads wait for the pool until the acquire timeout, which is counted, then move.
            assert!(slowest >= acquire_timeout, "{reads:?}");
            let timeouts = recorder.value(
                "rwsplit_pool_acquire_timeouts_total",
                &[("server", "replica1")],
            );
            assert!(timeouts.unwrap_or(0.0) >= 2.0, "{timeouts:?}");
        }
        // A full pool is the app's load, not the server's failure: it stays in rotation.
        assert!(in_rotation(&registry, "replica1"));
        drop(held);
        registry.shutdown().await;
    }
}
