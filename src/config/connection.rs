//! The connection and pool settings of one server: the primary's, which replicas inherit,
//! and how they become sqlx's connection options. Passwords are [`Secret`]s.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

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

/// A password: usable to connect, never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

impl ServerConfig {
    pub(crate) fn connect_options(&self, host: &str, port: u16) -> PgConnectOptions {
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

/// A warning when connections to `options` (what `key` configures) leave this machine not
/// both encrypted and authenticated: `disable` sends everything in the clear, `allow` and
/// `prefer` fall back to plaintext silently, `require` encrypts without checking who answers.
/// `None` when the connection is verified (`verify-ca`, `verify-full`) or stays local
/// (loopback, a Unix socket).
pub(crate) fn tls_warning(key: &str, options: &PgConnectOptions) -> Option<String> {
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let (mode, risk) = match options.get_ssl_mode() {
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => return None,
        _ if local => return None,
        PgSslMode::Disable => ("disable", "unencrypted"),
        PgSslMode::Allow => (
            "allow",
            "unencrypted unless the server insists, and unverified",
        ),
        PgSslMode::Prefer => (
            "prefer",
            "unverified, and unencrypted without a word if TLS cannot be set up",
        ),
        PgSslMode::Require => (
            "require",
            "encrypted but unverified: whoever answers at that address gets the password",
        ),
    };
    Some(format!(
        "{key} is {mode} for {host}, which is not on this machine: its connections are {risk}; \
         set sslMode: verify-full and sslRootCert to the CA that signed its certificate"
    ))
}
