//! An sqlx app moving to rwsplit, against a real primary with two streaming replicas that
//! apply WAL late: configuration from the URLs it already has, extractors under a router whose
//! state is the app's own (no registry in it), `sqlx::Error` from `begin()`, a `DbWrite` handed
//! to a helper taking `&DbRead`, and the startup barrier after a migration.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::{Request, StatusCode};
use rwsplit::{Config, DbRead, DbWrite, Registry, RwSplitLayer};
use rwsplit_testkit::{Cluster, ClusterOptions};
use tower::ServiceExt;

/// How late both replicas apply WAL: long enough that a read right after a migration meets
/// the old schema unless something holds it back.
const DELAY: Duration = Duration::from_millis(1500);

async fn delayed_cluster() -> (Cluster, Registry) {
    let cluster = Cluster::start_with(ClusterOptions {
        replicas: 2,
        ..ClusterOptions::default()
    })
    .await
    .expect("a cluster");
    for replica in cluster.replicas() {
        replica.set_apply_delay(DELAY).await.unwrap();
    }
    let replicas: Vec<String> = cluster.replicas().iter().map(|r| r.url()).collect();
    // The URLs the app already has: nothing else is configured.
    let config = Config::from_urls(&cluster.primary().url(), &replicas).unwrap();
    assert!(config.separation_enabled());
    let registry = Registry::connect(config).await.unwrap();
    registry.check_now().await;
    assert!(!registry.read().is_primary(), "replicas serve reads");
    (cluster, registry)
}

#[derive(Debug)]
enum AppError {
    Sqlx(sqlx::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        AppError::Sqlx(error)
    }
}

impl axum::response::IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        let AppError::Sqlx(error) = self;
        (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
    }
}

#[derive(Clone)]
struct AppState {
    prefix: &'static str,
}

/// A helper written once for reading handlers and writing ones.
async fn count(db: &DbRead) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(db)
        .await
}

async fn list(db: DbRead, State(state): State<AppState>) -> Result<String, AppError> {
    Ok(format!("{}{}", state.prefix, count(&db).await?))
}

async fn add(db: DbWrite, State(state): State<AppState>) -> Result<String, AppError> {
    let mut tx = db.begin().await?; // sqlx::Error, converted by the app's own From
    sqlx::query("INSERT INTO notes (body) VALUES ('x')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // The helper through a read-only view of the write handle: it sees the row just written.
    Ok(format!("{}{}", state.prefix, count(&db.as_read()).await?))
}

async fn replicas(registry: Registry) -> String {
    registry.status().replicas.len().to_string()
}

fn app(registry: Registry) -> Router {
    Router::new()
        .route("/notes", get(list).post(add))
        .route("/replicas", get(replicas))
        .with_state(AppState { prefix: "n=" })
        .layer(RwSplitLayer::new(registry))
}

async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn reads_right_after_a_migration_see_the_new_schema() {
    let (_cluster, registry) = delayed_cluster().await;
    let app = app(registry.clone());

    // Without the barrier a replica that has not applied the migration serves the read: the
    // failure this test exists to prevent.
    sqlx::query("CREATE TABLE early (id int)")
        .execute(&registry.primary())
        .await
        .unwrap();
    let early = sqlx::query("SELECT * FROM early")
        .execute(&registry.read())
        .await
        .unwrap_err();
    assert!(early.to_string().contains("does not exist"), "{early}");

    // The app's migration, then the barrier, then the first GET at once.
    sqlx::query("CREATE TABLE notes (id bigserial PRIMARY KEY, body text)")
        .execute(&registry.primary())
        .await
        .unwrap();
    let caught_up = registry.wait_for_replicas(Duration::ZERO).await.unwrap();
    assert!(caught_up.position.is_some());
    assert_eq!(caught_up.behind.len(), 2, "{caught_up:?}");
    let (status, body) = call(&app, "GET", "/notes").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "n=0"));
    let read = registry.read();
    assert!(
        read.is_primary(),
        "held on the primary: {:?}",
        read.intent()
    );
    assert_eq!(read.intent().reason(), rwsplit::Reason::Barrier);

    // Once the replicas have the migration they serve reads again.
    let caught_up = registry.wait_for_replicas(DELAY * 10).await.unwrap();
    assert!(caught_up.all(), "{caught_up:?}");
    registry.check_now().await;
    let read = registry.read();
    assert!(!read.is_primary(), "{:?}", read.intent());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&read)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn the_app_keeps_its_state_its_errors_and_its_helpers() {
    let (_cluster, registry) = delayed_cluster().await;
    sqlx::query("CREATE TABLE notes (id bigserial PRIMARY KEY, body text)")
        .execute(&registry.primary())
        .await
        .unwrap();
    registry.wait_for_replicas(DELAY * 10).await.unwrap();
    let app = app(registry.clone());

    // A write counts its own row through the read-only view on the primary.
    let (status, body) = call(&app, "POST", "/notes").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "n=1"), "{body}");
    let (status, body) = call(&app, "GET", "/replicas").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "2"));

    // The read-only view stays read-only on the primary.
    let write = registry.write();
    let error = sqlx::query("INSERT INTO notes (body) VALUES ('y')")
        .execute(&write.as_read())
        .await
        .unwrap_err();
    let code = error.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("25006"), "{error}");

    // Without the layer the extractor says what is missing.
    let bare: Router = Router::new()
        .route("/notes", get(list))
        .with_state(AppState { prefix: "" });
    let (status, body) = call(&bare, "GET", "/notes").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("rwsplit_layer_missing"), "{body}");
}
