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

mod consistency;
mod duration;
mod env;
mod url;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

pub use consistency::ConsistencyConfig;

/// Where to find the primary, its replicas, and how to route between them.
///
/// See the [module docs](crate::Config) for an example. Defaults are listed on each setter.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) primary: ServerConfig,
    pub(crate) replicas: Vec<ReplicaConfig>,
    pub(crate) separation: bool,
    pub(crate) replica_share: u8,
    pub(crate) lag_threshold: Duration,
    pub(crate) lag_bytes_threshold: Option<u64>,
    pub(crate) health_check_interval: Duration,
    pub(crate) health_check_timeout: Duration,
    pub(crate) failover_on_pool_exhausted: bool,
    pub(crate) roles: Roles,
    pub(crate) replica_read_only: ReplicaReadOnly,
    pub(crate) primary_candidates: Option<Vec<String>>,
    pub(crate) consistency: ConsistencyConfig,
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

/// One read replica: where it is, its weight, and what it does not inherit from the primary.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) weight: u32,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) database: Option<String>,
    pub(crate) ssl_mode: Option<PgSslMode>,
    pub(crate) ssl_root_cert: Option<PathBuf>,
    pub(crate) pool: PoolOverrides,
    /// Connection settings it was made from ([`ReplicaConfig::from_connect_options`]).
    pub(crate) base: Option<Base>,
}

#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: String,
    pub(crate) password: Option<Secret>,
    pub(crate) database: String,
    pub(crate) ssl_mode: PgSslMode,
    pub(crate) ssl_root_cert: Option<PathBuf>,
    pub(crate) pool: PoolConfig,
    /// Connection settings it was made from (a URL, [`Config::from_connect_options`]): what
    /// the fields above do not name (a password, TLS files, `options`, the statement cache)
    /// comes from here.
    pub(crate) base: Option<Base>,
}

/// sqlx connection settings a configuration was made from. They may hold a password, so
/// `Debug` shows none of them.
#[derive(Clone)]
pub(crate) struct Base(pub(crate) PgConnectOptions);

impl fmt::Debug for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgConnectOptions { .. }")
    }
}

/// Pool limits of one server.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PoolConfig {
    pub(crate) max_connections: u32,
    pub(crate) max_idle: Option<u32>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
}

/// The pool limits a replica sets for itself; the rest come from the primary.
#[derive(Clone, Debug, Default)]
pub(crate) struct PoolOverrides {
    pub(crate) max_connections: Option<u32>,
    pub(crate) max_idle: Option<u32>,
    pub(crate) max_lifetime: Option<Option<Duration>>,
    pub(crate) idle_timeout: Option<Option<Duration>>,
    pub(crate) connect_timeout: Option<Duration>,
}

/// The longest any duration in the configuration may be. Longer is a mistake (a unit left
/// out, a number in milliseconds read as seconds), and would overflow the timers it sets.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Refuses `duration` at `key` when it is longer than `max`.
pub(crate) fn at_most(
    key: &str,
    duration: Option<Duration>,
    max: Duration,
) -> Result<(), ConfigError> {
    match duration {
        Some(duration) if duration > max => Err(ConfigError::Invalid {
            key: key.to_owned(),
            value: format!("{duration:?}"),
            reason: format!("must be at most {max:?}"),
        }),
        _ => Ok(()),
    }
}

/// A password: usable to connect, never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

/// The name the primary goes by in headers, logs and metrics. No replica may take it.
pub(crate) const PRIMARY_NAME: &str = "primary";

const DEFAULT_PORT: u16 = 5432;

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
            lag_threshold: Duration::from_secs(10),
            lag_bytes_threshold: Some(16 * 1024 * 1024),
            health_check_interval: Duration::from_secs(30),
            health_check_timeout: Duration::from_secs(5),
            failover_on_pool_exhausted: false,
            roles: Roles::Observed,
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
    /// fails. Inherited by replicas. Default 5 seconds: long enough for a TLS handshake over a
    /// slow link, short enough that a dead server does not hold requests for long.
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

    /// Checks the settings, returning the configuration unchanged when they hold together.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |key: &str, value: &dyn fmt::Display, reason: &str| ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_string(),
            reason: reason.to_owned(),
        };
        if self.primary.host.trim().is_empty() {
            return Err(ConfigError::Missing {
                key: "db.host".to_owned(),
                reason: "the primary's host is required".to_owned(),
            });
        }
        if self.primary.port == 0 {
            return Err(invalid("db.port", &0, "a port is 1 to 65535"));
        }
        if self.primary.pool.max_connections == 0 {
            return Err(invalid(
                "db.maxConnections",
                &0,
                "a pool needs at least 1 connection",
            ));
        }
        if self.replica_share > 100 {
            return Err(invalid(
                "db.readReplicaShare",
                &self.replica_share,
                "must be a whole percentage from 0 to 100",
            ));
        }
        if self.lag_threshold.is_zero() {
            return Err(invalid(
                "db.replicaLagThreshold",
                &"0",
                "must be more than 0: every replica is at least a moment behind",
            ));
        }
        if self.health_check_interval < Duration::from_millis(10) {
            return Err(invalid(
                "db.healthCheckInterval",
                &format_args!("{:?}", self.health_check_interval),
                "must be at least 10ms",
            ));
        }
        if self.health_check_timeout.is_zero() {
            return Err(invalid(
                "db.healthCheckTimeout",
                &"0",
                "must be more than 0",
            ));
        }
        if self.primary.pool.connect_timeout.is_zero() {
            return Err(invalid("db.connectTimeout", &"0", "must be more than 0"));
        }
        let pool = &self.primary.pool;
        let mut durations = vec![
            (
                "db.replicaLagThreshold".to_owned(),
                Some(self.lag_threshold),
            ),
            (
                "db.healthCheckInterval".to_owned(),
                Some(self.health_check_interval),
            ),
            (
                "db.healthCheckTimeout".to_owned(),
                Some(self.health_check_timeout),
            ),
            ("db.connectTimeout".to_owned(), Some(pool.connect_timeout)),
            ("db.connMaxLifetime".to_owned(), pool.max_lifetime),
            ("db.connMaxIdleTime".to_owned(), pool.idle_timeout),
        ];
        for (i, replica) in self.replicas.iter().enumerate() {
            let key = |field: &str| format!("db.readReplicas[{i}].{field}");
            let pool = &replica.pool;
            durations.push((key("connectTimeout"), pool.connect_timeout));
            durations.push((key("connMaxLifetime"), pool.max_lifetime.flatten()));
            durations.push((key("connMaxIdleTime"), pool.idle_timeout.flatten()));
        }
        for (key, duration) in durations {
            at_most(&key, duration, MAX_DURATION)?;
        }
        self.consistency.validate()?;
        for (i, replica) in self.replicas.iter().enumerate() {
            let key = |field: &str| format!("db.readReplicas[{i}].{field}");
            if replica.name.trim().is_empty() {
                return Err(ConfigError::Missing {
                    key: key("name"),
                    reason: "every replica needs a name (it shows in logs, metrics and headers)"
                        .to_owned(),
                });
            }
            if replica.name == PRIMARY_NAME {
                return Err(invalid(
                    &key("name"),
                    &replica.name,
                    "`primary` names the primary; give the replica another name",
                ));
            }
            if let Some(j) = self.replicas[..i]
                .iter()
                .position(|r| r.name == replica.name)
            {
                return Err(invalid(
                    &key("name"),
                    &replica.name,
                    &format!("db.readReplicas[{j}] has the same name; names must be unique"),
                ));
            }
            if replica.host.trim().is_empty() {
                return Err(ConfigError::Missing {
                    key: key("host"),
                    reason: "every replica needs a host".to_owned(),
                });
            }
            if replica.port == 0 {
                return Err(invalid(&key("port"), &0, "a port is 1 to 65535"));
            }
            if replica.weight > MAX_WEIGHT {
                return Err(invalid(
                    &key("weight"),
                    &replica.weight,
                    &format!("weights are 0 to {MAX_WEIGHT}"),
                ));
            }
            if replica.pool.max_connections == Some(0) {
                return Err(invalid(
                    &key("maxConnections"),
                    &0,
                    "a pool needs at least 1 connection",
                ));
            }
        }
        for (i, candidate) in self.primary_candidates.iter().flatten().enumerate() {
            let known =
                candidate == PRIMARY_NAME || self.replicas.iter().any(|r| r.name == *candidate);
            if !known {
                let names: Vec<&str> = std::iter::once(PRIMARY_NAME)
                    .chain(self.replicas.iter().map(|r| r.name.as_str()))
                    .collect();
                return Err(invalid(
                    &format!("db.primaryCandidates[{i}]"),
                    candidate,
                    &format!(
                        "names no configured server (`primary` or a replica: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(self)
    }

    /// What is legal but probably not meant: logged as warnings when a registry starts.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let detection = self.detection_delay();
        if let Some(pin) = self.consistency.max_pin
            && self.consistency.mode == crate::consistency::StickyMode::Lsn
            && pin < detection
        {
            warnings.push(format!(
                "db.consistency.maxPin is {pin:?}, shorter than a lagging replica may stay in \
                 rotation (replicaLagThreshold + 2 x pollInterval + healthCheckTimeout = \
                 {detection:?}): tokens are honoured for {detection:?}"
            ));
        }
        if self.separation && self.replicas.is_empty() {
            warnings.push(
                "enableReadWriteSeparation is true but readReplicas is empty: every read goes \
                 to the primary"
                    .to_owned(),
            );
        }
        if !self.separation && !self.replicas.is_empty() {
            warnings.push(format!(
                "{} read replica(s) configured but enableReadWriteSeparation is false: every \
                 read goes to the primary",
                self.replicas.len()
            ));
        }
        if self.separation
            && !self.replicas.is_empty()
            && self.replicas.iter().all(|r| r.weight == 0)
        {
            warnings.push(
                "every read replica has weight 0 (draining): every read goes to the primary"
                    .to_owned(),
            );
        }
        if self.separation
            && self.consistency.mode != crate::consistency::StickyMode::Off
            && self.consistency.signing_key.is_none()
        {
            warnings.push(
                "db.consistency.signingKey is not set: this process signs read-your-writes \
                 tokens with a random key of its own, so they survive neither a restart nor a \
                 trip to another app instance (whose reads may then miss a client's own write); \
                 set the same key on every instance"
                    .to_owned(),
            );
        }
        warnings
    }

    pub(crate) fn primary_options(&self) -> PgConnectOptions {
        self.primary
            .connect_options(&self.primary.host, self.primary.port)
    }

    /// Every configured server, the primary's `host` first: the candidates for the primary
    /// role when roles are observed, and what each is as a replica.
    pub(crate) fn members(&self) -> Vec<Member> {
        let primary = &self.primary;
        let first = Member {
            name: format!("{}:{}", primary.host, primary.port),
            configured_primary: true,
            candidate: self.is_candidate(PRIMARY_NAME),
            as_replica: ReplicaConfig::new(
                format!("{}:{}", primary.host, primary.port),
                primary.host.clone(),
            )
            .port(primary.port),
        };
        let replicas = self.replicas.iter().map(|replica| Member {
            name: replica.name.clone(),
            configured_primary: false,
            candidate: self.is_candidate(&replica.name),
            as_replica: replica.clone(),
        });
        std::iter::once(first).chain(replicas).collect()
    }

    fn is_candidate(&self, name: &str) -> bool {
        match &self.primary_candidates {
            None => true,
            Some(list) => list.iter().any(|c| c == name),
        }
    }

    /// Connection settings for writing to `member`: the primary's credentials, database and
    /// TLS settings at the member's address (and its own TLS settings, if it has them).
    pub(crate) fn primary_options_at(&self, member: &Member) -> PgConnectOptions {
        if member.configured_primary {
            return self.primary_options();
        }
        let replica = &member.as_replica;
        let mut server = self.primary.clone();
        if let Some(mode) = replica.ssl_mode {
            server.ssl_mode = mode;
        }
        if replica.ssl_root_cert.is_some() {
            server.ssl_root_cert = replica.ssl_root_cert.clone();
        }
        server.connect_options(&replica.host, replica.port)
    }

    pub(crate) fn replica_options(&self, replica: &ReplicaConfig) -> PgConnectOptions {
        let mut server = self.primary.clone();
        if replica.base.is_some() {
            // Made from settings of its own: nothing of the primary's but what is set after.
            server.base = replica.base.clone();
            server.password = None;
            server.ssl_root_cert = None;
        }
        if let Some(username) = &replica.username {
            server.username = username.clone();
        }
        if replica.password.is_some() {
            server.password = replica.password.clone();
        }
        if let Some(database) = &replica.database {
            server.database = database.clone();
        }
        if let Some(mode) = replica.ssl_mode {
            server.ssl_mode = mode;
        }
        if replica.ssl_root_cert.is_some() {
            server.ssl_root_cert = replica.ssl_root_cert.clone();
        }
        // Read-only sessions are the server's to set up (see `ReplicaReadOnly`).
        server.connect_options(&replica.host, replica.port)
    }

    pub(crate) fn replica_pool(&self, replica: &ReplicaConfig) -> PoolConfig {
        let base = &self.primary.pool;
        let o = &replica.pool;
        PoolConfig {
            max_connections: o.max_connections.unwrap_or(base.max_connections),
            max_idle: o.max_idle.or(base.max_idle),
            max_lifetime: o.max_lifetime.unwrap_or(base.max_lifetime),
            idle_timeout: o.idle_timeout.unwrap_or(base.idle_timeout),
            connect_timeout: o.connect_timeout.unwrap_or(base.connect_timeout),
        }
    }
}

/// One configured server, as a candidate for the primary role and as a replica.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    /// A replica's name; the configured primary's `host:port`.
    pub(crate) name: String,
    /// Whether this is the primary's `host`.
    pub(crate) configured_primary: bool,
    /// Whether it may take the writes (`primaryCandidates`).
    pub(crate) candidate: bool,
    /// Its settings as a replica (the configured primary's: its address, weight 1).
    pub(crate) as_replica: ReplicaConfig,
}

/// The largest weight a replica may have.
pub(crate) const MAX_WEIGHT: u32 = 10_000;

impl ServerConfig {
    fn connect_options(&self, host: &str, port: u16) -> PgConnectOptions {
        let (base, named) = match &self.base {
            Some(Base(options)) => (options.clone(), options.get_application_name().is_some()),
            None => (PgConnectOptions::new_without_pgpass(), false),
        };
        let mut options = base
            .host(host)
            .port(port)
            .username(&self.username)
            .database(&self.database)
            .ssl_mode(self.ssl_mode);
        if !named {
            options = options.application_name("rwsplit");
        }
        if let Some(password) = &self.password {
            options = options.password(&password.0);
        }
        if let Some(cert) = &self.ssl_root_cert {
            options = options.ssl_root_cert(cert);
        }
        options
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 10,
            max_idle: None,
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl ReplicaConfig {
    /// A replica called `name` at `host`, port 5432, weight 1, inheriting everything else from
    /// the primary. The name shows in logs, metrics, the status endpoint and the
    /// `x-db-target` header.
    pub fn new(name: impl Into<String>, host: impl Into<String>) -> ReplicaConfig {
        ReplicaConfig {
            name: name.into(),
            host: host.into(),
            port: DEFAULT_PORT,
            weight: 1,
            username: None,
            password: None,
            database: None,
            ssl_mode: None,
            ssl_root_cert: None,
            pool: PoolOverrides::default(),
            base: None,
        }
    }

    /// The replica's port. Default `5432`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Its share of reads relative to the other replicas. Default `1`; `0` takes it out of new
    /// traffic (draining) while it stays checked.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Role to connect as. Default: the primary's.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Password. Default: the primary's. Never printed.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Database. Default: the primary's.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// TLS mode. Default: the primary's.
    pub fn ssl_mode(mut self, mode: PgSslMode) -> Self {
        self.ssl_mode = Some(mode);
        self
    }

    /// Most connections in this replica's pool. Default: the primary's `maxConnections`.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.pool.max_connections = Some(max);
        self
    }

    /// Most idle connections this replica's pool keeps. Default: the primary's.
    pub fn max_idle_connections(mut self, max: u32) -> Self {
        self.pool.max_idle = Some(max);
        self
    }

    /// The replica's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The replica's weight.
    pub fn get_weight(&self) -> u32 {
        self.weight
    }
}

/// A configuration that cannot be used, saying which key and value and why.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key holds a value it cannot take.
    Invalid {
        /// The key, as a path: `db.readReplicas[1].weight`.
        key: String,
        /// The value as written (never a password).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required key is missing.
    Missing {
        /// The key, as a path.
        key: String,
        /// Why it is needed.
        reason: String,
    },
    /// A key that rwsplit does not know (often a typo).
    UnknownKey {
        /// The key, as a path.
        key: String,
        /// The keys allowed there.
        expected: Vec<String>,
    },
    /// A `${VAR}` placeholder could not be replaced.
    Placeholder {
        /// 1-based line of the placeholder.
        line: usize,
        /// The placeholder as written.
        placeholder: String,
        /// What is wrong.
        reason: String,
    },
    /// The text is not YAML, or not shaped as a configuration.
    Syntax(String),
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid { key, value, reason } => {
                write!(f, "invalid configuration: `{key}` is `{value}`: {reason}")
            }
            ConfigError::Missing { key, reason } => {
                write!(f, "invalid configuration: `{key}` is missing: {reason}")
            }
            ConfigError::UnknownKey { key, expected } => write!(
                f,
                "invalid configuration: unknown key `{key}` (expected one of: {})",
                expected.join(", ")
            ),
            ConfigError::Placeholder {
                line,
                placeholder,
                reason,
            } => write!(
                f,
                "invalid configuration: line {line}: placeholder `{placeholder}`: {reason}"
            ),
            ConfigError::Syntax(message) => write!(f, "invalid configuration: {message}"),
            ConfigError::Io { path, source } => {
                write!(f, "cannot read configuration {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
