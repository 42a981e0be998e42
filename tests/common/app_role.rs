//! A least-privilege application role on the test cluster, and what a user relies on from
//! rwsplit wherever it runs.

use std::collections::BTreeMap;
use std::time::Duration;

use rwsplit::{Config, Registry};
use rwsplit_testkit::Cluster;

use super::*;

pub const APP_USER: &str = "app_reader_writer";
pub const APP_PASSWORD: &str = "app-role-Secret-77";
pub const WARNING: &str = "some monitoring functions are not available to this role";

/// The cluster with a login role that owns nothing and has no monitoring grants.
pub async fn cluster_with_app_role() -> Cluster {
    let cluster = cluster().await;
    replicated(
        &cluster,
        &format!(
            "CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}' NOSUPERUSER; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON items TO {APP_USER}; \
             GRANT USAGE ON SEQUENCE items_id_seq TO {APP_USER}"
        ),
    )
    .await;
    cluster
}

/// The cluster's configuration as the application role, every check setting at its default
/// but the lag threshold (1 s).
pub fn app_config(cluster: &Cluster) -> Config {
    let config = Config::from_yaml(&cluster.config_yaml())
        .unwrap()
        .username(APP_USER)
        .password(APP_PASSWORD)
        .connect_timeout(Duration::from_secs(2))
        .replica_lag_threshold(LAG_THRESHOLD);
    assert_eq!(config.health_interval(), Duration::from_secs(30));
    config
}

/// What a user relies on: every server in service, writes on the primary, reads spread over
/// both replicas by weight (1:1).
pub async fn serves_as_usual(cluster: &Cluster, registry: &Registry, case: &str) {
    let status = registry.status();
    assert_eq!(status.primary.state, "serving", "{case}: {status:?}");
    for replica in &status.replicas {
        assert!(replica.in_rotation, "{case}: {replica:?}");
    }
    let app = app(registry.clone());
    for _ in 0..10 {
        let answer = call(&app, cluster, "POST", "/write").await;
        assert_eq!(answer.status, 200, "{case}: {}", answer.body);
        assert_eq!(answer.node.as_deref(), Some("primary"), "{case}");
    }
    let mut reads = BTreeMap::new();
    for _ in 0..40 {
        let answer = call(&app, cluster, "GET", "/whoami").await;
        assert_eq!(answer.status, 200, "{case}: {}", answer.body);
        *reads.entry(answer.node.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(reads.get("replica1"), Some(&20), "{case}: {reads:?}");
    assert_eq!(reads.get("replica2"), Some(&20), "{case}: {reads:?}");
}

/// A route whose handler writes through its `DbRead`.
pub fn sneaky_app(registry: Registry) -> axum::Router {
    async fn sneak(db: rwsplit::DbRead) -> Result<String, rwsplit::DbError> {
        sqlx::query("INSERT INTO items (name) VALUES ('through a read')")
            .persistent(false)
            .execute(&db)
            .await?;
        Ok(String::new())
    }
    axum::Router::new()
        .route("/sneak", axum::routing::get(sneak))
        .layer(rwsplit::RwSplitLayer::new(registry.clone()).target_header(true))
        .with_state(registry)
}

/// The capabilities every server of `registry` lacks.
pub fn missing(registry: &Registry) -> Vec<Vec<&'static str>> {
    let status = registry.status();
    std::iter::once(&status.primary)
        .chain(&status.replicas)
        .map(|s| s.missing_capabilities.clone())
        .collect()
}

/// POSTs `/write` through `app`; returns the consistency token its response carries.
pub async fn write_for_token(app: &axum::Router) -> http::HeaderValue {
    let request = http::Request::post("/write").body(axum::body::Body::empty());
    let response = tower::ServiceExt::oneshot(app.clone(), request.unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-db-consistency"].clone()
}

/// GETs `/whoami` through `app`, with `token` if given; returns the server that served it
/// (`x-db-target`).
pub async fn read_target(app: &axum::Router, token: Option<&http::HeaderValue>) -> String {
    let mut request = http::Request::get("/whoami");
    if let Some(token) = token {
        request = request.header("x-db-consistency", token);
    }
    let request = request.body(axum::body::Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-db-target"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// A write through a `DbRead` fails on a replica with `write_through_read`.
pub async fn refuses_writes_through_reads(registry: &Registry) {
    let app = sneaky_app(registry.clone());
    for _ in 0..4 {
        let response = app
            .clone()
            .oneshot(
                http::Request::get("/sneak")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_ne!(response.headers()["x-db-target"], "primary");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("write_through_read"));
    }
}
