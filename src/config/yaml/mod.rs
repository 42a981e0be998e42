//! The YAML shape of the `db:` block, derived with serde: each key is declared once, as a field
//! of [`Db`], [`Replica`] or [`Consistency`], with the type that reads it.
//!
//! Every value is read as the text the user wrote (so `mode: off` stays `off`, `password: no`
//! stays `no` and a 38-digit `signingKey` keeps all its digits), its `${VAR}` placeholders are
//! expanded, and only then is it typed. Errors name the key's path and the value.

mod context;
mod refusal;
mod text;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::Deserializer;

use self::context::{Context, mask, unmask};
use self::refusal::refusal;
use self::text::{Driver, Limit, Percent, Sharing, SslMode, Text, Weight};
use super::env::names;
use super::{
    Config, ConfigError, ConsistencyConfig, DiscoveryConfig, GroupFallback, LoadBalancing,
    PoolOverrides, Promotion, Records, ReplicaConfig, ReplicaReadOnly, Roles, Secret, StickyMode,
};

/// The application's whole configuration: keys beside `db` are not ours and are skipped.
#[derive(Deserialize)]
struct Document {
    db: Option<Db>,
}

/// The `db:` block.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Db {
    /// Checked, then not needed: PostgreSQL is the only driver.
    #[serde(rename = "driver")]
    _driver: Option<Text<Driver>>,
    host: Option<Text<String>>,
    port: Option<Text<u16>>,
    username: Option<Text<String>>,
    password: Option<Text<Secret>>,
    database: Option<Text<String>>,
    ssl_mode: Option<Text<SslMode>>,
    ssl_root_cert: Option<Text<String>>,
    max_connections: Option<Text<u32>>,
    max_idle_conns: Option<Text<u32>>,
    conn_max_lifetime: Option<Text<Limit>>,
    conn_max_idle_time: Option<Text<Limit>>,
    connect_timeout: Option<Text<Duration>>,
    enable_read_write_separation: Option<Text<bool>>,
    read_replica_share: Option<Text<Percent>>,
    primary_read_weight: Option<Text<Weight>>,
    load_balancing: Option<Text<LoadBalancing>>,
    replica_lag_threshold: Option<Text<Duration>>,
    /// `null` turns the byte threshold off, which leaving the key out does not.
    #[serde(default, deserialize_with = "present")]
    replica_lag_bytes_threshold: Option<Option<Text<u64>>>,
    /// `null` turns the fallback to lagging replicas off.
    #[serde(default, deserialize_with = "present")]
    replica_max_staleness: Option<Option<Text<Duration>>>,
    health_check_interval: Option<Text<Duration>>,
    health_check_timeout: Option<Text<Duration>>,
    failover_on_pool_exhausted: Option<Text<bool>>,
    roles: Option<Text<Roles>>,
    promotion: Option<Text<Promotion>>,
    replica_read_only: Option<Text<ReplicaReadOnly>>,
    primary_candidates: Option<Vec<Text<String>>>,
    replicas_per_instance: Option<Text<usize>>,
    instance_id: Option<Text<String>>,
    read_replicas: Option<Vec<Replica>>,
    replica_groups: Option<BTreeMap<String, Group>>,
    replica_discovery: Option<Vec<Discovery>>,
    consistency: Option<Consistency>,
}

/// One entry of `db.replicaDiscovery`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Discovery {
    dns: Text<String>,
    records: Option<Text<Records>>,
    port: Option<Text<u16>>,
    interval: Option<Text<Duration>>,
    drain_delay: Option<Text<Duration>>,
    weight: Option<Text<Weight>>,
    group: Option<Text<String>>,
    nameserver: Option<Text<SocketAddr>>,
}

/// One entry of `db.replicaGroups`, under the group's name.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Group {
    fallback: Option<Text<GroupFallback>>,
}

/// One entry of `db.readReplicas`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Replica {
    name: Option<Text<String>>,
    host: Option<Text<String>>,
    port: Option<Text<u16>>,
    weight: Option<Text<Weight>>,
    username: Option<Text<String>>,
    password: Option<Text<Secret>>,
    database: Option<Text<String>>,
    ssl_mode: Option<Text<SslMode>>,
    ssl_root_cert: Option<Text<String>>,
    max_connections: Option<Text<u32>>,
    max_idle_conns: Option<Text<u32>>,
    conn_max_lifetime: Option<Text<Limit>>,
    conn_max_idle_time: Option<Text<Limit>>,
    connect_timeout: Option<Text<Duration>>,
    group: Option<Text<String>>,
}

/// The `db.consistency` block.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Consistency {
    mode: Option<Text<StickyMode>>,
    signing_key: Option<Text<Secret>>,
    previous_signing_key: Option<Text<Secret>>,
    verification_keys: Option<Vec<Text<Secret>>>,
    clock_skew: Option<Text<Duration>>,
    window: Option<Text<Duration>>,
    max_pin: Option<Text<Duration>>,
    poll_interval: Option<Text<Duration>>,
    wait_for_replica: Option<Text<Duration>>,
    stale_reads_when_read_only: Option<Text<bool>>,
    share_token_queries: Option<Text<Sharing>>,
    cookie_name: Option<Text<String>>,
    header_name: Option<Text<String>>,
    cookie_secure: Option<Text<bool>>,
    cookie_path: Option<Text<String>>,
}

/// Parses YAML text into a configuration, not yet validated. `lookup` gives the placeholders'
/// variables.
pub(super) fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let env = names(text)
        .into_iter()
        .map(|name| (name.to_owned(), lookup(name)))
        .collect();
    let (masked, placeholders) = mask(text);
    context::begin(Context {
        env,
        placeholders,
        failure: None,
    });
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(&masked, |de| {
        serde_path_to_error::deserialize::<_, Document>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    let context = context::end();
    let document = result.map_err(|error| {
        let error = refusal(&masked, &path, context.failure, &error);
        match error {
            ConfigError::Invalid { key, value, reason } => ConfigError::Invalid {
                key,
                value: unmask(&value, &context.placeholders),
                reason,
            },
            other => other,
        }
    })?;
    let db = document.db.ok_or_else(|| ConfigError::Missing {
        key: "db".to_owned(),
        reason: "the configuration lives under a top-level `db:` key".to_owned(),
    })?;
    db.into_config()
}

impl Db {
    fn into_config(self) -> Result<Config, ConfigError> {
        let host = value(self.host).ok_or_else(|| ConfigError::Missing {
            key: "db.host".to_owned(),
            reason: "the primary's host is required".to_owned(),
        })?;
        let mut config = Config::new(host);
        let primary = &mut config.primary;
        set(&mut primary.port, self.port);
        set(&mut primary.username, self.username);
        primary.password = value(self.password);
        set(&mut primary.database, self.database);
        set(&mut primary.ssl_mode, self.ssl_mode.map(|m| Text(m.0.0)));
        primary.ssl_root_cert = value(self.ssl_root_cert).map(PathBuf::from);
        let pool = &mut primary.pool;
        set(&mut pool.max_connections, self.max_connections);
        pool.max_idle = value(self.max_idle_conns).or(pool.max_idle);
        set(
            &mut pool.max_lifetime,
            self.conn_max_lifetime.map(|l| Text(l.0.0)),
        );
        set(
            &mut pool.idle_timeout,
            self.conn_max_idle_time.map(|l| Text(l.0.0)),
        );
        set(&mut pool.connect_timeout, self.connect_timeout);
        set(&mut config.separation, self.enable_read_write_separation);
        set(
            &mut config.replica_share,
            self.read_replica_share.map(|p| Text(p.0.0)),
        );
        set(
            &mut config.primary_read_weight,
            self.primary_read_weight.map(|w| Text(w.0.0)),
        );
        set(&mut config.load_balancing, self.load_balancing);
        set(&mut config.lag_threshold, self.replica_lag_threshold);
        if let Some(bytes) = self.replica_lag_bytes_threshold {
            config.lag_bytes_threshold = value(bytes);
        }
        if let Some(staleness) = self.replica_max_staleness {
            config.max_staleness = value(staleness);
        }
        set(
            &mut config.health_check_interval,
            self.health_check_interval,
        );
        set(&mut config.health_check_timeout, self.health_check_timeout);
        set(
            &mut config.failover_on_pool_exhausted,
            self.failover_on_pool_exhausted,
        );
        set(&mut config.roles, self.roles);
        set(&mut config.promotion, self.promotion);
        set(&mut config.replica_read_only, self.replica_read_only);
        if let Some(count) = self.replicas_per_instance {
            config.replicas_per_instance = Some(count.0);
        }
        if let Some(id) = self.instance_id {
            config.instance_id = Some(id.0);
        }
        if let Some(candidates) = self.primary_candidates {
            config.primary_candidates = Some(candidates.into_iter().map(|c| c.0).collect());
        }
        if let Some(consistency) = self.consistency {
            config.consistency = consistency.into_config();
        }
        add_replicas(
            config,
            self.read_replicas,
            self.replica_discovery,
            self.replica_groups,
        )
    }
}

/// Adds the listed replicas, the DNS sources and the groups' fallbacks to `config`.
fn add_replicas(
    mut config: Config,
    read_replicas: Option<Vec<Replica>>,
    discovery: Option<Vec<Discovery>>,
    groups: Option<BTreeMap<String, Group>>,
) -> Result<Config, ConfigError> {
    for (i, replica) in read_replicas.into_iter().flatten().enumerate() {
        config.replicas.push(replica.into_config(i)?);
    }
    for found in discovery.into_iter().flatten() {
        let mut source = DiscoveryConfig::addresses(found.dns.0);
        set(&mut source.records, found.records);
        set(&mut source.port, found.port);
        set(&mut source.interval, found.interval);
        set(&mut source.drain_delay, found.drain_delay);
        source.weight = value(found.weight).map_or(source.weight, |w| w.0);
        source.group = value(found.group);
        source.nameserver = value(found.nameserver);
        config = config.replica_discovery(source);
    }
    for (name, group) in groups.into_iter().flatten() {
        let fallback = value(group.fallback).unwrap_or_default();
        config = config.group_fallback(name, fallback);
    }
    Ok(config)
}

impl Replica {
    fn into_config(self, index: usize) -> Result<ReplicaConfig, ConfigError> {
        let host = value(self.host).ok_or_else(|| ConfigError::Missing {
            key: format!("db.readReplicas[{index}].host"),
            reason: "every replica needs a host".to_owned(),
        })?;
        let port = value(self.port).unwrap_or(super::DEFAULT_PORT);
        // A replica without a name goes by its address, which stays the same when others are
        // added or removed.
        let name = value(self.name).unwrap_or_else(|| format!("{host}:{port}"));
        let mut replica = ReplicaConfig::new(name, host).port(port);
        replica.weight = value(self.weight).map_or(replica.weight, |w| w.0);
        replica.username = value(self.username);
        replica.password = value(self.password);
        replica.database = value(self.database);
        replica.ssl_mode = value(self.ssl_mode).map(|m| m.0);
        replica.ssl_root_cert = value(self.ssl_root_cert).map(PathBuf::from);
        replica.group = value(self.group);
        replica.pool = PoolOverrides {
            max_connections: value(self.max_connections),
            max_idle: value(self.max_idle_conns),
            max_lifetime: value(self.conn_max_lifetime).map(|l| l.0),
            idle_timeout: value(self.conn_max_idle_time).map(|l| l.0),
            connect_timeout: value(self.connect_timeout),
        };
        Ok(replica)
    }
}

impl Consistency {
    fn into_config(self) -> ConsistencyConfig {
        let mut c = ConsistencyConfig::lsn();
        set(&mut c.mode, self.mode);
        // An empty key (an unset `${VAR:-}`) counts as no key.
        c.signing_key = value(self.signing_key).filter(|k| !k.0.is_empty());
        c.previous_signing_key = value(self.previous_signing_key).filter(|k| !k.0.is_empty());
        // An empty entry (an unset `${VAR:-}`) counts as none, so that a list can be kept
        // in the file with a key not set yet.
        c.verification_keys = self
            .verification_keys
            .into_iter()
            .flatten()
            .map(|k| k.0)
            .filter(|k| !k.0.is_empty())
            .collect();
        set(&mut c.clock_skew, self.clock_skew);
        set(&mut c.window, self.window);
        c.max_pin = value(self.max_pin);
        set(&mut c.poll_interval, self.poll_interval);
        set(&mut c.wait_for_replica, self.wait_for_replica);
        set(
            &mut c.stale_reads_when_read_only,
            self.stale_reads_when_read_only,
        );
        if let Some(Sharing(gather)) = value(self.share_token_queries) {
            c.share_token_queries = gather;
        }
        set(&mut c.cookie_name, self.cookie_name);
        set(&mut c.header_name, self.header_name);
        set(&mut c.cookie_secure, self.cookie_secure);
        set(&mut c.cookie_path, self.cookie_path);
        c
    }
}

fn value<T>(setting: Option<Text<T>>) -> Option<T> {
    setting.map(|t| t.0)
}

fn set<T>(field: &mut T, setting: Option<Text<T>>) {
    if let Some(Text(v)) = setting {
        *field = v;
    }
}

/// For a key whose `null` means something: present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_the_text_written() {
        let yaml = "db:\n  host: h\n  password: no\n  consistency:\n    mode: off\n    \
                    signingKey: 12345678901234567890123456789012345678\n";
        let config = parse(yaml, &|_| None).unwrap();
        assert_eq!(config.primary.password.unwrap().0, "no");
        assert_eq!(config.consistency.mode, StickyMode::Off);
        assert_eq!(
            config.consistency.signing_key.unwrap().0,
            "12345678901234567890123456789012345678"
        );
    }

    /// Reads `text` with `value` as every variable.
    fn with(text: &str, value: &str) -> Config {
        parse(text, &|_| Some(value.to_owned())).unwrap()
    }

    /// Every YAML 1.1 boolean and number spelling, and the characters that mean something in
    /// YAML, as literal values.
    const SPELLINGS: &[&str] = &[
        "y",
        "Y",
        "yes",
        "Yes",
        "YES",
        "n",
        "N",
        "no",
        "No",
        "NO",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        "0",
        "-0",
        "+1",
        "012",
        "0o17",
        "0x1F",
        "0b101",
        "1_000",
        "1e3",
        "1.0",
        ".5",
        "-.5",
        ".inf",
        "-.Inf",
        ".NaN",
        "12345678901234567890123456789012345678",
        "1:20",
        "2026-12-01",
        "=",
        "<<",
    ];

    #[test]
    fn unquoted_yaml_1_1_spellings_come_out_as_written() {
        for spelling in SPELLINGS {
            let yaml = format!(
                "db:\n  host: {spelling}\n  password: {spelling}\n  username: {spelling}\n  \
                 consistency:\n    signingKey: {spelling}\n"
            );
            let config = parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{spelling}: {e}"));
            assert_eq!(config.primary.host, *spelling);
            assert_eq!(config.primary.username, *spelling);
            assert_eq!(config.primary.password.unwrap().0, *spelling);
            assert_eq!(config.consistency.signing_key.unwrap().0, *spelling);
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// Any string set through an environment variable comes out byte for byte, whatever
        /// YAML makes of its characters, quoted placeholder or not.
        #[test]
        fn any_value_from_the_environment_comes_out_byte_for_byte(
            value in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "[-:#\"'\\ {}\\[\\],&*!|>%@`?\n\t]{0,12}",
                proptest::sample::select(SPELLINGS).prop_map(str::to_owned),
            ],
        ) {
            let plain = "db:\n  host: ${V}\n  password: ${V}\n  database: ${V}\n  \
                         readReplicas:\n    - { name: r, host: ${V}, password: ${V} }\n  \
                         consistency:\n    signingKey: ${V}\n    cookiePath: ${V}\n";
            let quoted = plain.replace("${V}", "\"${V}\"");
            for text in [plain.to_owned(), quoted] {
                let config = with(&text, &value);
                prop_assert_eq!(&config.primary.host, &value);
                prop_assert_eq!(&config.primary.database, &value);
                prop_assert_eq!(&config.primary.password.as_ref().unwrap().0, &value);
                prop_assert_eq!(&config.replicas[0].host, &value);
                prop_assert_eq!(&config.replicas[0].password.as_ref().unwrap().0, &value);
                prop_assert_eq!(&config.consistency.cookie_path, &value);
                // An empty key counts as none.
                let key = config.consistency.signing_key.as_ref().map(|k| k.0.as_str());
                prop_assert_eq!(key.unwrap_or_default(), &value[..]);
            }
        }

        /// A placeholder in a number or an enum is expanded, then typed.
        #[test]
        fn expanded_scalars_are_typed(port in 1u16.., share in 0u8..=100) {
            let text = "db:\n  host: h\n  port: ${P}\n  readReplicaShare: ${S}\n  \
                        consistency:\n    mode: ${M:-off}\n";
            let lookup = |name: &str| match name {
                "P" => Some(port.to_string()),
                "S" => Some(share.to_string()),
                _ => None,
            };
            let config = parse(text, &lookup).unwrap();
            prop_assert_eq!(config.primary.port, port);
            prop_assert_eq!(config.replica_share, share);
            prop_assert_eq!(config.consistency.mode, StickyMode::Off);
        }
    }
}
