//! [`DbError`]: a sqlx error sorted into what a handler (and its client) can do about it, with
//! an axum response.
//!
//! Return `Result<_, DbError>` from a handler and use `?` on sqlx calls: a lost or refused
//! connection becomes `503 database_unavailable`, a write on a server that is read-only (the
//! primary was demoted, or is in recovery) `503 database_read_only`, a hot-standby conflict or
//! a serialization failure `503 database_conflict`, a value PostgreSQL refuses (SQLSTATE class
//! 22: a NUL byte in text, a number out of range) `400 invalid_input`, a constraint violation
//! (class 23: unique, foreign key, not null, check) `409 constraint_violation`, `RowNotFound`
//! a `404`, anything else a `500` whose body says no more than `database_error` (the details go
//! to the log, not to the client). Each 503 carries `Retry-After: 1`.
//!
//! | kind | typical cause | retry? |
//! |---|---|---|
//! | [`Unavailable`](DbErrorKind::Unavailable) | server down, connection dropped mid-query, pool timed out | reads: yes, at once (the failed server is out of rotation already); writes: only if the write is idempotent, since a commit in flight may or may not have happened |
//! | [`ReadOnly`](DbErrorKind::ReadOnly) | a write while the primary is down or demoted | later, once the primary is back |
//! | [`Conflict`](DbErrorKind::Conflict) | `canceling statement due to conflict with recovery` on a replica (a long read against a replica replaying a vacuum), serialization failure, deadlock | yes: the whole read or transaction, from the start |
//! | [`InvalidInput`](DbErrorKind::InvalidInput) | a value from the request that PostgreSQL refuses | no: the client must change it |
//! | [`Constraint`](DbErrorKind::Constraint) | a duplicate key, a missing referenced row | no: the client must change the request |
//! | [`WriteThroughRead`](DbErrorKind::WriteThroughRead) | an `INSERT`, `SELECT ... FOR UPDATE` or `nextval()` through a `DbRead` (read-only wherever it runs) | no: a bug in the handler, use `DbWrite` |
//! | [`NotFound`](DbErrorKind::NotFound) | `fetch_one` found no row | no |
//! | [`Other`](DbErrorKind::Other) | a bug in the query | no |
//!
//! ```
//! use axum::response::IntoResponse;
//! use rwsplit::{DbError, DbErrorKind};
//!
//! let error = DbError::from(sqlx::Error::PoolTimedOut);
//! assert_eq!(error.kind(), DbErrorKind::Unavailable);
//! assert!(error.is_retryable());
//! assert_eq!(error.into_response().status(), 503);
//! ```

use std::fmt;

use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use std::borrow::Cow;

use sqlx::error::{DatabaseError, ErrorKind};

use crate::fault::{Fault, Phase, fault};

/// What kind of failure a [`DbError`] is. See the [module docs](crate::DbError).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbErrorKind {
    /// The server could not be reached or the connection was lost.
    Unavailable,
    /// The server refuses writes: the primary is down, demoted or in recovery.
    ReadOnly,
    /// The statement was cancelled by a conflict: with recovery on a hot standby, a
    /// serialization failure or a deadlock. Retrying the whole unit of work can succeed.
    Conflict,
    /// PostgreSQL refused a value (SQLSTATE class 22, data exception): most often input from
    /// the request, such as text with a NUL byte or a number out of range.
    InvalidInput,
    /// An integrity constraint was violated (SQLSTATE class 23): a duplicate key, a foreign
    /// key to a missing row, a null in a `NOT NULL` column, a failed check.
    Constraint,
    /// A write (`INSERT`, `UPDATE`, `SELECT ... FOR UPDATE`, `nextval()`, ...) ran through a
    /// [`DbRead`](crate::DbRead), which is read-only wherever it runs: a programming error in
    /// the handler (use [`DbWrite`](crate::DbWrite)). Never retryable.
    WriteThroughRead,
    /// `fetch_one` found no row.
    NotFound,
    /// Anything else: the query's own error.
    Other,
}

/// A database error sorted by [`DbErrorKind`], answering with a JSON body
/// `{"error": "<code>", "message": "<text>"}`. See the [module docs](crate::DbError).
#[derive(Debug)]
pub struct DbError {
    kind: DbErrorKind,
    source: Option<sqlx::Error>,
}

impl DbError {
    /// The kind of failure.
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    /// Whether trying again can succeed: [`Unavailable`](DbErrorKind::Unavailable) and
    /// [`Conflict`](DbErrorKind::Conflict). A write that failed as `Unavailable` may have
    /// committed; retry it only if it is idempotent.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, DbErrorKind::Unavailable | DbErrorKind::Conflict)
    }

    /// The sqlx error behind it, if there is one.
    pub fn sqlx(&self) -> Option<&sqlx::Error> {
        self.source.as_ref()
    }

    /// The response status: 503, 400, 409, 404 or 500 (`Other`, `WriteThroughRead`).
    pub fn status(&self) -> StatusCode {
        match self.kind {
            DbErrorKind::Unavailable | DbErrorKind::ReadOnly | DbErrorKind::Conflict => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DbErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            DbErrorKind::WriteThroughRead => StatusCode::INTERNAL_SERVER_ERROR,
            DbErrorKind::Constraint => StatusCode::CONFLICT,
            DbErrorKind::NotFound => StatusCode::NOT_FOUND,
            DbErrorKind::Other => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code: `database_unavailable`, `database_read_only`,
    /// `database_conflict`, `invalid_input`, `constraint_violation`, `write_through_read`,
    /// `not_found` or `database_error`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            DbErrorKind::Unavailable => "database_unavailable",
            DbErrorKind::ReadOnly => "database_read_only",
            DbErrorKind::Conflict => "database_conflict",
            DbErrorKind::InvalidInput => "invalid_input",
            DbErrorKind::WriteThroughRead => "write_through_read",
            DbErrorKind::Constraint => "constraint_violation",
            DbErrorKind::NotFound => "not_found",
            DbErrorKind::Other => "database_error",
        }
    }

    fn message(&self) -> &'static str {
        match self.kind {
            DbErrorKind::Unavailable => "the database is unavailable for now; try again",
            DbErrorKind::ReadOnly => READ_ONLY,
            DbErrorKind::Conflict => {
                "the database cancelled the request after a conflict; try again"
            }
            DbErrorKind::InvalidInput => "the database refused a value in the request",
            DbErrorKind::WriteThroughRead => "the database failed the request",
            DbErrorKind::Constraint => "the request conflicts with data already stored",
            DbErrorKind::NotFound => "no such record",
            DbErrorKind::Other => "the database failed the request",
        }
    }
}

/// What a write is told while the primary is down or demoted: by [`DbError`] and by
/// [`DbRejection::ReadOnly`](crate::DbRejection::ReadOnly).
pub(crate) const READ_ONLY: &str = "the database is read-only for now (the primary is \
     unreachable); reads still work, writes can be retried later";

/// PostgreSQL's read-only error (`25006`) from a [`DbRead`](crate::DbRead)'s query: the same
/// error, marked as a write through a read-only handle.
#[derive(Debug)]
pub(crate) struct WriteThroughRead(pub(crate) Box<dyn DatabaseError>);

impl fmt::Display for WriteThroughRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a write through DbRead (read-only): {}", self.0)
    }
}

impl std::error::Error for WriteThroughRead {}

impl DatabaseError for WriteThroughRead {
    fn message(&self) -> &str {
        self.0.message()
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.0.code()
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        self.0.kind()
    }
}

/// Sorts a sqlx error by kind.
pub(crate) fn classify(error: &sqlx::Error) -> DbErrorKind {
    let code = match error {
        sqlx::Error::RowNotFound => return DbErrorKind::NotFound,
        sqlx::Error::Database(db) if db.try_downcast_ref::<WriteThroughRead>().is_some() => {
            return DbErrorKind::WriteThroughRead;
        }
        sqlx::Error::Database(db) => db.code(),
        _ => None,
    };
    match code.as_deref() {
        // read_only_sql_transaction: a write on a standby.
        Some("25006") => return DbErrorKind::ReadOnly,
        Some(class) if class.starts_with("22") => return DbErrorKind::InvalidInput,
        Some(class) if class.starts_with("23") => return DbErrorKind::Constraint,
        _ => {}
    }
    // Where the error came from is not known here: whatever would have kept a connection from
    // being given or used is the server being unavailable. A protocol error is sqlx refusing
    // the query itself (too many arguments), which no server would take.
    match fault(error, Phase::Connect) {
        Fault::Conflict => DbErrorKind::Conflict,
        _ if matches!(error, sqlx::Error::Protocol(_)) => DbErrorKind::Other,
        found if found.unavailable() => DbErrorKind::Unavailable,
        _ if fault(error, Phase::Query).unavailable() => DbErrorKind::Unavailable,
        _ => DbErrorKind::Other,
    }
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        DbError {
            kind: classify(&error),
            source: Some(error),
        }
    }
}

impl From<crate::Error> for DbError {
    fn from(error: crate::Error) -> Self {
        match error {
            crate::Error::Database { source, .. } => DbError::from(source),
            _ => DbError {
                kind: DbErrorKind::Other,
                source: None,
            },
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.code()),
            None => f.write_str(self.code()),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        match self.kind {
            DbErrorKind::Other | DbErrorKind::WriteThroughRead => {
                tracing::error!(error = %self, "database error")
            }
            DbErrorKind::NotFound | DbErrorKind::InvalidInput | DbErrorKind::Constraint => {
                tracing::debug!(error = %self, "database refused the request")
            }
            _ => tracing::warn!(error = %self, "database error"),
        }
        json_error(self.status(), self.code(), self.message())
    }
}

/// A `{"error": .., "message": ..}` response; 503s say when to come back.
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    // Codes and messages are fixed texts without quotes or backslashes.
    let body = format!(r#"{{"error":"{code}","message":"{message}"}}"#);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable_and_retryable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for error in [
            sqlx::Error::Io(refused),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
        ] {
            let error = DbError::from(error);
            assert_eq!(error.kind(), DbErrorKind::Unavailable);
            assert!(error.is_retryable());
            assert_eq!(error.status(), 503);
        }
    }

    #[test]
    fn a_query_sqlx_refuses_is_a_500_not_an_outage() {
        let error = DbError::from(sqlx::Error::Protocol(
            "too many arguments for query: 70000".into(),
        ));
        assert_eq!(error.kind(), DbErrorKind::Other);
        assert_eq!(error.status(), 500);
        assert!(!error.is_retryable());
        let lost = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(DbError::from(sqlx::Error::Io(lost)).status(), 503);
    }

    #[test]
    fn responses_are_json_with_fixed_texts() {
        for kind in [
            DbErrorKind::Unavailable,
            DbErrorKind::ReadOnly,
            DbErrorKind::Conflict,
            DbErrorKind::InvalidInput,
            DbErrorKind::Constraint,
            DbErrorKind::WriteThroughRead,
            DbErrorKind::NotFound,
            DbErrorKind::Other,
        ] {
            let error = DbError { kind, source: None };
            assert!(!error.message().contains('"') && !error.message().contains('\\'));
            let status = error.status();
            let response = error.into_response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                status == 503
            );
        }
        let missing = DbError::from(sqlx::Error::RowNotFound);
        assert_eq!(missing.status(), 404);
        assert!(!missing.is_retryable());
    }
}
