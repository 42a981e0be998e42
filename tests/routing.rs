//! Reads reach replicas by weight, writes and transactions reach the primary, overrides win,
//! and separation can be switched off: checked by what the servers themselves report.

mod common;

use common::*;
use std::time::Duration;

use rwsplit::Registry;

#[tokio::test]
async fn reads_spread_over_replicas_by_weight_as_the_servers_count_them() {
    let cluster = cluster().await;
    // Weights 2 and 1; no health checks during the run, so none of their queries count.
    let config =
        config_weighted(&cluster, &[2, 1]).health_check_interval(Duration::from_secs(3600));
    let registry = Registry::connect(config).await.unwrap();
    let app = app(registry);

    let reads = 3000;
    for _ in 0..reads {
        let answer = call(&app, &cluster, "GET", "/probe").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let on_1 = executed(cluster.replica(0), "rwsplit weight probe").await;
    let on_2 = executed(cluster.replica(1), "rwsplit weight probe").await;
    let on_primary = executed(cluster.primary(), "rwsplit weight probe").await;
    assert_eq!(on_1 + on_2, reads, "every read ran on a replica");
    assert_eq!(on_primary, 0, "no read ran on the primary");
    let share = on_1 as f64 / reads as f64;
    assert!(
        (share - 2.0 / 3.0).abs() < 0.02,
        "replica1 share {share:.3}, expected 0.667"
    );
}

/// `primaryReadWeight: 1` beside two replicas of weight 1: a third of plain reads run on the
/// primary, as the servers count them, and read-only there as on a replica; a primary whose
/// pool has no connection to spare (busy with writes) sends its share to the replicas.
#[tokio::test]
async fn the_primary_takes_its_weight_of_plain_reads_while_its_pool_has_room() {
    let cluster = cluster().await;
    let config = config_weighted(&cluster, &[1, 1])
        .health_check_interval(Duration::from_secs(3600))
        .max_connections(16);
    let registry = Registry::connect(config.clone().primary_read_weight(1))
        .await
        .unwrap();
    assert!(registry.status().primary_reads);
    let app = app(registry.clone());
    let count = || async {
        let mut counts = Vec::new();
        for node in std::iter::once(cluster.primary()).chain(cluster.replicas()) {
            counts.push(executed(node, "rwsplit weight probe").await);
        }
        counts
    };

    let reads = 1500;
    for _ in 0..reads {
        let answer = call(&app, &cluster, "GET", "/probe").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let spread = count().await;
    assert_eq!(spread.iter().sum::<i64>(), reads, "{spread:?}");
    // A third each. The pool is larger than these reads one at a time need: a read's
    // connection comes back to its pool after its read-only transaction's rollback, which a
    // busy machine (other tests in parallel) delays, and a pool of a few connections all on
    // their way back has none to spare, so the primary would rightly pass its share on.
    for on in &spread {
        let share = *on as f64 / reads as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.02, "{spread:?}");
    }
    // Read-only wherever a read runs: three reads in a row cover the three servers.
    for _ in 0..3 {
        let error = sqlx::query("INSERT INTO items (name) VALUES ('through a read')")
            .execute(&registry.read())
            .await
            .unwrap_err();
        let code = error.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("25006"), "{error}");
    }

    // Every connection of the primary's pool in use: its share goes to the replicas.
    let held = acquire_many(&registry.primary(), 16).await;
    for _ in 0..300 {
        let answer = call(&app, &cluster, "GET", "/probe").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let busy = count().await;
    assert_eq!(busy[0], spread[0], "a read ran on a busy primary: {busy:?}");
    assert_eq!(busy[1] + busy[2] - spread[1] - spread[2], 300, "{busy:?}");
    drop(held);

    // Back to 0 on a reload: plain reads leave the primary at once.
    registry.reload(config).await.unwrap();
    assert!(!registry.status().primary_reads);
    for _ in 0..300 {
        let answer = call(&app, &cluster, "GET", "/probe").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(
        count().await[0],
        spread[0],
        "a read ran on the primary after the reload"
    );
}

#[tokio::test]
async fn safe_methods_read_from_replicas_and_writes_reach_the_primary() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry);

    let mut replicas_seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let answer = call(&app, &cluster, "GET", "/whoami").await;
        assert_eq!(answer.status, 200);
        assert!(
            answer.body.ends_with("true"),
            "served by a standby: {}",
            answer.body
        );
        assert_eq!(
            answer.header, answer.node,
            "x-db-target names the real server"
        );
        replicas_seen.insert(answer.node.unwrap());
    }
    assert_eq!(replicas_seen.len(), 2, "both replicas take reads");

    // A POST's DbRead reads from the primary, as do PUT and DELETE.
    for method in ["POST", "PUT", "DELETE"] {
        let answer = call(&app, &cluster, method, "/whoami").await;
        assert_eq!(answer.node.as_deref(), Some("primary"), "{method}");
        assert_eq!(answer.header.as_deref(), Some("primary"));
    }

    // Writes in a transaction through DbWrite: on the primary, committed there.
    for _ in 0..5 {
        let answer = call(&app, &cluster, "POST", "/write").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.node.as_deref(), Some("primary"));
    }
    // DbWrite in a GET handler is still the primary.
    let answer = call(&app, &cluster, "GET", "/write").await;
    assert_eq!(answer.node.as_deref(), Some("primary"));
    for replica in cluster.replicas() {
        assert_eq!(executed(replica, "from a transaction").await, 0);
    }
    assert_eq!(executed(cluster.primary(), "from a transaction").await, 6);
}

#[tokio::test]
async fn overrides_win_over_the_method() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry);
    for _ in 0..3 {
        let fresh = call(&app, &cluster, "GET", "/fresh").await;
        assert_eq!(fresh.node.as_deref(), Some("primary"), "forced-primary GET");
        let search = call(&app, &cluster, "POST", "/search").await;
        assert!(
            search.body.ends_with("true"),
            "read-only POST on a replica: {search:?}"
        );
    }
}

#[tokio::test]
async fn unknown_methods_write_and_a_missing_layer_is_a_clear_500() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let app = app(registry.clone());
    let answer = call(&app, &cluster, "PURGE", "/whoami").await;
    // axum has no PURGE route (405), but the layer ran and did not fail.
    assert_eq!(answer.status, 405);

    let bare = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|db: rwsplit::DbRead| async move { db.name().to_owned() }),
        )
        .with_state(registry);
    let answer = call(&bare, &cluster, "GET", "/").await;
    assert_eq!(answer.status, 500);
    assert!(
        answer.body.contains("rwsplit_layer_missing"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("RwSplitLayer"), "{}", answer.body);
}

#[tokio::test]
async fn with_separation_disabled_everything_reaches_the_primary() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster).read_write_separation(false))
        .await
        .unwrap();
    let app = app(registry.clone());
    for (method, uri) in [
        ("GET", "/whoami"),
        ("POST", "/search"),
        ("GET", "/fresh"),
        ("POST", "/write"),
    ] {
        let answer = call(&app, &cluster, method, uri).await;
        assert_eq!(answer.status, 200, "{method} {uri}: {}", answer.body);
        assert_eq!(answer.node.as_deref(), Some("primary"), "{method} {uri}");
    }
    // Outside HTTP as well.
    assert!(registry.read().is_primary());
}

#[tokio::test]
async fn registry_gives_jobs_the_same_choices() {
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&registry.read())
        .await
        .unwrap();
    assert!(standby, "read() is a replica");
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&registry.primary())
        .await
        .unwrap();
    assert!(!standby, "the default pool is the primary");
    let mut tx = registry.begin().await.unwrap();
    sqlx::query("INSERT INTO items (name) VALUES ('job')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(registry.write().is_primary());
    registry.shutdown().await;
    assert!(registry.primary().is_closed());
    assert!(registry.read().acquire().await.is_err(), "pools are closed");
}

#[tokio::test]
async fn pools_keep_at_most_max_idle_connections_and_never_show_the_password() {
    let cluster = cluster().await;
    let config = config(&cluster).max_connections(6).max_idle_connections(1);
    let registry = Registry::connect(config).await.unwrap();
    let pool = registry.primary().clone();
    let held: Vec<_> = acquire_many(&pool, 4).await;
    assert_eq!(registry.status().primary.pool_size, 4);
    drop(held);
    // Connections are returned (and the surplus closed) in the background.
    wait_for(
        "idle connections trimmed",
        std::time::Duration::from_secs(5),
        || {
            let status = registry.status().primary;
            status.pool_idle <= 1 && status.pool_size <= 1
        },
    )
    .await;

    let debug = format!("{registry:?} {:?} {:?}", registry.status(), registry.read());
    assert!(!debug.contains(rwsplit_testkit::PASSWORD), "{debug}");
}

async fn acquire_many(
    pool: &sqlx::PgPool,
    n: usize,
) -> Vec<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.acquire().await.unwrap());
    }
    held
}
