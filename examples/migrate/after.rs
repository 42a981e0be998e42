//! The notes API of `examples/migrate`, twice: `before.rs` as it was (one `PgPool` in an
//! `Extension`, every query on the primary), `after.rs` on rwsplit. Each handler's pool
//! parameter became a `DbRead` or `DbWrite` (the variable keeps its name, so no body changes),
//! and the startup changed; `diff -u before.rs after.rs` is the whole move.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::TryStreamExt;
use rwsplit::{Config, DbRead, DbWrite, Registry, RwSplitLayer};

/// The app's own state: nothing of the database in it.
#[derive(Clone)]
pub struct AppState {
    pub max_body: usize,
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct Note {
    pub id: i64,
    pub author: String,
    pub body: String,
    pub revision: i32,
}

#[derive(serde::Deserialize)]
pub struct NewNote {
    pub author: String,
    pub body: String,
}

/// The app's own error type: `?` on any sqlx call converts into it.
#[derive(Debug)]
pub enum AppError {
    NotFound,
    TooLong,
    Sqlx(sqlx::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => AppError::NotFound,
            error => AppError::Sqlx(error),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND.into_response(),
            AppError::TooLong => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            AppError::Sqlx(error) => {
                (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
            }
        }
    }
}

/// A helper written once for every kind of connection: a pool, a transaction, a handle.
async fn notes_by<'c>(db: impl sqlx::PgExecutor<'c>, author: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce((SELECT notes FROM note_counts WHERE author = $1), 0)")
        .bind(author)
        .fetch_one(db)
        .await
}

async fn list(pool: DbRead) -> Result<Json<Vec<Note>>, AppError> {
    // A stream, collected.
    let notes = sqlx::query_as::<_, Note>("SELECT * FROM notes ORDER BY id")
        .fetch(&pool)
        .try_collect()
        .await?;
    Ok(Json(notes))
}

async fn show(pool: DbRead, Path(id): Path<i64>) -> Result<Json<Note>, AppError> {
    let note = sqlx::query_as::<_, Note>("SELECT * FROM notes WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await?;
    Ok(Json(note))
}

async fn count(pool: DbRead, Path(author): Path<String>) -> Result<String, AppError> {
    Ok(notes_by(&pool, &author).await?.to_string())
}

async fn create(
    pool: DbWrite,
    State(state): State<AppState>,
    Json(new): Json<NewNote>,
) -> Result<Json<(Note, i64)>, AppError> {
    if new.body.len() > state.max_body {
        return Err(AppError::TooLong);
    }
    let mut tx = pool.begin().await?;
    let note =
        sqlx::query_as::<_, Note>("INSERT INTO notes (author, body) VALUES ($1, $2) RETURNING *")
            .bind(&new.author)
            .bind(&new.body)
            .fetch_one(&mut *tx)
            .await?;
    // A data-modifying statement whose count the helper reads back in the same transaction.
    sqlx::query(
        "INSERT INTO note_counts (author, notes) VALUES ($1, 1) \
         ON CONFLICT (author) DO UPDATE SET notes = note_counts.notes + 1",
    )
    .bind(&new.author)
    .execute(&mut *tx)
    .await?;
    let by_author = notes_by(&mut *tx, &new.author).await?;
    tx.commit().await?;
    Ok(Json((note, by_author)))
}

async fn edit(pool: DbWrite, Path(id): Path<i64>, body: String) -> Result<Json<Note>, AppError> {
    let mut tx = pool.begin().await?;
    let revision: i32 = sqlx::query_scalar("SELECT revision FROM notes WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let note = sqlx::query_as::<_, Note>(
        "UPDATE notes SET body = $2, revision = $3 WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(body)
    .bind(revision + 1)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(note))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/notes", get(list).post(create))
        .route("/notes/{id}", get(show).put(edit))
        .route("/authors/{author}/count", get(count))
}

/// Connects, runs the migrations and builds the app.
pub async fn app(
    database_url: &str,
    replica_urls: &[String],
) -> Result<Router, Box<dyn std::error::Error>> {
    let config = Config::from_urls(database_url, replica_urls)?.max_connections(10);
    let registry = Registry::connect(config).await?;
    sqlx::migrate!("examples/migrate/migrations")
        .run(&registry.primary())
        .await?;
    // No read may meet the old schema on a replica that has not replayed the migrations.
    registry.wait_for_replicas(Duration::from_secs(10)).await?;
    Ok(routes()
        .with_state(AppState { max_body: 1000 })
        .layer(RwSplitLayer::new(registry)))
}
