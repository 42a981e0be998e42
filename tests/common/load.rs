//! A steady mixed load through an app, for the fault tests: several clients in a closed loop,
//! nine reads to one write, each read checking that it sees the client's last write.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use rwsplit::{DbError, DbRead, DbWrite, Registry, RwSplitLayer};
use tower::ServiceExt;

/// Longer than any request may take; a request still running then counts as hung.
const HUNG: Duration = Duration::from_secs(30);
const TOKEN_HEADER: &str = "x-db-consistency";
/// A client's pause between requests: the load stays steady without starving the runtime
/// that also runs the health checks (the tests run unoptimized on two cores).
const THINK: Duration = Duration::from_millis(2);

/// `GET /items/{id}` (404 when the row is not there: a stale read; the body is the port of the
/// server that answered) and `POST /items`.
pub fn app(registry: Registry) -> Router {
    async fn show(db: DbRead, Path(id): Path<i64>) -> Result<Result<String, StatusCode>, DbError> {
        let port: Option<i32> = sqlx::query_scalar(
            "SELECT inet_server_port() FROM items WHERE id = $1 /* load read */",
        )
        .bind(id)
        .fetch_optional(&db)
        .await?;
        Ok(port
            .map(|port| port.to_string())
            .ok_or(StatusCode::NOT_FOUND))
    }
    async fn create(db: DbWrite) -> Result<String, DbError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO items (name) VALUES ('load') RETURNING id /* load write */",
        )
        .fetch_one(&db)
        .await?;
        Ok(id.to_string())
    }
    Router::new()
        .route("/items/{id}", get(show))
        .route("/items", post(create))
        .layer(RwSplitLayer::new(registry.clone()))
        .with_state(registry)
}

/// The same routes on two plain sqlx pools, without rwsplit: reads on `replica`, writes on
/// `primary`. The baseline a fault must not cost more than.
pub fn plain_app(primary: sqlx::PgPool, replica: sqlx::PgPool) -> Router {
    use axum::extract::State;
    type Pools = (sqlx::PgPool, sqlx::PgPool);
    async fn show(
        State((_, replica)): State<Pools>,
        Path(id): Path<i64>,
    ) -> Result<Result<String, StatusCode>, DbError> {
        let port: Option<i32> = sqlx::query_scalar(
            "SELECT inet_server_port() FROM items WHERE id = $1 /* load read */",
        )
        .bind(id)
        .fetch_optional(&replica)
        .await?;
        Ok(port
            .map(|port| port.to_string())
            .ok_or(StatusCode::NOT_FOUND))
    }
    async fn create(State((primary, _)): State<Pools>) -> Result<String, DbError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO items (name) VALUES ('load') RETURNING id /* load write */",
        )
        .fetch_one(&primary)
        .await?;
        Ok(id.to_string())
    }
    Router::new()
        .route("/items/{id}", get(show))
        .route("/items", post(create))
        .with_state((primary, replica))
}

/// What a load run saw.
#[derive(Default, Clone)]
pub struct Report {
    pub reads: usize,
    pub writes: usize,
    /// Failed reads by status (0: hung).
    pub failed_reads: BTreeMap<u16, usize>,
    /// Failed writes by status (0: hung).
    pub failed_writes: BTreeMap<u16, usize>,
    /// Reads that did not see the client's acknowledged write.
    pub stale: usize,
    pub worst_read: Duration,
    pub worst_write: Duration,
    /// The slowest failed write.
    pub worst_failed_write: Duration,
    /// Ids of acknowledged writes.
    pub acked: Vec<i64>,
    /// Successful reads by the port of the server that answered them.
    pub served: BTreeMap<u16, usize>,
    /// When each failed read and write ended (hung ones included).
    pub read_failures: Vec<Instant>,
    pub write_failures: Vec<Instant>,
}

impl Report {
    pub fn failed_reads(&self) -> usize {
        self.failed_reads.values().sum()
    }

    pub fn failed_writes(&self) -> usize {
        self.failed_writes.values().sum()
    }

    /// Adds `other`'s counts to this report's.
    pub fn merge(&mut self, other: Report) {
        self.reads += other.reads;
        self.writes += other.writes;
        for (status, n) in other.failed_reads {
            *self.failed_reads.entry(status).or_default() += n;
        }
        for (status, n) in other.failed_writes {
            *self.failed_writes.entry(status).or_default() += n;
        }
        self.stale += other.stale;
        self.worst_read = self.worst_read.max(other.worst_read);
        self.worst_write = self.worst_write.max(other.worst_write);
        self.worst_failed_write = self.worst_failed_write.max(other.worst_failed_write);
        self.acked.extend(other.acked);
        for (port, n) in other.served {
            *self.served.entry(port).or_default() += n;
        }
        self.read_failures.extend(other.read_failures);
        self.write_failures.extend(other.write_failures);
    }

    /// How long after `since` reads still failed (zero when none did after it).
    pub fn reads_back_after(&self, since: Instant) -> Duration {
        last_after(&self.read_failures, since)
    }

    /// How long after `since` writes still failed (zero when none did after it).
    pub fn writes_back_after(&self, since: Instant) -> Duration {
        last_after(&self.write_failures, since)
    }

    /// Asserts that no read or write failed and no read was stale.
    pub fn assert_clean(&self) {
        assert_eq!(self.failed_reads(), 0, "{self}");
        assert_eq!(self.failed_writes(), 0, "{self}");
        assert_eq!(self.stale, 0, "{self}");
    }

    /// Successful reads that `node` answered.
    pub fn served_by(&self, node: &rwsplit_testkit::Node) -> usize {
        self.served.get(&node.port()).copied().unwrap_or(0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sent = self.reads + self.writes;
        let failed = self.failed_reads() + self.failed_writes();
        write!(
            f,
            "sent {sent}, succeeded {}, failed {failed} (reads {:?}, writes {:?}), stale {}, \
             worst read {:?}, worst write {:?}, reads by port {:?}",
            sent - failed,
            self.failed_reads,
            self.failed_writes,
            self.stale,
            self.worst_read,
            self.worst_write,
            self.served,
        )
    }
}

fn last_after(failures: &[Instant], since: Instant) -> Duration {
    failures
        .iter()
        .map(|at| at.saturating_duration_since(since))
        .max()
        .unwrap_or_default()
}

/// A running load; [`finish`](Self::finish) stops it and returns the report.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Report>>,
}

impl Load {
    /// Starts `clients` clients. With `sticky`, each sends back the consistency token of its
    /// last write, and its reads ask for the row it wrote last (so a stale read shows as 404);
    /// without, reads ask for `seed_id`, a row every server has.
    pub fn start(app: &Router, clients: usize, sticky: bool, seed_id: i64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let app = app.clone();
                let stop = Arc::clone(&stop);
                tokio::spawn(client(app, stop, sticky, seed_id))
            })
            .collect();
        Load { stop, clients }
    }

    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = Report::default();
        for client in self.clients {
            report.merge(client.await.expect("a load client panicked"));
        }
        report
    }
}

async fn client(app: Router, stop: Arc<AtomicBool>, sticky: bool, seed_id: i64) -> Report {
    let mut report = Report::default();
    let mut token: Option<String> = None;
    let mut last_id = seed_id;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(THINK).await;
        n += 1;
        let write = n.is_multiple_of(10);
        let mut request = match write {
            true => Request::post("/items"),
            false => Request::get(format!("/items/{last_id}")),
        };
        if let Some(token) = &token {
            request = request.header(TOKEN_HEADER, token);
        }
        let request = request.body(Body::empty()).unwrap();
        let started = Instant::now();
        let outcome = tokio::time::timeout(HUNG, async {
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let issued = response
                .headers()
                .get(TOKEN_HEADER)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap_or_default();
            (
                status.as_u16(),
                issued,
                String::from_utf8_lossy(&body).into_owned(),
            )
        })
        .await;
        let took = started.elapsed();
        // Status 0: the request hung.
        let (code, issued, body) = outcome.unwrap_or((0, None, String::new()));
        if write {
            report.writes += 1;
            report.worst_write = report.worst_write.max(took);
            if code == 200 {
                let id: i64 = body.parse().expect("the new row's id");
                report.acked.push(id);
                if sticky {
                    last_id = id;
                    token = issued;
                }
            } else {
                report.worst_failed_write = report.worst_failed_write.max(took);
                *report.failed_writes.entry(code).or_default() += 1;
                report.write_failures.push(Instant::now());
            }
        } else {
            report.reads += 1;
            report.worst_read = report.worst_read.max(took);
            match code {
                200 => {
                    let port = body.parse().expect("the serving server's port");
                    *report.served.entry(port).or_default() += 1;
                }
                404 => report.stale += 1,
                _ => {
                    *report.failed_reads.entry(code).or_default() += 1;
                    report.read_failures.push(Instant::now());
                }
            }
        }
    }
    report
}

/// Waits until `check` holds, polling every 20 ms, for at most `limit`; returns how long it
/// took, or `None` if it never held.
pub async fn time_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Every acknowledged write's row, counted on the primary.
pub async fn present_on_primary(cluster: &rwsplit_testkit::Cluster, ids: &[i64]) -> usize {
    let pool = sqlx::PgPool::connect_with(cluster.primary().connect_options())
        .await
        .unwrap();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    found as usize
}
