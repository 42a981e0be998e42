//! The YAML shape of the `db:` block, read loosely and then checked key by key, so that every
//! error can name the key path and the value as written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::PgSslMode;

use super::duration::{parse_duration, seconds_to_duration};
use super::{
    Config, ConfigError, ConsistencyConfig, MAX_WEIGHT, PoolOverrides, ReplicaConfig, Secret,
};
use crate::consistency::StickyMode;

#[derive(Deserialize)]
struct Document {
    db: Option<BTreeMap<String, Value>>,
}

/// Any YAML value; scalars are kept as written so that errors can quote them.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Null,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s}"),
            // In YAML's flow style, as the value would be written on one line.
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Map(map) => {
                f.write_str("{")?;
                for (i, (key, value)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if SECRET_KEYS.contains(&key.as_str()) {
                        write!(f, "{key}: [redacted]")?;
                    } else {
                        write!(f, "{key}: {value}")?;
                    }
                }
                f.write_str("}")
            }
            Value::Null => f.write_str("null"),
        }
    }
}

/// Keys whose values are never shown, even inside a value quoted in an error.
const SECRET_KEYS: &[&str] = &["password", "signingKey", "previousSigningKey"];

const DB_KEYS: &[&str] = &[
    "host",
    "port",
    "username",
    "password",
    "database",
    "sslMode",
    "sslRootCert",
    "maxConnections",
    "maxIdleConns",
    "connMaxLifetime",
    "connMaxIdleTime",
    "connectTimeout",
    "enableReadWriteSeparation",
    "replicaLagThreshold",
    "replicaLagBytesThreshold",
    "healthCheckInterval",
    "healthCheckTimeout",
    "failoverOnPoolExhausted",
    "readReplicas",
    "consistency",
];

const CONSISTENCY_KEYS: &[&str] = &[
    "mode",
    "signingKey",
    "previousSigningKey",
    "window",
    "maxPin",
    "pollInterval",
    "waitForReplica",
    "staleReadsWhenReadOnly",
    "cookieName",
    "headerName",
    "cookieSecure",
    "cookiePath",
];

const REPLICA_KEYS: &[&str] = &[
    "name",
    "host",
    "port",
    "weight",
    "username",
    "password",
    "database",
    "sslMode",
    "sslRootCert",
    "maxConnections",
    "maxIdleConns",
    "connMaxLifetime",
    "connMaxIdleTime",
    "connectTimeout",
];

/// Parses YAML text (placeholders already replaced) into a configuration, not yet validated.
pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    // Only the first line of the parser's message: the rest quotes the source around the
    // error, which may be the password's line.
    let document: Document = serde_saphyr::from_str(text).map_err(|e| {
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        ConfigError::Syntax(first.trim_start_matches("error: ").to_owned())
    })?;
    let db = document.db.ok_or_else(|| ConfigError::Missing {
        key: "db".to_owned(),
        reason: "the configuration lives under a top-level `db:` key".to_owned(),
    })?;
    let block = Block::new("db", db, DB_KEYS)?;

    let host = block.string("host")?.ok_or_else(|| ConfigError::Missing {
        key: "db.host".to_owned(),
        reason: "the primary's host is required".to_owned(),
    })?;
    let mut config = Config::new(host);
    if let Some(port) = block.port("port")? {
        config = config.port(port);
    }
    if let Some(username) = block.string("username")? {
        config = config.username(username);
    }
    if let Some(password) = block.secret("password")? {
        config.primary.password = Some(password);
    }
    if let Some(database) = block.string("database")? {
        config = config.database(database);
    }
    if let Some(mode) = block.ssl_mode("sslMode")? {
        config = config.ssl_mode(mode);
    }
    if let Some(path) = block.string("sslRootCert")? {
        config = config.ssl_root_cert(PathBuf::from(path));
    }
    let pool = block.pool()?;
    let primary_pool = &mut config.primary.pool;
    if let Some(max) = pool.max_connections {
        primary_pool.max_connections = max;
    }
    primary_pool.max_idle = pool.max_idle.or(primary_pool.max_idle);
    if let Some(lifetime) = pool.max_lifetime {
        primary_pool.max_lifetime = lifetime;
    }
    if let Some(idle) = pool.idle_timeout {
        primary_pool.idle_timeout = idle;
    }
    if let Some(timeout) = pool.connect_timeout {
        primary_pool.connect_timeout = timeout;
    }
    if let Some(enabled) = block.bool("enableReadWriteSeparation")? {
        config.separation = enabled;
    }
    if let Some(threshold) = block.duration("replicaLagThreshold")? {
        config.lag_threshold = threshold;
    }
    if let Some(bytes) = block.get("replicaLagBytesThreshold") {
        config.lag_bytes_threshold = match bytes {
            Value::Null => None,
            value => Some(block.integer_in("replicaLagBytesThreshold", value, 0, i64::MAX)? as u64),
        };
    }
    if let Some(interval) = block.duration("healthCheckInterval")? {
        config.health_check_interval = interval;
    }
    if let Some(timeout) = block.duration("healthCheckTimeout")? {
        config.health_check_timeout = timeout;
    }
    if let Some(enabled) = block.bool("failoverOnPoolExhausted")? {
        config.failover_on_pool_exhausted = enabled;
    }
    match block.get("consistency") {
        None | Some(Value::Null) => {}
        Some(Value::Map(map)) => {
            config.consistency =
                consistency(Block::new("db.consistency", map.clone(), CONSISTENCY_KEYS)?)?;
        }
        Some(other) => {
            return Err(block.invalid("consistency", other, "must be a mapping"));
        }
    }
    match block.get("readReplicas") {
        None | Some(Value::Null) => {}
        Some(Value::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("db.readReplicas[{i}]");
                let Value::Map(map) = item else {
                    return Err(block.invalid_at(&path, item, "each replica is a mapping"));
                };
                config
                    .replicas
                    .push(replica(Block::new(&path, map.clone(), REPLICA_KEYS)?)?);
            }
        }
        Some(other) => {
            return Err(block.invalid("readReplicas", other, "must be a list of replicas"));
        }
    }
    Ok(config)
}

fn consistency(block: Block) -> Result<ConsistencyConfig, ConfigError> {
    let mut c = ConsistencyConfig::lsn();
    if let Some(mode) = block.string("mode")? {
        c.mode = match mode.as_str() {
            "lsn" => StickyMode::Lsn,
            "window" => StickyMode::Window,
            "off" => StickyMode::Off,
            _ => {
                return Err(block.invalid(
                    "mode",
                    &Value::Str(mode),
                    "must be one of lsn, window, off",
                ));
            }
        };
    }
    // An empty key (an unset `${VAR:-}`) counts as no key.
    c.signing_key = block.secret("signingKey")?.filter(|k| !k.0.is_empty());
    c.previous_signing_key = block
        .secret("previousSigningKey")?
        .filter(|k| !k.0.is_empty());
    if let Some(window) = block.duration("window")? {
        c.window = window;
    }
    c.max_pin = block.duration("maxPin")?;
    if let Some(interval) = block.duration("pollInterval")? {
        c.poll_interval = interval;
    }
    if let Some(wait) = block.duration("waitForReplica")? {
        c.wait_for_replica = wait;
    }
    if let Some(stale) = block.bool("staleReadsWhenReadOnly")? {
        c.stale_reads_when_read_only = stale;
    }
    if let Some(name) = block.string("cookieName")? {
        c.cookie_name = name;
    }
    if let Some(name) = block.string("headerName")? {
        c.header_name = name;
    }
    if let Some(secure) = block.bool("cookieSecure")? {
        c.cookie_secure = secure;
    }
    if let Some(path) = block.string("cookiePath")? {
        c.cookie_path = path;
    }
    Ok(c)
}

fn replica(block: Block) -> Result<ReplicaConfig, ConfigError> {
    let missing = |field: &str, reason: &str| ConfigError::Missing {
        key: format!("{}.{field}", block.path),
        reason: reason.to_owned(),
    };
    let name = block
        .string("name")?
        .ok_or_else(|| missing("name", "every replica needs a name"))?;
    let host = block
        .string("host")?
        .ok_or_else(|| missing("host", "every replica needs a host"))?;
    let mut replica = ReplicaConfig::new(name, host);
    if let Some(port) = block.port("port")? {
        replica.port = port;
    }
    if let Some(value) = block.get("weight") {
        replica.weight = block.integer_in("weight", value, 0, MAX_WEIGHT.into())? as u32;
    }
    replica.username = block.string("username")?;
    replica.password = block.secret("password")?;
    replica.database = block.string("database")?;
    replica.ssl_mode = block.ssl_mode("sslMode")?;
    replica.ssl_root_cert = block.string("sslRootCert")?.map(PathBuf::from);
    replica.pool = block.pool()?;
    Ok(replica)
}

struct Block {
    path: String,
    map: BTreeMap<String, Value>,
}

impl Block {
    fn new(
        path: &str,
        map: BTreeMap<String, Value>,
        known: &'static [&'static str],
    ) -> Result<Block, ConfigError> {
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ConfigError::UnknownKey {
                key: format!("{path}.{unknown}"),
                expected: known,
            });
        }
        Ok(Block {
            path: path.to_owned(),
            map,
        })
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    fn invalid(&self, key: &str, value: &Value, reason: &str) -> ConfigError {
        self.invalid_at(&format!("{}.{key}", self.path), value, reason)
    }

    fn invalid_at(&self, path: &str, value: &Value, reason: &str) -> ConfigError {
        ConfigError::Invalid {
            key: path.to_owned(),
            value: value.to_string(),
            reason: reason.to_owned(),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.clone())),
            Some(value @ (Value::Int(_) | Value::Float(_) | Value::Bool(_))) => {
                Ok(Some(value.to_string()))
            }
            Some(value) => Err(self.invalid(key, value, "must be a string")),
        }
    }

    /// A password: any scalar is taken as text, and no error ever quotes it.
    fn secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::List(_) | Value::Map(_)) => Err(ConfigError::Invalid {
                key: format!("{}.{key}", self.path),
                value: "[redacted]".to_owned(),
                reason: "must be a string".to_owned(),
            }),
            Some(value) => Ok(Some(Secret(value.to_string()))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Str(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(value) => Err(self.invalid(key, value, "must be true or false")),
        }
    }

    fn integer_in(&self, key: &str, value: &Value, min: i64, max: i64) -> Result<i64, ConfigError> {
        let reason = format!("must be a whole number from {min} to {max}");
        let n = match value {
            Value::Int(i) => *i,
            Value::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| self.invalid(key, value, &reason))?,
            _ => return Err(self.invalid(key, value, &reason)),
        };
        if n < min || n > max {
            return Err(self.invalid(key, value, &reason));
        }
        Ok(n)
    }

    fn port(&self, key: &str) -> Result<Option<u16>, ConfigError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => Ok(Some(self.integer_in(key, value, 1, 65535)? as u16)),
        }
    }

    fn count(&self, key: &str, min: i64) -> Result<Option<u32>, ConfigError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => Ok(Some(
                self.integer_in(key, value, min, u32::MAX.into())? as u32
            )),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let parsed = match self.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Int(seconds)) if *seconds >= 0 => Ok(Duration::from_secs(*seconds as u64)),
            Some(Value::Float(seconds)) => seconds_to_duration(*seconds),
            Some(Value::Str(text)) => parse_duration(text),
            Some(_) => Err(
                "a duration is whole seconds (10) or a string such as \"500ms\", \
                            \"10s\", \"2m\""
                    .to_owned(),
            ),
        };
        parsed
            .map(Some)
            .map_err(|reason| self.invalid(key, &self.map[key], &reason))
    }

    /// A duration where `0` means "no limit".
    fn limit(&self, key: &str) -> Result<Option<Option<Duration>>, ConfigError> {
        Ok(self
            .duration(key)?
            .map(|d| if d.is_zero() { None } else { Some(d) }))
    }

    fn ssl_mode(&self, key: &str) -> Result<Option<PgSslMode>, ConfigError> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|_| {
            self.invalid(
                key,
                &Value::Str(text),
                "must be one of disable, allow, prefer, require, verify-ca, verify-full",
            )
        })
    }

    fn pool(&self) -> Result<PoolOverrides, ConfigError> {
        Ok(PoolOverrides {
            max_connections: self.count("maxConnections", 1)?,
            max_idle: self.count("maxIdleConns", 0)?,
            max_lifetime: self.limit("connMaxLifetime")?,
            idle_timeout: self.limit("connMaxIdleTime")?,
            connect_timeout: self.duration("connectTimeout")?,
        })
    }
}
