//! What rwsplit logs: fallback to the primary once per transition, the health loop's end, and
//! the request span that handler logs carry.
//!
//! Every test here installs its capturing subscriber before anything else runs. tracing caches
//! whether a callsite is enabled once per process; a test running beside these without a
//! subscriber could get a callsite cached as disabled, so log assertions live in this binary of
//! their own, where no thread runs without one.

mod common;

use common::*;
use rwsplit::Registry;
use rwsplit_testkit::StopMode;

#[tokio::test]
async fn with_every_replica_out_reads_fall_back_to_the_primary_and_it_is_logged_once() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());

    cluster.replica(0).stop(StopMode::Immediate).await.unwrap();
    cluster.replica(1).stop(StopMode::Fast).await.unwrap();
    wait_for("both replicas removed", INTERVAL * 5, || {
        registry.status().replicas.iter().all(|r| !r.in_rotation)
    })
    .await;
    for _ in 0..50 {
        let answer = call(&app, &cluster, "GET", "/whoami").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.node.as_deref(), Some("primary"));
    }
    // Several more check rounds with both still down.
    tokio::time::sleep(INTERVAL * 4).await;
    let fallback = "no healthy read replicas available, falling back to primary";
    assert_eq!(
        logs.count(fallback),
        1,
        "logged once, not per request or per check:\n{}",
        logs.text()
    );
    assert_eq!(logs.count("replica removed from rotation"), 2);

    cluster.replica(0).start().await.unwrap();
    wait_for("replica back", INTERVAL * 10, || {
        in_rotation(&registry, "replica1")
    })
    .await;
    assert_eq!(logs.count("read replicas available again"), 1);
    assert_eq!(logs.count("replica back in rotation"), 1);
    assert_eq!(
        call(&app, &cluster, "GET", "/whoami").await.node.as_deref(),
        Some("replica1")
    );
    assert!(
        !logs.text().contains(rwsplit_testkit::PASSWORD),
        "no password in the logs"
    );
}

#[tokio::test]
async fn the_health_loop_stops_when_the_registry_is_dropped() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    drop(registry);
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(
        logs.count("rwsplit health loop stopped"),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn handler_logs_carry_the_intent_and_the_server_chosen() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    async fn logged(db: rwsplit::DbRead) -> String {
        tracing::info!("handler ran");
        db.name().to_owned()
    }
    let app = axum::Router::new()
        .route("/logged", axum::routing::get(logged))
        .layer(rwsplit::RwSplitLayer::new(registry.clone()))
        .with_state(registry);
    let answer = call(&app, &cluster, "GET", "/logged").await;
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("handler ran"))
        .unwrap()
        .to_owned();
    for field in [
        "db.role=\"read\"".to_owned(),
        "db.reason=\"method\"".to_owned(),
        format!("db.server=\"{}\"", answer.body),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }
}
