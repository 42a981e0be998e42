//! The `DbRead` and `DbWrite` extractors: the server that matches the request's intent.
//!
//! [`RwSplitLayer`](crate::RwSplitLayer) puts the [`Registry`] and the request's intent into
//! the request's extensions, and the extractors take them from there: they work with any
//! router state (`Router<()>`, a state struct of your own, a pool kept in an `Extension`)
//! and need no `.with_state(registry)`. A route the layer does not wrap is rejected with
//! `500` and `rwsplit_layer_missing` ([`DbRejection::MissingLayer`]). Handlers that want the
//! registry itself take it as an extractor (`registry: Registry`).
//!
//! Handlers keep writing plain sqlx and run queries on the extractor itself
//! (`fetch_one(&db)`): a read whose replica cannot give a connection then fails over to
//! another server (see [`DbError`](crate::DbError) for what reaches the handler).
//! [`DbWrite`](crate::DbWrite) also derefs to the primary's [`sqlx::PgPool`] (`&*db`), for APIs
//! that need a pool; queries on it get no failover. Errors are sqlx's own (`sqlx::Error`), as
//! from a `PgPool`, so an app's `From<sqlx::Error>` keeps its `?` working.
//!
//! While the primary is known not to be one (in recovery, or refused as a split brain),
//! extracting [`DbWrite`](crate::DbWrite), or a [`DbRead`] that needs the primary, is rejected at
//! once with `503` and `database_read_only` ([`DbRejection::ReadOnly`]); reads that a replica
//! can serve go on. While it is only unreachable, its work waits for a connection, as on a
//! plain pool.
//!
//! - [`DbRead`] is a replica for a read intent and the primary for a write intent: a POST
//!   handler that reads through `DbRead` reads from the primary and sees its own writes. It is
//!   read-only wherever it runs (see [`Db`]); `db.begin()` starts a read-only transaction.
//! - [`DbWrite`](crate::DbWrite) is always the primary. Begin read-write transactions with it
//!   (`db.begin()`). A request that takes a `DbWrite` gets a consistency token; one that only
//!   reads does not. [`DbWrite::as_read`](crate::DbWrite::as_read) (or `DbRead::from`) gives a
//!   read-only view of it for helpers that take a `DbRead`.
//!
//! ```
//! use axum::{Json, Router, extract::{Path, State}, routing::get};
//! use rwsplit::{Config, DbRead, DbWrite, Registry, RwSplitLayer};
//!
//! // The app's own state and error type, as they were before rwsplit.
//! #[derive(Clone)]
//! struct AppState {
//!     greeting: String,
//! }
//!
//! #[derive(Debug)]
//! enum AppError {
//!     Sqlx(sqlx::Error),
//! }
//!
//! impl From<sqlx::Error> for AppError {
//!     fn from(e: sqlx::Error) -> Self {
//!         AppError::Sqlx(e)
//!     }
//! }
//!
//! impl axum::response::IntoResponse for AppError {
//!     fn into_response(self) -> axum::response::Response {
//!         let AppError::Sqlx(e) = self;
//!         (http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
//!     }
//! }
//!
//! async fn show(db: DbRead, Path(id): Path<i64>) -> Result<Json<String>, AppError> {
//!     let name: String = sqlx::query_scalar("SELECT name FROM items WHERE id = $1")
//!         .bind(id)
//!         .fetch_one(&db)
//!         .await?;
//!     Ok(Json(name))
//! }
//!
//! async fn rename(
//!     db: DbWrite,
//!     State(state): State<AppState>,
//!     Path(id): Path<i64>,
//!     name: String,
//! ) -> Result<String, AppError> {
//!     let mut tx = db.begin().await?; // sqlx::Error, as from PgPool::begin
//!     sqlx::query("UPDATE items SET name = $1 WHERE id = $2")
//!         .bind(name)
//!         .bind(id)
//!         .execute(&mut *tx)
//!         .await?;
//!     tx.commit().await?;
//!     Ok(state.greeting)
//! }
//!
//! async fn replicas(registry: Registry) -> String {
//!     registry.status().replicas.len().to_string()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rwsplit::Error> {
//! let registry = Registry::connect_lazy(Config::new("127.0.0.1"))?;
//! let app: Router = Router::new()
//!     .route("/items/{id}", get(show).put(rename))
//!     .route("/replicas", get(replicas))
//!     .with_state(AppState { greeting: "hi".into() })
//!     .layer(RwSplitLayer::new(registry));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;

use axum::extract::MatchedPath;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use super::layer::{Routing, spans_enabled};
use super::route_override::ReplicaGroup;
use crate::query::{Db, DbRead, ReadOnly, ReadWrite, Target};
use crate::registry::Registry;
use crate::route::RouteIntent;

impl<S: Sync> FromRequestParts<S> for Db<ReadOnly> {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (routing, intent) = routed(parts)?;
        let registry = &routing.0.registry;
        let target = Target::new(registry, registry.shared.resolve_waiting(intent).await);
        // A read writes nothing, wherever it runs: no consistency token for it.
        hand_out(parts, target, false).map(Db::new)
    }
}

impl<S: Sync> FromRequestParts<S> for Db<ReadWrite> {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (routing, intent) = routed(parts)?;
        let registry = &routing.0.registry;
        // A read route whose handler asked for the primary: the handler overrides.
        let target = Target::new(registry, registry.shared.resolve(intent.for_writing()));
        hand_out(parts, target, true).map(Db::new)
    }
}

/// `Option<DbRead>` is `None` when the [`RwSplitLayer`](crate::RwSplitLayer) is not installed
/// (or the pools are shut down), for handlers that can do without the database.
impl<S: Sync> OptionalFromRequestParts<S> for Db<ReadOnly> {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <DbRead as FromRequestParts<S>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

/// The request's state and intent, as [`RwSplitLayer`](crate::RwSplitLayer) (and a route
/// override) left them.
fn routed(parts: &Parts) -> Result<(&Routing, RouteIntent), DbRejection> {
    let group = parts.extensions.get::<ReplicaGroup>().map(|g| g.0);
    match parts.extensions.get::<Routing>() {
        Some(routing) => Ok((routing, routing.0.intent().for_group(group))),
        None => Err(DbRejection::MissingLayer),
    }
}

/// The request's intent, for handlers that want to know why their server was chosen.
impl<S: Sync> FromRequestParts<S> for RouteIntent {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        routed(parts).map(|(_, intent)| intent)
    }
}

/// The registry itself, for handlers that want it (status, jobs it starts), whatever the
/// router's state: [`RwSplitLayer`](crate::RwSplitLayer) hands it to every request it wraps.
impl<S: Sync> FromRequestParts<S> for Registry {
    type Rejection = DbRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (routing, _) = routed(parts)?;
        Ok(routing.0.registry.clone())
    }
}

fn hand_out(parts: &Parts, target: Target, wrote: bool) -> Result<Target, DbRejection> {
    if target.pool().is_closed() {
        return Err(DbRejection::ShutDown);
    }
    // The route template, for metrics labels.
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let server = target.server();
    let metrics = server.metrics.route(route);
    metrics.decided(target.intent().decision());
    if target.is_refused() {
        return Err(DbRejection::GroupUnavailable);
    }
    if target.primary_refuses() {
        return Err(DbRejection::ReadOnly);
    }
    if spans_enabled() {
        tracing::Span::current().record("db.server", target.name());
    }
    let route = metrics.route();
    if let Some(routing) = parts.extensions.get::<Routing>() {
        routing
            .0
            .note(server, wrote && target.is_primary(), metrics);
    }
    Ok(target.for_route(route))
}

/// Why [`DbRead`] or [`DbWrite`](crate::DbWrite) could not be extracted.
///
/// Each variant has a fixed status code and answers with a small JSON body
/// `{"error": "<code>", "message": "<text>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbRejection {
    /// The request did not pass through [`RwSplitLayer`](crate::RwSplitLayer): a setup
    /// mistake, so `500 Internal Server Error`.
    MissingLayer,
    /// The registry was shut down, so no server is available: `503 Service Unavailable`.
    ShutDown,
    /// The request needs the primary (a write, or a read that must see the client's recent
    /// write) and the primary is down or no longer a primary: `503 Service Unavailable`, at
    /// once, instead of waiting for a connection that will not come. Reads that a replica can
    /// serve keep working.
    ReadOnly,
    /// The request reads from a replica group
    /// ([`RouteOverride::replica_group`](crate::RouteOverride::replica_group)) none of whose
    /// replicas is in service, and the group's fallback is `none`: `503 Service Unavailable`.
    GroupUnavailable,
}

impl DbRejection {
    /// The status code of the rejection's response.
    pub fn status(&self) -> StatusCode {
        match self {
            DbRejection::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
            DbRejection::ShutDown | DbRejection::ReadOnly | DbRejection::GroupUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// A stable machine-readable code: `rwsplit_layer_missing`, `database_unavailable`,
    /// `database_read_only` or `replica_group_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            DbRejection::MissingLayer => "rwsplit_layer_missing",
            DbRejection::ShutDown => "database_unavailable",
            DbRejection::ReadOnly => "database_read_only",
            DbRejection::GroupUnavailable => "replica_group_unavailable",
        }
    }

    /// The human-readable text of the rejection.
    pub fn body_text(&self) -> &'static str {
        match self {
            DbRejection::MissingLayer => {
                "no route intent on this request: add `RwSplitLayer` to the router (with \
                 `.layer(..)`, outside any `RouteOverride`) before using DbRead or DbWrite"
            }
            DbRejection::ShutDown => "the database connection pools are shut down",
            DbRejection::ReadOnly => crate::db_error::READ_ONLY,
            DbRejection::GroupUnavailable => {
                "no replica of the group this route reads from is in service, and the group's \
                 fallback is none"
            }
        }
    }
}

impl fmt::Display for DbRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.body_text())
    }
}

impl std::error::Error for DbRejection {}

impl IntoResponse for DbRejection {
    fn into_response(self) -> Response {
        if self == DbRejection::MissingLayer {
            tracing::error!(rejection = self.code(), "{}", self.body_text());
        }
        let message = self.body_text().replace('`', "'");
        crate::db_error::json_error(self.status(), self.code(), &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn rejections_have_fixed_statuses_and_json_bodies() {
        for rejection in [
            DbRejection::MissingLayer,
            DbRejection::ShutDown,
            DbRejection::ReadOnly,
            DbRejection::GroupUnavailable,
        ] {
            let response = rejection.into_response();
            assert_eq!(response.status(), rejection.status());
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert!(!rejection.body_text().contains('"'));
            assert!(!rejection.body_text().contains('\\'));
        }
        assert_eq!(DbRejection::MissingLayer.status(), 500);
        assert_eq!(DbRejection::ShutDown.status(), 503);
    }
}
