//! An end-to-end load run: a local primary with two streaming replicas (weights 2 and 1), the
//! same `GET /items/{id}` handler through rwsplit and written against one plain sqlx pool
//! pointed at a replica (the "no router" baseline), driven in alternating turns by a
//! closed-loop load inside this process. Two more pairs separate what routing costs from what
//! spreading reads over two servers costs on one machine: rwsplit with replica2 drained
//! against the plain pool, and rwsplit against two plain pools taken 2:1 by a counter. Then a
//! 90/10 read/write mix with read-your-writes on.
//!
//! `cargo run --release --example loadtest [-- --seconds N --clients N]` (N seconds per
//! contender in each pair, in 8 turns each, default 8)
//!
//! It prints throughput and latency for both, their ratio, the share of reads each server
//! executed (from the servers' own `pg_stat_statements`) against the weights, and for the mix
//! the cost of a write's token and the share of reads that stickiness sent to the primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use http::{Request, StatusCode};
use rwsplit::{Config, ConsistencyConfig, DbError, DbRead, DbWrite, Registry, RwSplitLayer};
use rwsplit_testkit::{Cluster, Node};
use sqlx::PgPool;
use tower::ServiceExt;

#[path = "common/mod.rs"]
mod common;
use common::arg;

const ROWS: i64 = 10_000;
const TOKEN_HEADER: &str = "x-db-consistency";

async fn show(db: DbRead, Path(id): Path<i64>) -> Result<String, DbError> {
    let name: String =
        sqlx::query_scalar("SELECT name FROM items WHERE id = $1 /* rwsplit read */")
            .bind(id)
            .fetch_one(&db)
            .await?;
    Ok(name)
}

async fn show_plain(State(pool): State<PgPool>, Path(id): Path<i64>) -> Result<String, DbError> {
    let name: String =
        sqlx::query_scalar("SELECT name FROM items WHERE id = $1 LIMIT 1 /* baseline read */")
            .bind(id)
            .fetch_one(&pool)
            .await?;
    Ok(name)
}

/// Two plain pools, one per replica, taken in turn 2:1 with a counter: spreading reads over
/// two servers with no router at all, to tell what spreading costs on this machine (where
/// both replicas share the same two cores) from what routing costs.
#[derive(Clone)]
struct TwoPools(PgPool, PgPool, Arc<AtomicUsize>);

async fn show_two_pools(
    State(TwoPools(first, second, turn)): State<TwoPools>,
    Path(id): Path<i64>,
) -> Result<String, DbError> {
    let pool = match turn.fetch_add(1, Ordering::Relaxed) % 3 {
        2 => &second,
        _ => &first,
    };
    let name: String =
        sqlx::query_scalar("SELECT name FROM items WHERE id = $1 LIMIT 2 /* two pools read */")
            .bind(id)
            .fetch_one(pool)
            .await?;
    Ok(name)
}

async fn create(db: DbWrite) -> Result<String, DbError> {
    let id: i64 =
        sqlx::query_scalar("INSERT INTO items (name) VALUES ('new') RETURNING id /* mix write */")
            .fetch_one(&db)
            .await?;
    Ok(id.to_string())
}

async fn show_mix(db: DbRead, Path(id): Path<i64>) -> Result<String, DbError> {
    let name: Option<String> =
        sqlx::query_scalar("SELECT name FROM items WHERE id = $1 OFFSET 0 /* mix read */")
            .bind(id)
            .fetch_optional(&db)
            .await?;
    Ok(name.unwrap_or_default())
}

fn rwsplit_app(registry: &Registry) -> Router {
    Router::new()
        .route("/items/{id}", get(show))
        .layer(RwSplitLayer::new(registry.clone()))
        .with_state(registry.clone())
}

fn mix_app(registry: &Registry) -> Router {
    Router::new()
        .route("/items/{id}", get(show_mix))
        .route("/items", post(create))
        .layer(RwSplitLayer::new(registry.clone()))
        .with_state(registry.clone())
}

/// What one load run measured.
#[derive(Default)]
struct Run {
    requests: u64,
    elapsed: Duration,
    reads: Vec<Duration>,
    writes: Vec<Duration>,
    failed: u64,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn merge(&mut self, other: Run) {
        self.requests += other.requests;
        self.elapsed += other.elapsed;
        self.reads.extend(other.reads);
        self.writes.extend(other.writes);
        self.failed += other.failed;
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

/// `clients` clients in a closed loop for `length`; with `writes_every`, every n-th request
/// of a client is a write, and the client sends back the token of its last write.
async fn drive(app: &Router, clients: usize, length: Duration, writes_every: Option<u64>) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let app = app.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut run = Run::default();
                let mut token: Option<String> = None;
                let mut n = c as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let write = writes_every.is_some_and(|every| n.is_multiple_of(every));
                    let mut request = if write {
                        Request::post("/items")
                    } else {
                        Request::get(format!("/items/{}", n % ROWS as u64 + 1))
                    };
                    if let Some(token) = &token {
                        request = request.header(TOKEN_HEADER, token);
                    }
                    let request = request.body(Body::empty()).unwrap();
                    let start = Instant::now();
                    let response = app.clone().oneshot(request).await.unwrap();
                    let status = response.status();
                    if write && let Some(issued) = response.headers().get(TOKEN_HEADER) {
                        token = Some(issued.to_str().unwrap().to_owned());
                    }
                    let _ = axum::body::to_bytes(response.into_body(), 1 << 16).await;
                    let took = start.elapsed();
                    run.requests += 1;
                    if status != StatusCode::OK {
                        run.failed += 1;
                    }
                    if write {
                        run.writes.push(took);
                    } else {
                        run.reads.push(took);
                    }
                }
                run
            })
        })
        .collect();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Run::default();
    for task in tasks {
        total.merge(task.await.unwrap());
    }
    total.elapsed = started.elapsed();
    total
}

/// Runs `a` and `b` in alternating turns, `PAIRS` of each, `a` first in even pairs and `b`
/// first in odd ones, so that drift on a noisy machine (another process, a checkpoint) hits
/// both alike. Returns both runs and the throughput ratio of each pair.
async fn in_turns(a: &Router, b: &Router, clients: usize, seconds: u64) -> (Run, Run, Vec<f64>) {
    const PAIRS: u32 = 8;
    let turn = Duration::from_secs(seconds) / PAIRS;
    let (mut with, mut without, mut ratios) = (Run::default(), Run::default(), Vec::new());
    for pair in 0..PAIRS {
        let (x, y) = if pair % 2 == 0 {
            let x = drive(a, clients, turn, None).await;
            (x, drive(b, clients, turn, None).await)
        } else {
            let y = drive(b, clients, turn, None).await;
            (drive(a, clients, turn, None).await, y)
        };
        ratios.push(x.throughput() / y.throughput());
        with.merge(x);
        without.merge(y);
    }
    (with, without, ratios)
}

/// `min / median / max` of per-turn ratios.
fn spread(ratios: &[f64]) -> String {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "min {:.3} / median {:.3} / max {:.3}",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    )
}

async fn reset_statements(cluster: &Cluster) -> Result<(), Box<dyn std::error::Error>> {
    for node in std::iter::once(cluster.primary()).chain(cluster.replicas()) {
        node.execute("SELECT pg_stat_statements_reset()").await?;
    }
    Ok(())
}

async fn executed(node: &Node, needle: &str) -> Result<i64, Box<dyn std::error::Error>> {
    let mut conn = node.connect().await?;
    let calls: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements \
         WHERE query LIKE '%' || $1 || '%'",
    )
    .bind(needle)
    .fetch_one(&mut conn)
    .await?;
    Ok(calls)
}

/// CPU time used so far by `node`'s postmaster and its children (the backends), from /proc.
fn process_cpu(node: &Node) -> Duration {
    let Ok(pid_file) = std::fs::read_to_string(node.data_dir().join("postmaster.pid")) else {
        return Duration::ZERO;
    };
    let postmaster = pid_file
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let ticks_per_second = 100; // USER_HZ on Linux
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == postmaster || fields.get(1) == Some(&postmaster.as_str()) {
            // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
            let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
            let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            ticks += utime + stime;
        }
    }
    Duration::from_millis(ticks * 1000 / ticks_per_second)
}

/// Execution time of every statement on `node` since the last reset, in milliseconds.
async fn exec_time_ms(node: &Node) -> Result<f64, Box<dyn std::error::Error>> {
    let mut conn = node.connect().await?;
    let ms: f64 = sqlx::query_scalar(
        "SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements",
    )
    .fetch_one(&mut conn)
    .await?;
    Ok(ms)
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = arg("--seconds", 8);
    let clients = arg("--clients", 16) as usize;
    let turn = Duration::from_secs(seconds) / 2;

    println!("starting a primary with two streaming replicas on 127.0.0.1 ...");
    let cluster = Cluster::start(2).await?;
    cluster
        .primary()
        .execute("CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL)")
        .await?;
    cluster
        .primary()
        .execute(&format!(
            "INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, {ROWS}) g"
        ))
        .await?;
    cluster.wait_caught_up(Duration::from_secs(30)).await?;

    let weights = [2u32, 1];
    let yaml = cluster.config_yaml_weighted(&weights);
    let max_connections = 16;
    let config = Config::from_yaml(&yaml)?
        .max_connections(max_connections)
        .consistency(ConsistencyConfig::off());
    let registry = Registry::connect(config).await?;
    let baseline_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(cluster.replica(0).connect_options())
        .await?;
    let routed = rwsplit_app(&registry);
    // The same router with replica2 drained (weight 0): reads on replica1 only, the server the
    // baseline uses, which separates routing's cost from spreading over two servers.
    let one = Registry::connect(
        Config::from_yaml(&cluster.config_yaml_weighted(&[1, 0]))?
            .max_connections(max_connections)
            .consistency(ConsistencyConfig::off()),
    )
    .await?;
    let routed_one = rwsplit_app(&one);
    let baseline = Router::new()
        .route("/items/{id}", get(show_plain))
        .with_state(baseline_pool.clone());
    let second_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(cluster.replica(1).connect_options())
        .await?;
    let two_pools = Router::new()
        .route("/items/{id}", get(show_two_pools))
        .with_state(TwoPools(
            baseline_pool.clone(),
            second_pool.clone(),
            Arc::new(AtomicUsize::new(0)),
        ));

    // Warm up both (connections, caches), then take turns so that drift hits both alike.
    drive(&routed, clients, Duration::from_millis(500), None).await;
    drive(&baseline, clients, Duration::from_millis(500), None).await;
    reset_statements(&cluster).await?;
    let (with, without, pairs) = in_turns(&routed, &baseline, clients, seconds).await;
    let mut shares = Vec::new();
    let mut total = 0i64;
    for node in std::iter::once(cluster.primary()).chain(cluster.replicas()) {
        let n = executed(node, "rwsplit read").await?;
        total += n;
        shares.push((node.name().to_owned(), n));
    }

    reset_statements(&cluster).await?;
    drive(&routed_one, clients, Duration::from_millis(500), None).await;
    let (mut with_one, mut without_again, pairs_one) =
        in_turns(&routed_one, &baseline, clients, seconds).await;
    drive(&two_pools, clients, Duration::from_millis(500), None).await;
    let (mut with_two, mut two, pairs_two) = in_turns(&routed, &two_pools, clients, seconds).await;
    let (mut with, mut without) = (with, without);
    println!();
    println!(
        "# GET /items/{{id}}, {clients} clients, closed loop, {seconds} s in turns, release build"
    );
    println!();
    println!("| | requests/s | p50 | p99 | failed |");
    println!("|---|---:|---:|---:|---:|");
    let ratio = with.throughput() / without.throughput();
    let ratio_one = with_one.throughput() / without_again.throughput();
    for (name, run) in [
        ("rwsplit", &mut with),
        ("plain pool at replica1", &mut without),
        (
            "rwsplit, replica2 drained (reads on replica1 only)",
            &mut with_one,
        ),
        ("plain pool at replica1, again", &mut without_again),
        ("rwsplit, again", &mut with_two),
        (
            "two plain pools, one per replica, 2:1 by a counter",
            &mut two,
        ),
    ] {
        println!(
            "| {name} | {:.0} | {} | {} | {} |",
            run.throughput(),
            micros(percentile(&mut run.reads, 0.5)),
            micros(percentile(&mut run.reads, 0.99)),
            run.failed
        );
    }
    let ratio_two = with_two.throughput() / two.throughput();
    println!();
    println!(
        "throughput ratio rwsplit (2 replicas) / two plain pools (2 replicas): {ratio_two:.3}; \
         turn by turn {}",
        spread(&pairs_two)
    );
    println!(
        "throughput ratio rwsplit (2 replicas) / plain pool: {ratio:.3} (target >= 0.95); \
         turn by turn {}",
        spread(&pairs)
    );
    println!(
        "throughput ratio rwsplit (replica1 only) / plain pool: {ratio_one:.3}; turn by turn {}",
        spread(&pairs_one)
    );
    println!();
    println!("| server | reads executed | share | configured |");
    println!("|---|---:|---:|---:|");
    let weight_sum: u32 = weights.iter().sum();
    for (i, (name, n)) in shares.iter().enumerate() {
        let expected = match i {
            0 => 0.0,
            i => f64::from(weights[i - 1]) / f64::from(weight_sum),
        };
        println!(
            "| {name} | {n} | {:.2}% | {:.2}% |",
            *n as f64 / total.max(1) as f64 * 100.0,
            expected * 100.0
        );
    }

    // The 90/10 mix, with tokens (lsn) and without (off), in turns.
    let key = "a signing key of at least thirty-two bytes";
    let lsn = Registry::connect(
        Config::from_yaml(&yaml)?
            .max_connections(max_connections)
            .consistency(ConsistencyConfig::lsn().signing_key(key)),
    )
    .await?;
    let (sticky, plain) = (mix_app(&lsn), mix_app(&registry));
    drive(&sticky, clients, Duration::from_millis(500), Some(10)).await;
    reset_statements(&cluster).await?;
    let (mut on, mut off) = (Run::default(), Run::default());
    for _ in 0..2 {
        on.merge(drive(&sticky, clients, turn / 2, Some(10)).await);
        let before = executed(cluster.primary(), "mix read").await?;
        off.merge(drive(&plain, clients, turn / 2, Some(10)).await);
        let after = executed(cluster.primary(), "mix read").await?;
        assert_eq!(after, before, "reads without tokens went to the primary");
    }
    let on_primary = executed(cluster.primary(), "mix read").await?;
    let token_queries = executed(cluster.primary(), "rwsplit consistency token").await?;
    let mut asks = 0;
    for replica in cluster.replicas() {
        asks += executed(replica, "rwsplit replay position").await?;
    }
    let sticky_reads = on.reads.len() as i64;
    let plain_reads = off.reads.len() as i64;
    println!();
    println!("# 90/10 read/write mix, {clients} clients, read-your-writes lsn vs off");
    println!();
    println!("| | requests/s | read p50 | write p50 | write p99 | failed |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, run) in [("lsn tokens", &mut on), ("consistency off", &mut off)] {
        let throughput = run.throughput();
        println!(
            "| {name} | {throughput:.0} | {} | {} | {} | {} |",
            micros(percentile(&mut run.reads, 0.5)),
            micros(percentile(&mut run.writes, 0.5)),
            micros(percentile(&mut run.writes, 0.99)),
            run.failed
        );
    }
    let extra = percentile(&mut on.writes, 0.5).as_secs_f64()
        - percentile(&mut off.writes, 0.5).as_secs_f64();
    println!();
    println!(
        "write with token issue: {:+.0} µs at the median ({:.2}x)",
        extra * 1e6,
        percentile(&mut on.writes, 0.5).as_secs_f64()
            / percentile(&mut off.writes, 0.5).as_secs_f64()
    );
    println!(
        "reads sent to the primary by stickiness: {on_primary} of {sticky_reads} token-carrying \
         run reads ({:.1}%); reads without tokens on the primary: 0 of {plain_reads}",
        on_primary as f64 / sticky_reads.max(1) as f64 * 100.0
    );
    println!(
        "token queries: {token_queries} for {} writes ({:.2} per write); replay positions asked \
         of replicas: {asks} ({:.2} per token-carrying read)",
        on.writes.len(),
        token_queries as f64 / on.writes.len().max(1) as f64,
        asks as f64 / sticky_reads.max(1) as f64
    );

    // Token queries shared between writes (`shareTokenQueries`), against each write asking on
    // its own and against no token at all, in turns: queries per write and write latency.
    println!();
    println!("# token queries: each write on its own, or shared (90/10 mix, {clients} clients)");
    println!();
    println!("| tokens | writes | token queries per write | write p50 | write p99 |");
    println!("|---|---:|---:|---:|---:|");
    let mut sharing = Vec::new();
    for gather in [
        None,
        Some(Duration::ZERO),
        Some(Duration::from_millis(2)),
        Some(Duration::from_millis(5)),
    ] {
        let registry = Registry::connect(
            Config::from_yaml(&yaml)?
                .max_connections(max_connections)
                .consistency(
                    ConsistencyConfig::lsn()
                        .signing_key(key)
                        .share_token_queries(gather),
                ),
        )
        .await?;
        sharing.push((gather, mix_app(&registry), Run::default(), 0i64));
    }
    for _ in 0..2 {
        for (_, app, run, queries) in sharing.iter_mut() {
            let before = executed(cluster.primary(), "rwsplit consistency token").await?;
            run.merge(drive(app, clients, turn / 4, Some(10)).await);
            *queries += executed(cluster.primary(), "rwsplit consistency token").await? - before;
        }
    }
    let no_token = percentile(&mut off.writes, 0.5);
    for (gather, _, run, queries) in sharing.iter_mut() {
        let name = match gather {
            None => "each write asks (default)".to_owned(),
            Some(g) if g.is_zero() => "shared, shareTokenQueries: 0ms".to_owned(),
            Some(g) => format!("shared, shareTokenQueries: {}ms", g.as_millis()),
        };
        let p50 = percentile(&mut run.writes, 0.5);
        println!(
            "| {name} | {} | {:.2} | {} ({:+.0} µs against no token) | {} |",
            run.writes.len(),
            *queries as f64 / run.writes.len().max(1) as f64,
            micros(p50),
            (p50.as_secs_f64() - no_token.as_secs_f64()) * 1e6,
            micros(percentile(&mut run.writes, 0.99)),
        );
    }

    // The checklist's success metrics: the same 90/10 mix with separation off, then on.
    let off_registry = Registry::connect(
        Config::from_yaml(&yaml)?
            .max_connections(max_connections)
            .read_write_separation(false)
            .consistency(ConsistencyConfig::lsn().signing_key(key)),
    )
    .await?;
    let separated = mix_app(&lsn);
    let together = mix_app(&off_registry);
    drive(&together, clients, Duration::from_millis(500), Some(10)).await;
    let mut table = Vec::new();
    for (name, app) in [("separation off", &together), ("separation on", &separated)] {
        reset_statements(&cluster).await?;
        let cpu_before = process_cpu(cluster.primary());
        let mut run = drive(app, clients, Duration::from_secs(seconds), Some(10)).await;
        let cpu = process_cpu(cluster.primary()).saturating_sub(cpu_before);
        let exec_ms = exec_time_ms(cluster.primary()).await?;
        let mut served = Vec::new();
        for node in std::iter::once(cluster.primary()).chain(cluster.replicas()) {
            served.push(executed(node, "mix read").await?);
        }
        let elapsed = run.elapsed.as_secs_f64();
        table.push(format!(
            "| {name} | {:.0} | {:.0} | {:.2} s ({:.0} % of one core) | {:.0} ms | {:.0} / {:.0} / {:.0} | {} | {} | {} |",
            run.throughput(),
            run.reads.len() as f64 / elapsed,
            cpu.as_secs_f64(),
            cpu.as_secs_f64() / elapsed * 100.0,
            exec_ms,
            served[0] as f64 / elapsed,
            served[1] as f64 / elapsed,
            served[2] as f64 / elapsed,
            micros(percentile(&mut run.reads, 0.5)),
            micros(percentile(&mut run.reads, 0.99)),
            micros(percentile(&mut run.writes, 0.5)),
        ));
    }
    println!();
    println!(
        "# success metrics: 90/10 mix, {clients} clients, {seconds} s each, separation off then on"
    );
    println!();
    println!(
        "| | requests/s | reads/s | primary CPU (its processes) | primary execution time (pg_stat_statements) | reads/s executed by primary / replica1 / replica2 | read p50 | read p99 | write p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for line in table {
        println!("{line}");
    }
    off_registry.shutdown().await;

    // Reads on the primary: a `DbRead` there runs each query in a read-only transaction.
    let disabled = Registry::connect(
        Config::from_yaml(&yaml)?
            .max_connections(max_connections)
            .read_write_separation(false)
            .consistency(ConsistencyConfig::off()),
    )
    .await?;
    let read_only = rwsplit_app(&disabled);
    let primary_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(cluster.primary().connect_options())
        .await?;
    let on_primary = Router::new()
        .route("/items/{id}", get(show_plain))
        .with_state(primary_pool.clone());
    drive(&read_only, clients, Duration::from_millis(500), None).await;
    drive(&on_primary, clients, Duration::from_millis(500), None).await;
    let (mut ro, mut plain_primary, pairs_ro) =
        in_turns(&read_only, &on_primary, clients, seconds).await;
    println!();
    println!(
        "# reads on the primary: DbRead (read-only transaction) vs a plain pool, {clients} clients"
    );
    println!();
    println!("| | requests/s | p50 | p99 | failed |");
    println!("|---|---:|---:|---:|---:|");
    for (name, run) in [
        (
            "rwsplit DbRead on the primary (separation disabled)",
            &mut ro,
        ),
        ("plain pool at the primary", &mut plain_primary),
    ] {
        println!(
            "| {name} | {:.0} | {} | {} | {} |",
            run.throughput(),
            micros(percentile(&mut run.reads, 0.5)),
            micros(percentile(&mut run.reads, 0.99)),
            run.failed
        );
    }
    println!();
    println!(
        "throughput ratio read-only DbRead on the primary / plain pool: {:.3}; turn by turn {}; \
         p50 {:+.0} µs",
        ro.throughput() / plain_primary.throughput(),
        spread(&pairs_ro),
        (percentile(&mut ro.reads, 0.5).as_secs_f64()
            - percentile(&mut plain_primary.reads, 0.5).as_secs_f64())
            * 1e6
    );

    disabled.shutdown().await;
    primary_pool.close().await;
    one.shutdown().await;
    lsn.shutdown().await;
    registry.shutdown().await;
    baseline_pool.close().await;
    second_pool.close().await;
    Ok(())
}
