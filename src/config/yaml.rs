//! The YAML shape of the `db:` block, derived with serde: each key is declared once, as a field
//! of [`Db`], [`Replica`] or [`Consistency`], with the type that reads it.
//!
//! Every value is read as the text the user wrote (so `mode: off` stays `off`, `password: no`
//! stays `no` and a 38-digit `signingKey` keeps all its digits), its `${VAR}` placeholders are
//! expanded, and only then is it typed. Errors name the key's path and the value.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use sqlx::postgres::PgSslMode;

use super::duration::parse_duration;
use super::env::{Unexpanded, expand, names};
use super::{
    Config, ConfigError, ConsistencyConfig, PoolOverrides, ReplicaConfig, ReplicaReadOnly, Roles,
    Secret,
};
use crate::consistency::StickyMode;

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
    replica_lag_threshold: Option<Text<Duration>>,
    /// `null` turns the byte threshold off, which leaving the key out does not.
    #[serde(default, deserialize_with = "present")]
    replica_lag_bytes_threshold: Option<Option<Text<u64>>>,
    health_check_interval: Option<Text<Duration>>,
    health_check_timeout: Option<Text<Duration>>,
    failover_on_pool_exhausted: Option<Text<bool>>,
    roles: Option<Text<Roles>>,
    replica_read_only: Option<Text<ReplicaReadOnly>>,
    primary_candidates: Option<Vec<Text<String>>>,
    read_replicas: Option<Vec<Replica>>,
    consistency: Option<Consistency>,
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
}

/// The `db.consistency` block.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Consistency {
    mode: Option<Text<StickyMode>>,
    signing_key: Option<Text<Secret>>,
    previous_signing_key: Option<Text<Secret>>,
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
    CONTEXT.with_borrow_mut(|c| {
        *c = Context {
            env,
            placeholders,
            failure: None,
        }
    });
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(&masked, |de| {
        serde_path_to_error::deserialize::<_, Document>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    let context = CONTEXT.with_borrow_mut(std::mem::take);
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
        set(&mut config.lag_threshold, self.replica_lag_threshold);
        if let Some(bytes) = self.replica_lag_bytes_threshold {
            config.lag_bytes_threshold = value(bytes);
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
        set(&mut config.replica_read_only, self.replica_read_only);
        if let Some(candidates) = self.primary_candidates {
            config.primary_candidates = Some(candidates.into_iter().map(|c| c.0).collect());
        }
        if let Some(consistency) = self.consistency {
            config.consistency = consistency.into_config();
        }
        for (i, replica) in self.read_replicas.into_iter().flatten().enumerate() {
            config.replicas.push(replica.into_config(i)?);
        }
        Ok(config)
    }
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

/// A setting read from the text of its scalar: placeholders expanded, then typed by `T`.
struct Text<T>(T);

/// A type a setting's text becomes.
trait FromText: Sized {
    /// What the value must be, for errors.
    const EXPECTED: &'static str;
    /// Whether the text is a secret, never to be shown.
    const SECRET: bool = false;
    fn from_text(text: &str) -> Result<Self, String>;
}

impl<'de, T: FromText> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = d.deserialize_str(Scalar::<T>(PhantomData))?;
        let raw = CONTEXT.with_borrow(|c| unmask(&raw, &c.placeholders));
        let text = expand(&raw, &|name| {
            CONTEXT.with_borrow(|c| c.env.get(name).cloned().flatten())
        })
        .map_err(
            |Unexpanded {
                 placeholder,
                 reason,
             }| {
                fail::<T, D::Error>(Failure::Placeholder {
                    placeholder,
                    reason,
                })
            },
        )?;
        T::from_text(&text).map(Text).map_err(|reason| {
            fail::<T, D::Error>(Failure::Invalid {
                value: text,
                reason,
            })
        })
    }
}

/// Takes a scalar as the text written. Anything else is refused with the value shown.
struct Scalar<T>(PhantomData<T>);

impl<'de, T: FromText> Visitor<'de> for Scalar<T> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// Why a value was refused, kept aside while serde unwinds so that the error can name the key
/// (which only `serde_path_to_error` knows) together with the value.
enum Failure {
    Invalid { value: String, reason: String },
    Placeholder { placeholder: String, reason: String },
}

#[derive(Default)]
struct Context {
    /// The placeholders' variables, looked up before the document is read.
    env: HashMap<String, Option<String>>,
    /// The placeholders as written, by their index in the masked text.
    placeholders: Vec<String>,
    failure: Option<Failure>,
}

/// Opens and closes a masked placeholder: private-use characters, which YAML takes as plain
/// text anywhere, even inside a flow mapping where `{` and `}` are syntax.
const MASK_OPEN: char = '\u{E000}';
const MASK_CLOSE: char = '\u{E001}';

/// `text` with each `${...}` placeholder replaced by a mask holding its index, so that the
/// parser reads `host: ${DB_HOST}` as a plain scalar wherever it stands; the scalars are
/// unmasked and expanded once parsed. `$${` (an escaped `${`) and a placeholder with no `}` on
/// its line are left as written.
fn mask(text: &str) -> (String, Vec<String>) {
    let mut masked = String::with_capacity(text.len());
    let mut placeholders = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let escaped = rest[..start].ends_with('$');
        let body = &rest[start..];
        let end = body.find('}').filter(|&end| !body[..end].contains('\n'));
        match end {
            Some(end) if !escaped => {
                masked.push_str(&rest[..start]);
                masked.push(MASK_OPEN);
                masked.push_str(&placeholders.len().to_string());
                masked.push(MASK_CLOSE);
                placeholders.push(body[..=end].to_owned());
                rest = &body[end + 1..];
            }
            _ => {
                masked.push_str(&rest[..start + 2]);
                rest = &body[2..];
            }
        }
    }
    masked.push_str(rest);
    (masked, placeholders)
}

/// `text` with its masks replaced by the placeholders they stand for.
fn unmask(text: &str, placeholders: &[String]) -> String {
    if !text.contains(MASK_OPEN) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(MASK_OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + MASK_OPEN.len_utf8()..];
        let Some(end) = after.find(MASK_CLOSE) else {
            out.push_str(&rest[start..]);
            return out;
        };
        match after[..end]
            .parse::<usize>()
            .ok()
            .and_then(|i| placeholders.get(i))
        {
            Some(placeholder) => out.push_str(placeholder),
            None => out
                .push_str(&rest[start..start + MASK_OPEN.len_utf8() + end + MASK_CLOSE.len_utf8()]),
        }
        rest = &after[end + MASK_CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    out
}

thread_local! {
    static CONTEXT: RefCell<Context> = RefCell::default();
}

fn fail<T: FromText, E: de::Error>(failure: Failure) -> E {
    let failure = match failure {
        Failure::Invalid { reason, .. } if T::SECRET => Failure::Invalid {
            value: "[redacted]".to_owned(),
            reason,
        },
        other => other,
    };
    let message = match &failure {
        Failure::Invalid { reason, .. } | Failure::Placeholder { reason, .. } => reason.clone(),
    };
    CONTEXT.with_borrow_mut(|c| c.failure = Some(failure));
    E::custom(message)
}

/// The error for a document serde refused, naming the key at `path`.
fn refusal(
    text: &str,
    path: &str,
    failure: Option<Failure>,
    error: &serde_saphyr::Error,
) -> ConfigError {
    let key = path.to_owned();
    let line = error.location().map_or(0, |l| l.line() as usize);
    match failure {
        Some(Failure::Invalid { value, reason }) => ConfigError::Invalid { key, value, reason },
        Some(Failure::Placeholder {
            placeholder,
            reason,
        }) => ConfigError::Placeholder {
            line,
            placeholder,
            reason: format!("`{key}`: {reason}"),
        },
        None => {
            // Only the first line of the parser's message: the rest quotes the source around
            // the error, which may be the password's line.
            let message = error.to_string();
            let first = message.lines().next().unwrap_or_default();
            let first = first.trim_start_matches("error: ");
            if let Some(unknown) = unknown_key(first) {
                return unknown.at(path);
            }
            // Not at a key (serde_path_to_error writes `?` where the parser stopped first).
            if path.is_empty() || path == "." || path.contains('?') {
                return ConfigError::Syntax(first.to_owned());
            }
            let reason = without_location(first);
            // A value of the wrong shape is quoted; the text around a syntax error is not (it
            // may be a password's line).
            let shape = [
                "expected ",
                "invalid type",
                "invalid value",
                "invalid length",
            ]
            .iter()
            .any(|p| reason.starts_with(p));
            if !shape {
                return ConfigError::Syntax(format!("`{path}`: {first}"));
            }
            let secret = path
                .rsplit('.')
                .next()
                .is_some_and(|k| SECRET_KEYS.contains(&k));
            let value = match (secret, error.location()) {
                (true, _) => "[redacted]".to_owned(),
                (false, Some(at)) => redact(&written_at(text, at.line(), at.column())),
                (false, None) => String::new(),
            };
            ConfigError::Invalid {
                key,
                value,
                reason: reason.to_owned(),
            }
        }
    }
}

/// The value as written from `line`:`column` (1-based) to the end of that line, or of the
/// flow collection it opens.
fn written_at(text: &str, line: u64, column: u64) -> String {
    let Some(line_text) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return String::new();
    };
    let start = line_text
        .char_indices()
        .nth(column.saturating_sub(1) as usize)
        .map_or(line_text.len(), |(i, _)| i);
    // The value of a secret key, whatever the path says (a parser error inside it).
    let before = line_text[..start].trim_end();
    if SECRET_KEYS
        .iter()
        .any(|k| before.ends_with(&format!("{k}:")))
    {
        return "[redacted]".to_owned();
    }
    let rest = line_text[start..].trim();
    let rest = rest.split(" #").next().unwrap_or(rest).trim_end();
    // Inside a flow mapping, the value ends at the next key.
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => {
                depth -= 1;
                if depth < 0 {
                    return rest[..i].trim_end().to_owned();
                }
                if depth == 0 {
                    return rest[..=i].to_owned();
                }
            }
            ',' if depth == 0 => return rest[..i].to_owned(),
            _ => {}
        }
    }
    rest.to_owned()
}

/// The parser's message without its leading "line 3 column 17: ".
fn without_location(message: &str) -> &str {
    match message.split_once(": ") {
        Some((at, rest)) if at.starts_with("line ") && at.contains(" column ") => rest,
        _ => message,
    }
}

/// A value as written, with the values of secret keys inside it (a flow mapping where a
/// scalar belongs) replaced.
fn redact(written: &str) -> String {
    let mut out = written.to_owned();
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(at) = out[from..].find(&format!("{key}:")).map(|i| i + from) {
            let start = at + key.len() + 1;
            let end = out[start..]
                .find([',', '}', ']'])
                .map_or(out.len(), |i| i + start);
            out.replace_range(start..end, " [redacted]");
            from = start;
        }
    }
    out
}

/// Keys whose values are never shown.
const SECRET_KEYS: [&str; 3] = ["password", "signingKey", "previousSigningKey"];

struct UnknownKey {
    key: String,
    expected: Vec<String>,
}

impl UnknownKey {
    fn at(self, path: &str) -> ConfigError {
        let key = match path.rsplit_once('.') {
            Some((_, last)) if last == self.key => path.to_owned(),
            _ if path.is_empty() || path == "." => self.key,
            _ => format!("{path}.{}", self.key),
        };
        ConfigError::UnknownKey {
            key,
            expected: self.expected,
        }
    }
}

/// Reads "unknown field `x`, expected one of a, b" (serde's words, as the parser prints them).
fn unknown_key(message: &str) -> Option<UnknownKey> {
    let rest = message.split_once("unknown field `")?.1;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split_once("expected one of ")
        .map(|(_, list)| list)
        .or_else(|| rest.split_once("expected ").map(|(_, one)| one))
        .unwrap_or_default()
        .split(',')
        .map(|k| k.trim().trim_matches('`').to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    Some(UnknownKey {
        key: key.to_owned(),
        expected,
    })
}

impl FromText for String {
    const EXPECTED: &'static str = "a string";

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl FromText for Secret {
    const EXPECTED: &'static str = "a string";
    const SECRET: bool = true;

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(Secret(text.to_owned()))
    }
}

/// A whole number from `min` to `max`.
fn whole<T: std::str::FromStr + fmt::Display + PartialOrd>(
    text: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    text.trim()
        .parse()
        .ok()
        .filter(|n| *n >= min && *n <= max)
        .ok_or_else(|| format!("must be a whole number from {min} to {max}"))
}

impl FromText for u16 {
    const EXPECTED: &'static str = "a port, 1 to 65535";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 1, u16::MAX)
    }
}

impl FromText for u32 {
    const EXPECTED: &'static str = "a whole number";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 0, u32::MAX)
    }
}

impl FromText for u64 {
    const EXPECTED: &'static str = "a whole number";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 0, i64::MAX as u64)
    }
}

/// `readReplicas[].weight`.
struct Weight(u32);

impl FromText for Weight {
    const EXPECTED: &'static str = "a weight";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 0, super::MAX_WEIGHT).map(Weight)
    }
}

/// `readReplicaShare`: a percentage, `50` or `"50%"`.
struct Percent(u8);

impl FromText for Percent {
    const EXPECTED: &'static str = "a percentage, 0 to 100";

    fn from_text(text: &str) -> Result<Self, String> {
        let number = text.trim().trim_end_matches('%').trim_end();
        match number.parse::<u8>() {
            Ok(n) if n <= 100 => Ok(Percent(n)),
            _ => Err("must be a whole percentage from 0 to 100".to_owned()),
        }
    }
}

impl FromText for bool {
    const EXPECTED: &'static str = "true or false";

    fn from_text(text: &str) -> Result<Self, String> {
        // YAML 1.1's spellings too, as the parsers our users came from read them.
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Ok(true),
            "false" | "no" | "off" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        }
    }
}

impl FromText for Duration {
    const EXPECTED: &'static str = "a duration";

    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text).map_err(|reason| {
            format!(
                "{reason}; a duration is whole seconds (10) or a string such as \"500ms\", \
                 \"10s\", \"2m\""
            )
        })
    }
}

/// `shareTokenQueries`: `off`, or how long a token query gathers writes (`0ms` and up).
struct Sharing(Option<Duration>);

impl FromText for Sharing {
    const EXPECTED: &'static str = "off or a duration";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "no" => Ok(Sharing(None)),
            _ => Duration::from_text(text)
                .map(|d| Sharing(Some(d)))
                .map_err(|reason| format!("`off`, or {reason}")),
        }
    }
}

/// A duration where `0` means "no limit".
struct Limit(Option<Duration>);

impl FromText for Limit {
    const EXPECTED: &'static str = "a duration";

    fn from_text(text: &str) -> Result<Self, String> {
        Duration::from_text(text).map(|d| Limit((!d.is_zero()).then_some(d)))
    }
}

struct SslMode(PgSslMode);

impl FromText for SslMode {
    const EXPECTED: &'static str = "a TLS mode";

    fn from_text(text: &str) -> Result<Self, String> {
        text.trim().parse().map(SslMode).map_err(|_| {
            "must be one of disable, allow, prefer, require, verify-ca, verify-full".to_owned()
        })
    }
}

impl FromText for StickyMode {
    const EXPECTED: &'static str = "lsn, window or off";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "lsn" => Ok(StickyMode::Lsn),
            "window" => Ok(StickyMode::Window),
            "off" => Ok(StickyMode::Off),
            _ => Err("must be one of lsn, window, off".to_owned()),
        }
    }
}

impl FromText for Roles {
    const EXPECTED: &'static str = "observed or configured";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "observed" | "auto" => Ok(Roles::Observed),
            "configured" | "fixed" => Ok(Roles::Configured),
            _ => {
                Err("must be observed (follow promotions) or configured (the host only)".to_owned())
            }
        }
    }
}

impl FromText for ReplicaReadOnly {
    const EXPECTED: &'static str = "auto, startupOption, sessionSet, transaction or standby";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(ReplicaReadOnly::Auto),
            "startupOption" => Ok(ReplicaReadOnly::StartupOption),
            "sessionSet" => Ok(ReplicaReadOnly::SessionSet),
            "transaction" => Ok(ReplicaReadOnly::Transaction),
            "standby" => Ok(ReplicaReadOnly::Standby),
            _ => Err(
                "must be one of auto, startupOption, sessionSet, transaction, standby".to_owned(),
            ),
        }
    }
}

/// `db.driver`: accepted for the block our users already have; PostgreSQL is the only one.
struct Driver;

impl FromText for Driver {
    const EXPECTED: &'static str = "postgresql";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "postgresql" | "postgres" => Ok(Driver),
            _ => Err("rwsplit speaks to PostgreSQL: must be postgresql or postgres".to_owned()),
        }
    }
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

    #[test]
    fn the_value_written_is_found_from_the_error_location() {
        let text = "a:\n  k: [1, 2] # c\n  m: { x: [3], y: 4 }\n";
        assert_eq!(written_at(text, 2, 6), "[1, 2]");
        assert_eq!(written_at(text, 3, 11), "[3]");
        assert_eq!(written_at(text, 3, 19), "4");
        assert_eq!(written_at("  password: [x, y", 1, 13), "[redacted]");
        assert_eq!(
            redact("{ name: r, password: hunter2, x: 1 }"),
            "{ name: r, password: [redacted], x: 1 }"
        );
    }

    #[test]
    fn placeholders_are_masked_for_the_parser_and_restored() {
        let text = "a: { h: ${A}, p: ${B:-5432} }\nb: $${C}\nc: ${D\n";
        let (masked, placeholders) = mask(text);
        assert_eq!(placeholders, ["${A}", "${B:-5432}"]);
        assert!(!masked.contains("${A}") && masked.contains("$${C}") && masked.contains("${D"));
        assert_eq!(unmask(&masked, &placeholders), text);
    }

    #[test]
    fn serde_unknown_field_messages_are_read() {
        let u = unknown_key("unknown field `drver`, expected one of driver, host").unwrap();
        assert_eq!(u.key, "drver");
        assert_eq!(u.expected, ["driver", "host"]);
        assert_eq!(u.at("db.drver").to_string().matches("db.drver").count(), 1);
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
