//! The error for a document serde refused: the key's path, the value as written (secrets
//! redacted) and why.

use super::context::Failure;
use crate::config::ConfigError;

/// The error for a document serde refused, naming the key at `path`.
pub(super) fn refusal(
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
            ..
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
                .and_then(|k| k.split('[').next())
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
const SECRET_KEYS: [&str; 4] = [
    "password",
    "signingKey",
    "previousSigningKey",
    "verificationKeys",
];

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn serde_unknown_field_messages_are_read() {
        let u = unknown_key("unknown field `drver`, expected one of driver, host").unwrap();
        assert_eq!(u.key, "drver");
        assert_eq!(u.expected, ["driver", "host"]);
        assert_eq!(u.at("db.drver").to_string().matches("db.drver").count(), 1);
    }
}
