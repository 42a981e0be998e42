//! Read-your-writes against replicas that really lag: a client sees its own writes every time,
//! other clients keep reading from replicas, a sticky client returns to replicas as soon as
//! they catch up, and no crafted token can hurt.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use common::{delayed_cluster, executed, node_name};
use http::{Request, StatusCode, header};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rwsplit::{
    Config, ConsistencyConfig, ConsistencyToken, DbRead, DbWrite, Registry, RwSplitLayer,
};
use rwsplit_testkit::Cluster;
use tower::ServiceExt;

const KEY: &str = "a shared signing key, 32 bytes or more";
const DELAY: Duration = Duration::from_millis(300);

async fn create(db: DbWrite) -> Result<String, StatusCode> {
    let id: i64 = sqlx::query_scalar("INSERT INTO items (name) VALUES ('x') RETURNING id")
        .fetch_one(&db)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(id.to_string())
}

async fn show(db: DbRead, Path(id): Path<i64>) -> Result<String, StatusCode> {
    let row: Option<(i32,)> = sqlx::query_as("SELECT inet_server_port() FROM items WHERE id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    row.map(|(port,)| port.to_string())
        .ok_or(StatusCode::NOT_FOUND)
}

fn app(registry: Registry) -> Router {
    Router::new()
        .route("/items", post(create))
        .route("/items/{id}", get(show))
        .layer(RwSplitLayer::new(registry.clone()).target_header(true))
        .with_state(registry)
}

fn config(cluster: &Cluster, consistency: ConsistencyConfig) -> Config {
    Config::from_yaml(&cluster.config_yaml())
        .unwrap()
        .health_check_interval(Duration::from_millis(200))
        .replica_lag_threshold(Duration::from_secs(5))
        .consistency(consistency)
}

fn lsn() -> ConsistencyConfig {
    ConsistencyConfig::lsn()
        .signing_key(KEY)
        .max_pin(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(50))
        .cookie_secure(false)
}

/// How a client sends its token back.
#[derive(Clone, Copy, Debug)]
enum Via {
    Cookie,
    Header,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: String,
    target: Option<String>,
    /// `name=value` of the consistency cookie set by the response.
    cookie: Option<String>,
    /// The token in the `x-db-consistency` response header.
    token: Option<String>,
    set_cookie: Option<String>,
}

async fn send(app: &Router, method: &str, uri: &str, token: Option<(&str, Via)>) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    match token {
        Some((cookie, Via::Cookie)) => request = request.header(header::COOKIE, cookie),
        Some((token, Via::Header)) => request = request.header("x-db-consistency", token),
        None => {}
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = |name: header::HeaderName| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let set_cookie = text(header::SET_COOKIE);
    let reply = Reply {
        status: response.status(),
        target: text(header::HeaderName::from_static("x-db-target")),
        cookie: set_cookie
            .as_ref()
            .map(|c| c.split(';').next().unwrap().to_owned()),
        token: text(header::HeaderName::from_static("x-db-consistency")),
        set_cookie,
        body: String::new(),
    };
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        body: String::from_utf8(body.to_vec()).unwrap(),
        ..reply
    }
}

#[tokio::test]
async fn a_client_sees_its_own_writes_every_time_while_others_read_from_replicas() {
    let cluster = delayed_cluster(DELAY).await;
    let registry = Registry::connect(config(&cluster, lsn())).await.unwrap();
    let app = app(registry);
    // A row every replica has, for the other client to read.
    let old = send(&app, "POST", "/items", None).await;
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    let old_uri = format!("/items/{}", old.body);

    let pairs = 2000;
    let mut stale = 0;
    let mut served_by = BTreeMap::<String, usize>::new();
    let mut others_on_replicas = 0;
    for i in 0..pairs {
        let write = send(&app, "POST", "/items", None).await;
        assert_eq!(write.status, 200);
        let cookie = write.cookie.expect("a write sets the consistency cookie");
        // The client's cookie jar sends it back with the next read.
        let read = send(
            &app,
            "GET",
            &format!("/items/{}", write.body),
            Some((&cookie, Via::Cookie)),
        )
        .await;
        match read.status {
            StatusCode::OK => {
                *served_by.entry(read.target.unwrap()).or_default() += 1;
            }
            StatusCode::NOT_FOUND => stale += 1,
            other => panic!("unexpected {other}: {}", read.body),
        }
        if i % 20 == 0 {
            // Another client, without a token, reading an old row.
            let other = send(&app, "GET", &old_uri, None).await;
            assert_eq!(other.status, 200);
            assert!(
                other.target.unwrap().starts_with("replica"),
                "token-less reads stay on replicas"
            );
            others_on_replicas += 1;
        }
    }
    assert_eq!(
        stale, 0,
        "stale reads with the token over {pairs} pairs (served by {served_by:?})"
    );
    assert_eq!(others_on_replicas, pairs / 20);
    assert!(
        served_by.get("primary").copied().unwrap_or(0) > 0,
        "{served_by:?}"
    );

    // The same pairs without the token: the replicas' delay shows, so the test can fail.
    let mut stale_without = 0;
    for _ in 0..200 {
        let write = send(&app, "POST", "/items", None).await;
        let read = send(&app, "GET", &format!("/items/{}", write.body), None).await;
        if read.status == StatusCode::NOT_FOUND {
            stale_without += 1;
        }
    }
    eprintln!(
        "{pairs} write-then-read pairs with the token: {stale} stale, served by {served_by:?}; \
         200 pairs without: {stale_without} stale"
    );
    assert!(
        stale_without > 100,
        "without the token most reads are stale: {stale_without}/200"
    );
}

#[tokio::test]
async fn a_sticky_client_returns_to_replicas_as_soon_as_they_catch_up() {
    let cluster = delayed_cluster(DELAY).await;
    let registry = Registry::connect(config(&cluster, lsn())).await.unwrap();
    let app = app(registry);

    let write = send(&app, "POST", "/items", None).await;
    let token = write.token.expect("a write sets the consistency header");
    let uri = format!("/items/{}", write.body);
    let first = send(&app, "GET", &uri, Some((&token, Via::Header))).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.target.as_deref(),
        Some("primary"),
        "not caught up yet: the primary"
    );

    // The pin lasts up to 30 s, but the client is back on a replica once one has replayed
    // the write: the apply delay plus a poll or two.
    let start = Instant::now();
    loop {
        let read = send(&app, "GET", &uri, Some((&token, Via::Header))).await;
        assert_eq!(read.status, 200, "never stale");
        if read.target.as_deref() != Some("primary") {
            assert_eq!(
                read.target.as_deref(),
                Some(node_name(&cluster, read.body.parse().unwrap()).as_str())
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still pinned after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    assert!(
        took < DELAY * 4,
        "back on a replica {took:?} after the write"
    );
}

#[tokio::test]
async fn crafted_tokens_are_ignored_counted_and_never_fail_a_request() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let cluster = common::cluster().await;
    let registry = Registry::connect(config(&cluster, lsn())).await.unwrap();
    let app = app(registry.clone());
    let write = send(&app, "POST", "/items", None).await;
    let good = write.token.unwrap();
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    // Let the position poll see the caught-up replicas and the primary's latest position.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let uri = format!("/items/{}", write.body);

    let other_key = Registry::connect_lazy(config(
        &cluster,
        lsn().signing_key("another key, also 32 bytes or more"),
    ))
    .unwrap();
    let now = SystemTime::now();
    let crafted = [
        ("garbage", "zzz-not-a-token".to_owned()),
        ("truncated", good[..good.len() - 3].to_owned()),
        ("other key", other_key.sign_token(&ConsistencyToken::new(1))),
        (
            "far-future position",
            registry.sign_token(&ConsistencyToken::at(
                u64::MAX / 4,
                now - Duration::from_secs(3),
            )),
        ),
        (
            "expired",
            registry.sign_token(&ConsistencyToken::at(1, now - Duration::from_secs(60))),
        ),
        ("100 KB", "A".repeat(100 * 1024)),
    ];
    for (what, token) in &crafted {
        for via in [Via::Cookie, Via::Header] {
            let sent = match via {
                Via::Cookie => format!("rwsplit_consistency={token}"),
                Via::Header => token.clone(),
            };
            let read = send(&app, "GET", &uri, Some((&sent, via))).await;
            assert_eq!(read.status, 200, "{what} via {via:?}: {}", read.body);
            assert!(
                read.target.as_deref().unwrap().starts_with("replica"),
                "{what} via {via:?} routes as if no token was sent, got {:?}",
                read.target
            );
        }
    }

    let mut rejected = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() == "rwsplit_consistency_tokens_rejected_total"
            && let DebugValue::Counter(n) = value
        {
            let reason = key.key().labels().next().unwrap().value().to_owned();
            rejected.insert(reason, n);
        }
    }
    let expected: BTreeMap<String, u64> = [
        ("malformed", 4),
        ("bad_signature", 2),
        ("ahead_of_primary", 2),
        ("expired", 2),
        ("oversized", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(rejected, expected);
}

#[tokio::test]
async fn two_app_instances_sharing_the_key_honour_each_others_tokens() {
    let cluster = delayed_cluster(DELAY).await;
    let first = app(Registry::connect(config(&cluster, lsn())).await.unwrap());
    let second = app(Registry::connect(config(&cluster, lsn())).await.unwrap());
    let mut stale = 0;
    for _ in 0..50 {
        let write = send(&first, "POST", "/items", None).await;
        let cookie = write.cookie.unwrap();
        let read = send(
            &second,
            "GET",
            &format!("/items/{}", write.body),
            Some((&cookie, Via::Cookie)),
        )
        .await;
        if read.status != StatusCode::OK {
            stale += 1;
        }
    }
    assert_eq!(
        stale, 0,
        "the second instance honours the first one's tokens"
    );
}

#[tokio::test]
async fn time_window_mode_pins_for_the_window_then_lets_go() {
    let cluster = common::cluster().await;
    let window = ConsistencyConfig::window(Duration::from_millis(800))
        .signing_key(KEY)
        .cookie_secure(false);
    let registry = Registry::connect(config(&cluster, window)).await.unwrap();
    let app = app(registry);
    let write = send(&app, "POST", "/items", None).await;
    let cookie = write.cookie.unwrap();
    let uri = format!("/items/{}", write.body);
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    let inside = send(&app, "GET", &uri, Some((&cookie, Via::Cookie))).await;
    assert_eq!(
        inside.target.as_deref(),
        Some("primary"),
        "inside the window: primary, caught up or not"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = send(&app, "GET", &uri, Some((&cookie, Via::Cookie))).await;
    assert!(
        after.target.unwrap().starts_with("replica"),
        "after the window: replicas"
    );
    assert_eq!(
        executed(cluster.primary(), "rwsplit consistency token").await,
        0,
        "window mode runs no query"
    );
}

#[tokio::test]
async fn off_mode_issues_nothing_and_reads_stay_on_replicas() {
    let cluster = common::cluster().await;
    let registry = Registry::connect(config(&cluster, ConsistencyConfig::off()))
        .await
        .unwrap();
    let app = app(registry);
    let write = send(&app, "POST", "/items", None).await;
    assert_eq!(write.status, 200);
    assert_eq!(write.set_cookie, None);
    assert_eq!(write.token, None);
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    let read = send(&app, "GET", &format!("/items/{}", write.body), None).await;
    assert!(read.target.unwrap().starts_with("replica"));
}

#[tokio::test]
async fn cookies_fit_the_web_and_only_writes_pay_a_query() {
    let cluster = common::cluster().await;
    // Longer than a lagging replica can stay in rotation here (5 s + 2 x 1.25 s + 5 s).
    let consistency = lsn().max_pin(Duration::from_secs(14)).cookie_secure(true);
    let registry = Registry::connect(config(&cluster, consistency))
        .await
        .unwrap();
    let app = app(registry);

    for _ in 0..50 {
        send(&app, "GET", "/items/1", None).await;
    }
    let marker = "rwsplit consistency token";
    assert_eq!(
        executed(cluster.primary(), marker).await,
        0,
        "reads run no token query"
    );

    let mut cookie = String::new();
    for _ in 0..20 {
        let write = send(&app, "POST", "/items", None).await;
        cookie = write.set_cookie.unwrap();
    }
    assert_eq!(
        executed(cluster.primary(), marker).await,
        20,
        "one query per write"
    );
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=14", "Secure"] {
        assert!(
            cookie.split("; ").any(|a| a == attribute),
            "{attribute} in {cookie}"
        );
    }
    assert!(cookie.starts_with("rwsplit_consistency=2."), "{cookie}");
}

#[tokio::test]
async fn a_read_may_wait_for_a_replica_to_catch_up_instead_of_using_the_primary() {
    let cluster = delayed_cluster(DELAY).await;
    let consistency = lsn().wait_for_replica(Duration::from_secs(3));
    let registry = Registry::connect(config(&cluster, consistency))
        .await
        .unwrap();
    let app = app(registry);
    for _ in 0..5 {
        let write = send(&app, "POST", "/items", None).await;
        let start = Instant::now();
        let read = send(
            &app,
            "GET",
            &format!("/items/{}", write.body),
            Some((&write.token.unwrap(), Via::Header)),
        )
        .await;
        assert_eq!(read.status, 200);
        assert!(
            read.target.unwrap().starts_with("replica"),
            "waited for a replica"
        );
        assert!(
            start.elapsed() >= DELAY / 2,
            "it did have to wait: {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test]
async fn a_read_with_a_token_asks_the_replicas_instead_of_waiting_for_the_next_poll() {
    let cluster = common::cluster().await;
    // No check and no poll during the test: the registry knows the replicas' positions only
    // from its first check, before any of these writes.
    let long = Duration::from_secs(600);
    let config = Config::from_yaml(&cluster.config_yaml())
        .unwrap()
        .health_check_interval(long)
        .consistency(lsn().poll_interval(long));
    let registry = Registry::connect(config).await.unwrap();
    let app = app(registry);

    let mut served = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let write = send(&app, "POST", "/items", None).await;
        assert_eq!(write.status, StatusCode::OK, "{}", write.body);
        let token = write.token.expect("a token");
        cluster
            .wait_caught_up(Duration::from_secs(5))
            .await
            .unwrap();
        let uri = format!("/items/{}", write.body);
        let read = send(&app, "GET", &uri, Some((&token, Via::Header))).await;
        assert_eq!(read.status, StatusCode::OK, "the read missed its write");
        *served.entry(read.target.unwrap_or_default()).or_default() += 1;
    }
    // The replicas, asked, had the write: every read stayed off the primary.
    assert_eq!(served.get("primary"), None, "{served:?}");

    // Replay paused: asked, the replicas lack the write, and the primary serves the read.
    for replica in cluster.replicas() {
        replica.pause_replay().await.unwrap();
    }
    let write = send(&app, "POST", "/items", None).await;
    let token = write.token.expect("a token");
    let read = send(
        &app,
        "GET",
        &format!("/items/{}", write.body),
        Some((&token, Via::Header)),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK, "the read missed its write");
    assert_eq!(read.target.as_deref(), Some("primary"));
    for replica in cluster.replicas() {
        replica.resume_replay().await.unwrap();
    }
}

/// With `shareTokenQueries`, writes under load share the primary-position queries of their
/// tokens, and every client still reads its own writes: replicas apply 50 ms late, and a token
/// that covered less than its write would show as a stale read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_token_queries_still_cover_every_write() {
    let cluster = delayed_cluster(Duration::from_millis(50)).await;
    common::replicated(
        &cluster,
        "INSERT INTO items (id, name) VALUES (1000000, 'seed')",
    )
    .await;
    let registry = Registry::connect(config(
        &cluster,
        lsn().share_token_queries(Some(Duration::from_millis(2))),
    ))
    .await
    .unwrap();
    let app = common::load::app(registry.clone());
    let before = executed(cluster.primary(), "rwsplit consistency token").await;
    let load = common::load::Load::start(&app, 8, true, 1_000_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    let queries = executed(cluster.primary(), "rwsplit consistency token").await - before;
    println!(
        "{report}; token queries {queries} for {} writes",
        report.writes
    );
    report.assert_clean();
    assert!(report.writes > 50, "{report}");
    assert!(
        (queries as usize) < report.writes,
        "{queries} token queries for {} writes: none shared",
        report.writes
    );
}
