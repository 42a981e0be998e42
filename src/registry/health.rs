//! The background health loop: every interval it asks the primary for its WAL position and each
//! replica whether it is a standby and how far it has replayed, turns that into lag (see
//! [`lag`](super::lag)), and takes replicas out of rotation or puts them back. The verdicts
//! here are shared with the probes that re-try servers out of service (see
//! [`probe`](super::probe)).
//!
//! The loop holds only a `Weak` reference between rounds, so it never keeps the registry alive,
//! and it ends as soon as the registry is shut down or dropped.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::capabilities::{self, Capabilities, Capability, Discovery, PositionFor};
use super::lag::{Lag, PrimaryHistory, ReplicaPosition, settled_position};
use super::server::{Identity, Server, State};
use super::{Shared, probe, roles};
use crate::consistency::unix_ms;
use crate::metrics;

const NOT_PRIMARY: &str = "is in recovery (a standby, not a primary): writes will fail until the \
                           configuration names the new primary";

const NOT_PRIMARY_OBSERVED: &str = "is in recovery (a standby, not a primary): writes fail until \
                                    a configured server answers as the primary";

const NOT_STANDBY: &str = "is not a standby (pg_is_in_recovery() is false)";

/// What one check of a server saw.
#[derive(Clone, Copy, Debug)]
pub(super) struct Observation {
    /// `pg_is_in_recovery()`.
    pub(super) in_recovery: bool,
    /// A primary's settled insert position.
    pub(super) position: Option<u64>,
    /// A standby's positions.
    pub(super) replica: ReplicaPosition,
    pub(super) identity: Identity,
    /// Aurora's own replica lag (`aurora_replica_status()`), where it is Aurora.
    pub(super) aurora_lag: Option<Duration>,
    /// What the check could ask.
    pub(super) capabilities: Capabilities,
}

/// The timeline in a WAL file name (its first eight hex digits), as `pg_walfile_name` gives it.
pub(crate) fn walfile_timeline(name: &str) -> Option<u32> {
    let digits = name.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok().filter(|&t| t > 0)
}

/// Starts the loop. With `check_first`, the first full round runs at once; otherwise after
/// one interval (the caller has just run a round itself). Between full rounds, when
/// read-your-writes compares tokens with replay positions, the loop refreshes those positions
/// every poll interval, and takes a replica out at the poll that finds it lagging.
///
/// Each round runs as a task of its own: a round that panics is logged and the loop goes on,
/// so servers taken out are never left out for good.
pub(super) fn spawn(shared: &Arc<Shared>, check_first: bool, mut stop: watch::Receiver<bool>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let (mut interval, mut tick) = cadence(shared);
    let now = tokio::time::Instant::now();
    let mut next_check = if check_first {
        now
    } else {
        after(now, interval)
    };
    tokio::spawn(async move {
        let first_tick = if check_first { now } else { after(now, tick) };
        let mut ticker = tokio::time::interval_at(first_tick, tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                // Shutdown, or the registry (which owns the sender) was dropped.
                _ = stop.changed() => break,
            }
            let Some(shared) = weak.upgrade() else { break };
            // A reload may have changed the interval or switched polling on or off.
            let now_set = cadence(&shared);
            if now_set != (interval, tick) {
                let now = tokio::time::Instant::now();
                (interval, tick) = now_set;
                next_check = next_check.min(after(now, interval));
                ticker = tokio::time::interval_at(after(now, tick), tick);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            }
            let full = tokio::time::Instant::now() >= next_check;
            supervised("health check", async move {
                if full {
                    check_all(&shared).await;
                } else {
                    poll_positions(&shared).await;
                }
            })
            .await;
            if full {
                next_check = after(tokio::time::Instant::now(), interval);
            }
        }
        tracing::debug!("rwsplit health loop stopped");
    });
}

/// The full checks' interval, and the loop's tick (the poll interval when positions are
/// polled), as the current configuration sets them.
fn cadence(shared: &Shared) -> (Duration, Duration) {
    let interval = shared.config().health_check_interval;
    match shared.polls_positions() {
        true => (interval, interval.min(shared.sticky.poll_interval)),
        false => (interval, interval),
    }
}

/// `at + delay`, or far in the future when that overflows.
pub(super) fn after(at: tokio::time::Instant, delay: Duration) -> tokio::time::Instant {
    at.checked_add(delay)
        .unwrap_or_else(|| at + Duration::from_secs(86_400 * 365))
}

/// Runs `work` as a task of its own and waits for it. A panic in it (a bug) is logged, and
/// the caller goes on: the work is lost, the loop that runs it is not. Returns whether the
/// work finished.
pub(super) async fn supervised(
    task: &'static str,
    work: impl Future<Output = ()> + Send + 'static,
) -> bool {
    match tokio::spawn(work).await {
        Ok(()) => true,
        Err(error) => {
            if let Ok(panic) = error.try_into_panic() {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task, panic = %message, "rwsplit background task panicked; it goes on");
            }
            false
        }
    }
}

/// What one look at a server found.
#[derive(Debug)]
pub(super) struct Verdict {
    /// Why it cannot serve, and the state that puts it in; `None`: it can.
    pub(super) problem: Option<(State, String)>,
    /// Its replication lag, when known.
    pub(super) lag: Option<Lag>,
    /// `ok`, `unreachable`, `wrong_role` or `lagging`, for the metrics.
    pub(super) result: &'static str,
}

impl Verdict {
    fn unreachable(error: String) -> Verdict {
        Verdict {
            problem: Some((State::Unreachable, error)),
            lag: None,
            result: "unreachable",
        }
    }
}

/// Whether a look at `server` that got no answer (`failure`) within `took` found it only
/// busy: it is in service and answered the application meanwhile. A loaded host answers a
/// fresh connection or a check late while it serves every other query; the server then stays
/// as it is, and the next look decides.
pub(super) fn only_slow(server: &Server, failure: &Failure, took: Duration, by: Source) -> bool {
    let slow = failure.timed_out && server.answered_within(took);
    if slow {
        metrics::slow_check(&server.name, by.as_str());
        tracing::debug!(
            server = %server.name,
            by = by.as_str(),
            "check got no answer in time, but the server answers other work: it stays in service"
        );
    }
    slow
}

/// The verdict on the primary from its answer, and its position when it is one. Records its
/// identity.
pub(super) fn primary_verdict(
    shared: &Shared,
    server: &Server,
    answer: Result<Observation, String>,
) -> (Verdict, Option<u64>) {
    match answer {
        // A primary whose position this role cannot read is still the primary.
        Ok(seen) if !seen.in_recovery => {
            server.set_identity(seen.identity);
            shared.primary_seen(seen.identity);
            let verdict = Verdict {
                problem: None,
                lag: Some(Lag::ZERO),
                result: "ok",
            };
            (verdict, seen.position)
        }
        Ok(_) => {
            let text = match shared.config().roles {
                crate::config::Roles::Observed => NOT_PRIMARY_OBSERVED,
                _ => NOT_PRIMARY,
            };
            let verdict = Verdict {
                problem: Some((State::WrongRole, text.to_owned())),
                lag: Some(Lag::ZERO),
                result: "wrong_role",
            };
            (verdict, None)
        }
        Err(error) => (Verdict::unreachable(error), None),
    }
}

/// The verdict on a replica from its answer, given the primary's position sampled just
/// before it (`None`: unknown). Records the replica's replay position.
pub(super) fn replica_verdict(
    shared: &Arc<Shared>,
    server: &Server,
    answer: Result<Observation, String>,
    primary: Option<u64>,
    history: &PrimaryHistory,
) -> Verdict {
    match answer {
        Err(error) => Verdict::unreachable(error),
        Ok(seen) if !seen.in_recovery => {
            server.set_identity(seen.identity);
            // A replica that answers as a primary may have been promoted: who takes the
            // writes is decided again now, not at the next full check.
            if server.state() != State::WrongRole {
                roles::elect_soon(shared);
            }
            Verdict {
                problem: Some((State::WrongRole, NOT_STANDBY.to_owned())),
                lag: None,
                result: "wrong_role",
            }
        }
        Ok(seen) => {
            server.set_identity(seen.identity);
            if let Some(problem) = roles::diverged(&shared.primary(), seen.identity) {
                return Verdict {
                    problem: Some((State::Diverged, problem)),
                    lag: None,
                    result: "diverged",
                };
            }
            let position = seen.replica;
            if let Some(replayed) = position.replayed {
                server.set_position(replayed);
            }
            let lag = replica_lag(&seen, primary, history);
            let problem = lag.and_then(|lag| shared.lag_problem(lag));
            let result = if problem.is_some() { "lagging" } else { "ok" };
            Verdict {
                problem: problem.map(|p| (State::Lagging, p)),
                lag,
                result,
            }
        }
    }
}

/// A standby's lag from what its check could ask: Aurora's own figure; bytes and time from
/// the replay position; time alone from the replay timestamp, measured against the primary's
/// history. `None` when nothing this role may ask can measure it: the replica then stays in
/// service on reachability and role alone.
fn replica_lag(seen: &Observation, primary: Option<u64>, history: &PrimaryHistory) -> Option<Lag> {
    let now = Instant::now();
    if let Some(time) = seen.aurora_lag {
        return Some(Lag { time, bytes: None });
    }
    let position = seen.replica;
    let can = |c| seen.capabilities.has(c);
    let comparable = primary.is_some() || can(Capability::ReceivePosition) || !history.is_empty();
    if can(Capability::ReplayPosition) && comparable {
        return Some(history.lag(primary, position, now));
    }
    history
        .lag_by_time(position.replay_age, now)
        .map(|time| Lag { time, bytes: None })
}

/// Where a verdict came from, for the logs and the re-admission metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    Check,
    Poll,
    Probe,
}

impl Source {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Source::Check => "check",
            Source::Poll => "poll",
            Source::Probe => "probe",
        }
    }
}

/// Records `verdict` on `server`, logs a change of service once, and starts re-probing a
/// server that is out. The caller refreshes the rotation.
pub(super) fn apply(shared: &Arc<Shared>, server: &Arc<Server>, verdict: &Verdict, by: Source) {
    let Verdict { problem, lag, .. } = verdict;
    let reason = problem.as_ref().map(|(_, text)| text.as_str());
    let lag_seconds = lag.map(|l| l.time.as_secs_f64()).filter(|s| s.is_finite());
    let lag_bytes = lag.and_then(|l| l.bytes);
    let by_label = by.as_str();
    match (server.record(problem.clone(), *lag), server.is_primary()) {
        (Some(false), true) => tracing::error!(
            server = %server.name,
            address = %server.address,
            reason = reason.unwrap_or_default(),
            by = by_label,
            "primary failed its check"
        ),
        (Some(true), true) => {
            metrics::readmitted(&server.name, by_label);
            tracing::info!(
                server = %server.name,
                address = %server.address,
                by = by_label,
                "primary healthy again"
            );
        }
        (Some(false), false) => tracing::warn!(
            replica = %server.name,
            address = %server.address,
            reason = reason.unwrap_or_default(),
            lag_seconds,
            lag_bytes,
            by = by_label,
            "replica removed from rotation"
        ),
        (Some(true), false) => {
            metrics::readmitted(&server.name, by_label);
            tracing::info!(
                replica = %server.name,
                address = %server.address,
                lag_seconds,
                lag_bytes,
                by = by_label,
                "replica back in rotation"
            );
        }
        (None, _) => {}
    }
    if !server.is_healthy() {
        probe::start(shared, server, false);
    }
}

/// Refreshes the primary's and every replica's WAL position, and takes out at once a replica
/// found lagging past a threshold or no longer a standby. A replica whose poll fails is
/// suspected (a probe decides), or out when it gave no answer in time. Servers out of
/// service come back through their probes and the full checks.
async fn poll_positions(shared: &Arc<Shared>) {
    let timeout = shared.config().health_check_timeout;
    let all = shared.replicas.load_full();
    if all.is_empty() {
        return;
    }
    let primary = sample_primary(shared, timeout).await;
    let mut replicas = JoinSet::new();
    for (index, server) in all.iter().enumerate() {
        let server = Arc::clone(server);
        replicas.spawn(async move { (index, observe(&server, timeout, false).await) });
    }
    let results = replicas.join_all().await;
    let mut changed = false;
    for (index, answer) in results {
        let server = &all[index];
        let in_service = server.is_healthy();
        let verdict = match answer {
            // A suspect stays in rotation while its probe decides.
            Err(failure) if in_service && !failure.timed_out => {
                shared.suspect(server, "poll", &failure.message);
                continue;
            }
            Err(failure) if only_slow(server, &failure, timeout, Source::Poll) => continue,
            answer => {
                let history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
                let answer = answer.map_err(|f| f.message);
                replica_verdict(shared, server, answer, primary, &history)
            }
        };
        if in_service && verdict.problem.is_some() {
            metrics::health_check(server, verdict.result, Duration::ZERO);
            apply(shared, server, &verdict, Source::Poll);
            changed = true;
        }
    }
    if changed {
        shared.refresh_rotation();
    }
    shared.lift_barrier();
    shared.publish_metrics();
}

/// Records `position`, the primary's just now: for the tokens' plausibility check and in the
/// history that lag is measured against.
pub(super) fn record_primary(shared: &Shared, position: u64) {
    shared.observe_primary(position, unix_ms(SystemTime::now()));
    let mut history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
    history.record(Instant::now(), position);
}

/// The primary's position, from its checker's connection, when it answers; recorded.
pub(super) async fn sample_primary(shared: &Shared, timeout: Duration) -> Option<u64> {
    let primary = shared.primary.load_full();
    let capabilities = primary.capabilities().unwrap_or(Capabilities::POSTGRES);
    let sql = capabilities.position_query(PositionFor::Poll)?;
    let position = run_check(&primary, timeout, false, move |conn, _| {
        Box::pin(async move {
            let (insert, block, segment, _): capabilities::PositionRow =
                capabilities::one_row(conn, sql).await?;
            Ok(settled_position(
                insert as u64,
                block.unwrap_or(0) as u64,
                segment.unwrap_or(0) as u64,
            ))
        })
    })
    .await
    .ok()?;
    record_primary(shared, position);
    Some(position)
}

/// Runs one round of checks over every server and updates the rotation. When the round finds
/// that the writes must move to another server (roles observed), they move, and the round runs
/// again against the new primary.
pub(super) async fn check_all(shared: &Arc<Shared>) {
    for _ in 0..3 {
        if !check_round(shared).await {
            break;
        }
    }
}

/// One round; returns whether the primary moved (and the round must be run again).
async fn check_round(shared: &Arc<Shared>) -> bool {
    let timeout = shared.config().health_check_timeout;
    let mut replicas = JoinSet::new();
    let start = Instant::now();
    let server = shared.primary.load_full();
    let primary = observe(&server, timeout, false).await;
    let primary_took = start.elapsed();
    let all = shared.replicas.load_full();
    for (index, server) in all.iter().enumerate() {
        let server = Arc::clone(server);
        replicas.spawn(async move {
            let start = Instant::now();
            let result = observe(&server, timeout, false).await;
            (index, result, start.elapsed())
        });
    }
    let mut results = replicas.join_all().await;
    results.sort_by_key(|(index, _, _)| *index);

    let seen: Vec<Option<Observation>> = results
        .iter()
        .map(|(_, r, _)| r.as_ref().ok().copied())
        .collect();
    if roles::elect(shared, true, &server, primary.as_ref().ok(), &all, &seen) {
        return true;
    }

    let primary_position = match primary {
        Err(failure) if only_slow(&server, &failure, primary_took, Source::Check) => None,
        primary => {
            let (verdict, position) =
                primary_verdict(shared, &server, primary.map_err(|f| f.message));
            if let Some(position) = position {
                record_primary(shared, position);
            }
            metrics::health_check(&server, verdict.result, primary_took);
            apply(shared, &server, &verdict, Source::Check);
            position
        }
    };

    let verdicts: Vec<_> = {
        let history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
        results
            .into_iter()
            .filter(|(index, answer, took)| match answer {
                Err(failure) => !only_slow(&all[*index], failure, *took, Source::Check),
                Ok(_) => true,
            })
            .map(|(index, answer, took)| {
                let answer = answer.map_err(|f| f.message);
                let verdict =
                    replica_verdict(shared, &all[index], answer, primary_position, &history);
                metrics::health_check(&all[index], verdict.result, took);
                (index, verdict)
            })
            .collect()
    };
    for (index, verdict) in verdicts {
        apply(shared, &all[index], &verdict, Source::Check);
    }
    shared.refresh_rotation();
    shared.lift_barrier();
    for server in shared.servers() {
        server.trim_idle().await;
    }
    shared.publish_metrics();
    false
}

/// Asks `server` its role, positions and identity, on the checker's connection (or, with
/// `fresh`, a new one), with the check its capabilities allow. They are found out on a server
/// first reached and on every new checker connection (a probe's fresh connection re-uses
/// them), and again when the check itself fails with an error of the statement (a function
/// revoked since, a promotion to a role that has other functions): that is the query's
/// fault, never the server's. Only `pg_is_in_recovery()` failing, or the session, is.
pub(super) async fn observe(
    server: &Server,
    timeout: Duration,
    fresh: bool,
) -> Result<Observation, Failure> {
    let known = server.capabilities();
    let (seen, discovery) = run_check(server, timeout, fresh, move |conn, opened| {
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
                    answer => return Ok((answer?, discovery)),
                }
            }
        })
    })
    .await?;
    if let Some(discovery) = discovery {
        noticed(server, &discovery);
    }
    Ok(seen)
}

/// Records what `server` offers, and says so once when that changed.
fn noticed(server: &Server, discovery: &Discovery) {
    let capabilities = discovery.capabilities;
    if !server.set_capabilities(capabilities) {
        return;
    }
    metrics::capabilities(&server.name, capabilities);
    if discovery.missing.is_empty() {
        tracing::debug!(server = %server.name, offers = ?capabilities, "monitoring functions found");
        return;
    }
    tracing::warn!(
        server = %server.name,
        address = %server.address,
        missing = %discovery.describe_missing(),
        "some monitoring functions are not available to this role on this server: it stays in \
         service, checked without them"
    );
}

/// One check of the server's role, positions and identity with `capabilities`.
async fn ask(
    conn: &mut PgConnection,
    capabilities: Capabilities,
) -> Result<Observation, sqlx::Error> {
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
    ) = row;
    let timeline = match walfile.as_deref().and_then(walfile_timeline) {
        Some(timeline) => timeline,
        None => tli.and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
    };
    let (block, segment) = (block.unwrap_or(0) as u64, segment.unwrap_or(0) as u64);
    let seconds = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).ok();
    Ok(Observation {
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
    })
}

type CheckFuture<'c, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// Why a check got no answer.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) message: String,
    /// No answer within the timeout (rather than an error).
    pub(super) timed_out: bool,
}

/// Runs `query` on the checker's own connection to `server`, opening it if needed, within
/// `timeout`. A failed or timed-out check drops the connection so the next one starts fresh.
/// With `fresh` (a probe), the query runs on a new connection, which then becomes the
/// checker's: a server passes a probe only if it accepts new connections. `query` is told
/// whether its connection is new.
async fn run_check<T>(
    server: &Server,
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
        if let Ok(mut slot) = server.check_conn.try_lock() {
            *slot = Some(conn);
            server
                .fresh_check
                .store(false, std::sync::atomic::Ordering::Release);
        }
        return Ok(value);
    }
    let mut slot = server.check_conn.lock().await;
    if server
        .fresh_check
        .swap(false, std::sync::atomic::Ordering::AcqRel)
    {
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
            message: error.to_string(),
            timed_out: false,
        }),
        Err(_) => Err(Failure {
            message: format!("no answer within {timeout:?}"),
            timed_out: true,
        }),
    }
}

/// Closes the checker's connection to `server`.
pub(super) async fn close(server: &Server) {
    if let Some(conn) = server.check_conn.lock().await.take() {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
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

    #[tokio::test]
    async fn a_panicking_round_is_caught_and_the_next_one_runs() {
        assert!(!supervised("test", async { panic!("a bug in a check") }).await);
        let (done, ran) = tokio::sync::oneshot::channel();
        assert!(supervised("test", async move { done.send(()).unwrap() }).await);
        assert!(ran.await.is_ok());
    }
}
