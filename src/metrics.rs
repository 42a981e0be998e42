//! Metric names, their descriptions and the helpers that record them, through the `metrics`
//! facade only: rwsplit never installs a recorder. Install one in your application (the
//! `prometheus` feature has a helper) to collect them. Labels stay low-cardinality: server
//! names, roles, reasons, results and axum route templates, never a raw URL or an id.
//!
//! The per-request metrics (`rwsplit_route_decisions_total`, `rwsplit_request_duration_seconds`)
//! are registered with the recorder the first time a server serves a route, and their handles
//! are kept, so that a request records them without allocating: install the recorder before
//! serving requests, and do not give it an idle timeout that drops series.
//!
//! Each metric is declared once, in the table below (`metrics!`), with its kind, unit, labels
//! and description; the README's Observability section lists them, and a test keeps the two
//! the same.
//!
//! ```
//! use metrics_util::debugging::DebuggingRecorder;
//! use rwsplit::{Config, Registry};
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || {
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//!     runtime.block_on(async {
//!         let registry = Registry::connect_lazy(Config::new("127.0.0.1")).unwrap();
//!         assert!(registry.verify_token("not a token").is_err());
//!     });
//! });
//! let rejected = snapshotter
//!     .snapshot()
//!     .into_vec()
//!     .into_iter()
//!     .any(|(key, ..)| key.key().name() == "rwsplit_consistency_tokens_rejected_total");
//! assert!(rejected);
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

/// What kind of metric a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric, declared once: its name, kind, unit, labels and description.
#[derive(Debug)]
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    unit: Unit,
    /// Checked against the README's table by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) labels: &'static [&'static str],
    help: &'static str,
}

/// Declares every metric once: a constant for its name, and its entry in [`ALL`].
macro_rules! metrics {
    ($($constant:ident = $name:literal, $kind:ident, $unit:ident, [$($label:literal),*], $help:literal;)*) => {
        $(pub(crate) const $constant: &str = $name;)*

        /// Every metric rwsplit records.
        pub(crate) const ALL: &[Metric] = &[$(Metric {
            name: $name,
            kind: Kind::$kind,
            unit: Unit::$unit,
            labels: &[$($label),*],
            help: $help,
        },)*];
    };
}

metrics! {
    ROUTE_DECISIONS = "rwsplit_route_decisions_total", Counter, Count, ["server", "role", "reason", "route"],
        "Servers handed to handlers, by role, reason and route.";
    REQUEST_DURATION = "rwsplit_request_duration_seconds", Histogram, Seconds, ["server", "route"],
        "Requests through the layer, by serving server and route.";
    SERVER_HEALTHY = "rwsplit_server_healthy", Gauge, Count, ["server", "role"],
        "1 when the server's last health check passed.";
    REPLICA_IN_ROTATION = "rwsplit_replica_in_rotation", Gauge, Count, ["server"],
        "1 when reads are sent to the replica.";
    REPLICAS_IN_ROTATION = "rwsplit_replicas_in_rotation", Gauge, Count, [],
        "Replicas taking reads; 0 means the primary serves them all.";
    REPLICA_LAG_SECONDS = "rwsplit_replica_lag_seconds", Gauge, Seconds, ["server"],
        "Replication lag in time.";
    REPLICA_LAG_BYTES = "rwsplit_replica_lag_bytes", Gauge, Bytes, ["server"],
        "Replication lag in bytes of WAL.";
    REPLICA_WEIGHT = "rwsplit_replica_weight", Gauge, Count, ["server"],
        "The replica's configured weight.";
    LAST_SUCCESS_AGE = "rwsplit_server_last_success_age_seconds", Gauge, Seconds, ["server"],
        "Time since the server last passed a health check.";
    HEALTH_CHECKS = "rwsplit_health_checks_total", Counter, Count, ["server", "result"],
        "Health checks by server and result.";
    HEALTH_CHECK_DURATION = "rwsplit_health_check_duration_seconds", Histogram, Seconds, ["server"],
        "Health check duration.";
    POOL_CONNECTIONS = "rwsplit_pool_connections", Gauge, Count, ["server", "state"],
        "Open pool connections, idle or in use.";
    POOL_MAX = "rwsplit_pool_max_connections", Gauge, Count, ["server"],
        "Most connections the server's pool may open.";
    POOL_ACQUIRE_DURATION = "rwsplit_pool_acquire_duration_seconds", Histogram, Seconds, ["server"],
        "Time to get a connection from a pool, through rwsplit.";
    POOL_ACQUIRE_TIMEOUTS = "rwsplit_pool_acquire_timeouts_total", Counter, Count, ["server"],
        "Connection acquisitions that timed out (pool exhaustion).";
    EJECTIONS = "rwsplit_server_ejections_total", Counter, Count, ["server", "cause"],
        "Servers taken out of service at once because a connection to them failed.";
    FAILOVERS = "rwsplit_read_failovers_total", Counter, Count, ["server", "cause"],
        "Reads moved to another server because their first choice could not serve.";
    SUSPICIONS = "rwsplit_server_suspicions_total", Counter, Count, ["server", "cause"],
        "Servers suspected after a session on them was lost or a read got no answer; a probe \
         decides.";
    PROBES = "rwsplit_server_probes_total", Counter, Count, ["server", "result"],
        "Probes of suspected or out-of-service servers on a fresh connection, by result.";
    PROBE_DURATION = "rwsplit_server_probe_duration_seconds", Histogram, Seconds, ["server"],
        "Probe duration, connecting included.";
    READMISSIONS = "rwsplit_server_readmissions_total", Counter, Count, ["server", "by"],
        "Servers put back in service, by what found them well (probe, check or poll).";
    TOKENS_ISSUED = "rwsplit_consistency_tokens_issued_total", Counter, Count, [],
        "Consistency tokens issued after writes.";
    TOKENS_HONOURED = "rwsplit_consistency_tokens_honoured_total", Counter, Count, [],
        "Valid consistency tokens applied to a request's reads.";
    TOKENS_REJECTED = "rwsplit_consistency_tokens_rejected_total", Counter, Count, ["reason"],
        "Consistency tokens ignored (treated as absent), by reason.";
    TOKENS_SKEWED = "rwsplit_consistency_tokens_skewed_total", Counter, Count, [],
        "Genuine consistency tokens dated further ahead than clockSkew (another instance's clock runs ahead), honoured from their arrival.";
    PRIMARY_MOVES = "rwsplit_primary_moves_total", Counter, Count, ["server"],
        "Times the writes moved to another server that answers as the primary, by server.";
    PRIMARY_REFUSALS = "rwsplit_primary_refusals_total", Counter, Count, ["server"],
        "Checks that found a server answering as a primary that must take nothing (split brain, a former primary, another cluster), by server.";
    PRIMARY_TIMELINE = "rwsplit_primary_timeline", Gauge, Count, [],
        "The highest timeline a primary has been seen on.";
    SERVER_TIMELINE = "rwsplit_server_timeline", Gauge, Count, ["server"],
        "The timeline the server was last seen on.";
    SERVER_CAPABILITY = "rwsplit_server_capability", Gauge, Count, ["server", "capability"],
        "1 when this role may use a monitoring capability on the server, 0 when it may not.";
    SLOW_CHECKS = "rwsplit_server_slow_checks_total", Counter, Count, ["server", "by"],
        "Checks and probes that timed out on a server that answered other work meanwhile: it stayed in service.";
    GROUP_IN_ROTATION = "rwsplit_group_replicas_in_rotation", Gauge, Count, ["group"],
        "Replicas of the group taking its reads; 0 means its reads go to its fallback.";
    GROUP_FALLBACKS = "rwsplit_group_fallbacks_total", Counter, Count, ["group", "to"],
        "Reads for a replica group served outside it (to: replicas, primary, another group, or none when refused).";
}

/// Describes every metric to the installed recorder (once per registry; cheap).
pub(crate) fn describe() {
    for metric in ALL {
        match metric.kind {
            Kind::Counter => describe_counter!(metric.name, metric.unit, metric.help),
            Kind::Gauge => describe_gauge!(metric.name, metric.unit, metric.help),
            Kind::Histogram => describe_histogram!(metric.name, metric.unit, metric.help),
        }
    }
}

/// One server's metrics on the request path: its per-route table and its acquire histogram,
/// registered on first use and kept.
pub(crate) struct ServerMetrics {
    name: Arc<str>,
    routes: RouteTable,
    acquire: OnceLock<Histogram>,
}

impl ServerMetrics {
    pub(crate) fn new(name: &str) -> ServerMetrics {
        ServerMetrics {
            name: Arc::from(name),
            routes: RouteTable::default(),
            acquire: OnceLock::new(),
        }
    }

    /// The per-request metrics of `route` on this server.
    pub(crate) fn route(&self, route: &str) -> Arc<RouteMetrics> {
        self.routes.get(&self.name, route)
    }

    /// Records a wait for a connection through rwsplit.
    pub(crate) fn acquired(&self, took: Duration) {
        // Registered once per server and kept: registering on every query costs a lookup (and
        // a key copy) in the recorder.
        self.acquire
            .get_or_init(|| histogram!(POOL_ACQUIRE_DURATION, "server" => Arc::clone(&self.name)))
            .record(took.as_secs_f64());
    }
}

/// One server's per-request metrics by route template: registered with the recorder the first
/// time a route uses the server, then reused, so that a request records them without an
/// allocation or a lookup in the recorder. Route templates are few (one per axum route), so the
/// table stays small; a new route copies it once.
///
/// Handles bind to the recorder installed when they are registered: install the recorder
/// before serving requests (and without an idle timeout that would drop these series).
#[derive(Default)]
pub(crate) struct RouteTable {
    routes: ArcSwap<HashMap<Box<str>, Arc<RouteMetrics>, BuildFnv>>,
    grow: Mutex<()>,
}

impl RouteTable {
    /// The metrics of `route` on `server`.
    pub(crate) fn get(&self, server: &Arc<str>, route: &str) -> Arc<RouteMetrics> {
        if let Some(metrics) = self.routes.load().get(route) {
            return Arc::clone(metrics);
        }
        let _guard = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.routes.load();
        if let Some(metrics) = current.get(route) {
            return Arc::clone(metrics);
        }
        let metrics = Arc::new(RouteMetrics::new(server, route));
        let mut next = HashMap::clone(&current);
        next.insert(route.into(), Arc::clone(&metrics));
        self.routes.store(Arc::new(next));
        metrics
    }
}

/// How many distinct (role, reason) pairs a route's decisions are counted in.
pub(crate) const DECISIONS: usize = 32;

/// One routing decision, as `rwsplit_route_decisions_total` labels it: a dense slot below
/// [`DECISIONS`] for its counter, and its labels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decision {
    pub(crate) slot: usize,
    pub(crate) role: &'static str,
    pub(crate) reason: &'static str,
}

/// `rwsplit_route_decisions_total` (one counter per role and reason, registered when first
/// used) and `rwsplit_request_duration_seconds` for one server and route. Aligned as
/// [`Server`](crate::server::Server) is: its `Arc`'s counts change on every request.
#[repr(align(128))]
pub(crate) struct RouteMetrics {
    server: Arc<str>,
    route: Arc<str>,
    duration: Histogram,
    decisions: [OnceLock<Counter>; DECISIONS],
}

impl RouteMetrics {
    /// The route template these metrics are for.
    pub(crate) fn route(&self) -> Arc<str> {
        Arc::clone(&self.route)
    }

    fn new(server: &Arc<str>, route: &str) -> RouteMetrics {
        let route: Arc<str> = Arc::from(route);
        RouteMetrics {
            duration: histogram!(
                REQUEST_DURATION,
                "server" => Arc::clone(server),
                "route" => Arc::clone(&route),
            ),
            server: Arc::clone(server),
            route,
            decisions: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts a server handed out for `intent`.
    pub(crate) fn decided(&self, decision: Decision) {
        self.decisions[decision.slot]
            .get_or_init(|| {
                counter!(
                    ROUTE_DECISIONS,
                    "server" => Arc::clone(&self.server),
                    "role" => decision.role,
                    "reason" => decision.reason,
                    "route" => Arc::clone(&self.route),
                )
            })
            .increment(1);
    }

    /// Records a request that this server served, from the layer's start to its response.
    pub(crate) fn served(&self, took: Duration) {
        self.duration.record(took.as_secs_f64());
    }
}

/// `rwsplit_request_duration_seconds` for requests that used no database (`server="none"`).
pub(crate) fn unserved_duration() -> Histogram {
    histogram!(REQUEST_DURATION, "server" => "none", "route" => "")
}

/// FNV-1a: route templates are short, and this hash is a few times cheaper than SipHash on
/// them. The keys come from the application's own route table, not from clients.
#[derive(Clone, Copy, Default)]
pub(crate) struct BuildFnv;

pub(crate) struct Fnv(u64);

impl BuildHasher for BuildFnv {
    type Hasher = Fnv;

    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Records what a health check found.
pub(crate) fn health_check(server: &Arc<str>, result: &'static str, took: Duration) {
    counter!(HEALTH_CHECKS, "server" => Arc::clone(server), "result" => result).increment(1);
    histogram!(HEALTH_CHECK_DURATION, "server" => Arc::clone(server)).record(took.as_secs_f64());
}

/// One server's state, as its gauges show it.
#[derive(Debug)]
pub(crate) struct ServerGauges {
    pub(crate) name: Arc<str>,
    pub(crate) primary: bool,
    pub(crate) healthy: bool,
    pub(crate) in_rotation: bool,
    pub(crate) weight: u32,
    pub(crate) last_success_age: Option<Duration>,
    pub(crate) pool_size: u32,
    pub(crate) pool_idle: u32,
    pub(crate) pool_max: u32,
    pub(crate) timeline: u32,
    pub(crate) lag: Option<Duration>,
    pub(crate) lag_bytes: Option<u64>,
}

/// Publishes a server's state gauges: health, lag, weight, pool use.
pub(crate) fn server_state(state: &ServerGauges) {
    let name = || Arc::clone(&state.name);
    let role = if state.primary { "primary" } else { "replica" };
    gauge!(SERVER_HEALTHY, "server" => name(), "role" => role)
        .set(f64::from(u8::from(state.healthy)));
    if let Some(age) = state.last_success_age {
        gauge!(LAST_SUCCESS_AGE, "server" => name()).set(age.as_secs_f64());
    }
    let idle = state.pool_idle.min(state.pool_size);
    gauge!(POOL_CONNECTIONS, "server" => name(), "state" => "idle").set(f64::from(idle));
    gauge!(POOL_CONNECTIONS, "server" => name(), "state" => "in_use")
        .set(f64::from(state.pool_size - idle));
    gauge!(POOL_MAX, "server" => name()).set(f64::from(state.pool_max));
    if state.timeline != 0 {
        gauge!(SERVER_TIMELINE, "server" => name()).set(f64::from(state.timeline));
    }
    if state.primary {
        return;
    }
    gauge!(REPLICA_IN_ROTATION, "server" => name()).set(f64::from(u8::from(state.in_rotation)));
    gauge!(REPLICA_WEIGHT, "server" => name()).set(f64::from(state.weight));
    // Unknown lag (unreachable) is left at its last value; `healthy` says why.
    if let Some(lag) = state.lag.filter(|l| *l != Duration::MAX) {
        gauge!(REPLICA_LAG_SECONDS, "server" => name()).set(lag.as_secs_f64());
    }
    if let Some(bytes) = state.lag_bytes {
        gauge!(REPLICA_LAG_BYTES, "server" => name()).set(bytes as f64);
    }
}

pub(crate) fn replicas_in_rotation(count: usize) {
    gauge!(REPLICAS_IN_ROTATION).set(count as f64);
}

pub(crate) fn group_in_rotation(group: &str, count: usize) {
    gauge!(GROUP_IN_ROTATION, "group" => group.to_owned()).set(count as f64);
}

pub(crate) fn group_fallback(group: &str, to: &str) {
    let (group, to) = (group.to_owned(), to.to_owned());
    counter!(GROUP_FALLBACKS, "group" => group, "to" => to).increment(1);
}

pub(crate) fn acquire_timeout(server: &Arc<str>) {
    counter!(POOL_ACQUIRE_TIMEOUTS, "server" => Arc::clone(server)).increment(1);
}

pub(crate) fn ejected(server: &Arc<str>, cause: &'static str) {
    counter!(EJECTIONS, "server" => Arc::clone(server), "cause" => cause).increment(1);
}

pub(crate) fn suspected(server: &Arc<str>, cause: &'static str) {
    counter!(SUSPICIONS, "server" => Arc::clone(server), "cause" => cause).increment(1);
}

pub(crate) fn probed(server: &Arc<str>, result: &'static str, took: Duration) {
    counter!(PROBES, "server" => Arc::clone(server), "result" => result).increment(1);
    histogram!(PROBE_DURATION, "server" => Arc::clone(server)).record(took.as_secs_f64());
}

pub(crate) fn readmitted(server: &Arc<str>, by: &'static str) {
    counter!(READMISSIONS, "server" => Arc::clone(server), "by" => by).increment(1);
}

pub(crate) fn failover(from: &Arc<str>, cause: &'static str) {
    counter!(FAILOVERS, "server" => Arc::clone(from), "cause" => cause).increment(1);
}

pub(crate) fn primary_moved(to: &Arc<str>) {
    counter!(PRIMARY_MOVES, "server" => Arc::clone(to)).increment(1);
}

pub(crate) fn primary_refused(server: &Arc<str>) {
    counter!(PRIMARY_REFUSALS, "server" => Arc::clone(server)).increment(1);
}

/// `rwsplit_server_capability`: what this role may ask `server`, one series per capability
/// (its label, and whether the role may use it).
pub(crate) fn capabilities(
    server: &Arc<str>,
    capabilities: impl IntoIterator<Item = (&'static str, bool)>,
) {
    for (capability, offered) in capabilities {
        gauge!(SERVER_CAPABILITY, "server" => Arc::clone(server), "capability" => capability)
            .set(f64::from(u8::from(offered)));
    }
}

/// Counts a check or probe of `server` that timed out while it answered other work.
pub(crate) fn slow_check(server: &Arc<str>, by: &'static str) {
    counter!(SLOW_CHECKS, "server" => Arc::clone(server), "by" => by).increment(1);
}

pub(crate) fn primary_timeline(timeline: u32) {
    if timeline != 0 {
        gauge!(PRIMARY_TIMELINE).set(f64::from(timeline));
    }
}

/// Drops a removed replica's state gauges to zero, so dashboards do not show it as healthy.
pub(crate) fn forget(server: &Arc<str>) {
    let name = || Arc::clone(server);
    gauge!(SERVER_HEALTHY, "server" => name(), "role" => "replica").set(0.0);
    gauge!(REPLICA_IN_ROTATION, "server" => name()).set(0.0);
    gauge!(REPLICA_WEIGHT, "server" => name()).set(0.0);
}

pub(crate) fn token_skewed() {
    counter!(TOKENS_SKEWED).increment(1);
}

pub(crate) fn token_rejected(reason: &'static str) {
    counter!(TOKENS_REJECTED, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's metrics table: each row's metric names with its labels cell.
    fn readme_rows() -> Vec<(Vec<String>, String)> {
        let readme = include_str!("../README.md");
        readme
            .lines()
            .filter(|line| line.starts_with("| `rwsplit_"))
            .map(|line| {
                let cells: Vec<&str> = line.split(" | ").collect();
                let names = cells[0]
                    .split('`')
                    .filter(|part| part.starts_with("rwsplit_"))
                    .map(str::to_owned)
                    .collect();
                (names, cells[2].to_owned())
            })
            .collect()
    }

    #[test]
    fn the_readme_lists_every_metric_with_its_labels_and_no_other() {
        let rows = readme_rows();
        for metric in ALL {
            let row = rows
                .iter()
                .find(|(names, _)| names.iter().any(|n| n == metric.name));
            let (_, labels) = row.unwrap_or_else(|| panic!("{} is not in the README", metric.name));
            for label in metric.labels {
                assert!(
                    labels.contains(label),
                    "{}: label {label} not in `{labels}`",
                    metric.name
                );
            }
        }
        for (names, _) in &rows {
            for name in names {
                assert!(
                    ALL.iter().any(|m| m.name == name),
                    "the README lists {name}, which is not recorded"
                );
            }
        }
    }
}
