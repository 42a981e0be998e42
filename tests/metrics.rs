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
