//! Replica groups: a replica with `group: analytics` serves only the reads that ask for that
//! group (a route with `RouteOverride::replica_group`, `registry.read_from`), and those reads
//! reach no replica outside it while one of the group is in service; with none in service they
//! go where the group's fallback says, counted. Each read's server is the one that answered it
//! (`inet_server_port()`); the checks run at their 30 s default.

mod common;

use common::*;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rwsplit::{Config, DbRead, Registry, RouteOverride, RwSplitLayer};
use rwsplit_testkit::{Cluster, StopMode};

async fn port(db: DbRead) -> Result<String, rwsplit::DbError> {
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&db)
        .await?;
    Ok(port.to_string())
}

fn app(registry: Registry) -> Router {
    Router::new()
        .route("/plain", get(port))
        .route(
            "/report",
            get(port).route_layer(RouteOverride::replica_group("analytics")),
        )
        .layer(RwSplitLayer::new(registry))
}

/// The cluster's `db:` block with replica1 in the group `analytics`, and `fallback` for it.
fn settings(cluster: &Cluster, fallback: Option<&str>) -> Config {
    let mut yaml = cluster.config_yaml().replace(
        "name: replica1,",
        "name: replica1, group: \"${GROUP:-analytics}\",",
    );
    if let Some(fallback) = fallback {
        yaml.push_str(&format!(
            "  replicaGroups:\n    analytics:\n      fallback: {fallback}\n"
        ));
    }
    Config::from_yaml_with_env(&yaml, |_| None)
        .unwrap()
        .health_check_timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(2))
}

/// The servers (by name) that answered `count` GETs of `uri`, and the statuses that were not
/// 200.
async fn served(app: &Router, cluster: &Cluster, uri: &str, count: usize) -> Vec<String> {
    let mut servers = Vec::new();
    for _ in 0..count {
        let answer = call(app, cluster, "GET", uri).await;
        match answer.status.as_u16() {
            200 => servers.push(node_name(cluster, answer.body.parse().unwrap())),
            status => servers.push(format!("{status} {}", answer.body)),
        }
    }
    servers.sort();
    servers.dedup();
    servers
}

#[tokio::test]
async fn a_group_route_reads_only_from_its_group_and_falls_back_as_configured() {
    let recorder = TestRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let cluster = Cluster::start(2).await.unwrap();
    let registry = Registry::connect(settings(&cluster, None)).await.unwrap();
    let app = app(registry.clone());

    // In service: the group's route on its replica only, plain reads never on it.
    assert_eq!(served(&app, &cluster, "/report", 100).await, ["replica1"]);
    assert_eq!(served(&app, &cluster, "/plain", 100).await, ["replica2"]);
    let direct: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&registry.read_from("analytics"))
        .await
        .unwrap();
    assert_eq!(node_name(&cluster, direct), "replica1");
    let status = registry.status();
    assert_eq!(status.replicas[0].group.as_deref(), Some("analytics"));
    assert_eq!(status.replicas[1].group, None);
    assert_eq!(status.groups.len(), 1);
    assert_eq!(
        (
            status.groups[0].fallback.as_str(),
            status.groups[0].in_rotation
        ),
        ("replicas", 1)
    );
    let fallbacks = |to: &str| {
        recorder.total(
            "rwsplit_group_fallbacks_total",
            &[("group", "analytics"), ("to", to)],
        )
    };
    assert_eq!(fallbacks("replicas") + fallbacks("primary"), 0.0);

    // The group's only replica stops: its reads fail over to the replicas of no group (the
    // default fallback), counted, and none fails.
    cluster.replica(0).stop(StopMode::Immediate).await.unwrap();
    assert_eq!(served(&app, &cluster, "/report", 50).await, ["replica2"]);
    assert_eq!(fallbacks("replicas"), 50.0);
    assert_eq!(registry.status().groups[0].in_rotation, 0);
    assert_eq!(
        recorder.value(
            "rwsplit_group_replicas_in_rotation",
            &[("group", "analytics")]
        ),
        Some(0.0)
    );

    // `fallback: none`: refused with 503, plain reads unaffected.
    let changes = registry
        .reload(settings(&cluster, Some("none")))
        .await
        .unwrap();
    assert_eq!(changes, ["replicaGroups {} -> {analytics: none}"]);
    let refused = served(&app, &cluster, "/report", 5).await;
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].starts_with("503") && refused[0].contains("replica_group_unavailable"),
        "{refused:?}"
    );
    assert_eq!(fallbacks("none"), 5.0);
    let error = sqlx::query("SELECT 1")
        .execute(&registry.read_from("analytics"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("analytics"), "{error}");
    assert_eq!(served(&app, &cluster, "/plain", 20).await, ["replica2"]);

    // `fallback: primary`: the primary, counted.
    registry
        .reload(settings(&cluster, Some("primary")))
        .await
        .unwrap();
    assert_eq!(served(&app, &cluster, "/report", 20).await, ["primary"]);
    assert_eq!(fallbacks("primary"), 20.0);

    // The replica back: the group's reads return to it, and only to it.
    cluster.replica(0).start().await.unwrap();
    wait_for(
        "replica1 back in its group's rotation",
        Duration::from_secs(30),
        || registry.status().groups[0].in_rotation == 1,
    )
    .await;
    assert_eq!(served(&app, &cluster, "/report", 50).await, ["replica1"]);
    assert_eq!(served(&app, &cluster, "/plain", 50).await, ["replica2"]);
}

/// A group whose fallback is another group reads from that group while its own is out.
#[tokio::test]
async fn a_group_falls_back_to_another_group() {
    let cluster = Cluster::start(2).await.unwrap();
    let yaml = cluster
        .config_yaml()
        .replace("name: replica1,", "name: replica1, group: analytics,")
        .replace("name: replica2,", "name: replica2, group: reports,")
        + "  replicaGroups:\n    analytics: { fallback: reports }\n    reports: { fallback: none }\n";
    let registry = Registry::connect(Config::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let app = app(registry.clone());
    // Plain reads: no replica of no group, so the primary.
    assert_eq!(served(&app, &cluster, "/plain", 10).await, ["primary"]);
    assert_eq!(served(&app, &cluster, "/report", 20).await, ["replica1"]);
    cluster.replica(0).stop(StopMode::Immediate).await.unwrap();
    assert_eq!(served(&app, &cluster, "/report", 20).await, ["replica2"]);
}
