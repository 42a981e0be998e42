//! The background health loop: every interval it asks the primary for its WAL position and each
//! replica whether it is a standby and how far it has replayed, turns that into lag (see
//! [`lag`](super::lag)), and takes replicas out of rotation or puts them back.
//!
//! The loop holds only a `Weak` reference between rounds, so it never keeps the registry alive,
//! and it ends as soon as the registry is shut down or dropped.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::Shared;
use super::lag::{Lag, ReplicaPosition, settled_position};
use super::server::Server;
use crate::consistency::unix_ms;
use crate::metrics;

const NOT_PRIMARY: &str = "is in recovery (a standby, not a primary): writes will fail until the \
                           configuration names the new primary";

const NOT_STANDBY: &str = "is not a standby (pg_is_in_recovery() is false)";

const PRIMARY_QUERY: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL \
          ELSE pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::int8 END, \
     current_setting('wal_block_size')::int8, pg_size_bytes(current_setting('wal_segment_size'))";

const PRIMARY_POSITION: &str = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::int8, \
     current_setting('wal_block_size')::int8, pg_size_bytes(current_setting('wal_segment_size'))";

const REPLICA_POSITION: &str = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8";

const REPLICA_QUERY: &str = "SELECT pg_is_in_recovery(), \
     pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::int8, \
     pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8, \
     EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8";

/// Starts the loop. With `check_first`, the first full round runs at once; otherwise after
/// one interval (the caller has just run a round itself). Between full rounds, when
/// read-your-writes compares tokens with replay positions, the loop refreshes those positions
/// every poll interval.
pub(super) fn spawn(shared: &Arc<Shared>, check_first: bool, mut stop: watch::Receiver<bool>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let interval = shared.config.health_check_interval;
    let tick = match shared.polls_positions() {
        true => interval.min(shared.sticky.poll_interval),
        false => interval,
    };
    let now = tokio::time::Instant::now();
    let mut next_check = if check_first { now } else { now + interval };
    tokio::spawn(async move {
        let first_tick = if check_first { now } else { now + tick };
        let mut ticker = tokio::time::interval_at(first_tick, tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                // Shutdown, or the registry (which owns the sender) was dropped.
                _ = stop.changed() => break,
            }
            let Some(shared) = weak.upgrade() else { break };
            if tokio::time::Instant::now() >= next_check {
                check_all(&shared).await;
                next_check = tokio::time::Instant::now() + interval;
            } else {
                poll_positions(&shared).await;
            }
        }
        tracing::debug!("rwsplit health loop stopped");
    });
}

/// Refreshes the primary's and every replica's WAL position, concurrently. Failures are left
/// to the full checks.
async fn poll_positions(shared: &Arc<Shared>) {
    let timeout = shared.config.health_check_timeout;
    let all = shared.replicas.load_full();
    if all.is_empty() {
        return;
    }
    let mut replicas = JoinSet::new();
    for server in all.iter() {
        let server = Arc::clone(server);
        replicas.spawn(async move {
            let replayed = run_check(&server, timeout, |conn| {
                Box::pin(async move {
                    let position: Option<i64> =
                        sqlx::query_scalar(REPLICA_POSITION).fetch_one(conn).await?;
                    Ok(position)
                })
            })
            .await;
            if let Ok(Some(position)) = replayed {
                server.set_position(position as u64);
            }
        });
    }
    let sampled_at = Instant::now();
    let primary = run_check(&shared.primary, timeout, |conn| {
        Box::pin(async move {
            let (insert, block, segment): (i64, i64, i64) =
                sqlx::query_as(PRIMARY_POSITION).fetch_one(conn).await?;
            Ok(settled_position(
                insert as u64,
                block as u64,
                segment as u64,
            ))
        })
    })
    .await;
    if let Ok(position) = primary {
        shared.observe_primary(position, unix_ms(SystemTime::now()));
        let mut history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
        history.record(sampled_at, position);
    }
    replicas.join_all().await;
    shared.publish_metrics();
}

/// Runs one round of checks over every server and updates the rotation.
pub(super) async fn check_all(shared: &Arc<Shared>) {
    let timeout = shared.config.health_check_timeout;
    let mut replicas = JoinSet::new();
    let start = Instant::now();
    let primary = check_primary(&shared.primary, timeout).await;
    let sampled_at = Instant::now();
    let primary_took = sampled_at - start;
    let all = shared.replicas.load_full();
    for (index, server) in all.iter().enumerate() {
        let server = Arc::clone(server);
        replicas.spawn(async move {
            let start = Instant::now();
            let result = check_replica(&server, timeout).await;
            (index, result, start.elapsed())
        });
    }

    let (primary_position, primary_problem, result) = match primary {
        Ok((false, Some(position))) => {
            shared.observe_primary(position, unix_ms(SystemTime::now()));
            (Some(position), None, "ok")
        }
        Ok(_) => (None, Some(NOT_PRIMARY.to_owned()), "wrong_role"),
        Err(error) => (None, Some(error), "unreachable"),
    };
    metrics::health_check(&shared.primary, result, primary_took);
    let server = &shared.primary;
    match server.record(primary_problem.clone(), Some(Lag::ZERO)) {
        Some(false) => tracing::error!(
            server = %server.name,
            address = %server.address,
            reason = primary_problem.as_deref().unwrap_or_default(),
            "primary failed its check"
        ),
        Some(true) => tracing::info!(
            server = %server.name,
            address = %server.address,
            "primary healthy again"
        ),
        None => {}
    }

    let results = replicas.join_all().await;
    let outcomes: Vec<_> = {
        let mut history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(position) = primary_position {
            history.record(sampled_at, position);
        }
        results
            .into_iter()
            .map(|(index, result, took)| match result {
                Err(error) => {
                    metrics::health_check(&all[index], "unreachable", took);
                    (index, Some(error), None)
                }
                Ok((false, _)) => {
                    metrics::health_check(&all[index], "wrong_role", took);
                    (index, Some(NOT_STANDBY.to_owned()), None)
                }
                Ok((true, position)) => {
                    if let Some(replayed) = position.replayed {
                        all[index].set_position(replayed);
                    }
                    let lag = history.lag(primary_position, position, Instant::now());
                    let problem = shared.lag_problem(lag);
                    let result = if problem.is_some() { "lagging" } else { "ok" };
                    metrics::health_check(&all[index], result, took);
                    (index, problem, Some(lag))
                }
            })
            .collect()
    };
    for (index, problem, lag) in outcomes {
        let server = &all[index];
        match server.record(problem.clone(), lag) {
            Some(false) => tracing::warn!(
                replica = %server.name,
                address = %server.address,
                reason = problem.as_deref().unwrap_or_default(),
                lag_seconds = lag.map(|l| l.time.as_secs_f64()).filter(|s| s.is_finite()),
                lag_bytes = lag.and_then(|l| l.bytes),
                "replica removed from rotation"
            ),
            Some(true) => tracing::info!(
                replica = %server.name,
                address = %server.address,
                lag_seconds = lag.map(|l| l.time.as_secs_f64()),
                lag_bytes = lag.and_then(|l| l.bytes),
                "replica back in rotation"
            ),
            None => {}
        }
    }
    shared.refresh_rotation();
    for server in shared.servers() {
        server.trim_idle().await;
    }
    shared.publish_metrics();
}

async fn check_primary(server: &Server, timeout: Duration) -> Result<(bool, Option<u64>), String> {
    run_check(server, timeout, |conn| {
        Box::pin(async move {
            let (in_recovery, insert, block, segment): (bool, Option<i64>, i64, i64) =
                sqlx::query_as(PRIMARY_QUERY).fetch_one(conn).await?;
            let position = insert.map(|p| settled_position(p as u64, block as u64, segment as u64));
            Ok((in_recovery, position))
        })
    })
    .await
}

async fn check_replica(
    server: &Server,
    timeout: Duration,
) -> Result<(bool, ReplicaPosition), String> {
    run_check(server, timeout, |conn| {
        Box::pin(async move {
            let (in_recovery, received, replayed, age): (
                bool,
                Option<i64>,
                Option<i64>,
                Option<f64>,
            ) = sqlx::query_as(REPLICA_QUERY).fetch_one(conn).await?;
            let position = ReplicaPosition {
                received: received.map(|p| p as u64),
                replayed: replayed.map(|p| p as u64),
                replay_age: age.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok()),
            };
            Ok((in_recovery, position))
        })
    })
    .await
}

type CheckFuture<'c, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// Runs `query` on the checker's own connection to `server`, opening it if needed, within
/// `timeout`. A failed or timed-out check drops the connection so the next one starts fresh.
async fn run_check<T>(
    server: &Server,
    timeout: Duration,
    query: impl for<'c> FnOnce(&'c mut PgConnection) -> CheckFuture<'c, T>,
) -> Result<T, String> {
    let mut slot = server.check_conn.lock().await;
    if server
        .fresh_check
        .swap(false, std::sync::atomic::Ordering::AcqRel)
    {
        drop(slot.take());
    }
    let attempt = async {
        if slot.is_none() {
            let options = server.options.clone().disable_statement_logging();
            *slot = Some(PgConnection::connect_with(&options).await?);
        }
        let conn = slot.as_mut().expect("connection was just opened");
        query(conn).await
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    if result.is_err() {
        // Closing politely could hang on a stalled server; dropping just closes the socket.
        drop(slot.take());
    }
    result
}

/// Closes the checker's connection to `server`.
pub(super) async fn close(server: &Server) {
    if let Some(conn) = server.check_conn.lock().await.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    }
}
