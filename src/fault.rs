//! Whose fault a failed database call is: the statement's, one session's, or the server's.
//! This file decides what an error is evidence of; the registry acts on it (see the README's
//! failure model).
//!
//! | fault | examples | what rwsplit does |
//! |---|---|---|
//! | [`Statement`](Fault::Statement) | a syntax error, a refused value, a duplicate key, a decode error, sqlx refusing a query before sending it | nothing: the error goes to the handler, the server stays in service, the query is not tried elsewhere (it would fail anywhere) |
//! | [`Conflict`](Fault::Conflict) | `canceling statement due to conflict with recovery` on a hot standby, a serialization failure, a deadlock | a read on a replica runs once more on another server; no server leaves service |
//! | [`Session`](Fault::Session) | a connection lost mid-query, `pg_terminate_backend` (`57P01`) | the read in flight may fail over; the server is only suspected, and a probe on a fresh connection decides |
//! | [`Server`](Fault::Server) | connection refused, connect timeout, TLS or authentication failure, `57P03` (starting up or shutting down), `53300` (too many connections) | the server leaves service now and is re-probed on a short backoff |
//! | [`Pool`](Fault::Pool) | the pool is full (acquire timed out with every connection in use), the pool is closed | nothing about the server |
//!
//! ```
//! // A value PostgreSQL refuses is the statement's fault, wherever it runs: it never takes a
//! // server out of service. See `DbError` for what a handler sees.
//! let error = sqlx::Error::Protocol("too many arguments for query".into());
//! assert_eq!(rwsplit::DbError::from(error).status(), 500);
//! ```

/// When the error happened: while getting a connection, or on a connection that worked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opening or checking out a connection.
    Connect,
    /// Running a query on a connection that was handed out.
    Query,
}

/// Whose fault a failed call was, with the cause as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The statement's: it would fail on any server.
    Statement,
    /// A conflict (with recovery on a standby, serialization, deadlock): the statement may
    /// succeed when run again.
    Conflict,
    /// One session's: the connection died under the query. The server may be fine.
    Session(&'static str),
    /// The server's: it cannot give connections now.
    Server(&'static str),
    /// The pool's (full, or closed): says nothing about the server.
    Pool(&'static str),
}

/// Sorts `error`, raised in `phase`, by whose fault it is.
pub(crate) fn fault(error: &sqlx::Error, phase: Phase) -> Fault {
    use Phase::{Connect, Query};
    match (error, phase) {
        (sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed, Connect) => Fault::Server("unreachable"),
        (sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed, Query) => Fault::Session("lost"),
        (sqlx::Error::Tls(_), Connect) => Fault::Server("tls"),
        (sqlx::Error::Tls(_), Query) => Fault::Session("lost"),
        // sqlx retries a refused or starting server until the acquire timeout, so a timeout
        // with free slots in the pool means the server gave no connection; with the pool full
        // it means the application used them all (the caller tells which).
        (sqlx::Error::PoolTimedOut, _) => Fault::Server("timeout"),
        (sqlx::Error::PoolClosed, _) => Fault::Pool("closed"),
        // On a working connection, sqlx raises these for the query itself (too many
        // arguments, a message it did not expect for this statement).
        (sqlx::Error::Protocol(_), Connect) => Fault::Server("protocol"),
        (sqlx::Error::Database(db), phase) => database(db.code().as_deref(), phase),
        _ => Fault::Statement,
    }
}

/// Sorts a server's error by its SQLSTATE.
fn database(code: Option<&str>, phase: Phase) -> Fault {
    let Some(code) = code else {
        return Fault::Statement;
    };
    match (code, phase) {
        // serialization_failure (also conflict with recovery), deadlock_detected.
        ("40001" | "40P01", _) => Fault::Conflict,
        // cannot_connect_now: starting up, shutting down, or in recovery without hot standby.
        ("57P03", _) => Fault::Server("shutting_down"),
        ("53300", _) => Fault::Server("too_many_connections"),
        // admin_shutdown (pg_terminate_backend, or a server shutting down), crash_shutdown.
        ("57P01" | "57P02", Phase::Connect) => Fault::Server("shutting_down"),
        ("57P01" | "57P02", Phase::Query) => Fault::Session("terminated"),
        (class, Phase::Connect) if class.starts_with("28") => Fault::Server("authentication"),
        (class, Phase::Connect) if class.starts_with("08") => Fault::Server("unreachable"),
        // A database or role that does not exist on this server: its configuration's fault.
        (class, Phase::Connect) if class.starts_with("3D") => Fault::Server("refused"),
        (class, Phase::Query) if class.starts_with("08") => Fault::Session("lost"),
        _ => Fault::Statement,
    }
}

impl Fault {
    /// Whether the error says the work never reached a server that could do it: another
    /// server may do it.
    pub(crate) fn unavailable(self) -> bool {
        matches!(self, Fault::Session(_) | Fault::Server(_) | Fault::Pool(_))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::error::Error as StdError;
    use std::fmt;

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    #[derive(Debug)]
    struct Coded(&'static str);

    impl fmt::Display for Coded {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl StdError for Coded {}

    impl DatabaseError for Coded {
        fn message(&self) -> &str {
            "a server error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Coded(code)))
    }

    fn io() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    fn boxed() -> sqlx::error::BoxDynError {
        "boom".into()
    }

    #[test]
    fn every_sqlx_error_variant_has_an_owner() {
        use Phase::{Connect, Query};
        let cases: Vec<(sqlx::Error, Phase, Fault)> = vec![
            (io(), Connect, Fault::Server("unreachable")),
            (io(), Query, Fault::Session("lost")),
            (
                sqlx::Error::WorkerCrashed,
                Connect,
                Fault::Server("unreachable"),
            ),
            (sqlx::Error::WorkerCrashed, Query, Fault::Session("lost")),
            (sqlx::Error::Tls(boxed()), Connect, Fault::Server("tls")),
            (sqlx::Error::Tls(boxed()), Query, Fault::Session("lost")),
            (sqlx::Error::PoolTimedOut, Connect, Fault::Server("timeout")),
            (sqlx::Error::PoolClosed, Connect, Fault::Pool("closed")),
            (
                sqlx::Error::Protocol("x".into()),
                Connect,
                Fault::Server("protocol"),
            ),
            // "too many arguments for query": refused before anything was sent.
            (sqlx::Error::Protocol("x".into()), Query, Fault::Statement),
            (
                sqlx::Error::Configuration(boxed()),
                Connect,
                Fault::Statement,
            ),
            (
                sqlx::Error::InvalidArgument("x".into()),
                Query,
                Fault::Statement,
            ),
            (sqlx::Error::RowNotFound, Query, Fault::Statement),
            (
                sqlx::Error::TypeNotFound {
                    type_name: "x".into(),
                },
                Query,
                Fault::Statement,
            ),
            (
                sqlx::Error::ColumnIndexOutOfBounds { index: 3, len: 1 },
                Query,
                Fault::Statement,
            ),
            (
                sqlx::Error::ColumnNotFound("x".into()),
                Query,
                Fault::Statement,
            ),
            (
                sqlx::Error::ColumnDecode {
                    index: "0".into(),
                    source: boxed(),
                },
                Query,
                Fault::Statement,
            ),
            (sqlx::Error::Encode(boxed()), Query, Fault::Statement),
            (sqlx::Error::Decode(boxed()), Query, Fault::Statement),
            (
                sqlx::Error::AnyDriverError(boxed()),
                Query,
                Fault::Statement,
            ),
            (
                sqlx::Error::InvalidSavePointStatement,
                Query,
                Fault::Statement,
            ),
            (sqlx::Error::BeginFailed, Query, Fault::Statement),
        ];
        for (error, phase, expected) in cases {
            assert_eq!(fault(&error, phase), expected, "{error:?} in {phase:?}");
        }
    }

    #[test]
    fn sqlstates_sort_by_class() {
        use Phase::{Connect, Query};
        let cases = [
            // The statement's: syntax, undefined table, a refused value, constraints,
            // read-only transaction, a statement timeout, insufficient privilege.
            ("42601", Query, Fault::Statement),
            ("42P01", Query, Fault::Statement),
            ("22021", Query, Fault::Statement),
            ("23505", Query, Fault::Statement),
            ("25006", Query, Fault::Statement),
            ("57014", Query, Fault::Statement),
            ("42501", Query, Fault::Statement),
            ("54000", Query, Fault::Statement),
            ("XX000", Query, Fault::Statement),
            // Conflicts: retried, never ejected.
            ("40001", Query, Fault::Conflict),
            ("40P01", Query, Fault::Conflict),
            // A session killed: suspected, not ejected.
            ("57P01", Query, Fault::Session("terminated")),
            ("57P02", Query, Fault::Session("terminated")),
            ("08006", Query, Fault::Session("lost")),
            // The server refusing connections.
            ("57P01", Connect, Fault::Server("shutting_down")),
            ("57P03", Connect, Fault::Server("shutting_down")),
            ("57P03", Query, Fault::Server("shutting_down")),
            ("53300", Connect, Fault::Server("too_many_connections")),
            ("28P01", Connect, Fault::Server("authentication")),
            ("28000", Connect, Fault::Server("authentication")),
            ("08001", Connect, Fault::Server("unreachable")),
            ("3D000", Connect, Fault::Server("refused")),
            ("3D000", Query, Fault::Statement),
        ];
        for (code, phase, expected) in cases {
            assert_eq!(fault(&db(code), phase), expected, "{code} in {phase:?}");
        }
    }
}
