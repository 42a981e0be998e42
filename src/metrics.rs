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
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `rwsplit_route_decisions_total` | counter | `server`, `role`, `reason`, `route` | servers handed to handlers: the read/write distribution |
//! | `rwsplit_request_duration_seconds` | histogram | `server`, `route` | requests through the layer, by the server that served them (`none`: no database) |
//! | `rwsplit_server_healthy` | gauge | `server`, `role` | 1 when the last check passed |
//! | `rwsplit_replica_in_rotation` | gauge | `server` | 1 when reads are sent to the replica |
//! | `rwsplit_replicas_in_rotation` | gauge | | replicas taking reads; 0 means the primary serves them all |
//! | `rwsplit_replica_lag_seconds` | gauge | `server` | replication lag in time |
//! | `rwsplit_replica_lag_bytes` | gauge | `server` | replication lag in bytes of WAL |
//! | `rwsplit_replica_weight` | gauge | `server` | configured weight |
//! | `rwsplit_server_last_success_age_seconds` | gauge | `server` | time since the last passed check |
//! | `rwsplit_health_checks_total` | counter | `server`, `result` | checks: `ok`, `unreachable`, `lagging`, `wrong_role` |
//! | `rwsplit_health_check_duration_seconds` | histogram | `server` | check duration |
//! | `rwsplit_pool_connections` | gauge | `server`, `state` | open connections, `idle` or `in_use` |
//! | `rwsplit_pool_max_connections` | gauge | `server` | pool limit |
//! | `rwsplit_pool_acquire_duration_seconds` | histogram | `server` | waits for a connection through rwsplit (`acquire`, `begin`, tokens) |
//! | `rwsplit_pool_acquire_timeouts_total` | counter | `server` | acquisitions that timed out: pool exhaustion |
//! | `rwsplit_server_ejections_total` | counter | `server`, `cause` | servers taken out of service at once after a failed connection (`unreachable`, `refused`, `timeout`, `tls`, `authentication`, `shutting_down`, `protocol`) |
//! | `rwsplit_read_failovers_total` | counter | `server`, `cause` | reads moved off a server that could not serve them (`exhausted`, `closed` or an ejection cause) |
//! | `rwsplit_consistency_tokens_issued_total` | counter | | tokens issued after writes |
//! | `rwsplit_consistency_tokens_honoured_total` | counter | | valid tokens applied to a request |
//! | `rwsplit_consistency_tokens_rejected_total` | counter | `reason` | tokens ignored, by [`TokenRejection`](crate::TokenRejection) |
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

use crate::consistency::TokenRejection;
use crate::intent::{Reason, Role, RouteIntent};
use crate::registry::{Capabilities, Capability, Server};

pub(crate) const ROUTE_DECISIONS: &str = "rwsplit_route_decisions_total";
pub(crate) const REQUEST_DURATION: &str = "rwsplit_request_duration_seconds";
pub(crate) const SERVER_HEALTHY: &str = "rwsplit_server_healthy";
pub(crate) const REPLICA_IN_ROTATION: &str = "rwsplit_replica_in_rotation";
pub(crate) const REPLICAS_IN_ROTATION: &str = "rwsplit_replicas_in_rotation";
pub(crate) const REPLICA_LAG_SECONDS: &str = "rwsplit_replica_lag_seconds";
pub(crate) const REPLICA_LAG_BYTES: &str = "rwsplit_replica_lag_bytes";
pub(crate) const REPLICA_WEIGHT: &str = "rwsplit_replica_weight";
pub(crate) const LAST_SUCCESS_AGE: &str = "rwsplit_server_last_success_age_seconds";
pub(crate) const HEALTH_CHECKS: &str = "rwsplit_health_checks_total";
pub(crate) const HEALTH_CHECK_DURATION: &str = "rwsplit_health_check_duration_seconds";
pub(crate) const POOL_CONNECTIONS: &str = "rwsplit_pool_connections";
pub(crate) const POOL_MAX: &str = "rwsplit_pool_max_connections";
pub(crate) const POOL_ACQUIRE_DURATION: &str = "rwsplit_pool_acquire_duration_seconds";
pub(crate) const POOL_ACQUIRE_TIMEOUTS: &str = "rwsplit_pool_acquire_timeouts_total";
pub(crate) const EJECTIONS: &str = "rwsplit_server_ejections_total";
pub(crate) const FAILOVERS: &str = "rwsplit_read_failovers_total";
pub(crate) const SUSPICIONS: &str = "rwsplit_server_suspicions_total";
pub(crate) const PROBES: &str = "rwsplit_server_probes_total";
pub(crate) const PROBE_DURATION: &str = "rwsplit_server_probe_duration_seconds";
pub(crate) const READMISSIONS: &str = "rwsplit_server_readmissions_total";
pub(crate) const TOKENS_ISSUED: &str = "rwsplit_consistency_tokens_issued_total";
pub(crate) const TOKENS_HONOURED: &str = "rwsplit_consistency_tokens_honoured_total";
pub(crate) const TOKENS_REJECTED: &str = "rwsplit_consistency_tokens_rejected_total";
pub(crate) const PRIMARY_MOVES: &str = "rwsplit_primary_moves_total";
pub(crate) const PRIMARY_REFUSALS: &str = "rwsplit_primary_refusals_total";
pub(crate) const PRIMARY_TIMELINE: &str = "rwsplit_primary_timeline";
pub(crate) const SERVER_TIMELINE: &str = "rwsplit_server_timeline";
pub(crate) const SERVER_CAPABILITY: &str = "rwsplit_server_capability";
pub(crate) const SLOW_CHECKS: &str = "rwsplit_server_slow_checks_total";

/// Describes every metric to the installed recorder (once per registry; cheap).
pub(crate) fn describe() {
    let counters = [
        (
            ROUTE_DECISIONS,
            "Servers handed to handlers, by role, reason and route.",
        ),
        (HEALTH_CHECKS, "Health checks by server and result."),
        (
            SLOW_CHECKS,
            "Checks and probes that timed out on a server that answered other work meanwhile: \
             it stayed in service.",
        ),
        (
            POOL_ACQUIRE_TIMEOUTS,
            "Connection acquisitions that timed out (pool exhaustion).",
        ),
        (
            EJECTIONS,
            "Servers taken out of service at once because a connection to them failed.",
        ),
        (
            FAILOVERS,
            "Reads moved to another server because their first choice could not serve.",
        ),
        (
            SUSPICIONS,
            "Servers suspected after a session on them was lost; a probe decides.",
        ),
        (
            PROBES,
            "Probes of suspected or out-of-service servers on a fresh connection, by result.",
        ),
        (
            READMISSIONS,
            "Servers put back in service, by what found them well (probe, check or poll).",
        ),
        (TOKENS_ISSUED, "Consistency tokens issued after writes."),
        (
            TOKENS_HONOURED,
            "Valid consistency tokens applied to a request's reads.",
        ),
        (
            TOKENS_REJECTED,
            "Consistency tokens ignored (treated as absent), by reason.",
        ),
        (
            PRIMARY_MOVES,
            "Times the writes moved to another server that answers as the primary, by server.",
        ),
        (
            PRIMARY_REFUSALS,
            "Checks that found a server answering as a primary that must take nothing (split \
             brain, a former primary, another cluster), by server.",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    let gauges = [
        (
            SERVER_HEALTHY,
            Unit::Count,
            "1 when the server's last health check passed.",
        ),
        (
            REPLICA_IN_ROTATION,
            Unit::Count,
            "1 when reads are sent to the replica.",
        ),
        (
            REPLICAS_IN_ROTATION,
            Unit::Count,
            "Replicas taking reads; 0 means the primary serves them all.",
        ),
        (
            REPLICA_LAG_SECONDS,
            Unit::Seconds,
            "Replication lag in time.",
        ),
        (
            REPLICA_LAG_BYTES,
            Unit::Bytes,
            "Replication lag in bytes of WAL.",
        ),
        (
            REPLICA_WEIGHT,
            Unit::Count,
            "The replica's configured weight.",
        ),
        (
            LAST_SUCCESS_AGE,
            Unit::Seconds,
            "Time since the server last passed a health check.",
        ),
        (
            POOL_CONNECTIONS,
            Unit::Count,
            "Open pool connections, idle or in use.",
        ),
        (
            POOL_MAX,
            Unit::Count,
            "Most connections the server's pool may open.",
        ),
        (
            PRIMARY_TIMELINE,
            Unit::Count,
            "The highest timeline a primary has been seen on.",
        ),
        (
            SERVER_TIMELINE,
            Unit::Count,
            "The timeline the server was last seen on.",
        ),
        (
            SERVER_CAPABILITY,
            Unit::Count,
            "1 when this role may use a monitoring capability on the server, 0 when it may not.",
        ),
    ];
    for (name, unit, help) in gauges {
        describe_gauge!(name, unit, help);
    }
    let histograms = [
        (
            REQUEST_DURATION,
            "Requests through the layer, by serving server and route.",
        ),
        (HEALTH_CHECK_DURATION, "Health check duration."),
        (PROBE_DURATION, "Probe duration, connecting included."),
        (
            POOL_ACQUIRE_DURATION,
            "Time to get a connection from a pool, through rwsplit.",
        ),
    ];
    for (name, help) in histograms {
        describe_histogram!(name, Unit::Seconds, help);
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

/// `rwsplit_route_decisions_total` (one counter per role and reason, registered when first
/// used) and `rwsplit_request_duration_seconds` for one server and route.
pub(crate) struct RouteMetrics {
    server: Arc<str>,
    route: Arc<str>,
    duration: Histogram,
    decisions: [OnceLock<Counter>; Role::COUNT * Reason::COUNT],
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
    pub(crate) fn decided(&self, intent: RouteIntent) {
        let (role, reason) = (intent.role(), intent.reason());
        self.decisions[role.index() * Reason::COUNT + reason.index()]
            .get_or_init(|| {
                counter!(
                    ROUTE_DECISIONS,
                    "server" => Arc::clone(&self.server),
                    "role" => role.as_str(),
                    "reason" => reason.as_str(),
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

/// Records what a health check found and the server's state after it.
pub(crate) fn health_check(server: &Server, result: &'static str, took: Duration) {
    let name = || Arc::clone(&server.name);
    counter!(HEALTH_CHECKS, "server" => name(), "result" => result).increment(1);
    histogram!(HEALTH_CHECK_DURATION, "server" => name()).record(took.as_secs_f64());
}

/// Publishes a server's state gauges: health, lag, weight, pool use.
pub(crate) fn server_state(server: &Server, in_rotation: bool) {
    let name = || Arc::clone(&server.name);
    let role = if server.is_primary() {
        "primary"
    } else {
        "replica"
    };
    gauge!(SERVER_HEALTHY, "server" => name(), "role" => role)
        .set(f64::from(u8::from(server.is_healthy())));
    if let Some(success) = server.last_success() {
        let age = success.elapsed().unwrap_or_default();
        gauge!(LAST_SUCCESS_AGE, "server" => name()).set(age.as_secs_f64());
    }
    let size = server.pool.size();
    let idle = u32::try_from(server.pool.num_idle())
        .unwrap_or(u32::MAX)
        .min(size);
    gauge!(POOL_CONNECTIONS, "server" => name(), "state" => "idle").set(f64::from(idle));
    gauge!(POOL_CONNECTIONS, "server" => name(), "state" => "in_use").set(f64::from(size - idle));
    gauge!(POOL_MAX, "server" => name()).set(f64::from(server.max_connections()));
    if server.timeline() != 0 {
        gauge!(SERVER_TIMELINE, "server" => name()).set(f64::from(server.timeline()));
    }
    if server.is_primary() {
        return;
    }
    gauge!(REPLICA_IN_ROTATION, "server" => name()).set(f64::from(u8::from(in_rotation)));
    gauge!(REPLICA_WEIGHT, "server" => name()).set(f64::from(server.weight()));
    // Unknown lag (unreachable) is left at its last value; `healthy` says why.
    if let Some(lag) = server.lag().filter(|l| *l != Duration::MAX) {
        gauge!(REPLICA_LAG_SECONDS, "server" => name()).set(lag.as_secs_f64());
    }
    if let Some(bytes) = server.lag_bytes() {
        gauge!(REPLICA_LAG_BYTES, "server" => name()).set(bytes as f64);
    }
}

pub(crate) fn replicas_in_rotation(count: usize) {
    gauge!(REPLICAS_IN_ROTATION).set(count as f64);
}

pub(crate) fn acquired(server: &Server, took: Duration) {
    // Registered once per server and kept: registering on every query costs a lookup (and a
    // key copy) in the recorder.
    server
        .acquire_duration
        .get_or_init(|| histogram!(POOL_ACQUIRE_DURATION, "server" => Arc::clone(&server.name)))
        .record(took.as_secs_f64());
}

pub(crate) fn acquire_timeout(server: &Server) {
    counter!(POOL_ACQUIRE_TIMEOUTS, "server" => Arc::clone(&server.name)).increment(1);
}

pub(crate) fn ejected(server: &Server, cause: &'static str) {
    counter!(EJECTIONS, "server" => Arc::clone(&server.name), "cause" => cause).increment(1);
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

pub(crate) fn failover(from: &Server, cause: &'static str) {
    counter!(FAILOVERS, "server" => Arc::clone(&from.name), "cause" => cause).increment(1);
}

pub(crate) fn primary_moved(to: &Arc<str>) {
    counter!(PRIMARY_MOVES, "server" => Arc::clone(to)).increment(1);
}

pub(crate) fn primary_refused(server: &Arc<str>) {
    counter!(PRIMARY_REFUSALS, "server" => Arc::clone(server)).increment(1);
}

/// `rwsplit_server_capability`: what this role may ask `server`, one series per capability.
pub(crate) fn capabilities(server: &Arc<str>, capabilities: Capabilities) {
    for capability in Capability::ALL {
        let value = f64::from(u8::from(capabilities.has(capability)));
        gauge!(SERVER_CAPABILITY, "server" => Arc::clone(server), "capability" => capability.as_str())
            .set(value);
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
pub(crate) fn forget(server: &Server) {
    let name = || Arc::clone(&server.name);
    gauge!(SERVER_HEALTHY, "server" => name(), "role" => "replica").set(0.0);
    gauge!(REPLICA_IN_ROTATION, "server" => name()).set(0.0);
    gauge!(REPLICA_WEIGHT, "server" => name()).set(0.0);
}

/// A registry's token counters, registered on first use and kept.
#[derive(Debug, Default)]
pub(crate) struct TokenCounters {
    issued: OnceLock<Counter>,
    honoured: OnceLock<Counter>,
}

impl TokenCounters {
    pub(crate) fn issued(&self) {
        self.issued
            .get_or_init(|| counter!(TOKENS_ISSUED))
            .increment(1);
    }

    pub(crate) fn honoured(&self) {
        self.honoured
            .get_or_init(|| counter!(TOKENS_HONOURED))
            .increment(1);
    }
}

pub(crate) fn token_rejected(reason: TokenRejection) {
    counter!(TOKENS_REJECTED, "reason" => reason.as_str()).increment(1);
}
