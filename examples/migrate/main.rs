//! An axum + sqlx app moved to rwsplit: `before.rs` is the app as it was (one `PgPool` in an
//! `Extension`, its own state and error type, a helper taking `impl PgExecutor`, transactions,
//! `SELECT ... FOR UPDATE`, a stream, `sqlx::migrate!` at startup); `after.rs` is the same app
//! on rwsplit. `diff -u examples/migrate/before.rs examples/migrate/after.rs` shows the move:
//! the handlers' parameter types and the startup, nothing else.
//!
//! `cargo run --example migrate` starts a local primary with two streaming replicas that apply
//! WAL a second late (so a read right after the migrations would meet the old schema on a
//! replica), starts the app on it, and makes its first requests at once: the first `GET` after
//! the migrations succeeds. `--before` runs the app as it was, on the primary alone.
//! `DATABASE_URL` (and `DATABASE_REPLICA_URLS`, comma-separated) point it at servers of your
//! own instead.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use rwsplit_testkit::Cluster;
use tower::ServiceExt;

mod after;
mod before;

/// Sends `request` as a client that keeps the consistency token of its last write (as a
/// browser keeps the cookie; an API client sends back the `x-db-consistency` header).
async fn call(
    app: &Router,
    mut request: Request<Body>,
    token: &mut Option<http::HeaderValue>,
) -> (StatusCode, String) {
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("x-db-consistency", token.clone());
    }
    let response = app.clone().oneshot(request).await.expect("the app answers");
    if let Some(issued) = response.headers().get("x-db-consistency") {
        *token = Some(issued.clone());
    }
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("a request")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rwsplit=info".into()),
        )
        .init();
    let before = std::env::args().any(|a| a == "--before");
    // Servers of your own, or a local cluster whose replicas apply WAL a second late.
    let mut cluster = None;
    let (primary, replicas): (String, Vec<String>) = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let replicas = std::env::var("DATABASE_REPLICA_URLS").unwrap_or_default();
            let replicas = replicas
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            (url, replicas)
        }
        Err(_) => {
            println!("starting a primary and two streaming replicas on 127.0.0.1 ...");
            let local = Cluster::start(2).await?;
            for replica in local.replicas() {
                replica.set_apply_delay(Duration::from_secs(1)).await?;
            }
            let urls = (
                local.primary().url(),
                local.replicas().iter().map(|r| r.url()).collect(),
            );
            cluster = Some(local);
            urls
        }
    };

    let app = match before {
        true => before::app(&primary).await?,
        false => after::app(&primary, &replicas).await?,
    };
    println!("migrations run; the first requests follow at once");
    let tour = [
        ("GET", "/notes", ""),
        ("POST", "/notes", r#"{"author": "ada", "body": "first"}"#),
        ("GET", "/notes/1", ""),
        ("PUT", "/notes/1", "edited"),
        ("GET", "/authors/ada/count", ""),
    ];
    let mut token = None;
    for (method, uri, body) in tour {
        let (status, answer) = call(&app, json(method, uri, body), &mut token).await;
        println!("{method} {uri} -> {status} {answer}");
        if !status.is_success() {
            return Err(format!("{method} {uri} failed: {status} {answer}").into());
        }
    }
    // The app (and with it the registry and its background tasks) goes before the servers.
    drop(app);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(cluster);
    Ok(())
}
