//! Whether a configuration holds together: every value in range, names unique, candidates
//! known; and what is legal but probably not meant, said as warnings at start.

use std::fmt;
use std::time::Duration;

use super::connection::tls_warning;
use super::live::{self, path};
use super::{Config, ConfigError, PRIMARY_NAME, StickyMode};

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

/// The largest weight a replica may have.
pub(crate) const MAX_WEIGHT: u32 = 10_000;

/// A value refused at `key`.
pub(super) fn invalid(key: &str, value: &dyn fmt::Display, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

/// The longest replica name: it goes into a header and every log line about the replica.
const MAX_NAME_LEN: usize = 128;

/// A replica's name goes into the `x-db-target` header, log lines and metric labels: printable
/// ASCII only (no line break to forge a log line with, nothing a header cannot carry).
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let printable = name.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if !printable || name.len() > MAX_NAME_LEN || name.trim() != name {
        return Err(invalid(
            key,
            &name.escape_debug(),
            &format!(
                "a replica's name is printable ASCII (letters, digits, punctuation, inner \
                 spaces), at most {MAX_NAME_LEN} characters: it goes into headers, logs and \
                 metric labels"
            ),
        ));
    }
    Ok(())
}

/// A TLS root certificate at `key` must be a file this process can read, found now rather
/// than at the first connection.
fn check_root_cert(key: &str, path: Option<&std::path::Path>) -> Result<(), ConfigError> {
    let Some(path) = path else {
        return Ok(());
    };
    match std::fs::File::open(path).and_then(|file| file.metadata()) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(invalid(key, &path.display(), "is not a file")),
        Err(error) => Err(invalid(
            key,
            &path.display(),
            &format!("cannot be read: {error}"),
        )),
    }
}

/// What every server's pool settings must hold, whether the primary's or a replica's own,
/// under `prefix` (`db` or `db.readReplicas[1]`): one check, one message, for both.
fn pool(
    prefix: &str,
    max_connections: Option<u32>,
    connect_timeout: Option<Duration>,
    lifetimes: [(&str, Option<Duration>); 2],
) -> Result<(), ConfigError> {
    let key = |field: &str| format!("{prefix}.{field}");
    if max_connections == Some(0) {
        return Err(invalid(
            &key("maxConnections"),
            &0,
            "a pool needs at least 1 connection",
        ));
    }
    if connect_timeout.is_some_and(|t| t.is_zero()) {
        return Err(invalid(&key("connectTimeout"), &"0", "must be more than 0"));
    }
    at_most(&key("connectTimeout"), connect_timeout, MAX_DURATION)?;
    for (field, duration) in lifetimes {
        at_most(&key(field), duration, MAX_DURATION)?;
    }
    Ok(())
}

impl Config {
    /// Checks the settings, returning the configuration unchanged when they hold together.
    pub fn validate(self) -> Result<Config, ConfigError> {
        self.check_primary()?;
        self.check_health()?;
        self.consistency.validate()?;
        for i in 0..self.replicas.len() {
            self.check_replica(i)?;
        }
        self.check_candidates()?;
        self.check_groups()?;
        self.check_discovery()?;
        if self.replicas_per_instance == Some(0) {
            return Err(invalid(
                "db.replicasPerInstance",
                &"0",
                "must be at least 1 (leave it out to use every replica)",
            ));
        }
        Ok(self)
    }

    fn check_primary(&self) -> Result<(), ConfigError> {
        let primary = &self.primary;
        if primary.host.trim().is_empty() {
            return Err(ConfigError::Missing {
                key: "db.host".to_owned(),
                reason: "the primary's host is required".to_owned(),
            });
        }
        if primary.port == 0 {
            return Err(invalid("db.port", &0, "a port is 1 to 65535"));
        }
        check_root_cert("db.sslRootCert", primary.ssl_root_cert.as_deref())?;
        let limits = &primary.pool;
        pool(
            "db",
            Some(limits.max_connections),
            Some(limits.connect_timeout),
            [
                ("connMaxLifetime", limits.max_lifetime),
                ("connMaxIdleTime", limits.idle_timeout),
            ],
        )
    }

    fn check_health(&self) -> Result<(), ConfigError> {
        if self.primary_read_weight > MAX_WEIGHT {
            return Err(invalid(
                &path(live::PRIMARY_READ_WEIGHT),
                &self.primary_read_weight,
                &format!("weights are 0 to {MAX_WEIGHT}"),
            ));
        }
        if self.replica_share > 100 {
            return Err(invalid(
                &path(live::SHARE),
                &self.replica_share,
                "must be a whole percentage from 0 to 100",
            ));
        }
        if self.lag_threshold.is_zero() {
            return Err(invalid(
                &path(live::LAG_THRESHOLD),
                &"0",
                "must be more than 0: every replica is at least a moment behind",
            ));
        }
        if self.health_check_interval < Duration::from_millis(10) {
            return Err(invalid(
                &path(live::HEALTH_CHECK_INTERVAL),
                &format_args!("{:?}", self.health_check_interval),
                "must be at least 10ms",
            ));
        }
        if self.health_check_timeout.is_zero() {
            return Err(invalid(
                &path(live::HEALTH_CHECK_TIMEOUT),
                &"0",
                "must be more than 0",
            ));
        }
        for (key, duration) in [
            (live::LAG_THRESHOLD, self.lag_threshold),
            (live::HEALTH_CHECK_INTERVAL, self.health_check_interval),
            (live::HEALTH_CHECK_TIMEOUT, self.health_check_timeout),
        ] {
            at_most(&path(key), Some(duration), MAX_DURATION)?;
        }
        at_most(&path(live::MAX_STALENESS), self.max_staleness, MAX_DURATION)?;
        Ok(())
    }

    fn check_replica(&self, i: usize) -> Result<(), ConfigError> {
        let replica = &self.replicas[i];
        let prefix = format!("db.readReplicas[{i}]");
        let key = |field: &str| format!("{prefix}.{field}");
        if replica.name.trim().is_empty() {
            return Err(ConfigError::Missing {
                key: key("name"),
                reason: "every replica needs a name (it shows in logs, metrics and headers)"
                    .to_owned(),
            });
        }
        check_name(&key("name"), &replica.name)?;
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
        check_root_cert(&key("sslRootCert"), replica.ssl_root_cert.as_deref())?;
        if replica.weight > MAX_WEIGHT {
            return Err(invalid(
                &key("weight"),
                &replica.weight,
                &format!("weights are 0 to {MAX_WEIGHT}"),
            ));
        }
        let limits = &replica.pool;
        pool(
            &prefix,
            limits.max_connections,
            limits.connect_timeout,
            [
                ("connMaxLifetime", limits.max_lifetime.flatten()),
                ("connMaxIdleTime", limits.idle_timeout.flatten()),
            ],
        )
    }

    fn check_candidates(&self) -> Result<(), ConfigError> {
        for (i, candidate) in self.primary_candidates.iter().flatten().enumerate() {
            let known =
                candidate == PRIMARY_NAME || self.replicas.iter().any(|r| r.name == *candidate);
            if !known {
                let names: Vec<&str> = std::iter::once(PRIMARY_NAME)
                    .chain(self.replicas.iter().map(|r| r.name.as_str()))
                    .collect();
                return Err(invalid(
                    &format!("{}[{i}]", path(live::PRIMARY_CANDIDATES)),
                    candidate,
                    &format!(
                        "names no configured server (`primary` or a replica: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What is legal but probably not meant: logged as warnings when a registry starts.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let detection = self.detection_delay();
        if let Some(pin) = self.consistency.max_pin
            && self.consistency.mode == StickyMode::Lsn
            && pin < detection
        {
            warnings.push(format!(
                "db.consistency.maxPin is {pin:?}, shorter than a lagging replica may stay in \
                 rotation (replicaLagThreshold + 2 x max(pollInterval, 1.25s) + \
                 healthCheckTimeout = \
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
            && self.consistency.mode != StickyMode::Off
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
        let primary = std::iter::once(("db.sslMode".to_owned(), self.primary_options()));
        let replicas = self.replicas.iter().enumerate().map(|(i, replica)| {
            let key = match replica.ssl_mode {
                Some(_) => format!("db.readReplicas[{i}].sslMode"),
                None => format!("db.sslMode (for replica {})", replica.name),
            };
            (key, self.replica_options(replica))
        });
        warnings.extend(
            primary
                .chain(replicas)
                .filter_map(|(key, options)| tls_warning(&key, &options)),
        );
        warnings
    }
}
