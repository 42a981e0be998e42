//! The status endpoint reports the cluster's real state, and never a password.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use common::*;
use http::Request;
use rwsplit::Registry;
use rwsplit_testkit::StopMode;
use tower::ServiceExt;

async fn status(app: &axum::Router) -> (serde_json::Value, String) {
    let response = app
        .clone()
        .oneshot(Request::get("/db/status").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

#[tokio::test]
async fn status_reports_the_real_state_without_credentials() {
    let cluster = cluster().await;
    let registry = Registry::connect(config_weighted(&cluster, &[3, 1]))
        .await
        .unwrap();
    let app = axum::Router::new()
        .route("/db/status", get(rwsplit::status))
        .with_state(registry.clone());

    let (json, text) = status(&app).await;
    assert!(
        !text.contains(rwsplit_testkit::PASSWORD),
        "no password in {text}"
    );
    assert_eq!(json["separation"], true);
    assert_eq!(json["primary"]["name"], "primary");
    assert_eq!(
        json["primary"]["address"],
        format!("127.0.0.1:{}", cluster.primary().port())
    );
    assert_eq!(json["primary"]["healthy"], true);
    let replicas = json["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2);
    for (replica, node) in replicas.iter().zip(cluster.replicas()) {
        assert_eq!(replica["name"], node.name());
        assert_eq!(replica["address"], format!("127.0.0.1:{}", node.port()));
        assert_eq!(replica["healthy"], true);
        assert_eq!(replica["in_rotation"], true);
        assert!(replica["lag_seconds"].as_f64().unwrap() < LAG_THRESHOLD.as_secs_f64());
        assert!(replica["lag_bytes"].is_u64());
        assert!(replica["last_check"].as_str().unwrap().ends_with('Z'));
        assert!(replica["last_error"].is_null());
        assert_eq!(replica["pool"]["max"], 10);
        // A superuser may ask everything: nothing missing, and sessions read-only by the
        // startup option straight to PostgreSQL.
        assert!(
            replica["capabilities"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("replay_position")),
            "{replica}"
        );
        assert_eq!(replica["missing_capabilities"], serde_json::json!([]));
        assert_eq!(replica["read_only"], "startup option");
    }
    assert_eq!(json["primary"]["read_only"], "read-write");
    assert_eq!(replicas[0]["weight"], 3);
    assert_eq!(replicas[1]["weight"], 1);

    // A stopped replica shows as down, with the error the check saw.
    cluster.replica(1).stop(StopMode::Immediate).await.unwrap();
    wait_for("replica2 out", Duration::from_secs(3), || {
        !in_rotation(&registry, "replica2")
    })
    .await;
    let (json, text) = status(&app).await;
    let down = &json["replicas"][1];
    assert_eq!(down["healthy"], false);
    assert_eq!(down["in_rotation"], false);
    // Its kind in fixed words, never the driver's text (which can name users and hosts).
    let shown = down["last_error"].as_str().unwrap();
    assert!(
        [
            "connection refused",
            "connection lost",
            "timed out",
            "server starting up or shutting down"
        ]
        .iter()
        .any(|kind| shown.ends_with(kind)),
        "{down}"
    );
    assert!(!shown.contains("os error"), "{down}");
    assert!(!text.contains(rwsplit_testkit::PASSWORD));
}
