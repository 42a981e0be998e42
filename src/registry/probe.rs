//! Re-trying servers out of service, each on its own short backoff, independent of the full
//! health check: a one-second outage costs about a second, whatever `healthCheckInterval` is.
//!
//! A server gets a probe task when it leaves service (a failed connection, a failed check, a
//! poll that finds it lagging) or is suspected (a session lost under a query). A suspect is
//! probed at once; a server out of service first after [`FIRST_BACKOFF`], then after twice as
//! long each time, up to [`MAX_BACKOFF`] (or the health interval, if shorter), each wait
//! spread at random over its second half so that the instances of a fleet, which saw the
//! outage at the same moment, do not come back in step. A probe of a server that could not be
//! reached (or a suspect) opens a fresh connection; one of a server that answered but could not
//! serve (lagging, the wrong role, another timeline) asks on the checker's connection. Either
//! asks what the full check asks: reachable, the right role, lag under both thresholds. The
//! first probe that passes puts the server back; a suspect whose probe fails leaves service.
//!
//! Work waiting or refused for want of a server (a write while the primary is down) brings its
//! next probe forward, to no sooner than [`FIRST_BACKOFF`] after the last one: however many
//! requests wait, each instance probes a server at most about four times a second. At most one
//! probe task runs per server, and it holds the registry only while it probes.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::topology::Member;
use super::{Event, Shared, election, tasks};
use crate::health::{Lag, Source, Verdict};
use crate::metrics;
use crate::server::State;

/// The first wait before re-probing a server that left service.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The longest wait between probes of a server out of service.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The shortest time between two probes of a server that work is waiting for (a write
/// refused because the primary is down): its probe runs then instead of after its backoff.
pub(crate) const DEMAND_GAP: Duration = FIRST_BACKOFF;

/// Starts probing `member` unless a probe task for it is running: at once (`at_once`, for a
/// suspect) or after the first backoff.
pub(super) fn start(shared: &Arc<Shared>, member: &Member, at_once: bool) {
    if !member.watch.claim_probe() {
        return;
    }
    let weak = Arc::downgrade(shared);
    let member = member.clone();
    let stop = shared.stopped();
    let cap = MAX_BACKOFF.min(shared.config().health_check_interval);
    tokio::spawn(async move {
        tasks::supervised(
            "probe",
            run(weak.clone(), member.clone(), at_once, cap, stop),
        )
        .await;
        member.watch.release_probe();
        // The server may have left service again between the task's last look and the
        // release: then it needs a probe task again.
        let server = &member.server;
        if let Some(shared) = weak.upgrade()
            && !shared.stopping()
            && shared.owns(server)
            && server.state() != State::Serving
        {
            start(&shared, &member, server.state() == State::Suspect);
        }
    });
}

/// The probe task: probes until the server is back in service, the server is removed, or the
/// registry is shut down or dropped.
async fn run(
    weak: Weak<Shared>,
    member: Member,
    at_once: bool,
    cap: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = if at_once {
        Duration::ZERO
    } else {
        FIRST_BACKOFF
    };
    let mut last = tokio::time::Instant::now();
    loop {
        if !wait.is_zero() {
            let due = tasks::after(last, tasks::spread_over(wait, 2));
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                // Work was refused for want of this server: probe sooner, but not more often
                // than every `DEMAND_GAP`.
                () = member.server.wanted.notified() => {
                    let soonest = tasks::after(last, tasks::spread_over(DEMAND_GAP, 2));
                    tokio::time::sleep_until(soonest.min(due)).await;
                }
                _ = stop.changed() => return,
            }
        }
        last = tokio::time::Instant::now();
        let Some(shared) = weak.upgrade() else { return };
        let server = &member.server;
        if *stop.borrow() || !shared.owns(server) || server.state() == State::Serving {
            return;
        }
        if probe(&shared, &member).await {
            return;
        }
        wait = next_wait(wait, cap);
    }
}

/// The wait after `wait`: the first backoff, then doubling up to `cap`.
pub(crate) fn next_wait(wait: Duration, cap: Duration) -> Duration {
    if wait.is_zero() {
        FIRST_BACKOFF.min(cap)
    } else {
        wait.saturating_mul(2).min(cap)
    }
}

/// One probe of `member` on a fresh connection. Returns whether it passed (the server is in
/// service again, or stays in it).
async fn probe(shared: &Arc<Shared>, member: &Member) -> bool {
    let server = &member.server;
    let timeout = shared.config().health_check_timeout;
    let started = Instant::now();
    // A replica's lag is measured against the primary's position now, as in a full check.
    let primary = match !server.is_primary() && shared.primary().is_healthy() {
        true => tasks::sample_primary(shared, timeout)
            .await
            .map(|(position, _)| position),
        false => None,
    };
    // A server that answered but could not serve is asked again on the checker's connection.
    let fresh = matches!(server.state(), State::Unreachable | State::Suspect);
    let answer = tasks::observe(shared, member, timeout, fresh).await;
    let verdict = match answer {
        // No fresh connection in time while the server answers other work: busy, not gone.
        Err(failure) if tasks::busy(server, &failure, started.elapsed(), Source::Probe) => {
            let lag = server.lag().map(|time| Lag {
                time,
                bytes: server.lag_bytes(),
            });
            Verdict::slow(lag)
        }
        answer if server.is_primary() => {
            // With roles observed, the primary may be another server now: every configured
            // server is asked, and the writes move when another must take them.
            if election::discover(shared, server, answer.as_ref().ok()).await {
                metrics::probed(&server.name, "moved", started.elapsed());
                return true;
            }
            tasks::judge_primary(shared, answer)
        }
        answer => tasks::judge_replica(shared, answer, primary),
    };
    metrics::probed(&server.name, verdict.result, started.elapsed());
    let passed = verdict.passed();
    if passed && server.state() == State::Suspect {
        tracing::debug!(server = %server.name, "suspected server passed its probe; it stays in service");
    }
    shared.apply(server, Event::Judged(&verdict, Source::Probe));
    passed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_short_doubles_and_stops_at_the_cap() {
        let cap = MAX_BACKOFF;
        let mut wait = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..6 {
            wait = next_wait(wait, cap);
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [250, 500, 1000, 1000, 1000, 1000]);
        // A health interval shorter than the cap caps the backoff too.
        let short = Duration::from_millis(200);
        assert_eq!(next_wait(Duration::ZERO, short), short);
        assert_eq!(next_wait(short, short), short);
    }
}
