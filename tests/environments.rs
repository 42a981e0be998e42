//! Where users deploy: a least-privilege application role (no superuser, no `pg_monitor`),
//! hardened servers with monitoring functions revoked, and an Aurora-like reader. Every test
//! runs with the default 30 s full checks against the real local cluster; a missing function
//! removes only what needs it and never takes a server out of service.
//!
//! Log assertions: every test installs its capturing subscriber first (see `tests/logging.rs`).

mod common;

use std::time::Duration;

use common::app_role::*;
use common::*;
use rwsplit::Registry;
use rwsplit_testkit::Cluster;

#[tokio::test]
async fn each_monitoring_function_revoked_removes_only_what_needs_it() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster_with_app_role().await;

    // A plain login role, nothing revoked: everything but the WAL receiver's timeline, which
    // only `pg_read_all_stats` members see (and which is not an error for the others).
    let registry = Registry::connect(app_config(&cluster)).await.unwrap();
    assert_eq!(missing(&registry), vec![Vec::<&str>::new(); 3]);
    serves_as_usual(&cluster, &registry, "plain role").await;
    assert_eq!(logs.count(WARNING), 0, "{}", logs.text());
    registry.shutdown().await;

    let cases: [(&str, &str, &[&str]); 10] = [
        (
            "FUNCTION pg_control_system()",
            "pg_control_system()",
            &["system_identifier"],
        ),
        (
            "FUNCTION pg_control_checkpoint()",
            "pg_control_checkpoint()",
            &["checkpoint_timeline"],
        ),
        (
            "FUNCTION pg_control_recovery()",
            "pg_control_recovery()",
            &["recovery_timeline"],
        ),
        (
            "FUNCTION pg_current_wal_insert_lsn()",
            "pg_current_wal_insert_lsn()",
            &["insert_position"],
        ),
        (
            "FUNCTION pg_current_wal_lsn()",
            "pg_walfile_name(pg_current_wal_lsn())",
            &["wal_file"],
        ),
        (
            "FUNCTION pg_walfile_name(pg_lsn)",
            "pg_walfile_name(pg_current_wal_lsn())",
            &["wal_file"],
        ),
        (
            "FUNCTION pg_last_wal_receive_lsn()",
            "pg_last_wal_receive_lsn()",
            &["receive_position"],
        ),
        (
            "FUNCTION pg_last_wal_replay_lsn()",
            "pg_last_wal_replay_lsn()",
            &["replay_position"],
        ),
        (
            "FUNCTION pg_last_xact_replay_timestamp()",
            "pg_last_xact_replay_timestamp()",
            &["replay_timestamp"],
        ),
        (
            "TABLE pg_stat_wal_receiver",
            "pg_stat_wal_receiver",
            &["wal_receiver"],
        ),
    ];
    for (object, function, lost) in cases {
        let (kind, name) = object.split_once(' ').unwrap();
        let privilege = if kind == "TABLE" { "SELECT" } else { "EXECUTE" };
        let on = if kind == "TABLE" { "" } else { kind };
        replicated(
            &cluster,
            &format!("REVOKE {privilege} ON {on} {name} FROM PUBLIC"),
        )
        .await;
        let before = logs.count(WARNING);
        let registry = Registry::connect(app_config(&cluster)).await.unwrap();
        assert_eq!(missing(&registry), vec![lost.to_vec(); 3], "{object}");
        serves_as_usual(&cluster, &registry, object).await;
        // Said once per server, naming the function.
        assert_eq!(
            logs.count(WARNING) - before,
            3,
            "{object}:\n{}",
            logs.text()
        );
        let last = logs.text();
        let warned = last.lines().rfind(|l| l.contains(WARNING)).unwrap();
        assert!(warned.contains(function), "{object}: {warned}");
        registry.shutdown().await;
        replicated(
            &cluster,
            &format!("GRANT {privilege} ON {on} {name} TO PUBLIC"),
        )
        .await;
    }
    assert!(!logs.text().contains(APP_PASSWORD));
}

/// Every monitoring function at once: health by reachability and role alone, and tokens
/// keep a writing client on the primary.
#[tokio::test]
async fn with_every_monitoring_function_revoked_servers_serve_on_role_alone() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster_with_app_role().await;
    replicated(
        &cluster,
        "REVOKE EXECUTE ON FUNCTION pg_control_system(), pg_control_checkpoint(), \
         pg_control_recovery(), pg_current_wal_insert_lsn(), pg_current_wal_lsn(), \
         pg_walfile_name(pg_lsn), pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), \
         pg_last_xact_replay_timestamp() FROM PUBLIC; \
         REVOKE SELECT ON pg_stat_wal_receiver FROM PUBLIC",
    )
    .await;
    let registry = Registry::connect(app_config(&cluster)).await.unwrap();
    serves_as_usual(&cluster, &registry, "all revoked").await;
    let status = registry.status();
    assert_eq!(
        status.replicas[0].missing_capabilities.len(),
        9,
        "{status:?}"
    );
    assert_eq!(status.primary.timeline, None);

    // A write's token cannot name a position: the client reads from the primary.
    let app = app(registry.clone());
    let token = write_for_token(&app).await;
    for _ in 0..10 {
        assert_eq!(read_target(&app, Some(&token)).await, "primary");
    }
    // A write through a DbRead is still refused on the replicas.
    refuses_writes_through_reads(&registry).await;
    registry.shutdown().await;
}

/// Lag by bytes still takes a lagging replica out on a hardened host (`pg_control_*`
/// revoked), and lag by time alone does when the replay position is revoked.
#[tokio::test]
async fn a_lagging_replica_still_leaves_rotation_when_lag_can_be_measured() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster_with_app_role().await;
    for revoked in [
        "pg_control_system(), pg_control_checkpoint(), pg_control_recovery()",
        "pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn()",
    ] {
        replicated(
            &cluster,
            &format!("REVOKE EXECUTE ON FUNCTION {revoked} FROM PUBLIC"),
        )
        .await;
        let registry = Registry::connect(app_config(&cluster)).await.unwrap();
        serves_as_usual(&cluster, &registry, revoked).await;
        cluster.replica(0).pause_replay().await.unwrap();
        let writing = keep_writing(&cluster);
        let out = wait_for(revoked, Duration::from_secs(20), || {
            !in_rotation(&registry, "replica1")
        })
        .await;
        assert!(in_rotation(&registry, "replica2"), "{revoked}");
        let app = app(registry.clone());
        for _ in 0..10 {
            let answer = call(&app, &cluster, "GET", "/whoami").await;
            assert_eq!(answer.node.as_deref(), Some("replica2"), "{revoked}");
        }
        drop(writing);
        cluster.replica(0).resume_replay().await.unwrap();
        let back = wait_for(revoked, Duration::from_secs(20), || {
            in_rotation(&registry, "replica1")
        })
        .await;
        println!("{revoked}: out {out:?} after the pause, back {back:?} after resuming");
        registry.shutdown().await;
        replicated(
            &cluster,
            &format!("GRANT EXECUTE ON FUNCTION {revoked} TO PUBLIC"),
        )
        .await;
    }
}

/// A stand-in for Aurora PostgreSQL, which cannot run here: `aurora_version()`,
/// `aurora_db_instance_identifier()` and `aurora_replica_status()` (with its documented
/// columns) in a schema ahead of `pg_catalog` on the role's search path, and readers whose
/// `pg_last_wal_receive_lsn()`, `pg_last_wal_replay_lsn()` and `pg_stat_wal_receiver` raise
/// `feature_not_supported`, as Aurora's readers do. The lag each reader reports comes from a
/// table the test sets.
async fn aurora_standin(cluster: &Cluster) {
    let ports = format!(
        "WHEN {} THEN 'primary' WHEN {} THEN 'replica1' WHEN {} THEN 'replica2'",
        cluster.primary().port(),
        cluster.replica(0).port(),
        cluster.replica(1).port()
    );
    let unsupported = |name: &str, returns: &str| {
        format!(
            "CREATE FUNCTION aurora_standin.{name}() RETURNS {returns} LANGUAGE plpgsql AS $$ \
             BEGIN IF pg_catalog.pg_is_in_recovery() THEN RAISE EXCEPTION \
             'Function {name}() is currently not supported for Aurora' \
             USING ERRCODE = 'feature_not_supported'; END IF; RETURN NULL; END $$;"
        )
    };
    let sql = format!(
        "CREATE SCHEMA aurora_standin; \
         GRANT USAGE ON SCHEMA aurora_standin TO PUBLIC; \
         CREATE TABLE aurora_standin.lag (server_id text PRIMARY KEY, ms real NOT NULL); \
         INSERT INTO aurora_standin.lag VALUES ('replica1', 12), ('replica2', 15); \
         GRANT SELECT ON aurora_standin.lag TO PUBLIC; \
         CREATE FUNCTION aurora_standin.aurora_version() RETURNS text LANGUAGE sql \
           AS $$ SELECT '15.4.standin' $$; \
         CREATE FUNCTION aurora_standin.aurora_db_instance_identifier() RETURNS text \
           LANGUAGE sql AS $$ SELECT CASE inet_server_port() {ports} END $$; \
         CREATE FUNCTION aurora_standin.aurora_replica_status() RETURNS TABLE ( \
             server_id text, session_id text, highest_lsn_rcvd pg_lsn, \
             cur_replay_latency_in_usec bigint, active_txns integer, is_current boolean, \
             last_update_timestamp timestamptz, replica_lag_in_msec real) \
           LANGUAGE sql AS $$ \
             SELECT 'primary', 'MASTER_SESSION_ID', NULL::pg_lsn, NULL::bigint, 0, true, now(), \
                    NULL::real \
             UNION ALL \
             SELECT server_id, 'standin-session', NULL, (ms * 1000)::bigint, 0, true, now(), ms \
             FROM aurora_standin.lag $$; \
         {} {} \
         CREATE VIEW aurora_standin.pg_stat_wal_receiver AS \
           SELECT received_tli FROM pg_catalog.pg_stat_wal_receiver \
           WHERE aurora_standin.pg_last_wal_receive_lsn() IS NULL; \
         GRANT SELECT ON aurora_standin.pg_stat_wal_receiver TO PUBLIC; \
         ALTER ROLE {APP_USER} SET search_path = aurora_standin, pg_catalog, public",
        unsupported("pg_last_wal_receive_lsn", "pg_lsn"),
        unsupported("pg_last_wal_replay_lsn", "pg_lsn"),
    );
    replicated(cluster, &sql).await;
}

#[tokio::test]
async fn an_aurora_like_reader_is_checked_by_aurora_replica_status() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster_with_app_role().await;
    aurora_standin(&cluster).await;
    let registry = Registry::connect(app_config(&cluster)).await.unwrap();
    serves_as_usual(&cluster, &registry, "aurora stand-in").await;
    let status = registry.status();
    for replica in &status.replicas {
        let offers = replica.capabilities.clone().unwrap_or_default();
        assert!(offers.contains(&"aurora"), "{replica:?}");
        for lost in ["receive_position", "replay_position", "wal_receiver"] {
            assert!(replica.missing_capabilities.contains(&lost), "{replica:?}");
        }
        // The lag is Aurora's own figure.
        let lag = replica.lag.unwrap();
        assert!(lag < Duration::from_millis(20), "{replica:?}");
    }
    assert_eq!(logs.count(WARNING), 2, "{}", logs.text());

    // replica1 reports 5 s of lag: it leaves rotation at the next position poll, and comes
    // back once the figure falls.
    cluster
        .primary()
        .execute("UPDATE aurora_standin.lag SET ms = 5000 WHERE server_id = 'replica1'")
        .await
        .unwrap();
    let out = wait_for("replica1 out", Duration::from_secs(10), || {
        !in_rotation(&registry, "replica1")
    })
    .await;
    let app = app(registry.clone());
    for _ in 0..10 {
        let answer = call(&app, &cluster, "GET", "/whoami").await;
        assert_eq!(answer.node.as_deref(), Some("replica2"));
    }
    cluster
        .primary()
        .execute("UPDATE aurora_standin.lag SET ms = 8 WHERE server_id = 'replica1'")
        .await
        .unwrap();
    let back = wait_for("replica1 back", Duration::from_secs(10), || {
        in_rotation(&registry, "replica1")
    })
    .await;
    println!("aurora stand-in: replica1 out {out:?} after its lag rose, back {back:?} after");

    // Readers have no replay position: a client that wrote reads from the writer.
    let token = write_for_token(&app).await;
    assert_eq!(read_target(&app, Some(&token)).await, "primary");
    registry.shutdown().await;
}
