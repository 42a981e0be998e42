//! No error ever shows a secret, nor any part of one longer than three characters: passwords
//! and signing keys of every shape (placeholders in them, broken placeholders, quotes,
//! backslashes), written in the YAML or set in the environment, beside other mistakes; and the
//! `Debug` of a configuration that parses shows none either.
//! `PROPTEST_CASES=100000 cargo test --test secrets` runs it longer.

use proptest::prelude::*;
use rwsplit::Config;

/// Characters error messages are unlikely to hold four of in a row, with the ones that make
/// placeholders and YAML break.
const ALPHABET: &[char] = &[
    'Q', 'X', 'Z', 'J', 'W', 'K', '7', '9', '$', '{', '}', '#', ':', '"', '\\', '%', '!', '@', '1',
];

/// Where a secret goes: a key of the document, and whether it is set through a placeholder.
const PLACES: &[&str] = &[
    "  password: {}\n",
    "  consistency:\n    signingKey: {}\n",
    "  consistency:\n    previousSigningKey: {}\n",
    "  consistency:\n    verificationKeys: [{}]\n",
    "  consistency:\n    verificationKeys:\n      - {}\n",
    "  readReplicas:\n    - {{ name: r1, host: h, password: {} }}\n",
];

/// A mistake elsewhere in the document, so that the error may be about something else.
const OTHER: &[&str] = &[
    "",
    "  maxConnections: -1\n",
    "  sslMode: sometimes\n",
    "  port: ${PORT}\n",
    "  port: ${PORT\n",
    "  zzz: 1\n",
    "  healthCheckInterval: 0\n",
];

fn secret() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 4..40)
        .prop_map(|chars| chars.into_iter().collect())
}

/// The secret as YAML: single-quoted (quotes doubled), or through `${SECRET}`.
fn written(secret: &str, through_env: bool) -> String {
    if through_env {
        "${SECRET}".to_owned()
    } else {
        format!("'{}'", secret.replace('\'', "''"))
    }
}

/// Every part of `secret` longer than three characters that `text` shows.
fn shown(secret: &str, text: &str) -> Vec<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars
        .windows(4)
        .map(|w| w.iter().collect::<String>())
        .filter(|part| text.contains(part.as_str()))
        .collect()
}

proptest! {
    #[test]
    fn no_error_shows_any_part_of_a_secret(
        secret in secret(),
        place in prop::sample::select(PLACES),
        other in prop::sample::select(OTHER),
        through_env in any::<bool>(),
    ) {
        let yaml = format!(
            "db:\n  host: 127.0.0.1\n{}{other}",
            place.replace("{{", "{").replace("}}", "}").replace("{}", &written(&secret, through_env)),
        );
        let env = |name: &str| (name == "SECRET").then(|| secret.clone());
        match Config::from_yaml_with_env(&yaml, env) {
            Err(error) => {
                let text = format!("{error} {error:?}");
                let parts = shown(&secret, &text);
                prop_assert!(parts.is_empty(), "{parts:?} of the secret in {text}\n{yaml}");
            }
            Ok(config) => {
                let debug = format!("{config:?}");
                let parts = shown(&secret, &debug);
                prop_assert!(parts.is_empty(), "{parts:?} of the secret in {debug}");
            }
        }
    }
}

/// The cases, kept as plain tests: a placeholder without its `}` and one with a bad
/// name inside a password.
#[test]
fn placeholder_errors_in_a_password_show_nothing_of_it() {
    for (password, parts) in [
        (
            "Sup3r${ecretPassw0rd",
            &["Sup3", "${ec", "Passw0rd", "w0rd"][..],
        ),
        ("ab${cd", &["ab${", "${cd"]),
        ("ab${1}cd", &["${1}", "1}cd"]),
    ] {
        let yaml = format!("db:\n  host: h\n  password: \"{password}\"\n");
        let error = Config::from_yaml_with_env(&yaml, |_| None).unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(text.contains("db.password"), "{text}");
        for part in parts {
            assert!(!text.contains(part), "{part} in {text}");
        }
    }
    // Elsewhere a placeholder error still shows the placeholder, to fix; and a secret that is
    // one placeholder whose variable is not set names the variable.
    let error = Config::from_yaml_with_env("db:\n  host: ${HOST\n", |_| None).unwrap_err();
    assert!(error.to_string().contains("${HOST"), "{error}");
    let yaml = "db:\n  host: h\n  password: ${DB_PASSWORD}\n";
    let error = Config::from_yaml_with_env(yaml, |_| None).unwrap_err();
    assert!(error.to_string().contains("DB_PASSWORD"), "{error}");
}
