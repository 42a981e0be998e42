//! What a handler sees when a real server fails its query: a read whose connection is killed
//! before its first row runs again elsewhere; a hot-standby conflict is a retryable 503
//! `database_conflict`; values and constraints PostgreSQL refuses are 4xx, never a 5xx.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use common::{cluster, config, node_name, replicated};
use http::Request;
use rwsplit::{DbError, DbErrorKind, DbRead, DbWrite, Registry, RwSplitLayer};
use rwsplit_testkit::Node;
use tower::ServiceExt;

async fn slow_read(db: DbRead) -> Result<String, DbError> {
    let port: i32 =
        sqlx::query_scalar("SELECT inet_server_port() FROM pg_sleep(1) /* rwsplit slow read */")
            .fetch_one(&db)
            .await?;
    Ok(port.to_string())
}

async fn locked_read(db: DbRead) -> Result<String, DbError> {
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM locked, pg_sleep(2) /* rwsplit locked read */")
            .fetch_one(&db)
            .await?;
    Ok(count.to_string())
}

async fn insert(db: DbWrite, body: String) -> Result<String, DbError> {
    sqlx::query("INSERT INTO items (id, name) VALUES (42, $1)")
        .bind(body)
        .execute(&db)
        .await?;
    Ok("created".into())
}

fn app(registry: Registry) -> Router {
    Router::new()
        .route("/slow", get(slow_read))
        .route("/locked", get(locked_read))
        .route("/items", post(insert))
        .layer(RwSplitLayer::new(registry.clone()))
        .with_state(registry)
}

async fn send(app: &Router, request: Request<Body>) -> (u16, String, bool) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        retry_after,
    )
}

/// Ends every session on `node` running a query that contains `needle`; returns how many.
async fn terminate(node: &Node, needle: &str) -> i64 {
    let mut admin = node.connect().await.unwrap();
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
    )
    .bind(needle)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_connection_dies_before_its_first_row_is_served_elsewhere() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());

    let request = Request::get("/slow").body(Body::empty()).unwrap();
    let answer = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request).await }
    });
    // Kill the read's session wherever it runs, once it has started.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut killed = None;
    for replica in cluster.replicas() {
        if terminate(replica, "rwsplit slow read").await > 0 {
            killed = Some(replica.name().to_owned());
        }
    }
    let killed = killed.expect("the read ran on a replica");
    let (status, body, _) = answer.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let served = node_name(&cluster, body.parse().unwrap());
    assert_ne!(served, killed, "served by the server whose session died");
    assert_ne!(served, "unknown port", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cancelled_by_a_hot_standby_conflict_runs_again_elsewhere() {
    let cluster = cluster().await;
    replicated(&cluster, "CREATE TABLE locked (v int)").await;
    // Cancel standby queries at once when replay needs their lock.
    for replica in cluster.replicas() {
        replica
            .execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
            .await
            .unwrap();
        replica.execute("SELECT pg_reload_conf()").await.unwrap();
    }
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());

    let answer = tokio::spawn({
        let app = app.clone();
        async move { send(&app, Request::get("/locked").body(Body::empty()).unwrap()).await }
    });
    // Wait until the read runs on a replica.
    let mut running_on = Vec::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for replica in cluster.replicas() {
            let mut admin = replica.connect().await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%rwsplit locked read%' \
                 AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut admin)
            .await
            .unwrap();
            if n > 0 {
                running_on.push(replica.name().to_owned());
            }
        }
        if !running_on.is_empty() {
            break;
        }
    }
    // Replaying the ALTER needs an exclusive lock the replica's query holds: PostgreSQL
    // cancels the query ("conflict with recovery"), and rwsplit runs it once more on a server
    // that has replayed the ALTER already.
    cluster
        .primary()
        .execute("ALTER TABLE locked ADD COLUMN w int")
        .await
        .unwrap();
    let (status, body, _) = answer.await.unwrap();
    assert_eq!(running_on.len(), 1, "{running_on:?}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "0");
    // Nothing was taken out of service for it.
    let status = registry.status();
    assert!(
        status.replicas.iter().all(|r| r.state == "serving"),
        "{status:?}"
    );

    // A conflict the handler does see (here: a serialization failure raised on purpose) is a
    // retryable 503.
    let error =
        sqlx::query("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
            .execute(&registry.primary())
            .await
            .unwrap_err();
    let error = DbError::from(error);
    assert_eq!(error.kind(), DbErrorKind::Conflict);
    assert!(error.is_retryable());
    let response = axum::response::IntoResponse::into_response(error);
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_constraints_the_server_refuses_are_client_errors() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());
    let post = |body: &'static str| Request::post("/items").body(Body::from(body)).unwrap();

    let (status, body, _) = send(&app, post("first")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = send(&app, post("again")).await;
    assert_eq!(status, 409, "a duplicate key: {body}");
    assert!(body.contains("constraint_violation"), "{body}");
    let (status, body, _) = send(&app, post("nul \0 byte")).await;
    assert_eq!(status, 400, "a NUL byte in text: {body}");
    assert!(body.contains("invalid_input"), "{body}");

    // The same kinds, for handlers that look before answering.
    let error = sqlx::query("INSERT INTO items (id, name) VALUES (42, 'x')")
        .execute(&registry.primary())
        .await
        .unwrap_err();
    let error = DbError::from(error);
    assert_eq!(error.kind(), DbErrorKind::Constraint);
    assert!(!error.is_retryable());
}
