//! What one look at a server means: in service or not, why, and with what lag. Pure: from
//! what a check saw (or why it saw nothing), the primary's position and history, and the
//! thresholds, a [`Verdict`]; the registry records it.

use std::time::{Duration, Instant};

use super::capabilities::Capability;
use super::check::{Failure, Observation};
use super::lag::{Lag, PrimaryHistory};
use super::roles;
use crate::server::{Identity, State};

const NOT_PRIMARY: &str = "is in recovery (a standby, not a primary): writes will fail until the \
                           configuration names the new primary";

const NOT_PRIMARY_OBSERVED: &str = "is in recovery (a standby, not a primary): writes fail until \
                                    a configured server answers as the primary";

const NOT_STANDBY: &str = "is not a standby (pg_is_in_recovery() is false)";

/// Where a verdict came from, for the logs and the re-admission metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Check,
    Poll,
    Probe,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Check => "check",
            Source::Poll => "poll",
            Source::Probe => "probe",
        }
    }
}

/// The lag past which a replica leaves rotation: `replicaLagThreshold` and
/// `replicaLagBytesThreshold`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Thresholds {
    pub(crate) time: Duration,
    pub(crate) bytes: Option<u64>,
}

/// What one look at a server found.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// Why it cannot serve, and the state that puts it in; `None`: it can.
    pub(crate) problem: Option<(State, String)>,
    /// Its replication lag, when known.
    pub(crate) lag: Option<Lag>,
    /// `ok`, `unreachable`, `wrong_role`, `lagging`, `diverged` or `slow`, for the metrics.
    pub(crate) result: &'static str,
    /// The cluster and timeline it answered with.
    pub(crate) identity: Option<Identity>,
    /// Its WAL position: a primary's settled insert position, a replica's replay position.
    pub(crate) position: Option<u64>,
    /// A replica answered as a primary: who takes the writes is to be decided again.
    pub(crate) answers_as_primary: bool,
}

impl Verdict {
    fn unreachable(error: String) -> Verdict {
        Verdict {
            problem: Some((State::Unreachable, error)),
            lag: None,
            result: "unreachable",
            identity: None,
            position: None,
            answers_as_primary: false,
        }
    }

    /// A server that got no answer in time but answered other work: it stays as it is, with
    /// the lag last known.
    pub(crate) fn slow(lag: Option<Lag>) -> Verdict {
        Verdict {
            problem: None,
            lag,
            result: "slow",
            identity: None,
            position: None,
            answers_as_primary: false,
        }
    }

    /// Whether the server may serve.
    pub(crate) fn passed(&self) -> bool {
        self.problem.is_none()
    }
}

/// What the status endpoint says of a connection or query error: its kind in a few fixed
/// words, never the driver's text (which may name users, databases, certificates' subjects).
/// The log has the whole error.
pub(crate) fn summary(error: &str) -> &'static str {
    let error = error.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| error.contains(n));
    if has(&["refused"]) {
        "connection refused"
    } else if has(&["timed out", "timeout"]) {
        "timed out"
    } else if has(&["password", "authentication", "pg_hba", "no password"]) {
        "authentication failed"
    } else if has(&["certificate", "tls", "ssl", "handshake"]) {
        "TLS failed"
    } else if has(&[
        "too many connections",
        "connection slots",
        "too many clients",
    ]) {
        "too many connections"
    } else if has(&[
        "starting up",
        "shutting down",
        "recovery mode",
        "not yet accepting",
    ]) {
        "server starting up or shutting down"
    } else if has(&["does not exist"]) {
        "database or role does not exist"
    } else if has(&["permission denied", "must be superuser", "privilege"]) {
        "permission denied"
    } else if has(&["lookup", "not known", "resolve", "no route", "unreachable"]) {
        "host not reachable"
    } else if has(&["reset", "broken pipe", "eof", "closed"]) {
        "connection lost"
    } else {
        "connection or query failed (the log has the error)"
    }
}

/// Whether a look that got no answer (`failure`) found the server only busy: it timed out,
/// or refused a connection for having as many as it takes (`53300`), while the server
/// answered the application meanwhile (`answered`). A loaded host answers a fresh connection
/// or a check late while it serves every other query, and a server at its connection limit
/// serves the ones it has; the server then stays as it is, and the next look decides.
pub(crate) fn only_slow(failure: &Failure, answered: bool) -> bool {
    (failure.timed_out || failure.full) && answered
}

/// The verdict on the primary from its answer. `observed`: roles are observed (the message
/// says what ends the refusal).
pub(crate) fn primary(answer: Result<Observation, String>, observed: bool) -> Verdict {
    match answer {
        // A primary whose position this role cannot read is still the primary.
        Ok(seen) if !seen.in_recovery => Verdict {
            problem: None,
            lag: Some(Lag::ZERO),
            result: "ok",
            identity: Some(seen.identity),
            position: seen.position,
            answers_as_primary: false,
        },
        Ok(_) => {
            let text = match observed {
                true => NOT_PRIMARY_OBSERVED,
                false => NOT_PRIMARY,
            };
            Verdict {
                problem: Some((State::WrongRole, text.to_owned())),
                lag: Some(Lag::ZERO),
                result: "wrong_role",
                // What a standby reports is no primary's identity.
                identity: None,
                position: None,
                answers_as_primary: false,
            }
        }
        Err(error) => Verdict::unreachable(error),
    }
}

/// What is known of the primary when a replica is judged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrimaryNow<'h> {
    /// Its position, sampled just before (`None`: unknown).
    pub(crate) position: Option<u64>,
    /// Its cluster and timeline.
    pub(crate) identity: Identity,
    /// Its positions over time.
    pub(crate) history: &'h PrimaryHistory,
}

/// The verdict on a replica from its answer.
pub(crate) fn replica(
    answer: Result<Observation, String>,
    primary: PrimaryNow<'_>,
    thresholds: Thresholds,
) -> Verdict {
    let seen = match answer {
        Err(error) => return Verdict::unreachable(error),
        Ok(seen) => seen,
    };
    let mut verdict = Verdict {
        problem: None,
        lag: None,
        result: "ok",
        identity: Some(seen.identity),
        position: None,
        answers_as_primary: false,
    };
    if !seen.in_recovery {
        verdict.problem = Some((State::WrongRole, NOT_STANDBY.to_owned()));
        verdict.result = "wrong_role";
        verdict.answers_as_primary = true;
        return verdict;
    }
    if let Some(problem) = roles::diverged(primary.identity, seen.identity) {
        verdict.problem = Some((State::Diverged, problem));
        verdict.result = "diverged";
        return verdict;
    }
    verdict.position = seen.replica.replayed;
    verdict.lag = replica_lag(&seen, primary.position, primary.history);
    if let Some(problem) = verdict.lag.and_then(|lag| lag_problem(lag, thresholds)) {
        verdict.problem = Some((State::Lagging, problem));
        verdict.result = "lagging";
    }
    verdict
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

/// Why `lag` takes a replica out of rotation, if it does.
pub(crate) fn lag_problem(lag: Lag, thresholds: Thresholds) -> Option<String> {
    let Lag { time, bytes } = lag;
    if time > thresholds.time {
        let shown = if time == Duration::MAX {
            "an unknown time".to_owned()
        } else {
            format!("{:.1}s", time.as_secs_f64())
        };
        return Some(format!(
            "lagging {shown} behind the primary (threshold {:.1}s)",
            thresholds.time.as_secs_f64()
        ));
    }
    match (bytes, thresholds.bytes) {
        (Some(bytes), Some(limit)) if bytes > limit => Some(format!(
            "lagging {bytes} bytes of WAL behind the primary (threshold {limit})"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_shows_an_errors_kind_and_nothing_it_names() {
        for (driver, shown) in [
            (
                "error communicating with database: Connection refused (os error 111)",
                "connection refused",
            ),
            (
                "error returned from database: password authentication failed for user \"reporting_ro\"",
                "authentication failed",
            ),
            (
                "error occurred while attempting to establish a TLS connection: invalid peer certificate: \
                 NotValidForName (CN=db-7.internal.example)",
                "TLS failed",
            ),
            (
                "error returned from database: database \"orders_eu\" does not exist",
                "database or role does not exist",
            ),
            (
                "pool timed out while waiting for an open connection",
                "timed out",
            ),
            (
                "error returned from database: sorry, too many clients already",
                "too many connections",
            ),
            (
                "something new from a future driver about host h.example",
                "connection or query failed (the log has the error)",
            ),
        ] {
            assert_eq!(summary(driver), shown, "{driver}");
        }
    }
    use crate::health::capabilities::Capabilities;
    use crate::health::lag::ReplicaPosition;

    const THRESHOLDS: Thresholds = Thresholds {
        time: Duration::from_secs(10),
        bytes: Some(1000),
    };

    fn standby(replayed: u64, timeline: u32) -> Observation {
        Observation {
            in_recovery: true,
            position: None,
            replica: ReplicaPosition {
                received: Some(replayed),
                replayed: Some(replayed),
                replay_age: None,
            },
            identity: Identity {
                system_id: 7,
                timeline,
            },
            aurora_lag: None,
            capabilities: Capabilities::POSTGRES,
        }
    }

    fn primary_now(history: &PrimaryHistory, position: u64) -> PrimaryNow<'_> {
        PrimaryNow {
            position: Some(position),
            identity: Identity {
                system_id: 7,
                timeline: 1,
            },
            history,
        }
    }

    #[test]
    fn a_replica_is_judged_by_role_timeline_and_lag() {
        let mut history = PrimaryHistory::default();
        history.record(Instant::now(), 500);
        let caught_up = replica(Ok(standby(500, 1)), primary_now(&history, 500), THRESHOLDS);
        assert!(caught_up.passed(), "{caught_up:?}");
        assert_eq!(caught_up.position, Some(500));

        let far = replica(Ok(standby(500, 1)), primary_now(&history, 5000), THRESHOLDS);
        assert_eq!(far.result, "lagging");
        assert!(far.problem.unwrap().1.contains("bytes of WAL"));

        let forked = replica(Ok(standby(500, 2)), primary_now(&history, 500), THRESHOLDS);
        assert_eq!(forked.result, "diverged");
        assert_eq!(
            forked.position, None,
            "a forked replica's position means nothing"
        );

        let promoted = Observation {
            in_recovery: false,
            ..standby(500, 2)
        };
        let promoted = replica(Ok(promoted), primary_now(&history, 500), THRESHOLDS);
        assert!(promoted.answers_as_primary);
        assert_eq!(promoted.result, "wrong_role");

        let gone = replica(
            Err("refused".into()),
            primary_now(&history, 500),
            THRESHOLDS,
        );
        assert_eq!(gone.problem.unwrap().0, State::Unreachable);
    }

    #[test]
    fn a_primary_in_recovery_is_refused_and_says_what_ends_it() {
        let verdict = primary(Ok(standby(1, 1)), true);
        let (state, text) = verdict.problem.unwrap();
        assert_eq!(state, State::WrongRole);
        assert!(
            text.contains("a configured server answers as the primary"),
            "{text}"
        );
        let verdict = primary(Ok(standby(1, 1)), false);
        assert!(verdict.problem.unwrap().1.contains("configuration names"));
    }

    #[test]
    fn lag_past_either_threshold_is_a_problem() {
        let time = |s| Lag {
            time: Duration::from_secs(s),
            bytes: Some(0),
        };
        assert_eq!(lag_problem(time(10), THRESHOLDS), None);
        assert!(lag_problem(time(11), THRESHOLDS).unwrap().contains("11.0s"));
        let unknown = Lag {
            time: Duration::MAX,
            bytes: None,
        };
        assert!(
            lag_problem(unknown, THRESHOLDS)
                .unwrap()
                .contains("an unknown time")
        );
        let off = Thresholds {
            bytes: None,
            ..THRESHOLDS
        };
        let bytes = Lag {
            time: Duration::ZERO,
            bytes: Some(5000),
        };
        assert!(lag_problem(bytes, THRESHOLDS).is_some());
        assert_eq!(lag_problem(bytes, off), None);
    }
}
