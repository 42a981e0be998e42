//! The one place that decides which server does a piece of work: from the work's intent and
//! what is known of each server, a replica, the primary, or nobody. Pure, and unit-tested
//! without PostgreSQL; the registry feeds it for the first pick, for `DbWrite`, and for every
//! failover step (see `registry/routing.rs`).
//!
//! In order, for a read:
//!
//! 1. a replica in service (in schedule order, so that reads follow the weights) that has not
//!    failed this read yet and has replayed the client's write, if the read carries a token;
//! 2. with no replica in service, for a read without a token: the replica out for lag that is
//!    least behind, while its lag is within `replicaMaxStaleness` ([`Stale`](Reason::Stale)),
//!    so that a lag on every replica does not send every read to the primary at once;
//! 3. the primary, while it is in service: [`Sticky`](Reason::Sticky) when replicas are in
//!    service but none has the write, [`Fallback`](Reason::Fallback) when none is;
//! 4. with the primary down and stale reads allowed, a replica in service without the write
//!    ([`ReadOnly`](Reason::ReadOnly));
//! 5. a replica out of service for being unreachable (its last known position covering the
//!    token, if any): rather than refuse without trying ([`LastResort`](Reason::LastResort));
//!    with stale reads allowed, one out for lag too;
//! 6. the primary out of service for being unreachable: the read waits for one of its
//!    connections, as it would on a plain pool;
//! 7. nobody: the request is refused with 503.
//!
//! A write (and everything, with separation disabled) goes to the primary while it is in
//! service or merely unreachable (the work then waits for a connection, as on a plain pool, so
//! that it succeeds as soon as the primary answers again), and is refused at once while the
//! primary is known not to be one (in recovery, or refused as a split brain).

use super::intent::{Reason, Role, RouteIntent};
use crate::server::State;

/// What the decision needs to know besides the replicas.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ask {
    pub(crate) intent: RouteIntent,
    pub(crate) separation: bool,
    /// `consistency.staleReadsWhenReadOnly`.
    pub(crate) stale_reads_when_read_only: bool,
    pub(crate) primary: State,
    /// The primary already failed this work.
    pub(crate) primary_tried: bool,
    /// A read held on the primary by a gradual rollout (`readReplicaShare` under 100 %).
    pub(crate) held_back: bool,
    /// The position every read must see, from `Registry::wait_for_replicas` (0: none).
    pub(crate) barrier: u64,
}

impl Ask {
    /// The work on the primary for `reason`, when it is worth waiting for; otherwise refused.
    fn primary_or_refuse<R>(&self, reason: Reason) -> Decision<R> {
        match self.primary.awaited() && !self.primary_tried {
            true => Decision::Primary(reason),
            false => Decision::Refuse(reason),
        }
    }
}

/// One replica as the decision sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    pub(crate) state: State,
    /// Its replayed WAL position, as last known.
    pub(crate) position: u64,
    /// It already failed this work.
    pub(crate) tried: bool,
    /// Out for lag, with a lag within `replicaMaxStaleness`.
    pub(crate) within_staleness: bool,
}

/// Where the work goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision<R> {
    /// This replica, for this reason.
    Replica(R, Reason),
    /// The primary, for this reason.
    Primary(Reason),
    /// Nobody can do it now; the reason is the one the primary would have served it for.
    Refuse(Reason),
}

/// Decides where `ask`'s work goes. `replicas` are the replicas that take reads (weight over
/// 0), those in service first in schedule order, then the others; the first acceptable one in
/// service ends the search, so a plain read looks at one replica.
#[inline]
pub(crate) fn decide<R>(ask: Ask, replicas: impl IntoIterator<Item = (R, Seen)>) -> Decision<R> {
    let primary_usable = ask.primary.in_service() && !ask.primary_tried;
    if !ask.separation {
        return ask.primary_or_refuse(Reason::Disabled);
    }
    let intent = ask.intent;
    if intent.role() == Role::Write {
        return ask.primary_or_refuse(intent.reason());
    }
    // A rollout holds a read on the primary only while the primary can serve it.
    if ask.held_back && primary_usable {
        return Decision::Primary(Reason::Rollout);
    }
    let token_need = intent.min_position().unwrap_or(0);
    let need = token_need.max(ask.barrier);
    let mut left = Leftovers {
        any_in_service: false,
        stale: None,
        unreachable_caught_up: None,
        out: None,
        least_behind: None,
    };
    for (replica, seen) in replicas {
        let caught_up = seen.position >= need;
        left.any_in_service |= seen.state.in_service();
        if seen.tried {
            continue;
        }
        match seen.state {
            state if state.in_service() => {
                if caught_up {
                    return Decision::Replica(replica, intent.reason());
                }
                left.stale.get_or_insert(replica);
            }
            State::Unreachable if caught_up && left.unreachable_caught_up.is_none() => {
                left.unreachable_caught_up = Some(replica);
            }
            State::Lagging
                if seen.within_staleness
                    && (left.least_behind.as_ref()).is_none_or(|(_, p)| seen.position > *p) =>
            {
                if let Some((previous, _)) = left.least_behind.replace((replica, seen.position)) {
                    left.out.get_or_insert(previous);
                }
            }
            State::Unreachable | State::Lagging => {
                left.out.get_or_insert(replica);
            }
            _ => {}
        }
    }
    left.decide(ask, token_need, primary_usable)
}

/// What a read's search found besides a fit in service, for steps 2 to 7: the first of each.
struct Leftovers<R> {
    any_in_service: bool,
    /// In service, without the read's write.
    stale: Option<R>,
    /// Out for being unreachable, its last known position covering the read.
    unreachable_caught_up: Option<R>,
    /// Out, for either reason.
    out: Option<R>,
    /// Out for lag, the least behind within `replicaMaxStaleness`, and its position.
    least_behind: Option<(R, u64)>,
}

impl<R> Leftovers<R> {
    fn decide(self, ask: Ask, token_need: u64, primary_usable: bool) -> Decision<R> {
        let when_primary = match (self.any_in_service, token_need, ask.barrier) {
            (false, _, _) | (true, 0, 0) => Reason::Fallback,
            (true, 0, _) => Reason::Barrier,
            _ => Reason::Sticky,
        };
        // Every replica lags: the one least behind, within the staleness bound, takes the reads
        // that need no write of their own; the primary keeps the rest.
        let least_behind = self.least_behind.map(|(replica, _)| replica);
        if !self.any_in_service
            && token_need == 0
            && ask.barrier == 0
            && let Some(replica) = least_behind
        {
            return Decision::Replica(replica, Reason::Stale);
        }
        let out = self.out.or(least_behind);
        if primary_usable {
            return Decision::Primary(when_primary);
        }
        if let Some(replica) = self.unreachable_caught_up {
            return Decision::Replica(replica, Reason::LastResort);
        }
        let stale_ok = ask.stale_reads_when_read_only && !ask.primary.in_service();
        if stale_ok && let Some(replica) = self.stale.or(out) {
            return Decision::Replica(replica, Reason::ReadOnly);
        }
        ask.primary_or_refuse(when_primary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVING: State = State::Serving;
    const SUSPECT: State = State::Suspect;
    const UNREACHABLE: State = State::Unreachable;
    const LAGGING: State = State::Lagging;
    const WRONG_ROLE: State = State::WrongRole;

    fn ask(intent: RouteIntent, primary: State) -> Ask {
        Ask {
            intent,
            separation: true,
            stale_reads_when_read_only: false,
            primary,
            primary_tried: false,
            held_back: false,
            barrier: 0,
        }
    }

    #[test]
    fn a_rollout_holds_reads_on_the_primary_while_it_serves() {
        let all = replicas(&[(SERVING, 0)]);
        let held = Ask {
            held_back: true,
            ..ask(read(), SERVING)
        };
        assert_eq!(
            decide(held, all.clone()),
            Decision::Primary(Reason::Rollout)
        );
        // With the primary down, the replica serves the read all the same.
        let down = Ask {
            held_back: true,
            ..ask(read(), UNREACHABLE)
        };
        assert_eq!(decide(down, all), Decision::Replica('a', Reason::Method));
    }

    fn read() -> RouteIntent {
        RouteIntent::read(Reason::Method)
    }

    fn read_after(position: u64) -> RouteIntent {
        read().requiring(position)
    }

    /// Replicas named by letter, at `position`, untried.
    fn replicas(states: &[(State, u64)]) -> Vec<(char, Seen)> {
        states
            .iter()
            .enumerate()
            .map(|(i, &(state, position))| {
                let seen = Seen {
                    state,
                    position,
                    tried: false,
                    within_staleness: false,
                };
                (char::from(b'a' + i as u8), seen)
            })
            .collect()
    }

    fn tried(mut replicas: Vec<(char, Seen)>, names: &str) -> Vec<(char, Seen)> {
        for (name, seen) in &mut replicas {
            seen.tried = names.contains(*name);
        }
        replicas
    }

    #[test]
    fn a_plain_read_takes_the_first_replica_in_service() {
        let all = replicas(&[(SERVING, 0), (SERVING, 0)]);
        assert_eq!(
            decide(ask(read(), SERVING), all.clone()),
            Decision::Replica('a', Reason::Method)
        );
        // A suspect is still in service while its probe decides.
        let suspect = replicas(&[(SUSPECT, 0), (SERVING, 0)]);
        assert_eq!(
            decide(ask(read(), SERVING), suspect),
            Decision::Replica('a', Reason::Method)
        );
        // A failover step skips what failed.
        assert_eq!(
            decide(ask(read(), SERVING), tried(all, "a")),
            Decision::Replica('b', Reason::Method)
        );
    }

    #[test]
    fn while_every_replica_lags_the_least_behind_within_the_bound_takes_plain_reads() {
        let within = |mut all: Vec<(char, Seen)>, names: &str| {
            for (name, seen) in &mut all {
                seen.within_staleness = names.contains(*name);
            }
            all
        };
        let lagging = State::Lagging;
        // b is the least behind of those within the bound (c is further ahead but past it).
        let all = within(
            replicas(&[(lagging, 10), (lagging, 30), (lagging, 50)]),
            "ab",
        );
        assert_eq!(
            decide(ask(read(), SERVING), all.clone()),
            Decision::Replica('b', Reason::Stale)
        );
        // A read with a token, or held by a barrier, stays on the primary.
        assert_eq!(
            decide(ask(read_after(5), SERVING), all.clone()),
            Decision::Primary(Reason::Fallback)
        );
        let mut barrier = ask(read(), SERVING);
        barrier.barrier = 5;
        assert_eq!(
            decide(barrier, all.clone()),
            Decision::Primary(Reason::Fallback)
        );
        // None within the bound (or the bound off): the primary, as before.
        let none = within(replicas(&[(lagging, 10), (lagging, 30)]), "");
        assert_eq!(
            decide(ask(read(), SERVING), none),
            Decision::Primary(Reason::Fallback)
        );
        // One replica in service: it serves, lagging ones do not.
        let one = within(replicas(&[(lagging, 30), (SERVING, 10)]), "a");
        assert_eq!(
            decide(ask(read(), SERVING), one),
            Decision::Replica('b', Reason::Method)
        );
        // A failover step skips the one that failed.
        assert_eq!(
            decide(ask(read(), SERVING), tried(all, "b")),
            Decision::Replica('a', Reason::Stale)
        );
    }

    #[test]
    fn a_plain_read_looks_at_one_replica_when_it_will_do() {
        let mut looked = 0;
        let all = (0..64).map(|i| {
            looked += 1;
            let seen = Seen {
                state: SERVING,
                position: 0,
                tried: false,
                within_staleness: false,
            };
            (i, seen)
        });
        assert_eq!(
            decide(ask(read(), SERVING), all),
            Decision::Replica(0, Reason::Method)
        );
        assert_eq!(looked, 1);
    }

    #[test]
    fn with_no_replica_in_service_reads_go_to_the_primary_then_to_unreachable_replicas() {
        let out = replicas(&[(UNREACHABLE, 0), (LAGGING, 0), (WRONG_ROLE, 0)]);
        assert_eq!(
            decide(ask(read(), SERVING), out.clone()),
            Decision::Primary(Reason::Fallback)
        );
        // The primary down too: try the unreachable replica rather than refuse untried.
        assert_eq!(
            decide(ask(read(), UNREACHABLE), out.clone()),
            Decision::Replica('a', Reason::LastResort)
        );
        // Once it failed as well: out for lag or role is never tried without stale reads; the
        // unreachable primary is waited for, as on a plain pool, and refused once it failed.
        assert_eq!(
            decide(ask(read(), UNREACHABLE), tried(out.clone(), "a")),
            Decision::Primary(Reason::Fallback)
        );
        let both_failed = Ask {
            primary_tried: true,
            ..ask(read(), UNREACHABLE)
        };
        assert_eq!(
            decide(both_failed, tried(out.clone(), "a")),
            Decision::Refuse(Reason::Fallback)
        );
        assert_eq!(
            decide(ask(read(), WRONG_ROLE), tried(out.clone(), "a")),
            Decision::Refuse(Reason::Fallback)
        );
        // With stale reads allowed while the primary is down, the lagging one serves.
        let stale_ok = Ask {
            stale_reads_when_read_only: true,
            ..ask(read(), UNREACHABLE)
        };
        assert_eq!(
            decide(stale_ok, tried(out, "a")),
            Decision::Replica('b', Reason::ReadOnly)
        );
        // The primary failed this read already: the unreachable replica is next.
        let primary_failed = Ask {
            primary_tried: true,
            ..ask(read(), SERVING)
        };
        assert_eq!(
            decide(primary_failed, replicas(&[(UNREACHABLE, 0)])),
            Decision::Replica('a', Reason::LastResort)
        );
    }

    #[test]
    fn a_read_with_a_token_needs_a_replica_that_has_the_write() {
        let all = replicas(&[(SERVING, 10), (SERVING, 50)]);
        assert_eq!(
            decide(ask(read_after(40), SERVING), all.clone()),
            Decision::Replica('b', Reason::Method)
        );
        assert_eq!(
            decide(ask(read_after(60), SERVING), all.clone()),
            Decision::Primary(Reason::Sticky)
        );
        // No replica in service at all: a fallback, not stickiness.
        assert_eq!(
            decide(ask(read_after(60), SERVING), replicas(&[(LAGGING, 90)])),
            Decision::Primary(Reason::Fallback)
        );
        // Primary unreachable: a replica that lacks the write never serves without stale
        // reads; the primary is waited for (refused once it is known not to be one)...
        assert_eq!(
            decide(ask(read_after(60), UNREACHABLE), all.clone()),
            Decision::Primary(Reason::Sticky)
        );
        assert_eq!(
            decide(ask(read_after(60), WRONG_ROLE), all.clone()),
            Decision::Refuse(Reason::Sticky)
        );
        // ... and does with them.
        let stale_ok = Ask {
            stale_reads_when_read_only: true,
            ..ask(read_after(60), UNREACHABLE)
        };
        assert_eq!(
            decide(stale_ok, all),
            Decision::Replica('a', Reason::ReadOnly)
        );
        // An unreachable replica whose last position covers the write is a last resort; one
        // whose position does not, is not.
        let out = replicas(&[(UNREACHABLE, 70), (UNREACHABLE, 10)]);
        assert_eq!(
            decide(ask(read_after(60), UNREACHABLE), out.clone()),
            Decision::Replica('a', Reason::LastResort)
        );
        assert_eq!(
            decide(ask(read_after(60), WRONG_ROLE), tried(out, "a")),
            Decision::Refuse(Reason::Fallback)
        );
    }

    #[test]
    fn writes_wait_for_an_unreachable_primary_and_are_refused_by_one_that_is_not_a_primary() {
        let write = RouteIntent::write(Reason::Method);
        let all = replicas(&[(SERVING, 0)]);
        assert_eq!(
            decide(ask(write, SERVING), all.clone()),
            Decision::Primary(Reason::Method)
        );
        assert_eq!(
            decide(ask(write, SUSPECT), all.clone()),
            Decision::Primary(Reason::Method)
        );
        // Unreachable (perhaps restarting): waited for, as on a plain pool.
        assert_eq!(
            decide(ask(write, UNREACHABLE), all.clone()),
            Decision::Primary(Reason::Method)
        );
        for not_a_primary in [WRONG_ROLE, State::Diverged] {
            assert_eq!(
                decide(ask(write, not_a_primary), all.clone()),
                Decision::Refuse(Reason::Method)
            );
        }
    }

    #[test]
    fn with_separation_disabled_everything_is_the_primarys() {
        let off = Ask {
            separation: false,
            ..ask(read(), SERVING)
        };
        let all = replicas(&[(SERVING, 0)]);
        assert_eq!(
            decide(off, all.clone()),
            Decision::Primary(Reason::Disabled)
        );
        let off_down = Ask {
            primary: UNREACHABLE,
            ..off
        };
        assert_eq!(
            decide(off_down, all.clone()),
            Decision::Primary(Reason::Disabled)
        );
        let off_demoted = Ask {
            primary: WRONG_ROLE,
            ..off
        };
        assert_eq!(decide(off_demoted, all), Decision::Refuse(Reason::Disabled));
    }
}
