//! One look at a server: its role, WAL positions and identity, asked with the check its
//! capabilities allow, on the checker's own connection (or a fresh one, for a probe), within
//! the health-check timeout. This file measures; [`verdict`](super::verdict) judges, and the
//! registry records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection, PgConnection};

use super::capabilities::{self, Capabilities, Discovery};
use super::lag::{ReplicaPosition, settled_position};
use crate::server::{Identity, Server};

/// The health checker's own connection to one server, so that checks never wait behind
/// application traffic.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    conn: tokio::sync::Mutex<Option<PgConnection>>,
    /// Set when the server was taken out of service after a failed connection: its next check
    /// opens a new connection, so that it returns only when it accepts new connections again
    /// (the old one may still work on a server that accepts no more).
    fresh: AtomicBool,
}

impl Checker {
    /// Makes the next check open a new connection.
    pub(crate) fn renew(&self) {
        self.fresh.store(true, Ordering::Release);
    }

    /// Closes the connection.
    pub(crate) async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        }
    }
}

/// What one check of a server saw.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observation {
    /// `pg_is_in_recovery()`.
    pub(crate) in_recovery: bool,
    /// A primary's settled insert position.
    pub(crate) position: Option<u64>,
    /// A standby's positions.
    pub(crate) replica: ReplicaPosition,
    pub(crate) identity: Identity,
    /// Aurora's own replica lag (`aurora_replica_status()`), where it is Aurora.
    pub(crate) aurora_lag: Option<Duration>,
    /// What the check could ask.
    pub(crate) capabilities: Capabilities,
}

/// The timeline in a WAL file name (its first eight hex digits), as `pg_walfile_name` gives it.
pub(crate) fn walfile_timeline(name: &str) -> Option<u32> {
    let digits = name.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok().filter(|&t| t > 0)
}

/// Asks `server` its role, positions and identity, on the checker's connection (or, with
/// `fresh`, a new one), with the check its capabilities allow. They are found out on a server
/// first reached and on every new checker connection (a probe's fresh connection re-uses
/// them), and again when the check itself fails with an error of the statement (a function
/// revoked since, a promotion to a role that has other functions): that is the query's
/// fault, never the server's. Only `pg_is_in_recovery()` failing, or the session, is.
///
/// Returns what it saw, what it found out of the capabilities when it did, and the name a
/// standby streams under (for the registry to record).
pub(crate) async fn observe(
    server: &Server,
    checker: &Checker,
    timeout: Duration,
    fresh: bool,
) -> Result<(Observation, Option<Discovery>, Option<String>), Failure> {
    let known = Capabilities::from_stored(server.capabilities_stored());
    run_check(server, checker, timeout, fresh, move |conn, opened| {
        Box::pin(async move {
            let mut discovery = match known {
                Some(_) if fresh || !opened => None,
                _ => Some(capabilities::discover(conn).await?),
            };
            let mut asking = discovery
                .as_ref()
                .map_or(known.unwrap_or(Capabilities::POSTGRES), |d| d.capabilities);
            loop {
                match ask(conn, asking).await {
                    Err(error)
                        if capabilities::is_statements(&error) && asking != Capabilities::NONE =>
                    {
                        // Found out again, or (just found out and still failing) the role only.
                        let found = match discovery.take() {
                            None => capabilities::discover(conn).await?,
                            Some(found) => Discovery {
                                capabilities: Capabilities::NONE,
                                ..found
                            },
                        };
                        asking = found.capabilities;
                        discovery = Some(found);
                    }
                    answer => {
                        let (seen, name) = answer?;
                        return Ok((seen, discovery, name));
                    }
                }
            }
        })
    })
    .await
}

/// One check of the server's role, positions and identity with `capabilities`, and the name
/// a standby streams under.
async fn ask(
    conn: &mut PgConnection,
    capabilities: Capabilities,
) -> Result<(Observation, Option<String>), sqlx::Error> {
    #[allow(clippy::type_complexity)]
    let row: (
        bool,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<f64>,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<f64>,
        Option<String>,
    ) = capabilities::one_row(conn, capabilities.check_query()).await?;
    let (
        in_recovery,
        insert,
        block,
        segment,
        received,
        replayed,
        age,
        system,
        walfile,
        tli,
        aurora,
        name,
    ) = row;
    let timeline = match walfile.as_deref().and_then(walfile_timeline) {
        Some(timeline) => timeline,
        None => tli.and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
    };
    let (block, segment) = (block.unwrap_or(0) as u64, segment.unwrap_or(0) as u64);
    let seconds = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).ok();
    let seen = Observation {
        in_recovery,
        position: insert.map(|p| settled_position(p as u64, block, segment)),
        replica: ReplicaPosition {
            received: received.map(|p| p as u64),
            replayed: replayed.map(|p| p as u64),
            replay_age: age.and_then(seconds),
        },
        identity: Identity {
            // An unsigned 64-bit number that PostgreSQL shows as a bigint.
            system_id: system.map_or(0, |s| s as u64),
            timeline,
        },
        aurora_lag: aurora.and_then(|ms| seconds(ms / 1000.0)),
        capabilities,
    };
    Ok((seen, name))
}

pub(crate) type CheckFuture<'c, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// Why a check got no answer.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    /// No answer within the timeout (rather than an error).
    pub(crate) timed_out: bool,
    /// The server refused the connection for having as many as it takes (`53300`).
    pub(crate) full: bool,
}

/// Runs `query` on the checker's own connection to `server`, opening it if needed, within
/// `timeout`. A failed or timed-out check drops the connection so the next one starts fresh.
/// With `fresh` (a probe), the query runs on a new connection, which then becomes the
/// checker's: a server passes a probe only if it accepts new connections. `query` is told
/// whether its connection is new.
pub(crate) async fn run_check<T>(
    server: &Server,
    checker: &Checker,
    timeout: Duration,
    fresh: bool,
    query: impl for<'c> FnOnce(&'c mut PgConnection, bool) -> CheckFuture<'c, T>,
) -> Result<T, Failure> {
    let options = || server.connect_options().disable_statement_logging();
    // A pooler that refuses the read-only startup option: the server switches to a `SET`
    // after connect, and the connection is tried again at once.
    let connect = || async {
        match PgConnection::connect_with(&options()).await {
            Err(error) if server.startup_option_refused(&error) => {
                PgConnection::connect_with(&options()).await
            }
            answer => answer,
        }
    };
    if fresh {
        let attempt = async {
            let mut conn = connect().await?;
            let value = query(&mut conn, true).await?;
            Ok::<_, sqlx::Error>((value, conn))
        };
        let (value, conn) = answer(tokio::time::timeout(timeout, attempt).await, timeout)?;
        if let Ok(mut slot) = checker.conn.try_lock() {
            *slot = Some(conn);
            checker.fresh.store(false, Ordering::Release);
        }
        return Ok(value);
    }
    let mut slot = checker.conn.lock().await;
    if checker.fresh.swap(false, Ordering::AcqRel) {
        drop(slot.take());
    }
    let attempt = async {
        let opened = slot.is_none();
        if opened {
            *slot = Some(connect().await?);
        }
        let conn = slot.as_mut().expect("connection was just opened");
        query(conn, opened).await
    };
    let result = answer(tokio::time::timeout(timeout, attempt).await, timeout);
    if result.is_err() {
        // Closing politely could hang on a stalled server; dropping just closes the socket.
        drop(slot.take());
    }
    result
}

fn answer<T>(
    result: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<T, Failure> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Failure {
            full: crate::fault::fault(&error, crate::fault::Phase::Connect)
                == crate::fault::Fault::Server("too_many_connections"),
            message: error.to_string(),
            timed_out: false,
        }),
        Err(_) => Err(Failure {
            message: format!("no answer within {timeout:?}"),
            timed_out: true,
            full: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timelines_come_from_wal_file_names() {
        assert_eq!(walfile_timeline("000000010000000000000001"), Some(1));
        assert_eq!(walfile_timeline("0000000A00000003000000FF"), Some(10));
        assert_eq!(walfile_timeline("FFFFFFFF0000000000000001"), Some(u32::MAX));
        // Nothing that is not a WAL file name passes for a timeline.
        for bad in [
            "",
            "0000001",
            "00000000000000000000000",
            "zzzzzzzz0000",
            "+0000001000",
        ] {
            assert_eq!(walfile_timeline(bad), None, "{bad}");
        }
    }
}
