//! Shared setup for the tests that run against a real replicated cluster.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, Response, StatusCode};
use rwsplit::{Config, DbError, DbRead, DbWrite, Registry, RouteOverride, RwSplitLayer};
use rwsplit_testkit::{Cluster, Node};
use tower::ServiceExt;

pub const INTERVAL: Duration = Duration::from_millis(200);
pub const LAG_THRESHOLD: Duration = Duration::from_secs(1);

pub mod app_role;
pub mod load;

/// A primary with two replicas and an `items` table, replicated.
pub async fn cluster() -> Cluster {
    let cluster = Cluster::start(2).await.expect("start the local cluster");
    replicated(
        &cluster,
        "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL)",
    )
    .await;
    cluster
}

/// A cluster whose replicas apply every transaction `delay` after it committed.
pub async fn delayed_cluster(delay: Duration) -> Cluster {
    let cluster = cluster().await;
    for replica in cluster.replicas() {
        replica.set_apply_delay(delay).await.unwrap();
    }
    cluster
}

/// Runs `sql` on the primary and waits until every replica has replayed it.
pub async fn replicated(cluster: &Cluster, sql: &str) {
    cluster.primary().execute(sql).await.unwrap();
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
}

/// Separation on, both replicas at weight 1, checks every 200 ms, lag threshold 1 s. Checks
/// time out after 3 s: a debug build on a busy two-core machine can stall for a second, and a
/// check that times out takes a healthy server out.
pub fn config(cluster: &Cluster) -> Config {
    config_weighted(cluster, &[1, 1])
}

/// As [`config`], with the replicas' weights.
pub fn config_weighted(cluster: &Cluster, weights: &[u32]) -> Config {
    Config::from_yaml(&cluster.config_yaml_weighted(weights))
        .expect("the cluster's configuration parses")
        .health_check_interval(INTERVAL)
        .health_check_timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(2))
        .replica_lag_threshold(LAG_THRESHOLD)
}

/// The name of the node listening on `port`.
pub fn node_name(cluster: &Cluster, port: i32) -> String {
    std::iter::once(cluster.primary())
        .chain(cluster.replicas())
        .find(|n| i32::from(n.port()) == port)
        .map(|n| n.name().to_owned())
        .unwrap_or_else(|| format!("unknown port {port}"))
}

/// Asks the server behind `db` which port it listens on and whether it is a standby:
/// the server's own answer, not the library's bookkeeping.
async fn whoami<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Postgres>,
) -> Result<String, DbError> {
    let (port, standby): (i32, bool) =
        // Unnamed statements, as behind PgBouncer in transaction pooling (tests/pooler.rs).
        sqlx::query_as("SELECT inet_server_port(), pg_is_in_recovery()")
            .persistent(false)
            .fetch_one(db)
            .await?;
    Ok(format!("{port} {standby}"))
}

async fn read(db: DbRead) -> Result<String, DbError> {
    whoami(&db).await
}

async fn write(db: DbWrite) -> Result<String, DbError> {
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO items (name) VALUES ('x') /* from a transaction */")
        .persistent(false)
        .execute(&mut *tx)
        .await?;
    // Asked in the transaction: behind a pooler in transaction pooling, sqlx's statements
    // outside one may reach another server connection between parse and execute.
    let served = whoami(&mut *tx).await?;
    tx.commit().await?;
    Ok(served)
}

async fn probe(db: DbRead) -> Result<String, (StatusCode, String)> {
    sqlx::query("SELECT 1 /* rwsplit weight probe */")
        .execute(&db)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(String::new())
}

/// Routes that report which server served them.
pub fn app(registry: Registry) -> Router {
    Router::new()
        .route("/whoami", get(read).post(read).put(read).delete(read))
        .route("/fresh", get(read).route_layer(RouteOverride::primary()))
        .route("/search", post(read).route_layer(RouteOverride::replica()))
        .route("/write", post(write).get(write))
        .route("/probe", get(probe))
        .layer(RwSplitLayer::new(registry.clone()).target_header(true))
        .with_state(registry)
}

/// Sends a request through `app`; returns the status, the serving node's name (from the
/// server's own port) and the `x-db-target` header.
pub async fn call(app: &Router, cluster: &Cluster, method: &str, uri: &str) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response: Response<Body> = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let header = response
        .headers()
        .get("x-db-target")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    let node = body
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .map(|port| node_name(cluster, port));
    Answer {
        status,
        node,
        header,
        body,
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub node: Option<String>,
    pub header: Option<String>,
    pub body: String,
}

/// How many times `node` has executed statements whose text contains `needle`, from
/// `pg_stat_statements` on that server. It replaces literals with `$n`, so probes carry their
/// marker in a comment.
pub async fn executed(node: &Node, needle: &str) -> i64 {
    let mut conn = node.connect().await.unwrap();
    sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements WHERE query LIKE '%' || $1 || '%'",
    )
    .bind(needle)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Resumes WAL replay on every replica and waits until they have replayed everything.
pub async fn resume_all(cluster: &Cluster) {
    for replica in cluster.replicas() {
        replica.resume_replay().await.unwrap();
    }
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
}

/// Writes one row on the primary every 50 ms until the returned sender is dropped, so that a paused replica
/// falls behind.
pub fn keep_writing(cluster: &rwsplit_testkit::Cluster) -> tokio::sync::oneshot::Sender<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let primary = cluster.primary().clone();
    tokio::spawn(async move {
        let mut conn = primary.connect().await.unwrap();
        loop {
            sqlx::query("INSERT INTO items (name) VALUES ('tick')")
                .execute(&mut conn)
                .await
                .unwrap();
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    stop
}

/// Waits until `condition` holds, polling every 20 ms; returns how long that took.
pub async fn wait_for(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the registry has `name` in rotation.
pub fn in_rotation(registry: &Registry, name: &str) -> bool {
    registry
        .status()
        .replicas
        .iter()
        .any(|r| r.name == name && r.in_rotation)
}

/// Captures this thread's `tracing` output (the tests run on a current-thread runtime, so the
/// health loop logs here too).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A metrics recorder that keeps what it is told (counters add up, gauges hold their last
/// value, histograms keep their samples) and can be read at any time. The debugging recorder
/// of `metrics-util` resets counters and gauges on every snapshot, which a test that polls
/// cannot use.
#[derive(Default)]
pub struct TestRecorder {
    registry: Option<
        metrics_util::registry::Registry<metrics::Key, metrics_util::registry::AtomicStorage>,
    >,
}

impl TestRecorder {
    pub fn new() -> Self {
        TestRecorder {
            registry: Some(metrics_util::registry::Registry::atomic()),
        }
    }

    fn registry(
        &self,
    ) -> &metrics_util::registry::Registry<metrics::Key, metrics_util::registry::AtomicStorage>
    {
        self.registry.as_ref().expect("built with new()")
    }

    /// The value of `name` whose labels include every pair in `labels`: a counter's total, a
    /// gauge's value, a histogram's sample count.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use std::sync::atomic::Ordering;
        let matches = |key: &metrics::Key| {
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        };
        let mut found = None;
        self.registry().visit_counters(|key, c| {
            if matches(key) {
                found = Some(c.load(Ordering::Relaxed) as f64);
            }
        });
        self.registry().visit_gauges(|key, g| {
            if matches(key) {
                found = Some(f64::from_bits(g.load(Ordering::Relaxed)));
            }
        });
        self.registry().visit_histograms(|key, h| {
            if matches(key) {
                found = Some(h.data().len() as f64);
            }
        });
        found
    }

    /// The sum of every counter `name` whose labels include every pair in `labels`.
    pub fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        use std::sync::atomic::Ordering;
        let mut total = 0.0;
        self.registry().visit_counters(|key, c| {
            let labelled = labels
                .iter()
                .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v));
            if key.name() == name && labelled {
                total += c.load(Ordering::Relaxed) as f64;
            }
        });
        total
    }
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        self.registry()
            .get_or_create_counter(key, |c| metrics::Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.registry()
            .get_or_create_gauge(key, |g| metrics::Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.registry()
            .get_or_create_histogram(key, |h| metrics::Histogram::from_arc(Arc::clone(h)))
    }
}
