//! The YAML format our users run parses, placeholders expand, and every invalid case gives an
//! error naming the key and the value.

use std::time::Duration;

use rwsplit::{Config, ConfigError, ReplicaConfig};

const USERS_CONFIG: &str = r#"
server:
  listen: 0.0.0.0:8080
db:
  host: ${DB_HOST:-127.0.0.1}
  port: ${DB_PRIMARY_PORT:-5432}
  username: ${DB_USER:-app}
  password: ${DB_PASSWORD}
  database: shop
  sslMode: disable
  maxConnections: 50
  maxIdleConns: 10
  connMaxLifetime: 3600
  connMaxIdleTime: 600
  enableReadWriteSeparation: true
  replicaLagThreshold: 10
  readReplicas:
    - name: replica1
      host: ${DB_REPLICA1_HOST:-127.0.0.1}
      port: ${DB_REPLICA1_PORT:-5433}
      weight: 2
      maxConnections: 30
      maxIdleConns: 5
    - name: replica2
      host: 127.0.0.1
      port: 5434
      weight: 1
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "DB_PASSWORD" => Some("s3cret-pw".into()),
        "DB_PRIMARY_PORT" => Some("6543".into()),
        _ => None,
    }
}

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_with_env(yaml, env)
}

fn error(yaml: &str) -> String {
    parse(yaml)
        .expect_err("config should be rejected")
        .to_string()
}

fn db(body: &str) -> String {
    format!("db:\n  host: 127.0.0.1\n{body}")
}

#[test]
fn users_config_parses_with_placeholders() {
    let config = parse(USERS_CONFIG).unwrap();
    assert!(config.separation_enabled());
    let names: Vec<&str> = config.replicas().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["replica1", "replica2"]);
    assert_eq!(config.replicas()[0].get_weight(), 2);
    let debug = format!("{config:?}");
    assert!(
        debug.contains("6543"),
        "placeholder with a set variable: {debug}"
    );
    assert!(debug.contains("5433"), "placeholder default: {debug}");
    assert!(
        !debug.contains("s3cret-pw"),
        "password in Debug output: {debug}"
    );
    assert!(debug.contains("redacted"));
    // The only warning: no signing key for read-your-writes tokens yet.
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("db.consistency.signingKey"),
        "{warnings:?}"
    );
}

#[test]
fn consistency_block_parses_and_keeps_keys_secret() {
    let config = parse(&db(
        "  enableReadWriteSeparation: true\n  consistency:\n    mode: lsn\n    signingKey: \"${DB_PASSWORD}-padded-to-thirty-two-bytes\"\n    previousSigningKey: ${OLD_KEY:-}\n    maxPin: 5s\n    pollInterval: 50ms\n    waitForReplica: 20ms\n    cookieName: sticky\n    headerName: x-sticky\n    cookieSecure: false\n    cookiePath: /app\n",
    ))
    .unwrap();
    assert!(
        !config.warnings().iter().any(|w| w.contains("signingKey")),
        "{:?}",
        config.warnings()
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("padded-to-thirty-two"), "{debug}");
    assert!(
        debug.contains("Lsn") && debug.contains("sticky") && debug.contains("50ms"),
        "{debug}"
    );
    let window = parse(&db("  consistency: { mode: window, window: 3s }\n")).unwrap();
    assert!(format!("{window:?}").contains("Window"));
}

#[test]
fn consistency_errors_name_key_and_value_but_never_a_key() {
    let cases = [
        (
            db("  consistency: { mode: sometimes }\n"),
            "db.consistency.mode",
            "sometimes",
        ),
        (
            db("  consistency: { pollInterval: 1ms }\n"),
            "db.consistency.pollInterval",
            "1ms",
        ),
        (
            db("  consistency: { headerName: \"bad header\" }\n"),
            "db.consistency.headerName",
            "bad header",
        ),
        (
            db("  consistency: { cookieName: \"a;b\" }\n"),
            "db.consistency.cookieName",
            "a;b",
        ),
        (
            db("  consistency: { cookiePath: nope }\n"),
            "db.consistency.cookiePath",
            "nope",
        ),
        (
            db("  consistency: { mode: window, window: 0 }\n"),
            "db.consistency.window",
            "0",
        ),
        (
            db("  consistency: { maxPn: 1 }\n"),
            "db.consistency.maxPn",
            "maxPin",
        ),
    ];
    for (yaml, key, value) in cases {
        let message = error(&yaml);
        assert!(message.contains(key), "{key} in {message:?}");
        assert!(message.contains(value), "{value} in {message:?}");
    }
    let message = error(&db("  consistency: { signingKey: short-secret }\n"));
    assert!(message.contains("db.consistency.signingKey"), "{message}");
    assert!(!message.contains("short-secret"), "{message}");
}

#[test]
fn durations_take_seconds_or_strings() {
    let config = parse(&db(
        "  replicaLagThreshold: 500ms\n  healthCheckInterval: \"250ms\"\n  connMaxLifetime: 1h\n",
    ))
    .unwrap();
    let debug = format!("{config:?}");
    assert!(debug.contains("lag_threshold: 500ms"), "{debug}");
    assert_eq!(config.health_interval(), Duration::from_millis(250));
    assert!(debug.contains("3600s"), "{debug}");
}

#[test]
fn defaults_are_documented_values() {
    let config = parse("db:\n  host: db\n").unwrap();
    assert!(!config.separation_enabled(), "separation is opt-in");
    assert_eq!(config.health_interval(), Duration::from_secs(30));
    let debug = format!("{config:?}");
    for expected in ["port: 5432", "max_connections: 10", "lag_threshold: 10s"] {
        assert!(debug.contains(expected), "{expected} in {debug}");
    }
}

#[test]
fn unset_placeholder_names_the_variable() {
    let err = Config::from_yaml_with_env(USERS_CONFIG, |_| None).unwrap_err();
    assert!(matches!(err, ConfigError::Placeholder { .. }));
    assert!(err.to_string().contains("DB_PASSWORD"), "{err}");
}

#[test]
fn each_invalid_value_names_key_and_value() {
    let cases = [
        (db("  port: 70000\n"), "db.port", "70000"),
        (db("  port: -1\n"), "db.port", "-1"),
        (db("  port: abc\n"), "db.port", "abc"),
        (db("  maxConnections: 0\n"), "db.maxConnections", "0"),
        (
            db("  enableReadWriteSeparation: maybe\n"),
            "db.enableReadWriteSeparation",
            "maybe",
        ),
        (
            db("  replicaLagThreshold: soon\n"),
            "db.replicaLagThreshold",
            "soon",
        ),
        (
            db("  replicaLagThreshold: -3\n"),
            "db.replicaLagThreshold",
            "-3",
        ),
        (db("  sslMode: sometimes\n"), "db.sslMode", "sometimes"),
        (
            db("  readReplicas:\n    - { name: r1, host: h, weight: -1 }\n"),
            "db.readReplicas[0].weight",
            "-1",
        ),
        (
            db("  readReplicas:\n    - { name: r1, host: h, port: 99999 }\n"),
            "db.readReplicas[0].port",
            "99999",
        ),
        (
            db("  readReplicas:\n    - { name: r1, host: a }\n    - { name: r1, host: b }\n"),
            "db.readReplicas[1].name",
            "r1",
        ),
        (
            db("  readReplicas:\n    - { name: primary, host: a }\n"),
            "db.readReplicas[0].name",
            "primary",
        ),
        (db("  readReplicas: 3\n"), "db.readReplicas", "3"),
    ];
    for (yaml, key, value) in cases {
        let message = error(&yaml);
        assert!(message.contains(key), "{key} in {message:?}");
        assert!(message.contains(value), "{value} in {message:?}");
    }
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let message = error(&db("  maxConns: 5\n"));
    assert!(message.contains("db.maxConns"), "{message}");
    assert!(
        message.contains("maxConnections"),
        "lists the known keys: {message}"
    );
    let message = error(&db(
        "  readReplicas:\n    - { name: r, host: h, wieght: 2 }\n",
    ));
    assert!(message.contains("db.readReplicas[0].wieght"), "{message}");
}

#[test]
fn missing_primary_host_and_missing_block_are_errors() {
    assert!(error("db:\n  port: 5432\n").contains("db.host"));
    assert!(error("db:\n  host: ''\n").contains("db.host"));
    assert!(error("server: {}\n").contains("`db`"));
    assert!(error(&db("  readReplicas:\n    - { name: r }\n")).contains("db.readReplicas[0].host"));
    assert!(matches!(
        parse("db: {host: h\n"),
        Err(ConfigError::Syntax(_))
    ));
    let message = error("db: [unclosed");
    assert!(
        message.contains("`db`") && message.contains("[unclosed"),
        "{message}"
    );
}

#[test]
fn a_password_never_appears_in_errors() {
    let message = error("db:\n  host: h\n  password: [hunter2]\n");
    assert!(message.contains("db.password"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let message = error("db:\n  host: h\n  password: hunter2: [x\n");
    assert!(!message.contains("hunter2"), "{message}");
    // Numeric passwords are taken as text rather than rejected (and quoted).
    let config = parse("db:\n  host: h\n  password: 123456\n").unwrap();
    assert!(!format!("{config:?}").contains("123456"));
}

#[test]
fn empty_replica_list_with_separation_warns() {
    let config = parse(&db(
        "  enableReadWriteSeparation: true\n  readReplicas: []\n",
    ))
    .unwrap();
    assert!(config.warnings()[0].contains("readReplicas is empty"));
    let config = parse(&db("  readReplicas:\n    - { name: r, host: h }\n")).unwrap();
    assert!(config.warnings()[0].contains("enableReadWriteSeparation is false"));
}

#[test]
fn builder_offers_the_same_settings_and_checks() {
    let config = Config::new("primary.internal")
        .port(6432)
        .username("app")
        .password("pw-in-code")
        .database("shop")
        .max_connections(40)
        .max_idle_connections(8)
        .conn_max_lifetime(Some(Duration::from_secs(3600)))
        .conn_max_idle_time(None)
        .read_write_separation(true)
        .replica_lag_threshold(Duration::from_secs(5))
        .replica_lag_bytes_threshold(Some(1 << 20))
        .health_check_interval(Duration::from_secs(2))
        .replica(ReplicaConfig::new("a", "ra").weight(3).max_connections(20))
        .validate()
        .unwrap();
    assert!(!format!("{config:?}").contains("pw-in-code"));
    let err = Config::new("h")
        .replica(ReplicaConfig::new("a", "x"))
        .replica(ReplicaConfig::new("a", "y"))
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("db.readReplicas[1].name"), "{err}");
    let err = Config::new("h")
        .replica(ReplicaConfig::new("r", "x").weight(10_001))
        .validate();
    assert!(err.unwrap_err().to_string().contains("10001"));
}

fn example(file: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/examples/config/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn the_dev_example_parses_with_defaults_alone() {
    let config = Config::from_yaml_with_env(&example("dev.yaml"), |_| None).unwrap();
    assert!(config.separation_enabled());
    let names: Vec<&str> = config.replicas().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["replica1", "replica2"]);
    // The compose network's servers, in the clear: said for each, nothing else.
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings.iter().all(|w| w.contains("is disable for")),
        "{warnings:?}"
    );
    // The local demo's servers are on loopback: nothing to say.
    let local = Config::from_yaml_with_env(&example("dev.yaml"), |name| {
        name.ends_with("HOST").then(|| "127.0.0.1".to_owned())
    })
    .unwrap();
    assert!(local.warnings().is_empty(), "{:?}", local.warnings());
}

#[test]
fn the_production_example_needs_its_secrets_and_parses_with_them() {
    let err = Config::from_yaml_with_env(&example("production.yaml"), |_| None).unwrap_err();
    assert!(err.to_string().contains("DB_PRIMARY_HOST"), "{err}");
    let env = |name: &str| match name {
        "RWSPLIT_PREVIOUS_SIGNING_KEY" | "DB_PRIMARY_PORT" => None,
        "RWSPLIT_SIGNING_KEY" => Some("k0-k1-k2-k3-k4-k5-k6-k7-k8-k9-ka-kb-kc-kd-ke-kf".into()),
        "DB_PASSWORD" => Some("prod-secret".into()),
        "DB_SSL_ROOT_CERT" => Some(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").into()),
        other => Some(other.to_lowercase().replace('_', "-")),
    };
    let config = Config::from_yaml_with_env(&example("production.yaml"), env).unwrap();
    let weights: Vec<u32> = config.replicas().iter().map(|r| r.get_weight()).collect();
    assert_eq!(weights, [2, 1, 1]);
    let debug = format!("{config:?}");
    assert!(debug.contains("VerifyFull"), "{debug}");
    assert!(debug.contains("lag_threshold: 10s"), "{debug}");
    assert!(!debug.contains("prod-secret") && !debug.contains("k0-k1"));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

/// The keys a block accepts, as its unknown-key error lists them.
fn keys_of(yaml: &str) -> &'static [&'static str] {
    match parse(yaml) {
        // Leaked: the tests hold the key names for their whole run.
        Err(ConfigError::UnknownKey { expected, .. }) => expected
            .into_iter()
            .map(|key| &*key.leak())
            .collect::<Vec<&'static str>>()
            .leak(),
        other => panic!("expected an unknown-key error, got {other:?}"),
    }
}

/// Every key, given a value of the wrong type, is rejected with an error naming the key's
/// path and the value (secrets excepted: their value is never shown), without a panic.
#[test]
fn every_key_with_a_wrong_type_is_named_with_its_value() {
    const SECRETS: &[&str] = &[
        "password",
        "signingKey",
        "previousSigningKey",
        "verificationKeys",
    ];
    let plain = |keys: &'static [&'static str]| {
        keys.iter()
            .copied()
            .filter(|k| !SECRETS.contains(k))
            .collect::<Vec<_>>()
    };
    let db_keys = plain(keys_of(&db("  zzz: 1\n")));
    let replica_keys = plain(keys_of(&db(
        "  readReplicas:\n    - { name: r, host: h, zzz: 1 }\n",
    )));
    let consistency_keys = plain(keys_of(&db("  consistency:\n    zzz: 1\n")));
    assert!(db_keys.contains(&"failoverOnPoolExhausted") && db_keys.contains(&"readReplicas"));
    assert!(replica_keys.contains(&"weight") && consistency_keys.contains(&"mode"));
    let wrong = "[7007, 8008]";
    let mut cases: Vec<(String, String)> = Vec::new();
    // The helper sets the primary's host already.
    for key in db_keys.iter().filter(|k| **k != "host") {
        cases.push((db(&format!("  {key}: {wrong}\n")), format!("db.{key}")));
    }
    for key in &replica_keys {
        let mut fields = vec![format!("{key}: {wrong}")];
        for (required, value) in [("name", "r1"), ("host", "h")] {
            if *key != required {
                fields.push(format!("{required}: {value}"));
            }
        }
        let yaml = db(&format!(
            "  readReplicas:\n    - {{ {} }}\n",
            fields.join(", ")
        ));
        cases.push((yaml, format!("db.readReplicas[0].{key}")));
    }
    for key in &consistency_keys {
        let yaml = db(&format!("  consistency:\n    {key}: {wrong}\n"));
        cases.push((yaml, format!("db.consistency.{key}")));
    }
    for (yaml, key) in &cases {
        let message = error(yaml);
        // A list where a list of replicas belongs fails at its first item.
        assert!(message.contains(key.as_str()), "{key} in {message:?}");
        assert!(message.contains("7007"), "the value in {message:?}");
    }
    for (secret, yaml) in [
        ("db.password", db(&format!("  password: {wrong}\n"))),
        (
            "db.readReplicas[0].password",
            db(&format!(
                "  readReplicas:\n    - {{ name: r, host: h, password: {wrong} }}\n"
            )),
        ),
        (
            "db.consistency.signingKey",
            db(&format!("  consistency:\n    signingKey: {wrong}\n")),
        ),
        (
            "db.consistency.previousSigningKey",
            db(&format!(
                "  consistency:\n    previousSigningKey: {wrong}\n"
            )),
        ),
        (
            "db.consistency.verificationKeys",
            db(&format!("  consistency:\n    verificationKeys: {wrong}\n")),
        ),
    ] {
        let message = error(&yaml);
        assert!(message.contains(secret), "{secret} in {message:?}");
        assert!(!message.contains("7007"), "a secret shown in {message:?}");
    }
}

/// Numeric keys reject values out of their range, naming key and value.
#[test]
fn numbers_out_of_range_are_named_with_their_value() {
    for (yaml, key, value) in [
        (
            db("  maxConnections: 4294967296\n"),
            "db.maxConnections",
            "4294967296",
        ),
        (db("  maxIdleConns: -2\n"), "db.maxIdleConns", "-2"),
        (
            db("  replicaLagBytesThreshold: -5\n"),
            "db.replicaLagBytesThreshold",
            "-5",
        ),
        (
            db("  healthCheckInterval: 0\n"),
            "db.healthCheckInterval",
            "0",
        ),
        (db("  connectTimeout: 0\n"), "db.connectTimeout", "0"),
        (
            db("  readReplicas:\n    - { name: r, host: h, weight: 4294967296 }\n"),
            "db.readReplicas[0].weight",
            "4294967296",
        ),
        (
            db("  consistency:\n    pollInterval: 0\n"),
            "db.consistency.pollInterval",
            "0",
        ),
    ] {
        let message = error(&yaml);
        assert!(message.contains(key), "{key} in {message:?}");
        assert!(message.contains(value), "{value} in {message:?}");
    }
}

#[test]
fn a_secret_inside_a_misplaced_mapping_is_not_shown() {
    let message = error(&db(
        "  readReplicas: { name: r, host: h, password: hunter2-secret }\n",
    ));
    assert!(message.contains("db.readReplicas"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

/// Property tests over whole documents: any text, and any mix of real keys with values of every
/// shape, gives a configuration or an error that names a `db` key, never a panic, and never
/// shows a secret. `PROPTEST_CASES=100000 cargo test --test config props` runs them longer.
mod props {
    use super::*;
    use proptest::prelude::*;

    const SECRETS: &[&str] = &[
        "password",
        "signingKey",
        "previousSigningKey",
        "verificationKeys",
    ];
    const SECRET_VALUE: &str = "hunter2-in-a-property";
    const VALUES: &[&str] = &[
        "0",
        "1",
        "-1",
        "2",
        "65535",
        "65536",
        "4294967296",
        "99999999999999999999",
        "0.5",
        "-0.5",
        "1e400",
        ".nan",
        "true",
        "false",
        "null",
        "~",
        "''",
        "\"\"",
        "x",
        "10s",
        "250ms",
        "-5ms",
        "1h30m",
        "lsn",
        "window",
        "off",
        "require",
        "disable",
        "[]",
        "[1, 2]",
        "{}",
        "{ a: 1 }",
        "${UNSET}",
        "${UNSET:-3}",
        "\"${UNSET:-}\"",
        "'quoted: value'",
        "&a 1",
        "*nope",
        "!!binary aGk=",
        "\"\\u0000\"",
    ];

    /// Every accepted key as `(section, key)`, read from the unknown-key errors.
    fn keys() -> Vec<(&'static str, &'static str)> {
        let db_keys = keys_of(&db("  zzz: 1\n"));
        let replica_keys = keys_of(&db("  readReplicas:\n    - { name: r, host: h, zzz: 1 }\n"));
        let consistency_keys = keys_of(&db("  consistency:\n    zzz: 1\n"));
        let sections = [("db", db_keys), ("replica", replica_keys)];
        sections
            .into_iter()
            .chain([("consistency", consistency_keys)])
            .flat_map(|(section, keys)| keys.iter().map(move |k| (section, *k)))
            .filter(|(section, key)| {
                !(*section == "db" && ["host", "consistency", "readReplicas"].contains(key))
            })
            .collect()
    }

    /// A secret written in every shape: plain, quoted, in a list or a mapping, broken YAML.
    const SECRET_SHAPES: &[&str] = &[
        "{}",
        "\"{}\"",
        "'{}'",
        "[{}]",
        "[1, {}]",
        "{{ k: {} }}",
        "{}: x",
        "[{}",
        "\"{}",
        "{} # comment",
        "|\n      {}",
    ];

    fn document(settings: &[((&str, &str), &str)]) -> String {
        let value = |key: &str, value: &str| match SECRETS.contains(&key) {
            true => {
                let shape = SECRET_SHAPES[value.len() % SECRET_SHAPES.len()];
                shape
                    .replace("{}", SECRET_VALUE)
                    .replace("{{", "{")
                    .replace("}}", "}")
            }
            false => value.to_owned(),
        };
        let mut yaml = db("");
        let mut replica = vec!["name: r".to_owned(), "host: h".to_owned()];
        let mut consistency = String::new();
        for ((section, key), v) in settings {
            match *section {
                "db" => yaml.push_str(&format!("  {key}: {}\n", value(key, v))),
                "replica" => replica.push(format!("{key}: {}", value(key, v))),
                _ => consistency.push_str(&format!("    {key}: {}\n", value(key, v))),
            }
        }
        yaml.push_str(&format!(
            "  readReplicas:\n    - {{ {} }}\n",
            replica.join(", ")
        ));
        if !consistency.is_empty() {
            yaml.push_str(&format!("  consistency:\n{consistency}"));
        }
        yaml
    }

    proptest! {
        #[test]
        fn any_text_is_a_config_or_an_error(text in any::<String>()) {
            if let Err(error) = Config::from_yaml_with_env(&text, |_| None) {
                prop_assert!(!error.to_string().is_empty());
            }
        }

        #[test]
        fn any_mix_of_keys_and_values_is_a_config_or_names_a_key(
            settings in prop::collection::vec(
                (prop::sample::select(keys()), prop::sample::select(VALUES)),
                1..6,
            ),
        ) {
            let yaml = document(&settings);
            let Err(error) = Config::from_yaml_with_env(&yaml, |_| None) else {
                return Ok(());
            };
            let message = error.to_string();
            prop_assert!(!message.contains(SECRET_VALUE), "{message}");
            match &error {
                ConfigError::Invalid { key, .. }
                | ConfigError::Missing { key, .. }
                | ConfigError::UnknownKey { key, .. } => {
                    prop_assert!(key.starts_with("db"), "{key}: {message}");
                    prop_assert!(message.contains(key.as_str()), "{message}");
                }
                ConfigError::Placeholder { placeholder, .. } => {
                    prop_assert!(message.contains(placeholder.as_str()), "{message}");
                }
                _ => prop_assert!(!message.is_empty()),
            }
        }
    }
}

#[test]
fn every_duration_has_an_upper_bound_named_with_its_key() {
    // Durations that would overflow a timer (or that are a unit left out) are refused with
    // the key and the value, at parse time.
    for (key, value) in [
        ("healthCheckInterval", "1e19"),
        ("healthCheckTimeout", "48h"),
        ("replicaLagThreshold", "100000"),
        ("connectTimeout", "25h"),
        ("connMaxLifetime", "1e12"),
        ("connMaxIdleTime", "90000"),
    ] {
        let message = error(&db(&format!("  {key}: {value}\n")));
        assert!(message.contains(&format!("db.{key}")), "{message}");
        assert!(message.contains("at most"), "{message}");
    }
    for (key, value) in [
        ("waitForReplica", "1e19"),
        ("waitForReplica", "2m"),
        ("maxPin", "1e19"),
        ("pollInterval", "1e10"),
        ("window", "48h"),
    ] {
        let message = error(&db(&format!("  consistency:\n    {key}: {value}\n")));
        assert!(
            message.contains(&format!("db.consistency.{key}")),
            "{message}"
        );
        assert!(message.contains("at most"), "{message}");
    }
    let replica = "  readReplicas:\n    - { name: r1, host: h, connectTimeout: 1e9 }\n";
    let message = error(&db(replica));
    assert!(
        message.contains("db.readReplicas[0].connectTimeout"),
        "{message}"
    );
    // The longest accepted: a day (a minute for waitForReplica).
    parse(&db(
        "  healthCheckInterval: 24h\n  consistency:\n    waitForReplica: 60s\n",
    ))
    .unwrap();
}

#[test]
fn a_max_pin_shorter_than_lag_detection_is_raised_with_a_warning() {
    let config = parse(&db(
        "  replicaLagThreshold: 10s\n  healthCheckTimeout: 5s\n  consistency:\n    maxPin: 3s\n",
    ))
    .unwrap();
    let warnings = config.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("db.consistency.maxPin") && w.contains("17.5s")),
        "{warnings:?}"
    );
    let long_enough = parse(&db("  consistency:\n    maxPin: 18s\n")).unwrap();
    assert!(
        !long_enough.warnings().iter().any(|w| w.contains("maxPin")),
        "{:?}",
        long_enough.warnings()
    );
}

/// The checklist's production block, as a fixture: with its variables set it parses, the
/// `driver` line included, and every value is the one written or set.
#[test]
fn the_checklists_production_block_parses_as_written() {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/checklist-production.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let env = |name: &str| match name {
        "DB_HOST" => Some("primary.db.internal".to_owned()),
        "DB_USER" => Some("app".to_owned()),
        // Characters that broke the document when placeholders were spliced into its text.
        "DB_PASSWORD" => Some("p#ss: \"w\\rd\" # not a comment".to_owned()),
        "DB_NAME" => Some("shop".to_owned()),
        "DB_REPLICA1_HOST" => Some("replica-1.db.internal".to_owned()),
        "DB_REPLICA2_HOST" => Some("replica-2.db.internal".to_owned()),
        "RWSPLIT_SIGNING_KEY" => Some("12345678901234567890123456789012345678".to_owned()),
        _ => None,
    };
    let config = Config::from_yaml_with_env(&text, env).unwrap();
    assert!(config.separation_enabled());
    assert_eq!(config.health_interval(), Duration::from_secs(30));
    let replicas: Vec<(&str, u32)> = config
        .replicas()
        .iter()
        .map(|r| (r.name(), r.get_weight()))
        .collect();
    // Replicas without a name go by their address.
    assert_eq!(
        replicas,
        [
            ("replica-1.db.internal:5432", 2),
            ("replica-2.db.internal:5432", 1)
        ]
    );
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("p#ss") && !debug.contains("1234567890"),
        "{debug}"
    );
    // No `sslMode`: `prefer`, which checks no certificate and may fall back to plaintext
    // silently; said at start, for each server.
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("is prefer for") && w.contains("verify-full")),
        "{warnings:?}"
    );

    // Any driver but PostgreSQL is refused with the supported values named.
    let message = error(&text.replace("\"postgresql\"", "mysql"));
    assert!(
        message.contains("db.driver") && message.contains("mysql"),
        "{message}"
    );
    assert!(message.contains("postgresql or postgres"), "{message}");
}

/// YAML 1.1's spellings keep the text written: `mode: off` is the mode `off`, a password `no`
/// is the password "no", and booleans take `yes`/`no`/`on`/`off` as such parsers read them.
#[test]
fn yaml_1_1_spellings_keep_their_meaning() {
    for (mode, debug) in [("lsn", "Lsn"), ("window", "Window"), ("off", "Off")] {
        let config = parse(&db(&format!("  consistency:\n    mode: {mode}\n"))).unwrap();
        assert!(
            format!("{config:?}").contains(&format!("mode: {debug}")),
            "{mode}"
        );
    }
    for (value, enabled) in [
        ("yes", true),
        ("on", true),
        ("True", true),
        ("no", false),
        ("off", false),
    ] {
        let config = parse(&db(&format!("  enableReadWriteSeparation: {value}\n"))).unwrap();
        assert_eq!(config.separation_enabled(), enabled, "{value}");
    }
    for mode in [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ] {
        parse(&db(&format!("  sslMode: {mode}\n"))).unwrap();
    }
    parse(&db("  driver: postgres\n")).unwrap();
    let message = error(&db("  consistency:\n    mode: yes\n"));
    assert!(
        message.contains("`yes`") && message.contains("lsn, window, off"),
        "{message}"
    );
}

/// `readReplicaShare` takes a percentage, with or without `%`, and refuses anything past 100.
#[test]
fn the_rollout_share_is_a_percentage() {
    let debug = |share: &str| {
        format!(
            "{:?}",
            parse(&db(&format!("  readReplicaShare: {share}\n"))).unwrap()
        )
    };
    assert!(debug("10").contains("replica_share: 10,"));
    assert!(debug("\"50%\"").contains("replica_share: 50,"));
    assert!(debug("${UNSET:-0}").contains("replica_share: 0,"));
    for bad in ["101", "-1", "half", "12.5"] {
        let message = error(&db(&format!("  readReplicaShare: {bad}\n")));
        assert!(
            message.contains("db.readReplicaShare") && message.contains(bad),
            "{message}"
        );
    }
    let err = Config::new("h")
        .read_replica_share(150)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("150"), "{err}");
}

/// `primaryReadWeight` is a weight like a replica's, 0 (off) by default, and a bad one names
/// the key and the value.
#[test]
fn the_primarys_read_weight_is_a_weight() {
    let debug = |weight: &str| {
        format!(
            "{:?}",
            parse(&db(&format!("  primaryReadWeight: {weight}\n"))).unwrap()
        )
    };
    assert!(format!("{:?}", parse(&db("")).unwrap()).contains("primary_read_weight: 0,"));
    assert!(debug("1").contains("primary_read_weight: 1,"));
    assert!(debug("${PRIMARY_WEIGHT:-2}").contains("primary_read_weight: 2,"));
    for bad in ["10001", "-1", "heavy"] {
        let message = error(&db(&format!("  primaryReadWeight: {bad}\n")));
        assert!(
            message.contains("db.primaryReadWeight") && message.contains(bad),
            "{message}"
        );
    }
    let err = Config::new("h")
        .primary_read_weight(20_000)
        .validate()
        .unwrap_err();
    assert!(
        err.to_string().contains("db.primaryReadWeight") && err.to_string().contains("20000"),
        "{err}"
    );
}

/// `loadBalancing` names a strategy, round-robin by default; a bad one names the key and the
/// value, and lists the strategies.
#[test]
fn load_balancing_names_a_strategy() {
    let debug = |text: &str| {
        format!(
            "{:?}",
            parse(&db(&format!("  loadBalancing: {text}\n"))).unwrap()
        )
    };
    assert!(format!("{:?}", parse(&db("")).unwrap()).contains("load_balancing: RoundRobin,"));
    assert!(debug("leastOutstanding").contains("load_balancing: LeastOutstanding,"));
    assert!(debug("peak_ewma").contains("load_balancing: PeakEwma,"));
    assert!(debug("${BALANCING:-peakEwma}").contains("load_balancing: PeakEwma,"));
    assert!(debug("roundRobin").contains("load_balancing: RoundRobin,"));
    for bad in ["random", "least", "1"] {
        let message = error(&db(&format!("  loadBalancing: {bad}\n")));
        assert!(
            message.contains("db.loadBalancing")
                && message.contains(bad)
                && message.contains("peakEwma"),
            "{message}"
        );
    }
}

/// Replica groups: `group:` on a replica and `replicaGroups.<group>.fallback`, read as
/// written; a bad name, a fallback to no group and fallbacks in a circle name the key and the
/// value.
#[test]
fn replica_groups_and_their_fallbacks() {
    use rwsplit::GroupFallback;
    let replicas = "  readReplicas:\n    - { name: replica1, host: h1, group: analytics }\n    \
                    - { name: replica2, host: h2, group: \"${GROUP:-reports}\" }\n    \
                    - { name: replica3, host: h3 }\n";
    let config = parse(&db(&format!(
        "{replicas}  replicaGroups:\n    analytics: {{ fallback: reports }}\n    \
         reports: {{ fallback: none }}\n    audit: {{ fallback: primary }}\n"
    )))
    .unwrap();
    let groups: Vec<Option<&str>> = config.replicas().iter().map(|r| r.get_group()).collect();
    assert_eq!(groups, [Some("analytics"), Some("reports"), None]);
    let debug = format!("{config:?}");
    assert!(
        debug.contains(r#"("analytics", Group("reports"))"#),
        "{debug}"
    );
    assert!(debug.contains(r#"("reports", Refuse)"#), "{debug}");
    assert!(debug.contains(r#"("audit", Primary)"#), "{debug}");
    let built = Config::new("h")
        .replica(rwsplit::ReplicaConfig::new("r1", "h1").group("analytics"))
        .group_fallback("analytics", GroupFallback::Primary)
        .validate()
        .unwrap();
    assert!(format!("{built:?}").contains(r#"("analytics", Primary)"#));

    let bad = [
        (
            format!("{replicas}  replicaGroups:\n    analytics: {{ fallback: report }}\n"),
            "db.replicaGroups.analytics.fallback",
            "report",
        ),
        (
            format!(
                "{replicas}  replicaGroups:\n    analytics: {{ fallback: reports }}\n    \
                 reports: {{ fallback: analytics }}\n"
            ),
            "db.replicaGroups.analytics.fallback",
            "circle",
        ),
        (
            "  readReplicas:\n    - { name: replica1, host: h1, group: \"an alytics\" }\n"
                .to_owned(),
            "db.readReplicas[0].group",
            "an alytics",
        ),
        (
            "  readReplicas:\n    - { name: replica1, host: h1, group: primary }\n".to_owned(),
            "db.readReplicas[0].group",
            "primary",
        ),
        (
            format!("{replicas}  replicaGroups:\n    analytics: {{ fallbak: none }}\n"),
            "fallbak",
            "fallbak",
        ),
    ];
    for (body, key, value) in bad {
        let message = error(&db(&body));
        assert!(
            message.contains(key) && message.contains(value),
            "{key} {value}: {message}"
        );
    }
}

/// `replicaDiscovery`: each source read as written, with its defaults; a bad value names the
/// key and the value.
#[test]
fn replica_discovery_sources() {
    use rwsplit::{DiscoveryConfig, Records};
    let config = parse(&db(
        "  replicaDiscovery:\n    - dns: _pg._tcp.replicas.service.consul\n      records: SRV\n      \
         nameserver: 127.0.0.1:8600\n      interval: 30s\n      drainDelay: 1m\n      \
         group: analytics\n    - dns: \"${READERS:-readers.db.internal}\"\n      port: 6432\n",
    ))
    .unwrap();
    let debug = format!("{config:?}");
    let first = DiscoveryConfig::srv("_pg._tcp.replicas.service.consul")
        .nameserver("127.0.0.1:8600".parse().unwrap())
        .interval(std::time::Duration::from_secs(30))
        .drain_delay(std::time::Duration::from_secs(60))
        .group("analytics");
    let second = DiscoveryConfig::addresses("readers.db.internal").port(6432);
    assert!(debug.contains(&format!("{first:?}")), "{debug}");
    assert!(debug.contains(&format!("{second:?}")), "{debug}");
    assert!(debug.contains(&format!("{:?}", Records::Service)));
    // A bare address is port 53.
    let bare = parse(&db(
        "  replicaDiscovery:\n    - { dns: r.test, nameserver: 10.0.0.2 }\n",
    ))
    .unwrap();
    assert!(format!("{bare:?}").contains("10.0.0.2:53"));

    for (entry, key, value) in [
        ("{ dns: r.test, records: MX }", "records", "MX"),
        ("{ dns: r.test, interval: 10ms }", "interval", "10ms"),
        (
            "{ dns: r.test, nameserver: consul }",
            "nameserver",
            "consul",
        ),
        ("{ dns: r.test, port: 0 }", "port", "0"),
        ("{ dns: \"\" }", "dns", "dns"),
        ("{ dns: r.test, group: \"a b\" }", "group", "a b"),
    ] {
        let message = error(&db(&format!("  replicaDiscovery:\n    - {entry}\n")));
        assert!(
            message.contains(&format!("db.replicaDiscovery[0].{key}")) && message.contains(value),
            "{entry}: {message}"
        );
    }
}

/// `roles` and `primaryCandidates`: observed by default, names checked against the servers.
#[test]
fn roles_and_primary_candidates_parse_and_name_bad_values() {
    use rwsplit::Roles;
    let replicas =
        "  readReplicas:\n    - { name: replica1, host: h1 }\n    - { name: replica2, host: h2 }\n";
    let config = parse(&db(replicas)).unwrap();
    let observed = parse(&db(&format!("  roles: observed\n{replicas}"))).unwrap();
    let configured = parse(&db(&format!("  roles: configured\n{replicas}"))).unwrap();
    assert_eq!(
        format!("{:?}", observed.roles_setting()),
        format!("{:?}", Roles::Observed)
    );
    assert_eq!(configured.roles_setting(), Roles::Configured);
    assert_eq!(config.roles_setting(), Roles::Observed);
    let listed = parse(&db(&format!(
        "  primaryCandidates: [primary, replica1]\n{replicas}"
    )))
    .unwrap();
    assert_eq!(
        listed.primary_candidates_setting(),
        Some(&["primary".to_owned(), "replica1".to_owned()][..])
    );

    let message = error(&db(&format!("  roles: leader\n{replicas}")));
    assert!(
        message.contains("db.roles") && message.contains("leader"),
        "{message}"
    );
    let message = error(&db(&format!("  primaryCandidates: [replica9]\n{replicas}")));
    assert!(
        message.contains("db.primaryCandidates[0]") && message.contains("replica9"),
        "{message}"
    );
    assert!(message.contains("replica1, replica2"), "{message}");
    // The same through the builder.
    let built = Config::new("127.0.0.1")
        .replica(ReplicaConfig::new("replica1", "h1"))
        .roles(Roles::Configured)
        .primary_candidates(["primary", "replica3"])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(built.contains("replica3"), "{built}");
}

/// `replicaReadOnly`: `auto` by default, each means by name, a bad value named with its key.
#[tokio::test]
async fn replica_read_only_parses_and_names_bad_values() {
    let replicas = "  readReplicas:\n    - { name: replica1, host: h1 }\n";
    let means = |yaml: &str| {
        let registry = rwsplit::Registry::connect_lazy(parse(&db(yaml)).unwrap()).unwrap();
        registry.status().replicas[0].read_only
    };
    assert_eq!(means(replicas), "startup option");
    for (value, shown) in [
        ("auto", "startup option"),
        ("startupOption", "startup option"),
        ("sessionSet", "SET after connect"),
        ("transaction", "read-only transaction per query"),
        ("standby", "the standby's own read-only state"),
    ] {
        assert_eq!(
            means(&format!("  replicaReadOnly: {value}\n{replicas}")),
            shown,
            "{value}"
        );
    }
    let message = error(&db(&format!("  replicaReadOnly: sometimes\n{replicas}")));
    assert!(
        message.contains("db.replicaReadOnly") && message.contains("sometimes"),
        "{message}"
    );
    assert!(message.contains("sessionSet"), "{message}");
}

/// The smaller holes: a replica name that would break a header or forge a log line, a
/// replica's `connectTimeout: 0`, a TLS root certificate that is not there.
#[test]
fn names_timeouts_and_certificates_are_checked_when_read() {
    for (yaml, key, value) in [
        (
            db("  readReplicas:\n    - { name: \"r1\\nINFO forged line\", host: h }\n"),
            "db.readReplicas[0].name",
            "r1\\nINFO forged line",
        ),
        (
            db("  readReplicas:\n    - { name: \"caf\u{e9}\", host: h }\n"),
            "db.readReplicas[0].name",
            "caf\u{e9}",
        ),
        (
            db("  readReplicas:\n    - { name: \" r1\", host: h }\n"),
            "db.readReplicas[0].name",
            " r1",
        ),
        (
            db("  readReplicas:\n    - { name: r1, host: h, connectTimeout: 0 }\n"),
            "db.readReplicas[0].connectTimeout",
            "0",
        ),
        (
            db("  sslMode: verify-full\n  sslRootCert: /nonexistent/root.crt\n"),
            "db.sslRootCert",
            "/nonexistent/root.crt",
        ),
        (
            db("  readReplicas:\n    - { name: r1, host: h, sslRootCert: /nonexistent/r.crt }\n"),
            "db.readReplicas[0].sslRootCert",
            "/nonexistent/r.crt",
        ),
        (db("  sslRootCert: /tmp\n"), "db.sslRootCert", "/tmp"),
    ] {
        let message = error(&yaml);
        assert!(message.contains(key), "{key} in {message:?}");
        assert!(message.contains(value), "{value} in {message:?}");
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
    // What a name may be: the default `host:port` (IPv6 included), punctuation, inner spaces.
    let yaml = db(
        "  readReplicas:\n    - { host: \"::1\", port: 5433 }\n    - { name: \"eu-west/replica #2\", host: h }\n",
    );
    let config = parse(&yaml).unwrap();
    let names: Vec<&str> = config.replicas().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["::1:5433", "eu-west/replica #2"]);
    // A certificate that is there is taken.
    let cert = std::env::temp_dir().join("rwsplit-config-test-root.crt");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
    parse(&db(&format!(
        "  sslMode: verify-full\n  sslRootCert: {}\n",
        cert.display()
    )))
    .unwrap();
}

/// A server off this machine reached without verifying its certificate is said at start, with
/// the key to change; loopback, Unix sockets and verified connections are not.
#[test]
fn unverified_tls_to_another_host_is_warned_about_naming_the_key() {
    use sqlx::postgres::PgSslMode;
    let tls = |config: &Config| -> Vec<String> {
        config
            .warnings()
            .into_iter()
            .filter(|w| w.contains("sslMode"))
            .collect()
    };
    let local = Config::new("127.0.0.1")
        .ssl_mode(PgSslMode::Disable)
        .replica(ReplicaConfig::new("r1", "localhost"))
        .replica(ReplicaConfig::new("r2", "/var/run/postgresql"))
        .replica(ReplicaConfig::new("r3", "::1"));
    assert!(tls(&local).is_empty(), "{:?}", tls(&local));

    // The default (`prefer`) to a remote primary; a replica inheriting it; one with its own
    // `require`; one verified.
    let remote = Config::new("db-1.internal.example")
        .replica(ReplicaConfig::new("inherits", "10.0.0.12"))
        .replica(ReplicaConfig::new("own", "db-3.internal.example").ssl_mode(PgSslMode::Require))
        .replica(
            ReplicaConfig::new("verified", "db-4.internal.example").ssl_mode(PgSslMode::VerifyFull),
        );
    let said = tls(&remote);
    assert_eq!(said.len(), 3, "{said:?}");
    assert!(
        said[0].starts_with("db.sslMode is prefer for db-1.internal.example"),
        "{said:?}"
    );
    assert!(said[0].contains("verify-full"), "{said:?}");
    assert!(
        said[1].starts_with("db.sslMode (for replica inherits) is prefer for 10.0.0.12"),
        "{said:?}"
    );
    assert!(
        said[2].starts_with("db.readReplicas[1].sslMode is require"),
        "{said:?}"
    );
    assert!(said[2].contains("unverified"), "{said:?}");

    let verified = Config::new("db-1.internal.example").ssl_mode(PgSslMode::VerifyCa);
    assert!(tls(&verified).is_empty());
}
