//! Each request's span carries the route intent and the server chosen, so handler logs say
//! where their queries went. Alone in its test binary: tracing caches callsite interest per
//! process, and tests running beside it without a subscriber could disable the span.

mod common;

use common::*;
use rwsplit::Registry;

#[tokio::test]
async fn handler_logs_carry_the_intent_and_the_server_chosen() {
    let logs = Logs::default();
    let _guard = logs.install();
    let cluster = cluster().await;
    let registry = Registry::connect(config(&cluster)).await.unwrap();
    async fn logged(db: rwsplit::DbRead) -> String {
        tracing::info!("handler ran");
        db.name().to_owned()
    }
    let app = axum::Router::new()
        .route("/logged", axum::routing::get(logged))
        .layer(rwsplit::RwSplitLayer::new(registry.clone()))
        .with_state(registry);
    let answer = call(&app, &cluster, "GET", "/logged").await;
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("handler ran"))
        .unwrap()
        .to_owned();
    for field in [
        "db.role=\"read\"".to_owned(),
        "db.reason=\"method\"".to_owned(),
        format!("db.server=\"{}\"", answer.body),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }
}
