//! Configuration: the `db:` YAML block our users already run, or the same built in code.
//!
//! A [`Config`] describes the primary, its read replicas and how reads are spread over them.
//! Read it from YAML with [`Config::from_yaml`] (values are taken as written, and placeholders
//! such as `${DB_HOST}` and `${DB_PORT:-5432}` are expanded from the environment inside each
//! value), or build it with
//! [`Config::new`] and its setters. Either way it is validated when it is made, and every error
//! names the key and the bad value.
//!
//! ```
//! use std::time::Duration;
//! use rwsplit::{Config, ReplicaConfig};
//!
//! let yaml = r#"
//! db:
//!   host: ${DB_HOST:-127.0.0.1}
//!   port: ${DB_PRIMARY_PORT:-5432}
//!   username: app
//!   password: "${DB_PASSWORD:-dev-only}"
//!   database: shop
//!   maxConnections: 20
//!   enableReadWriteSeparation: true
//!   replicaLagThreshold: 10
//!   healthCheckInterval: 500ms
//!   readReplicas:
//!     - { name: replica1, host: 127.0.0.1, port: 5433, weight: 2 }
//!     - { name: replica2, host: 127.0.0.1, port: 5434, weight: 1 }
//! "#;
//! let from_yaml = Config::from_yaml(yaml)?;
//!
//! let in_code = Config::new("127.0.0.1")
//!     .username("app")
//!     .password("dev-only")
//!     .database("shop")
//!     .max_connections(20)
//!     .read_write_separation(true)
//!     .replica_lag_threshold(Duration::from_secs(10))
//!     .health_check_interval(Duration::from_millis(500))
//!     .replica(ReplicaConfig::new("replica1", "127.0.0.1").port(5433).weight(2))
//!     .replica(ReplicaConfig::new("replica2", "127.0.0.1").port(5434).weight(1))
//!     .validate()?;
//!
//! assert_eq!(from_yaml.replicas().len(), in_code.replicas().len());
//! // The password never shows in Debug output.
//! assert!(!format!("{from_yaml:?}").contains("dev-only"));
//! # Ok::<(), rwsplit::ConfigError>(())
//! ```

mod connection;
mod consistency;
mod discovery;
mod duration;
mod env;
mod error;
pub(crate) mod live;
mod reads;
mod replica;
mod url;
mod validate;
mod yaml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::postgres::PgSslMode;

pub(crate) use connection::{Base, PoolConfig, PoolOverrides, Secret, ServerConfig};
pub use consistency::{ConsistencyConfig, StickyMode};
pub use discovery::{DiscoveryConfig, Records};
pub use error::ConfigError;
pub use reads::{GroupFallback, LoadBalancing};
pub(crate) use replica::Member;
pub use replica::ReplicaConfig;
pub(crate) use validate::{MAX_DURATION, MAX_WEIGHT, at_most};

/// Where to find the primary, its replicas, and how to route between them.
///
/// See the [module docs](crate::Config) for an example. Defaults are listed on each setter.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) primary: ServerConfig,
    pub(crate) replicas: Vec<ReplicaConfig>,
    pub(crate) separation: bool,
    pub(crate) replica_share: u8,
    pub(crate) primary_read_weight: u32,
    pub(crate) load_balancing: LoadBalancing,
    /// `replicaGroups`: each group's fallback, where one is set.
    pub(crate) groups: Vec<(String, GroupFallback)>,
    pub(crate) discovery: Vec<DiscoveryConfig>,
    pub(crate) lag_threshold: Duration,
    pub(crate) lag_bytes_threshold: Option<u64>,
    pub(crate) max_staleness: Option<Duration>,
    pub(crate) health_check_interval: Duration,
    pub(crate) health_check_timeout: Duration,
    pub(crate) failover_on_pool_exhausted: bool,
    pub(crate) roles: Roles,
    pub(crate) promotion: Promotion,
    pub(crate) replica_read_only: ReplicaReadOnly,
    pub(crate) primary_candidates: Option<Vec<String>>,
    pub(crate) consistency: ConsistencyConfig,
    pub(crate) replicas_per_instance: Option<usize>,
    pub(crate) instance_id: Option<String>,
}

/// How the registry knows which server is the primary (`db.roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Roles {
    /// The primary is whichever configured server answers as one (`pg_is_in_recovery()` is
    /// false), looked for at start and whenever the primary fails: writes follow a promotion
    /// without a restart, and a former primary that comes back as a standby serves reads. Two
    /// servers answering as primary: the one on the higher timeline takes the writes. The
    /// default.
    #[default]
    Observed,
    /// The primary is the configured `host` and nothing else: a promotion elsewhere is not
    /// followed (writes fail with 503 until the configuration names the new primary).
    Configured,
}

/// When a server found answering as a primary takes the writes (`db.promotion`), with roles
/// observed. Either way it must be of the same cluster (system identifier known and equal) and
/// on a timeline above the one the writes are on, and not forked from an older one.
///
/// Choose [`Confirmed`](Promotion::Confirmed) unless an HA manager fences the old primary
/// before it promotes (Patroni, CloudNativePG, pg_auto_failover, a managed service's
/// failover): then [`Fenced`](Promotion::Fenced) moves the writes within a check instead of
/// after the old primary's next failed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Promotion {
    /// Only once the current primary stops being one: out of service, or answering as a
    /// standby. A second server answering as a primary while the current one is in service and
    /// still answers as one (a replica promoted to detach a copy, a restored clone) takes
    /// nothing: it is a split brain, logged as an error at each check and counted in
    /// `rwsplit_primary_refusals_total`. The default.
    #[default]
    Confirmed,
    /// At once, when it is on a higher timeline than the current primary, even while that one
    /// still answers: for deployments whose HA manager fences the old primary.
    Fenced,
}

/// How replica sessions are kept read-only (`db.replicaReadOnly`), so that a write through a
/// `DbRead` fails the same way on every server, even on a replica promoted while in rotation.
///
/// A connection pooler between rwsplit and the replicas decides which work: PgBouncer refuses
/// the `options` startup parameter, and in transaction pooling a session setting does not
/// follow the client from one transaction to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplicaReadOnly {
    /// `StartupOption`, and `SessionSet` on a replica that refuses the startup parameter
    /// (PgBouncer, some proxies), chosen when its first connection is refused and logged once.
    /// The default.
    #[default]
    Auto,
    /// `default_transaction_read_only = on` as a startup option: no round trip. Straight to
    /// PostgreSQL, or a pooler that passes `options`.
    StartupOption,
    /// `SET default_transaction_read_only = on` on each new connection: behind a pooler in
    /// session pooling (PgBouncer's `pool_mode = session`).
    SessionSet,
    /// Each `DbRead` query on the replica runs in `BEGIN READ ONLY` (as on the primary): behind
    /// a pooler in transaction pooling; two more round trips a query.
    Transaction,
    /// Nothing of rwsplit's: the standby refuses writes itself. Behind transaction pooling when
    /// the extra round trips matter; a replica promoted while in rotation would accept a
    /// `DbRead`'s write until the next check takes it out.
    Standby,
}

/// The name the primary goes by in headers, logs and metrics. No replica may take it.
pub(crate) const PRIMARY_NAME: &str = "primary";

pub(crate) const DEFAULT_PORT: u16 = 5432;

impl Config {
    /// Starts a configuration whose primary is at `host`, with every other setting at its
    /// default. Finish with [`validate`](Self::validate) or hand it to
    /// [`Registry::connect`](crate::Registry::connect), which validates it.
    pub fn new(host: impl Into<String>) -> Config {
        Config {
            primary: ServerConfig {
                host: host.into(),
                port: DEFAULT_PORT,
                username: "postgres".to_owned(),
                password: None,
                database: "postgres".to_owned(),
                ssl_mode: PgSslMode::Prefer,
                ssl_root_cert: None,
                pool: PoolConfig::default(),
                base: None,
            },
            replicas: Vec::new(),
            separation: false,
            replica_share: 100,
            primary_read_weight: 0,
            load_balancing: LoadBalancing::RoundRobin,
            groups: Vec::new(),
            discovery: Vec::new(),
            lag_threshold: Duration::from_secs(10),
            lag_bytes_threshold: Some(16 * 1024 * 1024),
            max_staleness: Some(Duration::from_secs(60)),
            health_check_interval: Duration::from_secs(30),
            health_check_timeout: Duration::from_secs(5),
            failover_on_pool_exhausted: false,
            roles: Roles::Observed,
            promotion: Promotion::Confirmed,
            replicas_per_instance: None,
            instance_id: None,
            replica_read_only: ReplicaReadOnly::Auto,
            primary_candidates: None,
            consistency: ConsistencyConfig::default(),
        }
    }

    /// Reads the `db:` block of a YAML document. Each value is read as the text written (so
    /// `mode: off` and `password: no` keep their text), its `${VAR}` and `${VAR:-default}`
    /// placeholders are expanded from the process environment, and only then is it typed:
    /// whatever a variable holds is taken literally. Keys outside `db:` are ignored, so the
    /// application's whole configuration file can be passed.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_with_env(text, |name| std::env::var(name).ok())
    }

    /// As [`from_yaml`](Self::from_yaml), taking variables from `lookup` instead of the
    /// process environment.
    pub fn from_yaml_with_env(
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        yaml::parse(text, &lookup)?.validate()
    }

    /// Reads a YAML file, as [`from_yaml`](Self::from_yaml).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        Config::from_yaml(&text)
    }

    /// The primary's port. Default `5432`.
    pub fn port(mut self, port: u16) -> Self {
        self.primary.port = port;
        self
    }

    /// The role to connect as, on the primary and on replicas that do not set their own.
    /// Default `postgres`.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.primary.username = username.into();
        self
    }

    /// The password, inherited by replicas that do not set their own. Default none. It is
    /// never printed: `Debug` shows `[redacted]`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.primary.password = Some(Secret(password.into()));
        self
    }

    /// The database, inherited by replicas. Default `postgres`.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.primary.database = database.into();
        self
    }

    /// TLS mode, inherited by replicas. Default [`PgSslMode::Prefer`], as libpq's.
    pub fn ssl_mode(mut self, mode: PgSslMode) -> Self {
        self.primary.ssl_mode = mode;
        self
    }

    /// Root certificate for `verify-ca` and `verify-full`, inherited by replicas. Default none.
    pub fn ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.primary.ssl_root_cert = Some(path.into());
        self
    }

    /// Most connections one server's pool opens, inherited by replicas. Default `10`, as
    /// sqlx's; size it so that (instances x this) stays under the server's `max_connections`.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.primary.pool.max_connections = max;
        self
    }

    /// Most idle connections a pool keeps; the surplus is closed at each health check.
    /// Inherited by replicas. Default: no limit below `max_connections`.
    pub fn max_idle_connections(mut self, max: u32) -> Self {
        self.primary.pool.max_idle = Some(max);
        self
    }

    /// Connections older than this are closed and replaced. Inherited by replicas. Default
    /// 30 minutes, so that servers see their connections renewed; `None` keeps them forever.
    pub fn conn_max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.primary.pool.max_lifetime = lifetime;
        self
    }

    /// Connections idle for this long are closed. Inherited by replicas. Default 10 minutes;
    /// `None` keeps them.
    pub fn conn_max_idle_time(mut self, idle: Option<Duration>) -> Self {
        self.primary.pool.idle_timeout = idle;
        self
    }

    /// How long getting a connection may take, connecting included, before the attempt
    /// fails; on a replica, also how long its reads may go unanswered, with nothing else
    /// answered, before it is probed. Inherited by replicas. Default 5 seconds: long enough for
    /// a TLS handshake over a slow link, short enough that a dead server does not hold requests
    /// for long.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.primary.pool.connect_timeout = timeout;
        self
    }

    /// Sends reads to replicas when `true`; when `false` every request uses the primary and
    /// handlers notice nothing. Default `false`, so that a configuration listing replicas can
    /// be deployed before reads are switched over.
    pub fn read_write_separation(mut self, enabled: bool) -> Self {
        self.separation = enabled;
        self
    }

    /// The share of reads that may go to a replica which do go to one, in percent: the rest
    /// read from the primary. Default `100`. Raise it step by step (0, 10, 50, 100) to roll
    /// separation out gradually; each request is decided on its own, without a lock, and
    /// [`Registry::reload`](crate::Registry::reload) changes it live. Values over 100 are
    /// refused by [`validate`](Self::validate).
    pub fn read_replica_share(mut self, percent: u8) -> Self {
        self.replica_share = percent;
        self
    }

    /// The primary's weight in the read schedule, against the replicas' weights: with `1` and
    /// two replicas of weight 1, a third of plain reads run on the primary (read-only, as
    /// every `DbRead`). Default `0`: the primary takes reads only when no replica can.
    ///
    /// Only plain reads, and only while the primary is in service, some replica is in rotation
    /// and the primary's pool has a connection to spare: a primary busy with writes (its pool
    /// full, none idle) sends its share to the replicas, so writes never queue behind reads.
    /// Reads with a token, held by a barrier or a rollout, or failing over are routed as
    /// without it. [`Registry::reload`](crate::Registry::reload) changes it live; over 10,000
    /// is refused by [`validate`](Self::validate).
    pub fn primary_read_weight(mut self, weight: u32) -> Self {
        self.primary_read_weight = weight;
        self
    }

    /// A replica further behind the primary than this (in time) is taken out of rotation until
    /// it catches up. Default 10 seconds.
    pub fn replica_lag_threshold(mut self, threshold: Duration) -> Self {
        self.lag_threshold = threshold;
        self
    }

    /// A replica further behind than this many bytes of WAL is taken out of rotation; `None`
    /// checks time only. Default 16 MiB (one WAL segment).
    pub fn replica_lag_bytes_threshold(mut self, bytes: Option<u64>) -> Self {
        self.lag_bytes_threshold = bytes;
        self
    }

    /// While every replica lags past the threshold, how stale a replica may be and still
    /// serve reads that carry no token (`replicaMaxStaleness`): the least-lagging one within
    /// it serves them (reason `stale`), and the primary keeps only the writes and the reads
    /// that must see a client's own write, instead of taking every read at once. `None`: every
    /// read goes to the primary then. Default 60 seconds.
    pub fn replica_max_staleness(mut self, staleness: Option<Duration>) -> Self {
        self.max_staleness = staleness;
        self
    }

    /// How often each server is checked (reachable, role, lag). Default 30 seconds; values
    /// well under a second work and make failures and recoveries show sooner.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = interval;
        self
    }

    /// How long one check may take before the server counts as failed. Default 5 seconds.
    pub fn health_check_timeout(mut self, timeout: Duration) -> Self {
        self.health_check_timeout = timeout;
        self
    }

    /// Whether a read whose replica has no free connection (its pool is at
    /// `maxConnections`, none idle) goes to the next replica in rotation (never the primary)
    /// instead of queueing for up to `connectTimeout`. Default `false`: under a steady high load
    /// pools are momentarily full all the time, and moving those reads skews the weights; turn
    /// it on when replicas have spare capacity and queueing is what hurts.
    pub fn failover_on_pool_exhausted(mut self, enabled: bool) -> Self {
        self.failover_on_pool_exhausted = enabled;
        self
    }

    /// How replica sessions are kept read-only (`replicaReadOnly`): see [`ReplicaReadOnly`].
    /// Default [`Auto`](ReplicaReadOnly::Auto): a startup option, or a `SET` after connect where
    /// a pooler refuses it. Behind transaction pooling, choose
    /// [`Transaction`](ReplicaReadOnly::Transaction) or [`Standby`](ReplicaReadOnly::Standby).
    pub fn replica_read_only(mut self, means: ReplicaReadOnly) -> Self {
        self.replica_read_only = means;
        self
    }

    /// How the primary is known: observed among the configured servers (the default), or
    /// the configured `host` only. See [`Roles`].
    pub fn roles(mut self, roles: Roles) -> Self {
        self.roles = roles;
        self
    }

    /// When a server found answering as a primary takes the writes: once the current
    /// primary stops being one (the default), or at once on a higher timeline when an HA
    /// manager fences the old primary. See [`Promotion`].
    pub fn promotion(mut self, promotion: Promotion) -> Self {
        self.promotion = promotion;
        self
    }

    /// The servers that may take the writes when roles are observed: `primary` (the
    /// configured `host`) and replica names. Default: every configured server. A server not
    /// listed that answers as a primary takes nothing (an error is logged at each check).
    pub fn primary_candidates<I, S>(mut self, candidates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.primary_candidates = Some(candidates.into_iter().map(Into::into).collect());
        self
    }

    /// Connects this instance to only `count` of the replicas (`replicasPerInstance`), chosen
    /// by weighted rendezvous hashing of [`instance_id`](Self::instance_id) with the replicas'
    /// names: a fleet of N instances spreads over the replicas by weight, each instance keeps
    /// the same ones across restarts, and N instances x R replicas do not each hold a pool. The
    /// replicas an instance does not use are neither connected nor checked by it (nor watched
    /// for a promotion). Default: every replica.
    pub fn replicas_per_instance(mut self, count: usize) -> Self {
        self.replicas_per_instance = Some(count);
        self
    }

    /// This instance's name for [`replicas_per_instance`](Self::replicas_per_instance)
    /// (`instanceId`). Default: the `HOSTNAME` environment variable, else `/etc/hostname`,
    /// else the process id.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// This instance's name, as [`instance_id`](Self::instance_id) describes.
    pub fn instance_id_setting(&self) -> String {
        if let Some(id) = &self.instance_id {
            return id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("pid-{}", std::process::id()))
    }

    /// Read-your-writes settings. Default [`ConsistencyConfig::lsn`] with a per-process key.
    pub fn consistency(mut self, consistency: ConsistencyConfig) -> Self {
        self.consistency = consistency;
        self
    }

    /// Adds a read replica.
    pub fn replica(mut self, replica: ReplicaConfig) -> Self {
        self.replicas.push(replica);
        self
    }

    /// Whether reads go to replicas.
    pub fn separation_enabled(&self) -> bool {
        self.separation
    }

    /// The configured replicas.
    pub fn replicas(&self) -> &[ReplicaConfig] {
        &self.replicas
    }

    /// The health-check interval.
    pub fn health_interval(&self) -> Duration {
        self.health_check_interval
    }

    /// How the primary is known (`roles`).
    pub fn roles_setting(&self) -> Roles {
        self.roles
    }

    /// When a server found answering as a primary takes the writes (`promotion`).
    pub fn promotion_setting(&self) -> Promotion {
        self.promotion
    }

    /// The servers that may take the writes (`primaryCandidates`), when listed.
    pub fn primary_candidates_setting(&self) -> Option<&[String]> {
        self.primary_candidates.as_deref()
    }

    /// The longest a replica that lacks a write stays in rotation after it, when positions
    /// are polled; tokens are honoured at least that long.
    pub(crate) fn detection_delay(&self) -> Duration {
        self.consistency
            .detection_delay(self.lag_threshold, self.health_check_timeout)
    }
}
