//! The background health loop: every interval it asks the primary for its WAL position and each
//! replica whether it is a standby and how far it has replayed, has the answers judged
//! (`health::verdict`) and hands the verdicts to `control.rs`. Between full rounds, when
//! read-your-writes compares tokens with replay positions, it refreshes those positions every
//! poll interval, and a replica found lagging leaves at once.
//!
//! The loop holds only a `Weak` reference between rounds, so it never keeps the registry alive,
//! and it ends as soon as the registry is shut down or dropped. Each round runs as a task of
//! its own: a round that panics is logged and the loop goes on.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::topology::Member;
use super::{Event, Shared};
use crate::config::Roles;
use crate::health::capabilities::{self, PositionFor};
use crate::health::check::{self, Failure, Observation};
use crate::health::lag::ReplicaPosition;
use crate::health::verdict::{self, PrimaryNow, Thresholds};
use crate::health::{Capabilities, Source, Verdict, settled_position, standby};
use crate::metrics;
use crate::server::Server;

/// Starts the loop. With `check_first`, the first full round runs at once; otherwise after
/// about one interval (the caller has just run a round itself).
///
/// Every wait is spread at random over its last fifth, so that instances started together (a
/// deploy) do not check and poll the servers in step.
pub(super) fn spawn(shared: &Arc<Shared>, check_first: bool) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let mut stop = shared.stopped();
    let now = tokio::time::Instant::now();
    let mut interval = shared.config().health_check_interval;
    let mut next_check = match check_first {
        true => now,
        false => after(now, spread(interval)),
    };
    let mut next_poll = after(now, poll_wait(shared));
    tokio::spawn(async move {
        loop {
            let polls = weak
                .upgrade()
                .is_some_and(|shared| shared.polls_positions());
            let due = match polls {
                true => next_check.min(next_poll),
                false => next_check,
            };
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                // Shutdown, or the registry (which owns the sender) was dropped.
                _ = stop.changed() => break,
            }
            let Some(shared) = weak.upgrade() else { break };
            // A reload may have shortened the interval.
            let now = tokio::time::Instant::now();
            let set = shared.config().health_check_interval;
            if set != interval {
                interval = set;
                next_check = next_check.min(after(now, spread(interval)));
            }
            let full = now >= next_check;
            let round = Arc::clone(&shared);
            supervised("health check", async move {
                if full {
                    check_all(&round).await;
                } else {
                    poll_positions(&round).await;
                }
            })
            .await;
            let now = tokio::time::Instant::now();
            if full {
                next_check = after(now, spread(interval));
            }
            next_poll = after(now, poll_wait(&shared));
        }
        tracing::debug!("rwsplit health loop stopped");
    });
}

/// The wait before the next position poll: `pollInterval` while something needs positions
/// fresh, the idle interval otherwise; spread either way.
fn poll_wait(shared: &Shared) -> Duration {
    let consistency = &shared.config().consistency;
    match polls_fast(shared) {
        true => spread(consistency.poll_interval),
        false => spread(consistency.idle_poll_interval()),
    }
}

/// Whether positions are wanted fresh: a token this instance issued or honoured may still be
/// carried (its reads go to a replica as soon as one is known to have the write, and lag is
/// measured finely while it counts), a replica is past half its lag threshold or out of
/// service (its crossing or return is seen sooner), or a startup barrier is up.
pub(super) fn polls_fast(shared: &Shared) -> bool {
    let topology = shared.topology();
    let near = topology.config.lag_threshold / 2;
    shared
        .tokens
        .any_in_flight(crate::clock::unix_ms(std::time::SystemTime::now()))
        || shared.barrier() != 0
        || topology
            .replicas
            .iter()
            .any(|m| !m.server.is_healthy() || m.server.lag().is_some_and(|lag| lag >= near))
}

/// A random wait between four fifths of `max` and `max`.
pub(crate) fn spread(max: Duration) -> Duration {
    spread_over(max, 5)
}

/// A random wait between `max` less its `1/parts` and `max`.
pub(crate) fn spread_over(max: Duration, parts: u32) -> Duration {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    let draw = match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => 0,
    };
    let part = max / parts.max(1);
    let off = part.mul_f64(f64::from(draw) / f64::from(u32::MAX));
    max.saturating_sub(off)
}

/// `at + delay`, or far in the future when that overflows.
pub(crate) fn after(at: tokio::time::Instant, delay: Duration) -> tokio::time::Instant {
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

/// Asks `member` its role, positions and identity (see [`check::observe`]), and records what
/// it found out of the server's capabilities.
pub(super) async fn observe(
    shared: &Shared,
    member: &Member,
    timeout: Duration,
    fresh: bool,
) -> Result<Observation, Failure> {
    let (seen, discovery, name) =
        check::observe(&member.server, &member.watch.checker, timeout, fresh).await?;
    if let Some(discovery) = discovery {
        shared.discovered(&member.server, &discovery);
    }
    if seen.in_recovery {
        shared.streams_as(&member.server, name.as_deref());
    }
    Ok(seen)
}

/// Whether a look at `server` that got no answer (`failure`) within `took` found it only busy:
/// in service, and answering the application meanwhile. Counted and logged at debug.
pub(super) fn busy(server: &Server, failure: &Failure, took: Duration, by: Source) -> bool {
    // A full server says so at once: what it served within a connect timeout counts.
    let window = match failure.full {
        true => took.max(server.connect_timeout()),
        false => took,
    };
    let slow = verdict::only_slow(failure, server.answered_within(window));
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

/// The verdict on the primary from its answer; records its identity and position when it is
/// one.
pub(super) fn judge_primary(shared: &Shared, answer: Result<Observation, Failure>) -> Verdict {
    let observed = shared.config().roles == Roles::Observed;
    let verdict = verdict::primary(answer.map_err(|f| f.message), observed);
    if verdict.passed() {
        if let Some(identity) = verdict.identity {
            shared.primary_seen(identity);
        }
        if let Some(position) = verdict.position {
            shared.record_primary(position);
        }
    }
    verdict
}

/// The verdict on a replica from its answer, given the primary's position sampled just before
/// it (`None`: unknown).
pub(super) fn judge_replica(
    shared: &Shared,
    answer: Result<Observation, Failure>,
    primary_position: Option<u64>,
) -> Verdict {
    let config = shared.config();
    let thresholds = Thresholds {
        time: config.lag_threshold,
        bytes: config.lag_bytes_threshold,
    };
    let history = shared.history.lock().unwrap_or_else(|e| e.into_inner());
    let primary = PrimaryNow {
        position: primary_position,
        identity: shared.primary().identity(),
        history: &history,
    };
    verdict::replica(answer.map_err(|f| f.message), primary, thresholds)
}

/// Refreshes the primary's and every replica's WAL position, and takes out at once a replica
/// found lagging past a threshold or no longer a standby. A replica whose position the
/// primary reports under its name (`health/standby.rs`) is not asked itself unless that
/// position would take it out. A replica whose poll fails is suspected (a probe decides), or
/// out when it gave no answer in time. Servers out of service come back through their probes
/// and the full checks.
async fn poll_positions(shared: &Arc<Shared>) {
    let timeout = shared.config().health_check_timeout;
    // Servers out of service are their probes' (on a backoff) and the full checks': a poll
    // would open a connection to each of them every time.
    let replicas: Vec<Member> = (shared.topology().replicas.iter())
        .filter(|m| m.server.state().in_service())
        .cloned()
        .collect();
    if replicas.is_empty() {
        return;
    }
    let (primary, standbys) = match shared.primary().is_healthy() {
        true => sample_primary(shared, timeout).await.unzip(),
        false => (None, None),
    };
    let names: Vec<_> = replicas
        .iter()
        .map(|m| m.server.stream.to_follow())
        .collect();
    let streamed = standby::positions(standbys.flatten().as_deref(), &names);
    let mut asked = Vec::new();
    for (member, streamed) in replicas.iter().zip(streamed) {
        let server = &member.server;
        let cleared = streamed.filter(|&position| {
            let seen = standby::observation(server.identity(), position);
            judge_replica(shared, Ok(seen), primary).passed()
        });
        match cleared {
            Some(position) => shared.streamed(server, position),
            None => {
                shared.asked_itself(server);
                asked.push(member.clone());
            }
        }
    }
    let answers = observe_all(shared, &asked, timeout).await;
    let mut verdicts = Vec::new();
    for (member, (answer, _)) in asked.iter().zip(answers) {
        let server = &member.server;
        let in_service = server.is_healthy();
        match answer {
            // A suspect stays in rotation while its probe decides.
            Err(failure) if in_service && !failure.timed_out && !failure.full => {
                let error = failure.message;
                shared.apply(
                    server,
                    Event::Suspected {
                        cause: "poll",
                        error: &error,
                    },
                );
            }
            Err(failure) if busy(server, &failure, timeout, Source::Poll) => {}
            answer => {
                let verdict = judge_replica(shared, answer, primary);
                if in_service && !verdict.passed() {
                    metrics::health_check(&server.name, verdict.result, Duration::ZERO);
                    verdicts.push((server, verdict));
                }
            }
        }
    }
    shared.apply_all(
        verdicts
            .iter()
            .map(|(server, verdict)| (*server, Event::Judged(verdict, Source::Poll))),
    );
    shared.lift_barrier();
}

/// The primary's position, from its checker's connection, when it answers (recorded), with
/// the standbys' positions it reports (`health/standby.rs`), where this role may read them.
pub(super) async fn sample_primary(
    shared: &Shared,
    timeout: Duration,
) -> Option<(u64, Option<String>)> {
    let primary = shared.topology().primary.clone();
    let capabilities = Capabilities::from_stored(primary.server.capabilities_stored())
        .unwrap_or(Capabilities::POSTGRES);
    let sql = capabilities.position_query(PositionFor::Poll)?;
    let position = check::run_check(
        &primary.server,
        &primary.watch.checker,
        timeout,
        false,
        move |conn, _| {
            Box::pin(async move {
                let (insert, block, segment, _, standbys): capabilities::PositionRow =
                    capabilities::one_row(conn, sql).await?;
                let (block, segment) = (block.unwrap_or(0) as u64, segment.unwrap_or(0) as u64);
                Ok((settled_position(insert as u64, block, segment), standbys))
            })
        },
    )
    .await
    .ok()?;
    shared.record_primary(position.0);
    Some(position)
}

/// Asks every one of `members` at once; their answers in the same order, each with how long
/// it took.
async fn observe_all(
    shared: &Arc<Shared>,
    members: &[Member],
    timeout: Duration,
) -> Vec<(Result<Observation, Failure>, Duration)> {
    let mut asks = JoinSet::new();
    for (index, member) in members.iter().enumerate() {
        let (shared, member) = (Arc::clone(shared), member.clone());
        asks.spawn(async move {
            let start = Instant::now();
            let answer = observe(&shared, &member, timeout, false).await;
            (index, answer, start.elapsed())
        });
    }
    let mut answers = asks.join_all().await;
    answers.sort_by_key(|(index, _, _)| *index);
    answers
        .into_iter()
        .map(|(_, answer, took)| (answer, took))
        .collect()
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
    let topology = shared.topology_full();
    let start = Instant::now();
    let primary = &topology.primary;
    let primary_answer = observe(shared, primary, timeout, false).await;
    let primary_took = start.elapsed();
    let answers = observe_all(shared, &topology.replicas, timeout).await;
    let seen: Vec<Option<Observation>> = answers
        .iter()
        .map(|(answer, _)| answer.as_ref().ok().copied())
        .collect();
    let primary_seen = primary_answer.as_ref().ok();
    if super::election::elect(
        shared,
        true,
        &primary.server,
        primary_seen,
        &topology.replicas,
        &seen,
    ) {
        return true;
    }

    let primary_position = match primary_answer {
        Err(failure) if busy(&primary.server, &failure, primary_took, Source::Check) => None,
        answer => {
            let verdict = judge_primary(shared, answer);
            metrics::health_check(&primary.server.name, verdict.result, primary_took);
            shared.apply(&primary.server, Event::Judged(&verdict, Source::Check));
            verdict.position.filter(|_| verdict.passed())
        }
    };

    let mut verdicts = Vec::new();
    for (member, (answer, took)) in topology.replicas.iter().zip(answers) {
        let server = &member.server;
        if let Err(failure) = &answer
            && busy(server, failure, took, Source::Check)
        {
            continue;
        }
        if let Ok(Observation {
            replica:
                ReplicaPosition {
                    replayed: Some(own),
                    ..
                },
            ..
        }) = &answer
        {
            shared.confirm_stream(server, *own);
        }
        let verdict = judge_replica(shared, answer, primary_position);
        metrics::health_check(&server.name, verdict.result, took);
        verdicts.push((server, verdict));
    }
    shared.apply_all(
        verdicts
            .iter()
            .map(|(server, verdict)| (*server, Event::Judged(verdict, Source::Check))),
    );
    shared.lift_barrier();
    for member in topology.members() {
        member.server.trim_idle().await;
    }
    shared.publish();
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_round_is_caught_and_the_next_one_runs() {
        assert!(!supervised("test", async { panic!("a bug in a check") }).await);
        let (done, ran) = tokio::sync::oneshot::channel();
        assert!(supervised("test", async move { done.send(()).unwrap() }).await);
        assert!(ran.await.is_ok());
    }
}
