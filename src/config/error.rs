//! [`ConfigError`]: what is wrong with a configuration, naming the key and the value (never a
//! secret).

use std::fmt;
use std::path::PathBuf;

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
