//! Read/write splitting for axum and Tower services over a PostgreSQL primary and its
//! streaming read replicas, on sqlx.
//!
//! - [`RwSplitLayer`] decides for every request a [`RouteIntent`] (safe methods read, the rest
//!   write, [`RouteOverride`] and custom [`RoutePolicy`]s where that is not enough) and puts it
//!   into the request's extensions.
//! - The [`DbRead`] and [`DbWrite`] extractors hand the handler the server that matches: a
//!   replica for reads (read-only wherever they run), the primary for writes and
//!   transactions. Queries run on them directly (`fetch_one(&db)`).
//! - The [`Registry`] owns the pools, spreads reads over healthy replicas by weight (a smooth,
//!   lock-free weighted round-robin), checks every server in the background (reachability,
//!   role, lag in time and bytes), takes bad replicas out of rotation and back, and sends reads
//!   to the primary when no replica can serve. Jobs and CLIs use it directly.
//! - Read-your-writes: after a write the client gets a signed [`ConsistencyToken`] (cookie and
//!   header) holding the primary's WAL position; its later reads go to a replica only once that
//!   replica has replayed the write, else to the primary. See [`ConsistencyConfig`].
//! - [`Config`] reads the `db:` YAML block (with `${ENV:-default}` placeholders) or is built in
//!   code.
//!
//! # Quick start
//!
//! ```
//! use axum::{Json, Router, routing::get};
//! use rwsplit::{Config, DbRead, DbWrite, Registry, RwSplitLayer};
//!
//! async fn list(db: DbRead) -> Result<Json<Vec<String>>, String> {
//!     // Plain sqlx, on a replica.
//!     let names = sqlx::query_scalar("SELECT name FROM items ORDER BY id")
//!         .fetch_all(&db)
//!         .await
//!         .map_err(|e| e.to_string())?;
//!     Ok(Json(names))
//! }
//!
//! async fn create(db: DbWrite, name: String) -> Result<(), String> {
//!     // Plain sqlx, on the primary.
//!     sqlx::query("INSERT INTO items (name) VALUES ($1)")
//!         .bind(name)
//!         .execute(&db)
//!         .await
//!         .map_err(|e| e.to_string())?;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let yaml = "db: { host: 127.0.0.1, enableReadWriteSeparation: true, readReplicas: [{ name: r1, host: 127.0.0.1, port: 5433 }] }";
//! # let connect = Registry::connect_lazy;
//! // Usually `Config::from_file("config.yaml")?` and `Registry::connect(config).await?`.
//! let config = Config::from_yaml(yaml)?;
//! let registry = connect(config)?;
//!
//! let app: Router = Router::new()
//!     .route("/items", get(list).post(create))
//!     .layer(RwSplitLayer::new(registry.clone()))
//!     .with_state(registry);
//! # let _ = app;
//! // axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are decided
//!
//! | question | answered by |
//! |---|---|
//! | read or write, for this request? | [`RoutePolicy`] in [`RwSplitLayer`], then [`RouteOverride`] (`src/route/intent.rs`) |
//! | replica or primary, for this work? | one pure function, `src/route/decide.rs`, for every first pick and failover step |
//! | which replica? | the weighted schedule over replicas in rotation (`src/route/schedule.rs`), with [`LoadBalancing`] (`src/route/balance.rs`) |
//! | is a replica in rotation? | the health loop's checks, judged in `src/health/verdict.rs`, recorded by the one writer of server state (`src/registry/control.rs`) |
//!
//! # Logs
//!
//! Structured `tracing` events: `rwsplit configuration` at start, `connected` per server,
//! `replica removed from rotation` (with the reason) and `replica back in rotation`,
//! `no healthy read replicas available, falling back to primary` once when the last replica
//! leaves and `read replicas available again, reads leave the primary` when one returns,
//! `primary failed its check` (with the reason) and `primary healthy again`. No event, `Debug` output or error ever contains a password.

#![doc(test(attr(deny(warnings))))]
#![forbid(unsafe_code)]
#![deny(unreachable_pub)]
#![warn(missing_docs, missing_debug_implementations)]

mod clock;
mod config;
mod consistency;
mod db_error;
mod error;
mod fault;
mod health;
mod http;
mod metrics;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod query;
mod registry;
mod route;
mod server;

pub use config::{
    Config, ConfigError, ConsistencyConfig, DiscoveryConfig, GroupFallback, LoadBalancing,
    Promotion, Records, ReplicaConfig, ReplicaReadOnly, Roles, StickyMode,
};
pub use consistency::{ConsistencyToken, TokenRejection};
pub use db_error::{DbError, DbErrorKind};
pub use error::Error;
pub use http::{
    DbRejection, ResponseFuture, RouteOverride, RouteOverrideService, RwSplit, RwSplitLayer,
    TARGET_HEADER, status,
};
pub use query::{Access, Db, DbConnection, DbRead, DbWrite, ReadOnly, ReadWrite};
pub use registry::{CaughtUp, GroupStatus, Registry, RegistryStatus, ServerStatus};
pub use route::{MethodPolicy, Reason, Role, RouteIntent, RoutePolicy};
/// The TLS modes of [`Config::ssl_mode`], re-exported from sqlx.
pub use sqlx::postgres::PgSslMode;

/// The README's Rust snippets, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
