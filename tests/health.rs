//! Replicas that lag or stop leave rotation and come back; reads never fail while the primary
//! can serve them; an idle primary does not make healthy replicas look lagged.

mod common;

use common::*;
use rwsplit::Registry;
use rwsplit_testkit::StopMode;

#[tokio::test]
async fn a_paused_replica_leaves_rotation_and_returns_after_resume() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());
    assert!(in_rotation(&registry, "replica1") && in_rotation(&registry, "replica2"));

    let writer = keep_writing(&cluster);
    cluster.replica(0).pause_replay().await.unwrap();
    // Lag passes the 1 s threshold a second after the pause; the next check sees it.
    let took = wait_for(
        "paused replica removed",
        LAG_THRESHOLD + INTERVAL * 10,
        || !in_rotation(&registry, "replica1"),
    )
    .await;
    assert!(
        took >= LAG_THRESHOLD - INTERVAL,
        "removed only once over the threshold ({took:?})"
    );
    let status = registry.status();
    let replica1 = &status.replicas[0];
    assert!(replica1.lag.unwrap() > LAG_THRESHOLD, "{replica1:?}");
    assert!(replica1.lag_bytes.unwrap() > 0, "{replica1:?}");
    assert!(
        replica1.last_error.as_deref().unwrap().contains("lagging"),
        "{replica1:?}"
    );
    assert!(in_rotation(&registry, "replica2"));
    for _ in 0..10 {
        let answer = call(&app, &cluster, "GET", "/whoami").await;
        assert_eq!(
            answer.node.as_deref(),
            Some("replica2"),
            "reads avoid the lagging replica"
        );
    }

    cluster.replica(0).resume_replay().await.unwrap();
    wait_for("resumed replica back", INTERVAL * 10, || {
        in_rotation(&registry, "replica1")
    })
    .await;
    drop(writer);
    let lag = registry.status().replicas[0].lag.unwrap();
    assert!(lag <= LAG_THRESHOLD, "back under the threshold: {lag:?}");
}

#[tokio::test]
async fn a_stopped_replica_leaves_rotation_and_returns_after_restart() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());

    cluster.replica(1).stop(StopMode::Immediate).await.unwrap();
    wait_for("stopped replica removed", INTERVAL * 3, || {
        !in_rotation(&registry, "replica2")
    })
    .await;
    let status = registry.status();
    assert!(!status.replicas[1].healthy);
    assert!(status.replicas[1].last_error.is_some());
    for _ in 0..10 {
        let answer = call(&app, &cluster, "GET", "/whoami").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.node.as_deref(), Some("replica1"));
    }

    cluster.replica(1).start().await.unwrap();
    wait_for("restarted replica back", INTERVAL * 10, || {
        in_rotation(&registry, "replica2")
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(call(&app, &cluster, "GET", "/whoami").await.node.unwrap());
    }
    assert_eq!(seen.len(), 2, "both replicas serve again: {seen:?}");
}

#[tokio::test]
async fn an_idle_primary_does_not_make_healthy_replicas_look_lagged() {
    let cluster = cluster().await;
    // A transaction long ago in replay terms: every replica's last replayed commit ages from
    // here on, while nothing new is written.
    replicated(&cluster, "INSERT INTO items (name) VALUES ('last write')").await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    // Well over the 1 s threshold and many check intervals without a write.
    tokio::time::sleep(LAG_THRESHOLD * 3).await;
    let status = registry.status();
    for replica in &status.replicas {
        assert!(replica.healthy && replica.in_rotation, "{replica:?}");
        assert!(replica.lag.unwrap() < LAG_THRESHOLD, "{replica:?}");
    }
}

#[tokio::test]
async fn a_refusing_replica_never_fails_a_read_after_one_check_interval() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());
    cluster.replica(0).stop(StopMode::Immediate).await.unwrap();
    // One interval (and the check's own time) after the stop, reads only reach servers that
    // can answer.
    tokio::time::sleep(INTERVAL * 2).await;
    for _ in 0..100 {
        let answer = call(&app, &cluster, "GET", "/whoami").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.node.as_deref(), Some("replica2"));
    }
}

/// A job's long-lived `registry.read()` made while its replica served: once that replica is
/// out (here lagging), the handle's queries and transactions go where reads go now, never to
/// the replica it was made for, whose pool still holds working connections.
#[tokio::test]
async fn a_handle_kept_past_its_replicas_exit_reads_where_reads_go_now() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let kept = loop {
        let handle = registry.read();
        if handle.name() == "replica1" {
            break handle;
        }
    };
    let lagging = i32::from(cluster.replica(0).port());
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&kept)
        .await
        .unwrap();
    assert_eq!(port, lagging);

    let writer = keep_writing(&cluster);
    cluster.replica(0).pause_replay().await.unwrap();
    wait_for(
        "paused replica removed",
        LAG_THRESHOLD + INTERVAL * 10,
        || !in_rotation(&registry, "replica1"),
    )
    .await;
    for _ in 0..5 {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&kept)
            .await
            .unwrap();
        assert_ne!(port, lagging, "a read on the replica taken out");
    }
    let mut tx = kept.begin().await.unwrap();
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_ne!(port, lagging, "a transaction on the replica taken out");
    tx.rollback().await.unwrap();
    let mut conn = kept.acquire().await.unwrap();
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_ne!(port, lagging, "a connection from the replica taken out");
    drop(conn);
    drop(writer);
    cluster.replica(0).resume_replay().await.unwrap();
}

/// A read transaction whose replica gives no connection moves to the primary before anything
/// is sent, and a session lost under its `BEGIN` there is the primary's (suspected, probed),
/// not the replica's it was first meant for.
#[tokio::test]
async fn a_transactions_failed_begin_is_blamed_on_the_server_it_ran_on() {
    let recorder = TestRecorder::new();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    let to_primary = rwsplit_testkit::Relay::start(cluster.primary().port())
        .await
        .unwrap();
    let to_replica = rwsplit_testkit::Relay::start(cluster.replica(0).port())
        .await
        .unwrap();
    let yaml = format!(
        "db:\n  host: 127.0.0.1\n  port: {}\n  username: {}\n  password: \"{}\"\n  \
         database: postgres\n  sslMode: disable\n  enableReadWriteSeparation: true\n  \
         readReplicas:\n    - {{ name: replica1, host: 127.0.0.1, port: {} }}\n",
        to_primary.port(),
        rwsplit_testkit::USER,
        rwsplit_testkit::PASSWORD,
        to_replica.port()
    );
    let registry = Registry::connect(rwsplit::Config::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let read = registry.read();
    assert_eq!(read.name(), "replica1");

    // The replica is gone; the primary drops the session that sends a BEGIN.
    to_replica.set_down(true);
    to_primary.cut_on(Some(b"BEGIN"));
    let error = read.begin().await.unwrap_err();
    to_primary.cut_on(None);
    println!("begin failed: {error}");
    let on_primary = recorder.total("rwsplit_server_suspicions_total", &[("server", "primary")]);
    assert!(
        on_primary >= 1.0,
        "the lost session is the primary's: {on_primary}"
    );
    let moved = recorder.total("rwsplit_read_failovers_total", &[("server", "replica1")]);
    assert!(moved >= 1.0, "the transaction left the replica: {moved}");
    // The primary stays in service: a probe finds it well.
    wait_for(
        "primary back in service",
        std::time::Duration::from_secs(5),
        || registry.status().primary.healthy,
    )
    .await;
    let mut tx = registry.read().begin().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
