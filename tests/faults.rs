//! The failure model under the configuration users run: `healthCheckInterval` left at its 30 s
//! default, only `connectTimeout` shortened to 1 s. Each test injects one fault into a real
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

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CLIENTS: usize = 3;
/// How soon after the servers are back reads and writes must work again.
const BACK_WITHIN: Duration = Duration::from_secs(2);

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
    let config = Config::from_yaml(&cluster.config_yaml())
        .unwrap()
        .connect_timeout(CONNECT_TIMEOUT);
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
/// GET, a write on POST). `/slow`: a read (GET) or write (POST) that takes a second, for a
/// test to kill its session.
fn fault_routes(registry: Registry) -> Router {
    async fn many_read(db: DbRead) -> Result<String, DbError> {
        Ok(many_args().fetch_one(&db).await?.to_string())
    }
    async fn many_write(db: DbWrite) -> Result<String, DbError> {
        Ok(many_args().fetch_one(&db).await?.to_string())
    }
    async fn slow_read(db: DbRead) -> Result<String, DbError> {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port() FROM pg_sleep(1) /* slow */")
            .fetch_one(&db)
            .await?;
        Ok(port.to_string())
    }
    async fn slow_write(db: DbWrite) -> Result<String, DbError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO items (name) SELECT 'slow' FROM pg_sleep(1) RETURNING id /* slow */",
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
    println!("GET /many: {read:?}; POST /many: {write:?}; plain pool: {plain}");
    assert_eq!(read.0, 500, "{read:?}");
    assert_eq!(write.0, 500, "{write:?}");
    assert!(plain.contains("too many arguments"), "{plain}");
    report.assert_clean();
    assert_eq!(lost, 0);
    assert_all_serving(&setup.registry);
}

async fn many_on(pool: &sqlx::PgPool) -> String {
    match many_args().fetch_one(pool).await {
        Ok(n) => n.to_string(),
        Err(error) => error.to_string(),
    }
}

/// Terminates the sessions on `node` running the `/slow` routes; returns how many.
async fn kill_slow(node: &Node) -> i64 {
    let mut admin = node.connect().await.unwrap();
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE '%/* slow */%' AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

/// Waits until a `/slow` statement runs on one of `nodes` (at most 3 s), then terminates the
/// ones running; returns how many.
async fn kill_once_running(nodes: &[&Node]) -> i64 {
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut killed = 0;
        for node in nodes {
            killed += kill_slow(node).await;
        }
        if killed > 0 || start.elapsed() > Duration::from_secs(3) {
            return killed;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_fails_at_most_its_own_request_on_every_server() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, false);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A write whose session is killed under it: that request fails (it may have committed,
    // so it is not run again), and nothing else does.
    let app = setup.app.clone();
    let write = tokio::spawn(async move { send(&app, "POST", "/slow").await });
    let killed_on_primary = kill_once_running(&[setup.cluster.primary()]).await;
    let write = write.await.unwrap();

    // Reads whose session is killed under them: they run again on another server.
    let mut reads = Vec::new();
    for _ in 0..4 {
        let app = setup.app.clone();
        let read = tokio::spawn(async move { send(&app, "GET", "/slow").await });
        let killed = kill_once_running(
            setup
                .cluster
                .replicas()
                .iter()
                .collect::<Vec<_>>()
                .as_slice(),
        )
        .await;
        reads.push((killed, read.await.unwrap()));
    }
    // Right after: the servers whose sessions were killed were probed and stay in service.
    let probed = time_until(Duration::from_secs(2), || {
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
        "killed write: {killed_on_primary} session, answer {write:?}; killed reads: {reads:?}"
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
    report.assert_clean();
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_of_every_server_costs_about_as_long_as_the_blip() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, true);
    tokio::time::sleep(Duration::from_millis(500)).await;

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
        "the blip (stop and start of all three) took {:?}",
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
    assert!(report.reads_back_after(back) < BACK_WITHIN, "{report}");
    assert!(report.writes_back_after(back) < BACK_WITHIN, "{report}");
    assert!(
        report.reads_back_after(back) <= baseline.reads_back_after(back) + Duration::from_secs(1),
        "rwsplit recovered reads slower than plain pools"
    );
    assert!(
        report.writes_back_after(back) <= baseline.writes_back_after(back) + Duration::from_secs(1),
        "rwsplit recovered writes slower than plain pools"
    );
    assert_eq!(report.stale, 0, "{report}");
    assert_eq!(lost, 0);
    // The load ran: at least half the reads the plain pools sent in the same run (on a
    // saturated host both send far fewer than on a quiet one).
    assert!(
        report.reads > 0 && report.reads * 2 >= baseline.reads,
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

    assert_eq!(during.failed_reads(), 0, "{during}");
    assert!(during.failed_writes() > 0, "the primary was down: {during}");
    assert_eq!(
        during.failed_writes.keys().copied().collect::<Vec<_>>(),
        [503]
    );
    assert!(after.writes_back_after(back) < BACK_WITHIN, "{after}");
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
    let readmitted = time_until(Duration::from_secs(10), || {
        in_rotation(&setup.registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (report, baseline) = loads.finish().await;
    let baseline = baseline.unwrap();
    println!("replica1 out after {out:?}, back in rotation {readmitted:?} after its restart");
    let lost = rows(
        &setup.cluster,
        "replica1 restarted",
        &report,
        ("plain pools (reads on replica1)", &baseline),
        back,
    )
    .await;
    assert!(out.is_some());
    assert!(
        readmitted.is_some_and(|t| t < BACK_WITHIN),
        "{readmitted:?}"
    );
    report.assert_clean();
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_stopped_and_restarted_fail_no_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, false);
    tokio::time::sleep(Duration::from_millis(500)).await;

    for replica in setup.cluster.replicas() {
        replica.stop(StopMode::Immediate).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for replica in setup.cluster.replicas() {
        replica.start().await.unwrap();
    }
    let back = Instant::now();
    let readmitted = time_until(Duration::from_secs(10), || {
        setup
            .registry
            .status()
            .replicas
            .iter()
            .all(|r| r.in_rotation)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (report, _) = loads.finish().await;
    println!("both replicas back in rotation {readmitted:?} after their restart");
    let lost = row(
        &setup.cluster,
        "both replicas restarted",
        "rwsplit",
        &report,
        Some(back),
    )
    .await;
    assert!(
        readmitted.is_some_and(|t| t < BACK_WITHIN),
        "{readmitted:?}"
    );
    report.assert_clean();
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_stopped_and_restarted_takes_writes_again_within_a_second_or_so() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let setup = setup().await;
    let loads = Loads::start(&setup, true);
    tokio::time::sleep(Duration::from_millis(500)).await;

    setup
        .cluster
        .primary()
        .stop(StopMode::Immediate)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    setup.cluster.primary().start().await.unwrap();
    let back = Instant::now();
    let healthy = time_until(Duration::from_secs(10), || {
        setup.registry.status().primary.healthy
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (report, baseline) = loads.finish().await;
    let baseline = baseline.unwrap();
    println!("primary in service again {healthy:?} after its restart");
    let lost = rows(
        &setup.cluster,
        "primary restarted",
        &report,
        ("plain pools", &baseline),
        back,
    )
    .await;
    assert!(healthy.is_some_and(|t| t < BACK_WITHIN), "{healthy:?}");
    assert!(report.writes_back_after(back) < BACK_WITHIN, "{report}");
    assert!(
        report.writes_back_after(back) <= baseline.writes_back_after(back) + Duration::from_secs(1),
        "rwsplit recovered writes slower than a plain pool"
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
    report.assert_clean();
    assert_eq!(lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_the_threshold_leaves_at_the_next_poll_with_no_stale_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let threshold = Duration::from_secs(2);
    let setup = setup_with(|config| config.replica_lag_threshold(threshold)).await;
    let loads = Loads::start(&setup, false);
    tokio::time::sleep(Duration::from_millis(500)).await;

    setup.cluster.replica(0).pause_replay().await.unwrap();
    let paused = Instant::now();
    let out = time_until(Duration::from_secs(10), || {
        !in_rotation(&setup.registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    setup.cluster.replica(0).resume_replay().await.unwrap();
    let resumed = Instant::now();
    let back = time_until(Duration::from_secs(10), || {
        in_rotation(&setup.registry, "replica1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (report, _) = loads.finish().await;
    println!(
        "replica1 out {out:?} after its replay paused (threshold {threshold:?}), back {back:?} \
         after it resumed"
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
    assert!(
        out < threshold + Duration::from_secs(2),
        "out after {out:?}"
    );
    assert!(back.is_some_and(|t| t < BACK_WITHIN), "{back:?}");
    assert!(paused.elapsed() < Duration::from_secs(15));
    report.assert_clean();
    assert_eq!(lost, 0);
}
