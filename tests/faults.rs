//! The failure model under the configuration users run: every setting at its default
//! (`healthCheckInterval` 30 s, `connectTimeout` 5 s). Each test injects one fault into a real
//! cluster under a steady mixed load (nine reads to one write, several clients, some carrying
//! consistency tokens) and, where it applies, sends the same load through two plain sqlx pools
//! in the same run: a fault must never cost more with rwsplit than without it.
//!
//! Each test prints rows of one table; run with `--nocapture` to see them:
//!
//! `| fault | load | reads failed | writes failed | reads failing until | writes failing until | stale | lost |`
//!
//! where "failing until" is counted from the moment the servers were back.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::load::{self, Load, Report, present_on_primary, time_until};
use common::{cluster, in_rotation, replicated};
use rwsplit::{Config, DbError, DbRead, DbWrite, Registry, RwSplitLayer};
use rwsplit_testkit::{Cluster, Node, StopMode};

/// The plain pools wait for a connection as long as rwsplit's pools do by default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENTS: usize = 3;
/// How soon after the servers are back reads and writes must work again, on a quiet host.
const BACK_WITHIN: Duration = Duration::from_secs(2);
/// The longest wait between two probes of a server out of service.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a fresh connection and one query take on this host now, under the test's load
/// (the slowest of three): what a saturated machine adds to every step of a recovery.
async fn pace(node: &Node) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let start = Instant::now();
        let mut conn = node.connect().await.unwrap();
        sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
        slowest = slowest.max(start.elapsed());
    }
    slowest
}

/// A fresh connection and one query slower than this: the host is saturated far past a busy
/// production machine, and a request may wait out its connection timeout whatever pools serve
/// it (the plain pools' rows show it too).
const SATURATED: Duration = Duration::from_millis(500);

/// Asserts the load saw what users rely on: no stale read and no hung request, ever; no failed
/// request at all on a host whose `pace` is within [`SATURATED`]; on a slower one, failures only
/// as a plain pool has them (`503`: a connection that did not come in time), one request in
/// fifty at most.
fn assert_clean(report: &Report, pace: Duration) {
    if pace <= SATURATED {
        return report.assert_clean();
    }
    assert_eq!(report.stale, 0, "{report}");
    let failed = report.failed_reads() + report.failed_writes();
    let statuses: Vec<u16> = report
        .failed_reads
        .keys()
        .chain(report.failed_writes.keys())
        .copied()
        .collect();
    assert!(
        statuses.iter().all(|&status| status == 503),
        "pace {pace:?}: {report}"
    );
    assert!(
        failed * 50 <= report.reads + report.writes,
        "pace {pace:?}: {report}"
    );
}

/// How long a test waits for a server to come back before it gives up, on a host whose fresh
/// connection and query take `pace`.
fn wait_limit(pace: Duration) -> Duration {
    Duration::from_secs(10) + pace * 20
}

/// [`BACK_WITHIN`] on a host whose fresh connection and query take `pace`: a recovery is a
/// few such steps (a probe's connection and check, the load's next requests).
fn back_within(pace: Duration) -> Duration {
    BACK_WITHIN + pace * 4
}

/// One fault test at a time: their timings assume the machine is not also running another
/// cluster under load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    cluster: Cluster,
    registry: Registry,
    /// The load's routes and the fault tests' own, through rwsplit.
    app: Router,
    /// The load's routes on plain pools: writes on the primary, reads on replica1.
    plain: Router,
    seed: i64,
}

async fn setup() -> Setup {
    setup_with(|config| config).await
}

async fn setup_with(adjust: impl FnOnce(Config) -> Config) -> Setup {
    let cluster = cluster().await;
    replicated(
        &cluster,
        "INSERT INTO items (id, name) VALUES (1000000, 'seed')",
    )
    .await;
    let config = Config::from_yaml(&cluster.config_yaml()).unwrap();
    let config = adjust(config);
    assert_eq!(config.health_interval(), Duration::from_secs(30));
    let registry = Registry::connect(config).await.unwrap();
    let app = load::app(registry.clone()).merge(fault_routes(registry.clone()));
    let pool = |node: &Node| {
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(node.connect_options())
    };
    let plain = load::plain_app(pool(cluster.primary()), pool(cluster.replica(0)));
    Setup {
        cluster,
        registry,
        app,
        plain,
        seed: 1_000_000,
    }
}

/// A query with 70,000 bind parameters: sqlx refuses it before sending anything (the wire
/// protocol allows 65,535).
fn many_args() -> sqlx::query::QueryScalar<'static, sqlx::Postgres, i64, sqlx::postgres::PgArguments>
{
    let placeholders: Vec<String> = (1..=70_000).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT count(*) FROM (VALUES ({})) v",
        placeholders.join("), (")
    );
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    for i in 0..70_000 {
        query = query.bind(i);
    }
    query
}

/// `/many`: a query with 70,000 bind parameters, which sqlx refuses before sending (a read on
/// GET, a write on POST). `/slow`: a read (GET) or write (POST) that takes two seconds, for a
/// test to kill its session (long enough to be found even on a saturated host).
fn fault_routes(registry: Registry) -> Router {
    async fn many_read(db: DbRead) -> Result<String, DbError> {
        Ok(many_args().fetch_one(&db).await?.to_string())
    }
    async fn many_write(db: DbWrite) -> Result<String, DbError> {
        Ok(many_args().fetch_one(&db).await?.to_string())
    }
    async fn slow_read(db: DbRead) -> Result<String, DbError> {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port() FROM pg_sleep(2) /* slow */")
            .fetch_one(&db)
            .await?;
        Ok(port.to_string())
    }
    async fn slow_write(db: DbWrite) -> Result<String, DbError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO items (name) SELECT 'slow' FROM pg_sleep(2) RETURNING id /* slow */",
        )
        .fetch_one(&db)
        .await?;
        Ok(id.to_string())
    }
    Router::new()
        .route("/many", get(many_read).post(many_write))
        .route("/slow", get(slow_read).post(slow_write))
        .layer(RwSplitLayer::new(registry.clone()))
        .with_state(registry)
}

/// The loads of one test: clients with tokens and without through rwsplit, and the plain
/// baseline.
struct Loads {
    sticky: Load,
    plain_clients: Load,
    baseline: Option<Load>,
}

impl Loads {
    fn start(setup: &Setup, baseline: bool) -> Loads {
        Loads {
            sticky: Load::start(&setup.app, CLIENTS, true, setup.seed),
            plain_clients: Load::start(&setup.app, CLIENTS, false, setup.seed),
            baseline: baseline.then(|| Load::start(&setup.plain, CLIENTS, false, setup.seed)),
        }
    }

    /// Stops the loads; returns rwsplit's report (both kinds of clients) and the baseline's.
    async fn finish(self) -> (Report, Option<Report>) {
        let mut rwsplit = self.sticky.finish().await;
        rwsplit.merge(self.plain_clients.finish().await);
        let baseline = match self.baseline {
            Some(load) => Some(load.finish().await),
            None => None,
        };
        (rwsplit, baseline)
    }
}

/// Prints a row of the table and returns how many acknowledged writes the primary lacks.
async fn row(
    cluster: &Cluster,
    fault: &str,
    load: &str,
    report: &Report,
    back: Option<Instant>,
) -> usize {
    let lost = match report.acked.is_empty() {
        true => 0,
        false => report.acked.len() - present_on_primary(cluster, &report.acked).await,
    };
    let (reads_until, writes_until) = match back {
        Some(back) => (
            format!("{:.2}s", report.reads_back_after(back).as_secs_f64()),
            format!("{:.2}s", report.writes_back_after(back).as_secs_f64()),
        ),
        None => ("-".to_owned(), "-".to_owned()),
    };
    println!(
        "| {fault} | {load} | {}/{} | {}/{} | {reads_until} | {writes_until} | {} | {lost} | worst read {:?}",
        report.failed_reads(),
        report.reads,
        report.failed_writes(),
        report.writes,
        report.stale,
        report.worst_read,
    );
    lost
}

/// Prints the rows of rwsplit and of the plain pools (`baseline`, with its label) for one
/// fault; returns how many of rwsplit's acknowledged writes the primary lacks.
async fn rows(
    cluster: &Cluster,
    fault: &str,
    report: &Report,
    baseline: (&str, &Report),
    back: Instant,
) -> usize {
    let lost = row(cluster, fault, "rwsplit", report, Some(back)).await;
    row(cluster, fault, baseline.0, baseline.1, Some(back)).await;
    lost
}

/// Asserts the servers all serve (nothing ejected, nothing suspected).
fn assert_all_serving(registry: &Registry) {
    let status = registry.status();
    assert_eq!(status.primary.state, "serving", "{status:?}");
    for replica in &status.replicas {
        assert_eq!(replica.state, "serving", "{status:?}");
        assert!(replica.in_rotation, "{status:?}");
    }
}

async fn send(app: &Router, method: &str, uri: &str) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_sqlx_refuses_fails_only_its_own_request() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    let read = send(&setup.app, "GET", "/many").await;
    let write = send(&setup.app, "POST", "/many").await;
    // The same query on a plain pool: sqlx refuses it before sending.
    let plain_pool = sqlx::PgPool::connect_lazy_with(setup.cluster.primary().connect_options());
    let plain = many_on(&plain_pool).await;
    assert_all_serving(&setup.registry);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (report, _) = loads.finish().await;
    let lost = row(
        &setup.cluster,
        "70,000 parameters, GET and POST",
        "rwsplit",
        &report,
        None,
    )
    .await;
    println!("GET /many: {read:?}; POST /many: {write:?}; plain pool: {plain}; pace {pace:?}");
    assert_eq!(read.0, 500, "{read:?}");
    assert_eq!(write.0, 500, "{write:?}");
    assert!(plain.contains("too many arguments"), "{plain}");
    assert_clean(&report, pace);
    assert_eq!(lost, 0);
    assert_all_serving(&setup.registry);
}

async fn many_on(pool: &sqlx::PgPool) -> String {
    match many_args().fetch_one(pool).await {
        Ok(n) => n.to_string(),
        Err(error) => error.to_string(),
    }
}

/// Admin sessions on some nodes, opened once: on a saturated host a fresh connection can take
/// longer than the statement to be killed runs.
struct Killer {
    sessions: Vec<sqlx::PgConnection>,
}

impl Killer {
    async fn on(nodes: &[&Node]) -> Killer {
        let mut sessions = Vec::new();
        for node in nodes {
            sessions.push(node.connect().await.unwrap());
        }
        Killer { sessions }
    }

    /// Terminates the sessions running the `/slow` routes; returns how many.
    async fn kill_running(&mut self) -> i64 {
        let mut killed = 0;
        for session in &mut self.sessions {
            killed += sqlx::query_scalar::<_, i64>(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE query LIKE '%/* slow */%' AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut *session)
            .await
            .unwrap();
        }
        killed
    }

    /// Sends `method /slow` and terminates its session once it runs. A request that ended
    /// before its session could be found is sent again (three times at most). Returns how many
    /// sessions were terminated under the request and its answer.
    async fn killed_request(&mut self, app: &Router, method: &'static str) -> (i64, (u16, String)) {
        let mut answer = (0, String::new());
        for _ in 0..3 {
            let app = app.clone();
            let request = tokio::spawn(async move { send(&app, method, "/slow").await });
            let mut killed = 0;
            while killed == 0 && !request.is_finished() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                killed = self.kill_running().await;
            }
            answer = request.await.unwrap();
            if killed > 0 {
                return (killed, answer);
            }
        }
        (0, answer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_fails_at_most_its_own_request_on_every_server() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    // A write whose session is killed under it: that request fails (it may have committed,
    // so it is not run again), and nothing else does.
    let mut on_primary = Killer::on(&[setup.cluster.primary()]).await;
    let (killed_on_primary, write) = on_primary.killed_request(&setup.app, "POST").await;

    // Reads whose session is killed under them: they run again on another server.
    let replicas: Vec<&Node> = setup.cluster.replicas().iter().collect();
    let mut on_replicas = Killer::on(&replicas).await;
    let mut reads = Vec::new();
    for _ in 0..4 {
        reads.push(on_replicas.killed_request(&setup.app, "GET").await);
    }
    // Right after: the servers whose sessions were killed were probed and stay in service.
    let probed = time_until(back_within(pace), || {
        let status = setup.registry.status();
        status.primary.state == "serving" && status.replicas.iter().all(|r| r.state == "serving")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (report, _) = loads.finish().await;
    let lost = row(
        &setup.cluster,
        "a session killed on each server",
        "rwsplit",
        &report,
        None,
    )
    .await;
    println!(
        "killed write: {killed_on_primary} session, answer {write:?}; killed reads: {reads:?}; \
         pace {pace:?}"
    );
    assert_eq!(killed_on_primary, 1);
    assert_eq!(write.0, 503, "{write:?}");
    // A read killed on one replica may be killed again on the other (its retry), and then
    // runs on the primary.
    assert!(reads.iter().all(|(killed, _)| *killed >= 1), "{reads:?}");
    for (_, read) in &reads {
        assert_eq!(
            read.0, 200,
            "a read whose session was killed failed: {read:?}"
        );
    }
    assert!(probed.is_some(), "{:?}", setup.registry.status());
    assert_clean(&report, pace);
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_of_every_server_costs_about_as_long_as_the_blip() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    let nodes = [
        setup.cluster.primary(),
        setup.cluster.replica(0),
        setup.cluster.replica(1),
    ];
    let blip = Instant::now();
    for node in nodes {
        node.stop(StopMode::Fast).await.unwrap();
    }
    for node in nodes {
        node.start().await.unwrap();
    }
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (report, baseline) = loads.finish().await;
    let baseline = baseline.unwrap();
    println!(
        "the blip (stop and start of all three) took {:?}; pace {pace:?}",
        back - blip
    );
    let lost = rows(
        &setup.cluster,
        "all three restarted",
        &report,
        ("plain pools", &baseline),
        back,
    )
    .await;
    // Back within about a second of the servers, or (on a host so busy that the plain pools
    // take longer) no later than the plain pools plus one probe backoff.
    let reads_limit = back_within(pace).max(baseline.reads_back_after(back) + MAX_BACKOFF);
    let writes_limit = back_within(pace).max(baseline.writes_back_after(back) + MAX_BACKOFF);
    assert!(
        report.reads_back_after(back) <= reads_limit,
        "reads back after {:?}, limit {reads_limit:?}: {report}",
        report.reads_back_after(back)
    );
    assert!(
        report.writes_back_after(back) <= writes_limit,
        "writes back after {:?}, limit {writes_limit:?}: {report}",
        report.writes_back_after(back)
    );
    assert_eq!(report.stale, 0, "{report}");
    assert_eq!(lost, 0);
    // The load ran: at least half the reads the plain pools sent in the same run (on a
    // saturated host both send far fewer than on a quiet one, and rwsplit's reads, which wait
    // for the servers instead of failing, fewer still: there, only that it ran).
    assert!(
        report.reads > 0 && (report.reads * 2 >= baseline.reads || pace > SATURATED),
        "{report} against plain pools' {baseline}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_restarted_then_the_primary_stopped_reads_go_on() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    // Clients without tokens: their reads never need the primary.
    let load = Load::start(&setup.app, CLIENTS * 2, false, setup.seed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    for replica in setup.cluster.replicas() {
        replica.stop(StopMode::Immediate).await.unwrap();
    }
    for replica in setup.cluster.replicas() {
        replica.start().await.unwrap();
    }
    // At once, before any check: the replicas may still be marked out of service.
    setup
        .cluster
        .primary()
        .stop(StopMode::Immediate)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = load.finish().await;

    setup.cluster.primary().start().await.unwrap();
    let back = Instant::now();
    // (Counting the acknowledged writes needs the primary.)
    row(
        &setup.cluster,
        "replicas restarted, then primary stopped",
        "rwsplit (reads)",
        &during,
        None,
    )
    .await;
    let after = Load::start(&setup.app, CLIENTS, true, setup.seed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = after.finish().await;
    let lost = row(
        &setup.cluster,
        "primary back",
        "rwsplit",
        &after,
        Some(back),
    )
    .await;

    let reads = Report {
        writes: 0,
        failed_writes: Default::default(),
        ..during.clone()
    };
    assert_clean(&reads, pace);
    // A read that went to the primary while the replicas were out leaves it for a replica
    // back meanwhile, instead of waiting out the primary's connect timeout.
    if pace <= SATURATED {
        assert!(during.worst_read < CONNECT_TIMEOUT, "{during}");
    }
    // Writes wait for the primary up to its connect timeout, as a plain pool does, then 503.
    assert!(during.failed_writes() > 0, "the primary was down: {during}");
    assert_eq!(
        during.failed_writes.keys().copied().collect::<Vec<_>>(),
        [503]
    );
    println!("pace {pace:?}");
    assert!(after.writes_back_after(back) < back_within(pace), "{after}");
    assert_eq!(after.failed_reads(), 0, "{after}");
    assert_eq!(after.stale, 0, "{after}");
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_and_restarted_is_back_within_a_second_or_so() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    setup
        .cluster
        .replica(0)
        .stop(StopMode::Immediate)
        .await
        .unwrap();
    let out = time_until(Duration::from_secs(5), || {
        !in_rotation(&setup.registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    setup.cluster.replica(0).start().await.unwrap();
    let back = Instant::now();
    let readmitted = time_until(wait_limit(pace), || {
        in_rotation(&setup.registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (report, baseline) = loads.finish().await;
    let baseline = baseline.unwrap();
    println!(
        "replica1 out after {out:?}, back in rotation {readmitted:?} after its restart; pace \
         {pace:?}"
    );
    let lost = rows(
        &setup.cluster,
        "replica1 restarted",
        &report,
        ("plain pools (reads on replica1)", &baseline),
        back,
    )
    .await;
    assert!(out.is_some());
    // Back within about a second, or (on a host so busy that the restarted server is slow to
    // take connections) within a probe step of when the plain pool could use it again.
    let limit = back_within(pace).max(baseline.reads_back_after(back) + MAX_BACKOFF + pace);
    assert!(
        readmitted.is_some_and(|t| t < limit),
        "{readmitted:?}, limit {limit:?}: {:?}",
        setup.registry.status().replicas[0]
    );
    assert_clean(&report, pace);
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_stopped_and_restarted_fail_no_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    for replica in setup.cluster.replicas() {
        replica.stop(StopMode::Immediate).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for replica in setup.cluster.replicas() {
        replica.start().await.unwrap();
    }
    let back = Instant::now();
    let readmitted = time_until(wait_limit(pace), || {
        setup
            .registry
            .status()
            .replicas
            .iter()
            .all(|r| r.in_rotation)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (report, baseline) = loads.finish().await;
    let baseline = baseline.unwrap();
    println!("both replicas back in rotation {readmitted:?} after their restart; pace {pace:?}");
    let lost = rows(
        &setup.cluster,
        "both replicas restarted",
        &report,
        ("plain pools (reads on replica1)", &baseline),
        back,
    )
    .await;
    let limit = back_within(pace).max(baseline.reads_back_after(back) + MAX_BACKOFF + pace);
    assert!(
        readmitted.is_some_and(|t| t < limit),
        "{readmitted:?}, limit {limit:?}"
    );
    assert_clean(&report, pace);
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_stopped_and_restarted_takes_writes_again_within_a_second_or_so() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    setup
        .cluster
        .primary()
        .stop(StopMode::Immediate)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    setup.cluster.primary().start().await.unwrap();
    let back = Instant::now();
    let healthy = time_until(wait_limit(pace), || setup.registry.status().primary.healthy).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (report, baseline) = loads.finish().await;
    let baseline = baseline.unwrap();
    println!("primary in service again {healthy:?} after its restart; pace {pace:?}");
    let lost = rows(
        &setup.cluster,
        "primary restarted",
        &report,
        ("plain pools", &baseline),
        back,
    )
    .await;
    assert!(
        healthy.is_some_and(|t| t < back_within(pace)),
        "{healthy:?}"
    );
    let writes_limit = back_within(pace).max(baseline.writes_back_after(back) + MAX_BACKOFF);
    assert!(
        report.writes_back_after(back) <= writes_limit,
        "writes back after {:?}, limit {writes_limit:?}: {report}",
        report.writes_back_after(back)
    );
    // Reads without a token never needed the primary; reads with one fail only while the
    // primary is down (it alone has their write, unless a replica caught up).
    assert_eq!(report.reads_back_after(back), Duration::ZERO, "{report}");
    assert_eq!(report.stale, 0, "{report}");
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_serves_no_stale_read_and_fails_none() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    setup.cluster.replica(0).freeze().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    setup.cluster.replica(0).thaw().await.unwrap();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (report, _) = loads.finish().await;
    let lost = row(
        &setup.cluster,
        "replica1 frozen 2 s (SIGSTOP)",
        "rwsplit",
        &report,
        Some(back),
    )
    .await;
    println!("pace {pace:?}");
    assert_clean(&report, pace);
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_the_threshold_leaves_at_the_next_poll_with_no_stale_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let threshold = Duration::from_secs(2);
    let setup = setup_with(|config| config.replica_lag_threshold(threshold)).await;
    let loads = Loads::start(&setup, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pace = pace(setup.cluster.primary()).await;

    setup.cluster.replica(0).pause_replay().await.unwrap();
    let paused = Instant::now();
    let out = time_until(wait_limit(pace), || {
        !in_rotation(&setup.registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    setup.cluster.replica(0).resume_replay().await.unwrap();
    let resumed = Instant::now();
    let back = time_until(wait_limit(pace), || {
        in_rotation(&setup.registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (report, _) = loads.finish().await;
    println!(
        "replica1 out {out:?} after its replay paused (threshold {threshold:?}), back {back:?} \
         after it resumed; pace {pace:?}"
    );
    let lost = row(
        &setup.cluster,
        "replica1 replay paused past the threshold",
        "rwsplit",
        &report,
        Some(resumed),
    )
    .await;
    // Out at the position poll that finds it past the threshold, not at the next full check
    // 30 s away: the threshold, plus a poll or two, plus the writes that make the lag show.
    let out = out.expect("the paused replica stayed in rotation");
    assert!(out < threshold + back_within(pace), "out after {out:?}");
    assert!(back.is_some_and(|t| t < back_within(pace)), "{back:?}");
    assert!(paused.elapsed() < Duration::from_secs(15) + back_within(pace) * 2);
    assert_clean(&report, pace);
    assert_eq!(lost, 0);
}
