//! A read is read-only wherever it runs, and every write gets its token: against the real
//! cluster, a write through `DbRead` fails the same way on a replica, on the primary for a POST,
//! in a fallback, for a sticky client and with separation disabled; a read-only transaction
//! on a replica sees one snapshot; whatever takes a `DbWrite` issues a token, and a request
//! that only reads issues none.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use common::{cluster, config, replicated, resume_all};
use http::{Request, StatusCode};
use rwsplit::{DbError, DbRead, DbWrite, Registry, RouteOverride, RwSplitLayer};
use rwsplit_testkit::{Cluster, StopMode};
use tower::ServiceExt;

const TOKEN: &str = "x-db-consistency";

/// Each way of writing by mistake through `DbRead`.
async fn insert(db: DbRead) -> Result<String, DbError> {
    let id: i64 =
        sqlx::query_scalar("INSERT INTO items (name) VALUES ('through a read') RETURNING id")
            .fetch_one(&db)
            .await?;
    Ok(id.to_string())
}

async fn lock(db: DbRead) -> Result<String, DbError> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM items ORDER BY id LIMIT 1 FOR UPDATE")
        .fetch_all(&db)
        .await?;
    Ok(format!("{ids:?}"))
}

async fn next(db: DbRead) -> Result<String, DbError> {
    let n: i64 = sqlx::query_scalar("SELECT nextval('items_id_seq')")
        .fetch_one(&db)
        .await?;
    Ok(n.to_string())
}

async fn create(db: DbWrite) -> Result<String, DbError> {
    let id: i64 = sqlx::query_scalar("INSERT INTO items (name) VALUES ('written') RETURNING id")
        .fetch_one(&db)
        .await?;
    Ok(id.to_string())
}

async fn show(db: DbRead, Path(id): Path<i64>) -> Result<Result<String, StatusCode>, DbError> {
    let found: Option<String> = sqlx::query_scalar("SELECT name FROM items WHERE id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await?;
    Ok(found.ok_or(StatusCode::NOT_FOUND))
}

async fn count(db: DbRead) -> Result<String, DbError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&db)
        .await?;
    Ok(n.to_string())
}

fn routes(registry: Registry) -> Router {
    Router::new()
        .route("/insert", get(insert).post(insert))
        .route("/lock", get(lock))
        .route("/nextval", get(next))
        .route("/items", get(create).post(create))
        .route("/items/{id}", get(show))
        .route(
            "/fresh-write",
            get(create).route_layer(RouteOverride::primary()),
        )
        .route(
            "/fresh-read",
            get(count).route_layer(RouteOverride::primary()),
        )
        .route("/count", get(count))
        .layer(RwSplitLayer::new(registry.clone()).target_header(true))
        .with_state(registry)
}

struct Answer {
    status: u16,
    body: String,
    server: String,
    token: Option<String>,
}

async fn send(app: &Router, method: &str, uri: &str, token: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(TOKEN, token);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (server, token) = (header("x-db-target").unwrap_or_default(), header(TOKEN));
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        server,
        token,
    }
}

/// Reads back the row `id` that a write returned, with the write's token.
async fn read_back(app: &Router, id: &str, token: &str) -> Answer {
    send(app, "GET", &format!("/items/{id}"), Some(token)).await
}

/// Asserts that a write through `DbRead` failed as `write_through_read` (500) on `server`.
fn assert_refused(answer: &Answer, path: &str, server: &str) {
    assert_eq!(answer.status, 500, "{path}: {}", answer.body);
    assert!(
        answer.body.contains("write_through_read"),
        "{path}: {}",
        answer.body
    );
    assert_eq!(answer.server, server, "{path}");
}

/// Tries a write on `conn`; returns the SQLSTATE it failed with.
async fn write_on(conn: &mut sqlx::PgConnection) -> Option<String> {
    let result = sqlx::query("INSERT INTO items (name) VALUES ('through a read')")
        .execute(conn)
        .await;
    let error = result.err()?;
    error
        .as_database_error()?
        .code()
        .map(|code| code.into_owned())
}

async fn written_through_reads(cluster: &Cluster) -> i64 {
    let mut conn = cluster.primary().connect().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM items WHERE name = 'through a read'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_db_read_fails_the_same_way_on_every_path() {
    let cluster = cluster().await;
    replicated(&cluster, "INSERT INTO items (name) VALUES ('seed')").await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = routes(registry.clone());

    // On a replica.
    for path in ["/insert", "/lock", "/nextval"] {
        let answer = send(&app, "GET", path, None).await;
        assert!(
            answer.server.starts_with("replica"),
            "{path}: {}",
            answer.server
        );
        assert_refused(&answer, path, &answer.server.clone());
    }
    // On the primary, for a POST.
    let answer = send(&app, "POST", "/insert", None).await;
    assert_refused(&answer, "POST /insert", "primary");

    // On the primary, for a client whose write no replica has replayed.
    for replica in cluster.replicas() {
        replica.pause_replay().await.unwrap();
    }
    let written = send(&app, "POST", "/items", None).await;
    assert_eq!(written.status, 200, "{}", written.body);
    let token = written.token.expect("a write issues a token");
    for path in ["/insert", "/lock", "/nextval"] {
        let answer = send(&app, "GET", path, Some(&token)).await;
        assert_refused(&answer, &format!("sticky {path}"), "primary");
    }
    // The same client's reads still see its write there.
    let read = read_back(&app, &written.body, &token).await;
    assert_eq!((read.status, read.server.as_str()), (200, "primary"));
    resume_all(&cluster).await;

    // With separation disabled: everything on the primary, reads still read-only.
    let disabled = Registry::connect(config(&cluster).read_write_separation(false))
        .await
        .unwrap();
    let disabled_app = routes(disabled.clone());
    for path in ["/insert", "/lock", "/nextval"] {
        let answer = send(&disabled_app, "GET", path, None).await;
        assert_refused(&answer, &format!("disabled {path}"), "primary");
    }
    let written = send(&disabled_app, "POST", "/items", None).await;
    assert_eq!(written.status, 200, "writes still work: {}", written.body);

    // On the primary as a fallback, with both replicas down.
    for replica in cluster.replicas() {
        replica.stop(StopMode::Fast).await.unwrap();
    }
    common::wait_for("both replicas out", Duration::from_secs(5), || {
        registry.status().replicas.iter().all(|r| !r.in_rotation)
    })
    .await;
    for path in ["/insert", "/lock", "/nextval"] {
        let answer = send(&app, "GET", path, None).await;
        assert_refused(&answer, &format!("fallback {path}"), "primary");
    }
    // Reads still work there.
    let answer = send(&app, "GET", "/count", None).await;
    assert_eq!((answer.status, answer.server.as_str()), (200, "primary"));

    assert_eq!(
        written_through_reads(&cluster).await,
        0,
        "a write through DbRead landed"
    );
    // Not taken for an outage: every server that is up is still in service.
    assert!(registry.status().primary.healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_on_a_replica_sees_one_snapshot() {
    let cluster = cluster().await;
    replicated(&cluster, "INSERT INTO items (name) VALUES ('seed')").await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();

    let read = registry.read();
    assert!(!read.is_primary());
    let mut tx = read.begin().await.unwrap();
    let (standby, before): (bool, i64) =
        sqlx::query_as("SELECT pg_is_in_recovery(), (SELECT count(*) FROM items)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert!(standby, "the transaction runs on a replica");
    replicated(
        &cluster,
        "INSERT INTO items (name) VALUES ('after the snapshot')",
    )
    .await;
    let inside: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(inside, before, "one snapshot for the whole transaction");
    assert_eq!(write_on(&mut tx).await.as_deref(), Some("25006"));
    drop(tx);
    let outside: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&registry.read())
        .await
        .unwrap();
    assert_eq!(outside, before + 1);

    // On the primary (separation disabled) the same: read-only, one snapshot.
    let disabled = Registry::connect(config(&cluster).read_write_separation(false))
        .await
        .unwrap();
    let read = disabled.read();
    assert!(read.is_primary());
    let mut tx = read.begin().await.unwrap();
    assert_eq!(write_on(&mut tx).await.as_deref(), Some("25006"));
    drop(tx);
    // A connection from `acquire` is read-only on the primary too.
    let mut conn = read.acquire().await.unwrap();
    assert_eq!(write_on(&mut conn).await.as_deref(), Some("25006"));
    drop(conn);
    // And a `DbWrite` transaction writes.
    let mut tx = disabled.write().begin().await.unwrap();
    sqlx::query("INSERT INTO items (name) VALUES ('written')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written_through_reads(&cluster).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_takes_db_write_issues_a_token_and_reads_issue_none() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = routes(registry.clone());
    // Slow replay, so that a read with the token can only be right on the primary.
    for replica in cluster.replicas() {
        replica.pause_replay().await.unwrap();
    }

    for (method, path, what) in [
        ("GET", "/items", "DbWrite on a GET route"),
        (
            "GET",
            "/fresh-write",
            "a GET with RouteOverride::primary() that writes",
        ),
        ("POST", "/items", "a POST"),
    ] {
        let written = send(&app, method, path, None).await;
        assert_eq!(written.status, 200, "{what}: {}", written.body);
        let token = written.token.unwrap_or_else(|| panic!("{what}: no token"));
        let read = read_back(&app, &written.body, &token).await;
        assert_eq!(read.status, 200, "{what}: the next read missed the write");
        assert_eq!(read.server, "primary", "{what}");
    }
    for (path, what) in [
        ("/count", "a GET that reads"),
        (
            "/fresh-read",
            "a GET with RouteOverride::primary() that reads",
        ),
    ] {
        let answer = send(&app, "GET", path, None).await;
        assert_eq!(answer.status, 200, "{what}: {}", answer.body);
        assert!(answer.token.is_none(), "{what} issued a token");
    }
    // A POST that only reads through `DbRead` writes nothing and gets no token either.
    let answer = send(&app, "POST", "/insert", None).await;
    assert_eq!(answer.status, 500);
    assert!(answer.token.is_none());
    for replica in cluster.replicas() {
        replica.resume_replay().await.unwrap();
    }
}
