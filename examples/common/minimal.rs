//! The minimal app the measuring examples compare rwsplit against: one query and its JSON, on
//! `DbRead` or on two plain sqlx pools taken 2:1 by a counter (the same spread without rwsplit).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path, State};
use rwsplit::{DbError, DbRead};
use sqlx::PgPool;

#[derive(serde::Serialize, sqlx::FromRow)]
pub struct Item {
    id: i64,
    name: String,
}

pub const SHOW: &str = "SELECT id, name FROM items WHERE id = $1";

/// `GET /items/{id}` on rwsplit.
pub async fn show(db: DbRead, Path(id): Path<i64>) -> Result<axum::Json<Item>, DbError> {
    Ok(axum::Json(
        sqlx::query_as(SHOW).bind(id).fetch_one(&db).await?,
    ))
}

/// Two plain pools and the counter that takes them 2:1.
#[derive(Clone)]
pub struct Pools(PgPool, PgPool, Arc<AtomicUsize>);

impl Pools {
    pub fn new(first: PgPool, second: PgPool) -> Pools {
        Pools(first, second, Arc::new(AtomicUsize::new(0)))
    }
}

/// A plain pool as an application makes one: from `url`, with sqlx's defaults (statement
/// logging included, as on rwsplit's pools) but `max_connections` and `ping`, sqlx's
/// `test_before_acquire` (a round trip before each query; sqlx's default, and that of
/// rwsplit's primary pool; its replica pools ping only a connection idle for a second).
pub fn plain_pool(url: &str, max_connections: u32, ping: bool) -> PgPool {
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(ping)
        .connect_lazy_with(options)
}

/// `GET /items/{id}` on two plain pools.
pub async fn show_pools(
    State(Pools(first, second, turn)): State<Pools>,
    Path(id): Path<i64>,
) -> Result<axum::Json<Item>, DbError> {
    let pool = match turn.fetch_add(1, Ordering::Relaxed) % 3 {
        2 => &second,
        _ => &first,
    };
    Ok(axum::Json(
        sqlx::query_as(SHOW).bind(id).fetch_one(pool).await?,
    ))
}

/// A local primary with two streaming replicas, and an `items` table of `rows` rows on all
/// three.
pub async fn items_cluster(rows: u64) -> std::io::Result<rwsplit_testkit::Cluster> {
    println!("starting a primary with two streaming replicas on 127.0.0.1 ...");
    let cluster = rwsplit_testkit::Cluster::start(2).await?;
    let primary = cluster.primary();
    primary
        .execute("CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL)")
        .await?;
    primary
        .execute(&format!(
            "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, {rows}) g"
        ))
        .await?;
    cluster
        .wait_caught_up(std::time::Duration::from_secs(30))
        .await?;
    Ok(cluster)
}
