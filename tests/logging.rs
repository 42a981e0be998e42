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

#[tokio::test]
async fn a_demoted_primary_is_logged_counted_and_shown_and_writes_get_503() {
    let logs = Logs::default();
    let _guard = logs.install();
    let recorder = TestRecorder::new();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    // The server configured as the primary is a standby, as after a failover that demoted it.
    let demoted = cluster.replica(0);
    let config = config(&cluster).port(demoted.port());
    let registry = Registry::connect(config).await.unwrap();
    let app = app(registry.clone());

    let status = registry.status().primary;
    assert!(!status.healthy, "{status:?}");
    let problem = status.last_error.clone().unwrap_or_default();
    assert!(problem.contains("is in recovery"), "{problem}");
    let endpoint = axum::Router::new()
        .route("/db/status", axum::routing::get(rwsplit::status))
        .with_state(registry.clone());
    let response = tower::ServiceExt::oneshot(
        endpoint,
        http::Request::get("/db/status")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["primary"]["healthy"], false, "{json}");
    let shown = json["primary"]["last_error"].as_str().unwrap_or_default();
    assert!(shown.contains("is in recovery"), "{json}");

    // Writes are refused at once with a clear 503; reads go on from the replicas.
    let write = call(&app, &cluster, "POST", "/write").await;
    assert_eq!(write.status, 503, "{}", write.body);
    assert!(write.body.contains("database_read_only"), "{}", write.body);
    let read = call(&app, &cluster, "GET", "/whoami").await;
    assert_eq!(read.status, 200, "{}", read.body);

    // A write that reaches the demoted server anyway (here: on the pool itself) gets
    // PostgreSQL's read-only error, which `DbError` answers with the same 503.
    let error = sqlx::query("INSERT INTO items (name) VALUES ('lost')")
        .execute(&registry.primary())
        .await
        .unwrap_err();
    let error = rwsplit::DbError::from(error);
    assert_eq!(error.kind(), rwsplit::DbErrorKind::ReadOnly, "{error}");
    let response = axum::response::IntoResponse::into_response(error);
    assert_eq!(response.status(), 503);

    // Several check rounds later: one error in the log, every round counted as wrong_role.
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(
        logs.count("primary failed its check"),
        1,
        "logged once:\n{}",
        logs.text()
    );
    assert!(logs.text().contains("ERROR"), "{}", logs.text());
    let wrong_role = recorder.value(
        "rwsplit_health_checks_total",
        &[("server", "primary"), ("result", "wrong_role")],
    );
    assert!(wrong_role.unwrap_or(0.0) >= 3.0, "{wrong_role:?}");
    assert_eq!(
        recorder.value("rwsplit_server_healthy", &[("server", "primary")]),
        Some(0.0)
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn an_extractor_run_in_another_task_still_reports_what_it_served() {
    // No server is needed: extraction does no I/O, and the handler runs no query.
    let registry = Registry::connect_lazy(
        rwsplit::Config::new("127.0.0.1")
            .port(1)
            .connect_timeout(std::time::Duration::from_millis(100))
            .read_write_separation(true)
            .consistency(rwsplit::ConsistencyConfig::off()),
    )
    .unwrap();
    async fn write(db: rwsplit::DbWrite) -> String {
        db.name().to_owned()
    }
    let router = axum::Router::new().route("/write", axum::routing::post(write));
    // A middleware that runs the rest of the request in a task of its own: what the layer
    // needs of the extractor travels in the request's extensions, not in the task.
    let spawning = tower::service_fn(move |request: http::Request<axum::body::Body>| {
        let router = router.clone();
        async move {
            tokio::spawn(tower::ServiceExt::oneshot(router, request))
                .await
                .unwrap()
        }
    });
    let layer = rwsplit::RwSplitLayer::new(registry.clone()).target_header(true);
    let app = tower::Layer::layer(&layer, spawning);
    let request = http::Request::post("/write")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-db-target"], "primary");
}

#[tokio::test]
async fn a_write_through_db_read_is_logged_as_an_error_with_its_route() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    async fn sneaky(db: rwsplit::DbRead) -> Result<String, rwsplit::DbError> {
        sqlx::query("INSERT INTO items (name) VALUES ('through a read')")
            .execute(&db)
            .await?;
        Ok(String::new())
    }
    let app = axum::Router::new()
        .route("/sneaky/{id}", axum::routing::get(sneaky))
        .layer(rwsplit::RwSplitLayer::new(registry.clone()))
        .with_state(registry);
    let answer = call(&app, &cluster, "GET", "/sneaky/1").await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("a write through DbRead"))
        .unwrap_or_else(|| panic!("not logged:\n{}", logs.text()))
        .to_owned();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("route=\"/sneaky/{id}\""), "{line}");
    assert!(line.contains("server=replica"), "{line}");
}
