//! What read-your-writes costs: the same write handler through the layer with LSN tokens on and
//! off, interleaved in one run against a real primary with two streaming replicas, and the cost
//! of verifying a token on a read.
//!
//! `cargo run --release --example consistency_cost`

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use rwsplit::{Config, ConsistencyConfig, DbWrite, Registry, RwSplitLayer};
use rwsplit_testkit::Cluster;
use tower::ServiceExt;

async fn create(db: DbWrite) -> &'static str {
    sqlx::query("INSERT INTO items (name) VALUES ('x')")
        .execute(&db)
        .await
        .unwrap();
    "ok"
}

fn config(cluster: &Cluster, consistency: ConsistencyConfig) -> Config {
    Config::from_yaml(&cluster.config_yaml())
        .expect("the cluster's configuration parses")
        .consistency(consistency)
}

async fn write(app: &Router) -> Duration {
    let request = http::Request::post("/items").body(Body::empty()).unwrap();
    let start = Instant::now();
    let response = app.clone().oneshot(request).await.unwrap();
    let took = start.elapsed();
    assert_eq!(response.status(), 200);
    took
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn mean(samples: &[Duration]) -> Duration {
    samples.iter().sum::<Duration>() / samples.len() as u32
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(2).await?;
    cluster
        .primary()
        .execute("CREATE TABLE items (id bigserial PRIMARY KEY, name text)")
        .await?;
    let key = "a signing key of at least thirty-two bytes";
    let lsn =
        Registry::connect(config(&cluster, ConsistencyConfig::lsn().signing_key(key))).await?;
    let off = Registry::connect(config(&cluster, ConsistencyConfig::off())).await?;
    let app = |registry: &Registry| {
        Router::new()
            .route("/items", post(create))
            .layer(RwSplitLayer::new(registry.clone()))
            .with_state(registry.clone())
    };
    let (with_tokens, without) = (app(&lsn), app(&off));

    for _ in 0..200 {
        write(&with_tokens).await;
        write(&without).await;
    }
    let (mut on, mut no) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        for _ in 0..100 {
            on.push(write(&with_tokens).await);
        }
        for _ in 0..100 {
            no.push(write(&without).await);
        }
    }
    let mut query = Vec::new();
    for _ in 0..2000 {
        let start = Instant::now();
        lsn.consistency_token().await?;
        query.push(start.elapsed());
    }
    let signed = lsn.sign_token(&lsn.consistency_token().await?);
    let rounds = 200_000;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(lsn.verify_token(std::hint::black_box(&signed)).is_ok());
    }
    let verify = start.elapsed() / rounds;

    let (on_median, no_median) = (median(on.clone()), median(no.clone()));
    println!(
        "write through the layer, {} samples each, interleaved:",
        on.len()
    );
    println!(
        "  tokens on (lsn):  median {on_median:>9.1?}  mean {:>9.1?}",
        mean(&on)
    );
    println!(
        "  tokens off:       median {no_median:>9.1?}  mean {:>9.1?}",
        mean(&no)
    );
    println!(
        "  extra per write:  median {:>9.1?}  ratio {:.2}x",
        on_median.saturating_sub(no_median),
        on_median.as_secs_f64() / no_median.as_secs_f64()
    );
    println!(
        "the token query alone (one round trip to the primary): median {:.1?}",
        median(query)
    );
    println!("verifying a token on a read (HMAC-SHA256, no I/O): {verify:.1?}");
    Ok(())
}
