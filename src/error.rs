//! The crate's error type.
//!
//! ```
//! use rwsplit::{Config, Error, Registry};
//!
//! // Outside a Tokio runtime there is nothing to run the health loop on.
//! let err = Registry::connect_lazy(Config::new("127.0.0.1")).unwrap_err();
//! assert!(matches!(err, Error::NoRuntime));
//!
//! // A bad configuration says which key and value.
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let err = runtime.block_on(async { Registry::connect_lazy(Config::new("")) }).unwrap_err();
//! assert!(err.to_string().contains("db.host"));
//! ```

use std::fmt;

use crate::config::ConfigError;

/// What can go wrong when building or using a [`Registry`](crate::Registry).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    Config(ConfigError),
    /// A registry was built outside a Tokio runtime.
    NoRuntime,
    /// A server failed a request.
    Database {
        /// `primary` or the replica's name.
        server: String,
        /// `host:port`.
        address: String,
        /// What sqlx reported.
        source: sqlx::Error,
    },
}

impl Error {
    /// `source`, from the server called `server` at `address`.
    pub(crate) fn database(server: &str, address: &str, source: sqlx::Error) -> Error {
        Error::Database {
            server: server.to_owned(),
            address: address.to_owned(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::NoRuntime => f.write_str(
                "rwsplit registry built outside a Tokio runtime: build it from async code \
                 (for example inside #[tokio::main])",
            ),
            Error::Database {
                server,
                address,
                source,
            } => write!(f, "`{server}` ({address}): {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::NoRuntime => None,
            Error::Database { source, .. } => Some(source),
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}
