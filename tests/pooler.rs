//! Behind PgBouncer (Debian's 1.18, started by the tests in front of every server of the real
//! cluster), as most production users run: reads by weight on the replicas, read-your-writes,
//! and writes through a `DbRead` refused, compared with a plain sqlx pool through the same
//! PgBouncer. Checks at their 30 s default; the application role is no superuser.
//!
//! Log assertions: every test installs its capturing subscriber first (see `tests/logging.rs`).

mod common;

use std::time::Duration;

use common::app_role::*;
use common::*;
use rwsplit::{Config, Registry, ReplicaConfig, ReplicaReadOnly};
use rwsplit_testkit::{Cluster, PoolMode, Pooler};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// PgBouncer in front of the primary and each replica.
fn poolers(cluster: &Cluster, mode: PoolMode) -> Vec<Pooler> {
    std::iter::once(cluster.primary())
        .chain(cluster.replicas())
        .map(|node| {
            cluster
                .pooler(node, mode, &[(APP_USER, APP_PASSWORD)])
                .expect("start pgbouncer")
        })
        .collect()
}

/// The application's configuration with every server reached through its PgBouncer.
fn through(poolers: &[Pooler]) -> Config {
    let mut config = Config::new("127.0.0.1")
        .port(poolers[0].port())
        .username(APP_USER)
        .password(APP_PASSWORD)
        .database("postgres")
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
        .read_write_separation(true)
        .connect_timeout(Duration::from_secs(2))
        .replica_lag_threshold(LAG_THRESHOLD);
    for (i, pooler) in poolers[1..].iter().enumerate() {
        config = config.replica(
            ReplicaConfig::new(format!("replica{}", i + 1), "127.0.0.1").port(pooler.port()),
        );
    }
    assert_eq!(config.health_interval(), Duration::from_secs(30));
    config
}

/// A plain sqlx pool at `port`, as the application had before rwsplit.
async fn plain_pool(port: u16, read_only_option: bool) -> Result<i32, sqlx::Error> {
    let mut options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(APP_USER)
        .password(APP_PASSWORD)
        .database("postgres");
    if read_only_option {
        options = options.options([("default_transaction_read_only", "on")]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options)
        .await?;
    let port = sqlx::query_scalar("SELECT inet_server_port()")
        .persistent(false)
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(port)
}

/// Reads after a write: with both replicas paused, the writing client reads from the
/// primary; once they replay the write, from a replica again. Others read from replicas
/// throughout.
async fn reads_its_writes(cluster: &Cluster, registry: &Registry) {
    let app = app(registry.clone());
    for replica in cluster.replicas() {
        replica.pause_replay().await.unwrap();
    }
    let token = write_for_token(&app).await;
    for _ in 0..5 {
        assert_eq!(read_target(&app, Some(&token)).await, "primary");
        assert_ne!(read_target(&app, None).await, "primary");
    }
    resume_all(cluster).await;
    wait_for_async(
        "the writer back on replicas",
        Duration::from_secs(10),
        || {
            let (app, token) = (app.clone(), token.clone());
            async move { read_target(&app, Some(&token)).await != "primary" }
        },
    )
    .await;
}

/// Polls `condition` every 50 ms until it holds.
async fn wait_for_async<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> F,
) {
    let start = std::time::Instant::now();
    while !condition().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn behind_pgbouncer_in_session_pooling_replicas_serve_reads_read_only() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster_with_app_role().await;
    let poolers = poolers(&cluster, PoolMode::Session);

    // A plain sqlx pool through the same PgBouncer works; with the read-only startup option
    // PgBouncer refuses it.
    let replica1 = i32::from(cluster.replica(0).port());
    assert_eq!(
        plain_pool(poolers[1].port(), false).await.unwrap(),
        replica1
    );
    let refused = plain_pool(poolers[1].port(), true).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("unsupported startup parameter"),
        "{refused}"
    );

    let registry = Registry::connect(through(&poolers)).await.unwrap();
    let status = registry.status();
    for replica in &status.replicas {
        assert_eq!(replica.read_only, "SET after connect", "{replica:?}");
    }
    assert_eq!(
        logs.count("refuses the `options` startup parameter"),
        2,
        "once per replica:\n{}",
        logs.text()
    );
    serves_as_usual(&cluster, &registry, "pgbouncer session").await;
    refuses_writes_through_reads(&registry).await;
    reads_its_writes(&cluster, &registry).await;
    registry.shutdown().await;
}

#[tokio::test]
async fn behind_pgbouncer_in_transaction_pooling_reads_run_in_read_only_transactions() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster_with_app_role().await;
    let poolers = poolers(&cluster, PoolMode::Transaction);
    let replica1 = i32::from(cluster.replica(0).port());
    assert_eq!(
        plain_pool(poolers[1].port(), false).await.unwrap(),
        replica1
    );

    let config = through(&poolers).replica_read_only(ReplicaReadOnly::Transaction);
    let registry = Registry::connect(config).await.unwrap();
    for replica in &registry.status().replicas {
        assert_eq!(replica.read_only, "read-only transaction per query");
    }
    serves_as_usual(&cluster, &registry, "pgbouncer transaction").await;
    refuses_writes_through_reads(&registry).await;
    reads_its_writes(&cluster, &registry).await;
    // Read-only transactions leave no session setting behind for another client of the
    // pooler.
    let mut conn = sqlx::PgConnection::connect_with(
        &PgConnectOptions::new()
            .host("127.0.0.1")
            .port(poolers[1].port())
            .username(APP_USER)
            .password(APP_PASSWORD)
            .database("postgres"),
    )
    .await
    .unwrap();
    let read_only: String = sqlx::query_scalar("SHOW default_transaction_read_only")
        .persistent(false)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(read_only, "off");
    registry.shutdown().await;
}
