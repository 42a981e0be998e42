//! Tokens across instances: a signing key rotated in two phases during a rolling deploy (two
//! registries standing for an old and a new instance) rejects no token and serves no stale
//! read; a token from an instance whose clock runs ahead is honoured; an empty header does not
//! hide a valid cookie; of two cookies, the newest valid one counts. The replicas apply every
//! transaction 300 ms late, so a read that misses its write shows.

mod common;

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use common::{TestRecorder, delayed_cluster};
use http::{Request, StatusCode};
use rwsplit::{
    Config, ConsistencyConfig, ConsistencyToken, DbRead, DbWrite, Registry, RwSplitLayer,
};
use rwsplit_testkit::Cluster;
use tower::ServiceExt;

const OLD_KEY: &str = "the key every instance signed with until today";
const NEW_KEY: &str = "the key every instance signs with from tomorrow";
const DELAY: Duration = Duration::from_millis(300);

async fn create(db: DbWrite) -> Result<String, StatusCode> {
    let id: i64 = sqlx::query_scalar("INSERT INTO items (name) VALUES ('x') RETURNING id")
        .fetch_one(&db)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(id.to_string())
}

async fn show(db: DbRead, Path(id): Path<i64>) -> StatusCode {
    match sqlx::query_scalar::<_, i64>("SELECT id FROM items WHERE id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await
    {
        Ok(Some(_)) => StatusCode::OK,
        Ok(None) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn app(registry: Registry) -> Router {
    Router::new()
        .route("/items", post(create))
        .route("/items/{id}", get(show))
        .layer(RwSplitLayer::new(registry.clone()))
        .with_state(registry)
}

/// The cluster's configuration with `consistency` (a 30 s pin, positions polled every 50 ms).
fn config(cluster: &Cluster, consistency: ConsistencyConfig) -> Config {
    Config::from_yaml(&cluster.config_yaml())
        .unwrap()
        .health_check_interval(Duration::from_millis(200))
        .replica_lag_threshold(Duration::from_secs(5))
        .consistency(
            consistency
                .max_pin(Duration::from_secs(30))
                .poll_interval(Duration::from_millis(50))
                .cookie_secure(false),
        )
}

fn signing(key: &str, accepted: &[&str]) -> ConsistencyConfig {
    ConsistencyConfig::lsn()
        .signing_key(key)
        .verification_keys(accepted.iter().copied())
}

/// A write on `writer`, then its read on `reader` with the token in `headers` as the client
/// sends it: the read's status (404: it missed the write).
async fn write_then_read(
    writer: &Router,
    reader: &Router,
    send_back: impl Fn(&str) -> Vec<(&'static str, String)>,
) -> StatusCode {
    let response = writer
        .clone()
        .oneshot(
            Request::post("/items")
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token = response.headers()["x-db-consistency"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    let id = String::from_utf8(body.to_vec()).unwrap();
    read(reader, &id, send_back(&token)).await
}

async fn read(app: &Router, id: &str, headers: Vec<(&'static str, String)>) -> StatusCode {
    let mut request = Request::get(format!("/items/{id}"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

fn as_header(token: &str) -> Vec<(&'static str, String)> {
    vec![("x-db-consistency", token.to_owned())]
}

/// `rounds` writes on each instance read on the other, and the reads that missed their write.
async fn exchange(a: &Router, b: &Router, rounds: usize) -> usize {
    let mut stale = 0;
    for _ in 0..rounds {
        for (writer, reader) in [(a, b), (b, a)] {
            match write_then_read(writer, reader, as_header).await {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => stale += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    stale
}

fn rejected(recorder: &TestRecorder) -> f64 {
    ["bad_signature", "expired", "malformed", "ahead_of_primary"]
        .iter()
        .map(|reason| {
            recorder
                .value(
                    "rwsplit_consistency_tokens_rejected_total",
                    &[("reason", reason)],
                )
                .unwrap_or(0.0)
        })
        .sum()
}

#[tokio::test]
async fn a_rolling_key_rotation_in_two_phases_rejects_no_token_and_serves_no_stale_read() {
    let recorder = TestRecorder::new();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let cluster = delayed_cluster(DELAY).await;
    let old = Registry::connect(config(&cluster, signing(OLD_KEY, &[])))
        .await
        .unwrap();
    let new = Registry::connect(config(&cluster, signing(OLD_KEY, &[])))
        .await
        .unwrap();
    let (a, b) = (app(old.clone()), app(new.clone()));
    assert_eq!(exchange(&a, &b, 10).await, 0, "before the rotation");

    // Phase 1, rolled out one instance at a time: accept the new key, still sign with the old.
    let changes = new
        .reload(config(&cluster, signing(OLD_KEY, &[NEW_KEY])))
        .await
        .unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.contains("keys (2 accepted)") && !c.contains(NEW_KEY)),
        "{changes:?}"
    );
    assert_eq!(exchange(&a, &b, 10).await, 0, "phase 1, half rolled out");
    old.reload(config(&cluster, signing(OLD_KEY, &[NEW_KEY])))
        .await
        .unwrap();

    // Phase 2, one instance at a time: sign with the new key, still accept the old.
    new.reload(config(&cluster, signing(NEW_KEY, &[OLD_KEY])))
        .await
        .unwrap();
    assert_eq!(exchange(&a, &b, 20).await, 0, "phase 2, half rolled out");
    old.reload(config(&cluster, signing(NEW_KEY, &[OLD_KEY])))
        .await
        .unwrap();
    assert_eq!(exchange(&a, &b, 10).await, 0, "phase 2 done");
    assert_eq!(
        rejected(&recorder),
        0.0,
        "no token rejected during the rotation"
    );

    // After maxPin the old key goes; tokens signed with it now are refused, new ones honoured.
    let stale_token = old_signer(&cluster).sign_token(&ConsistencyToken::new(1));
    new.reload(config(&cluster, signing(NEW_KEY, &[])))
        .await
        .unwrap();
    assert!(new.verify_token(&stale_token).is_err());
    assert!(
        new.verify_token(&old.sign_token(&ConsistencyToken::new(1)))
            .is_ok()
    );

    // What phase 1 prevents: an instance signing with a key the other does not accept yet.
    let skipped = Registry::connect(config(&cluster, signing(OLD_KEY, &[])))
        .await
        .unwrap();
    let c = app(skipped);
    let stale = exchange(&a, &c, 10).await;
    assert!(
        stale > 0,
        "without phase 1 the old instance rejects the new tokens and reads miss their writes"
    );
    assert!(rejected(&recorder) > 0.0);
}

fn old_signer(cluster: &Cluster) -> Registry {
    Registry::connect_lazy(config(cluster, signing(OLD_KEY, &[]))).unwrap()
}

#[tokio::test]
async fn a_token_from_an_instance_whose_clock_runs_ahead_is_honoured_and_counted() {
    let recorder = TestRecorder::new();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let cluster = delayed_cluster(DELAY).await;
    let registry = Registry::connect(config(&cluster, signing(NEW_KEY, &[])))
        .await
        .unwrap();
    let tolerant = Registry::connect(config(
        &cluster,
        signing(NEW_KEY, &[]).clock_skew(Duration::from_secs(2)),
    ))
    .await
    .unwrap();
    let (strict_app, tolerant_app) = (app(registry.clone()), app(tolerant));
    let skewed = |reader: &Router| {
        let reader = reader.clone();
        let registry = registry.clone();
        async move {
            let mut stale = 0;
            for _ in 0..10 {
                // What an instance 1.5 s ahead signs after its write.
                let status = write_then_read(&reader, &reader, |token| {
                    let token = registry.verify_token(token).unwrap();
                    let ahead = ConsistencyToken::at(
                        token.position(),
                        SystemTime::now() + Duration::from_millis(1500),
                    )
                    .on_timeline(token.timeline());
                    as_header(&registry.sign_token(&ahead))
                })
                .await;
                if status != StatusCode::OK {
                    stale += 1;
                }
            }
            stale
        }
    };
    let skewed_count = |recorder: &TestRecorder| {
        recorder
            .value("rwsplit_consistency_tokens_skewed_total", &[])
            .unwrap_or(0.0)
    };
    // Beyond the default 1 s: honoured, and counted as clocks to fix.
    assert_eq!(skewed(&strict_app).await, 0, "no read misses its write");
    assert_eq!(skewed_count(&recorder), 10.0);
    assert_eq!(rejected(&recorder), 0.0);
    // Within a 2 s clockSkew: honoured as dated, nothing to say.
    assert_eq!(skewed(&tolerant_app).await, 0);
    assert_eq!(skewed_count(&recorder), 10.0);
}

#[tokio::test]
async fn an_empty_header_leaves_the_cookie_and_the_newest_of_two_cookies_counts() {
    let cluster = delayed_cluster(DELAY).await;
    let registry = Registry::connect(config(&cluster, signing(NEW_KEY, &[])))
        .await
        .unwrap();
    let app = app(registry.clone());
    let mut stale = 0;
    for _ in 0..10 {
        // A client that forwards its (empty) header and carries the cookie.
        let status = write_then_read(&app, &app, |token| {
            vec![
                ("x-db-consistency", String::new()),
                ("cookie", format!("rwsplit_consistency={token}")),
            ]
        })
        .await;
        stale += usize::from(status != StatusCode::OK);
        // Two cookies of the token's name (two paths): an older genuine one, sent first, and
        // the write's own.
        let older = registry.sign_token(&ConsistencyToken::at(
            1,
            SystemTime::now() - Duration::from_secs(5),
        ));
        let status = write_then_read(&app, &app, |token| {
            vec![(
                "cookie",
                format!("rwsplit_consistency={older}; rwsplit_consistency={token}"),
            )]
        })
        .await;
        stale += usize::from(status != StatusCode::OK);
        // The same with a forged one first.
        let status = write_then_read(&app, &app, |token| {
            vec![(
                "cookie",
                format!("rwsplit_consistency=2.forged; rwsplit_consistency={token}"),
            )]
        })
        .await;
        stale += usize::from(status != StatusCode::OK);
    }
    assert_eq!(stale, 0, "every read saw its write");

    // Without a token the delay shows: the test can fail.
    let mut missed = 0;
    for _ in 0..10 {
        let status = write_then_read(&app, &app, |_| Vec::new()).await;
        missed += usize::from(status == StatusCode::NOT_FOUND);
    }
    assert!(
        missed > 0,
        "reads without a token miss writes on these replicas"
    );
}
