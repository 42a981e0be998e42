//! The demo's `items` API: plain sqlx queries on `DbRead` / `DbWrite`, JSON errors, and the
//! status and metrics routes. Its routes stay stable: the tour, the load run and the tests
//! drive them.

use axum::extract::Path;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, ServiceExt};
use metrics_exporter_prometheus::PrometheusHandle;
use rwsplit::{
    Access, Db, DbError, DbRead, DbWrite, Reason, Registry, Role, RouteOverride, RwSplit,
    RwSplitLayer,
};
use serde::{Deserialize, Serialize};
use tower::Layer;

#[derive(Serialize, sqlx::FromRow)]
struct Item {
    id: i64,
    name: String,
}

#[derive(Deserialize)]
struct NewItem {
    name: String,
}

#[derive(Deserialize)]
struct Search {
    q: String,
}

/// Every error the API answers with, as JSON: database errors sorted by [`DbError`] (a value
/// PostgreSQL refuses is a 400, a lost server a 503), bad requests with axum's own text.
enum ApiError {
    Db(DbError),
    Request(StatusCode, String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Db(error) => error.into_response(),
            ApiError::Request(status, message) => {
                (status, Json(serde_json::json!({ "error": message }))).into_response()
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Db(DbError::from(e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::Request(e.status(), e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::Request(StatusCode::BAD_REQUEST, e.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Says why the server was chosen, for the tour (the layer's `x-db-target` says which): a
/// header whose value is one of a few static texts, so that a request allocates nothing for it.
fn why<A: Access>(db: &Db<A>) -> [(HeaderName, HeaderValue); 1] {
    let intent = db.intent();
    let text = match (intent.role(), intent.reason()) {
        (Role::Read, Reason::Method) => "read (method)",
        (Role::Read, Reason::Override) => "read (override)",
        (Role::Read, Reason::Fallback) => "read (fallback)",
        (Role::Read, Reason::Sticky) => "read (sticky)",
        (Role::Read, Reason::LastResort) => "read (last_resort)",
        (Role::Read, Reason::ReadOnly) => "read (read_only)",
        (Role::Read, Reason::Rollout) => "read (rollout)",
        (Role::Read, Reason::Barrier) => "read (barrier)",
        (Role::Write, Reason::Method) => "write (method)",
        (Role::Write, Reason::Override) => "write (override)",
        (Role::Write, Reason::Disabled) => "write (disabled)",
        (role, _) => role.as_str(),
    };
    [(
        HeaderName::from_static("x-db-reason"),
        HeaderValue::from_static(text),
    )]
}

fn not_found() -> ApiError {
    ApiError::Request(StatusCode::NOT_FOUND, "no such item".into())
}

async fn list(db: DbRead) -> ApiResult<impl IntoResponse> {
    let items: Vec<Item> = sqlx::query_as("SELECT id, name FROM items ORDER BY id")
        .fetch_all(&db)
        .await?;
    Ok((why(&db), Json(items)))
}

async fn show(db: DbRead, id: Result<Path<i64>, PathRejection>) -> ApiResult<impl IntoResponse> {
    let Path(id) = id?;
    let item: Option<Item> = sqlx::query_as("SELECT id, name FROM items WHERE id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await?;
    Ok((why(&db), Json(item.ok_or_else(not_found)?)))
}

async fn create(
    db: DbWrite,
    body: Result<Json<NewItem>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(new) = body?;
    let item: Item = sqlx::query_as("INSERT INTO items (name) VALUES ($1) RETURNING id, name")
        .bind(new.name)
        .fetch_one(&db)
        .await?;
    Ok((StatusCode::CREATED, why(&db), Json(item)))
}

async fn update(
    db: DbWrite,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<NewItem>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(id) = id?;
    let Json(new) = body?;
    let item: Option<Item> =
        sqlx::query_as("UPDATE items SET name = $1 WHERE id = $2 RETURNING id, name")
            .bind(new.name)
            .bind(id)
            .fetch_optional(&db)
            .await?;
    Ok((why(&db), Json(item.ok_or_else(not_found)?)))
}

async fn remove(db: DbWrite, id: Result<Path<i64>, PathRejection>) -> ApiResult<impl IntoResponse> {
    let Path(id) = id?;
    let deleted = sqlx::query("DELETE FROM items WHERE id = $1")
        .bind(id)
        .execute(&db)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(not_found());
    }
    Ok((StatusCode::NO_CONTENT, why(&db)))
}

async fn search(
    db: DbRead,
    body: Result<Json<Search>, JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let Json(search) = body?;
    let items: Vec<Item> =
        sqlx::query_as("SELECT id, name FROM items WHERE name ILIKE '%' || $1 || '%' ORDER BY id")
            .bind(search.q)
            .fetch_all(&db)
            .await?;
    Ok((why(&db), Json(items)))
}

/// The demo's routes, with the layer around the whole router: each request passes through it
/// once, before routing, instead of through a copy of it that axum wraps around each route
/// (`Router::layer`), which costs a request about 800 instructions more. Route overrides still
/// apply: they run after it, inside the router.
pub fn app(registry: Registry, metrics: PrometheusHandle) -> RwSplit<Router> {
    let routes = Router::new()
        .route("/metrics", rwsplit::prometheus::metrics_route(metrics))
        .route("/db/status", get(rwsplit::status))
        .route("/items", get(list).post(create))
        .route("/items/{id}", get(show).put(update).delete(remove))
        .route(
            "/items/{id}/fresh",
            get(show).route_layer(RouteOverride::primary()),
        )
        .route(
            "/items/search",
            post(search).route_layer(RouteOverride::replica()),
        )
        .with_state(registry.clone());
    RwSplitLayer::new(registry)
        .target_header(true)
        .layer(routes)
}

/// [`app`] as `axum::serve` takes it.
#[allow(
    dead_code,
    reason = "the examples that count instructions drive `app` without a server"
)]
pub fn service(
    registry: Registry,
    metrics: PrometheusHandle,
) -> axum::routing::IntoMakeService<RwSplit<Router>> {
    ServiceExt::<axum::extract::Request>::into_make_service(app(registry, metrics))
}
