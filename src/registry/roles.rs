//! Which server takes the writes, when roles are observed (`db.roles: observed`, the default):
//! whichever configured server answers as a primary, refusing the ones that cannot be it.
//!
//! Every full check and every probe of a primary out of service asks each configured server
//! whether it is in recovery, which cluster it belongs to (`pg_control_system()`) and which
//! timeline it is on. The servers answering as a primary are then judged ([`decide`]):
//!
//! - one not listed in `primaryCandidates`, or of another cluster (system identifier), takes
//!   nothing;
//! - one on a timeline lower than a primary already reached is a former primary started again
//!   after a promotion: it takes nothing;
//! - of the rest, the one on the highest timeline takes the writes (after a promotion, the
//!   promoted one); the current primary keeps them on a tie, and a tie without it is refused
//!   rather than guessed.
//!
//! Every refusal is logged as an error at each check until the server is gone. A move builds
//! a read-write pool for the new primary at once, turns the former primary's address into a
//! replica (out of rotation until a check finds it a standby on the new timeline) and takes
//! out every replica not on the new timeline: their data may have forked from the new
//! primary's, whatever their positions say.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::health::{self, Observation};
use super::server::{Identity, Server, State};
use super::{Shared, probe, reload};
use crate::config::Roles;

/// One server answering as a primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Contender {
    pub(crate) identity: Identity,
    /// Listed in `primaryCandidates` (or no list).
    pub(crate) candidate: bool,
    /// It is the primary now.
    pub(crate) current: bool,
}

/// The outcome of judging the servers that answer as primary.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Judgement {
    /// The contender (index) that must take the writes from the current primary, if any.
    pub(crate) moves_to: Option<usize>,
    /// Contenders that take nothing, and why.
    pub(crate) refused: Vec<(usize, String)>,
}

/// Judges `contenders` (each answering as a primary) for a cluster whose system identifier is
/// `cluster` (0: not known yet) and whose primaries have reached timeline `floor`.
pub(crate) fn decide(contenders: &[Contender], cluster: u64, floor: u32) -> Judgement {
    let mut refused = Vec::new();
    // Without a known cluster, the current primary's (or, when all agree, everyone's) is it.
    let cluster = match cluster {
        0 => contenders
            .iter()
            .find(|c| c.current)
            .or_else(|| contenders.first())
            .map_or(0, |c| c.identity.system_id),
        known => known,
    };
    let mut eligible = Vec::new();
    for (i, c) in contenders.iter().enumerate() {
        let Identity {
            system_id,
            timeline,
        } = c.identity;
        if !c.candidate {
            refused.push((
                i,
                "answers as a primary but is not listed in primaryCandidates: it takes nothing"
                    .to_owned(),
            ));
        } else if cluster != 0 && system_id != 0 && system_id != cluster {
            refused.push((
                i,
                format!(
                    "answers as a primary of another cluster (system identifier {system_id}, \
                     expected {cluster}): it takes nothing"
                ),
            ));
        } else if timeline != 0 && timeline < floor {
            refused.push((
                i,
                format!(
                    "answers as a primary on timeline {timeline}, but a primary has reached \
                     timeline {floor}: a former primary, it takes nothing"
                ),
            ));
        } else {
            eligible.push(i);
        }
    }
    let best = eligible
        .iter()
        .map(|&i| contenders[i].identity.timeline)
        .max();
    let winners: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| Some(contenders[i].identity.timeline) == best)
        .collect();
    let current_wins = winners.iter().any(|&i| contenders[i].current);
    let moves_to = match winners.as_slice() {
        [only] if !contenders[*only].current => Some(*only),
        _ => None,
    };
    let keeper = match (current_wins, moves_to) {
        (true, _) => winners.iter().copied().find(|&i| contenders[i].current),
        (false, Some(to)) => Some(to),
        (false, None) => None,
    };
    for &i in &eligible {
        if Some(i) == keeper {
            continue;
        }
        let timeline = contenders[i].identity.timeline;
        let reason = match keeper {
            Some(k) => format!(
                "split brain: answers as a primary on timeline {timeline}, the primary is on \
                 timeline {}: it takes nothing",
                contenders[k].identity.timeline
            ),
            None => format!(
                "split brain: {} servers answer as a primary on timeline {timeline}; which one \
                 is the primary cannot be told, so none takes the writes",
                winners.len()
            ),
        };
        refused.push((i, reason));
    }
    refused.sort_by_key(|(i, _)| *i);
    Judgement { moves_to, refused }
}

/// Judges what one round of checks saw (`primary_seen` from the current primary `current`,
/// `seen[i]` from `replicas[i]`) and moves the writes when another server must take them.
/// Refusals are logged as errors from full checks (`loud`), at debug level from probes.
/// Returns whether they moved.
pub(super) fn elect(
    shared: &Arc<Shared>,
    loud: bool,
    current: &Arc<Server>,
    primary_seen: Option<&Observation>,
    replicas: &[Arc<Server>],
    seen: &[Option<Observation>],
) -> bool {
    let config = shared.config();
    if config.roles != Roles::Observed {
        return false;
    }
    let members = config.members();
    let candidate = |member: &str| members.iter().any(|m| m.name == member && m.candidate);
    let mut servers: Vec<(&Arc<Server>, Observation)> = Vec::new();
    if let Some(observed) = primary_seen.filter(|o| !o.in_recovery) {
        servers.push((current, *observed));
    }
    for (server, observed) in replicas.iter().zip(seen) {
        if let Some(observed) = observed.filter(|o| !o.in_recovery) {
            servers.push((server, observed));
        }
    }
    if servers.is_empty() || (servers.len() == 1 && primary_seen.is_some_and(|o| !o.in_recovery)) {
        return false;
    }
    let contenders: Vec<Contender> = servers
        .iter()
        .map(|(server, observed)| Contender {
            identity: observed.identity,
            candidate: candidate(&server.member),
            current: Arc::ptr_eq(server, current),
        })
        .collect();
    let judgement = decide(
        &contenders,
        shared.system_id.load(Ordering::Acquire),
        shared.timeline_floor.load(Ordering::Acquire),
    );
    for (i, reason) in &judgement.refused {
        let (server, observed) = &servers[*i];
        let (member, address, timeline) =
            (&server.member, &server.address, observed.identity.timeline);
        if loud {
            crate::metrics::primary_refused(member);
            tracing::error!(server = %member, address = %address, timeline, reason = %reason, "a server answering as a primary is refused");
        } else {
            tracing::debug!(server = %member, address = %address, timeline, reason = %reason, "a server answering as a primary is refused");
        }
    }
    match judgement.moves_to {
        Some(i) => {
            let (server, observed) = &servers[i];
            move_primary(shared, current, &server.member, observed)
        }
        None => false,
    }
}

/// Moves the writes from `from` (if it is still the primary) to the configured server
/// `member`, seen as a primary in `observed`. Returns whether they moved.
fn move_primary(
    shared: &Arc<Shared>,
    from: &Arc<Server>,
    member: &str,
    observed: &Observation,
) -> bool {
    let config = shared.config_full();
    let Some(target) = config.members().into_iter().find(|m| m.name == member) else {
        return false;
    };
    let primary = Server::primary(&config, &target);
    primary.set_identity(observed.identity);
    if let Some(position) = observed.position {
        primary.set_position(position);
    }
    primary.join(shared);
    let timeline = observed.identity.timeline;
    let mut changes = reload::Changes::default();
    let replaced = {
        let _guard = shared.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&shared.primary.load(), from) {
            return false;
        }
        let set = reload::replica_set(shared, &config, &target.name, &mut changes);
        // The former primary, as a replica, is what it was last seen as (its old timeline)
        // until a check sees it again: never read as a last resort while it has not followed.
        for replica in set.next.iter().filter(|r| r.member == from.member) {
            replica.set_identity(from.identity());
        }
        shared.replicas.store(Arc::new(set.next));
        shared.primary.store(Arc::clone(&primary));
        shared
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        shared.primary_sampled_ms.store(0, Ordering::Release);
        for server in &set.removed {
            crate::metrics::forget(server);
        }
        set.retired
    };
    shared.primary_seen(observed.identity);
    from.retire();
    tracing::error!(
        from = %from.member,
        from_address = %from.address,
        to = %primary.member,
        to_address = %primary.address,
        timeline,
        "primary moved: writes go to the server that answers as the primary"
    );
    for change in changes.applied {
        tracing::info!("primary moved: {change}");
    }
    crate::metrics::primary_moved(&primary.member);
    // Replicas not seen on the new timeline leave at once: their data may have forked.
    for replica in shared.replicas.load().iter() {
        if let Some(problem) = diverged(&primary, replica.identity()) {
            if replica.take_out(State::Diverged, problem.clone()) {
                tracing::warn!(
                    replica = %replica.name,
                    address = %replica.address,
                    reason = %problem,
                    "replica removed from rotation"
                );
            }
            probe::start(shared, replica, false);
        } else if !replica.is_healthy() {
            probe::start(shared, replica, false);
        }
    }
    shared.refresh_rotation();
    shared.publish_metrics();
    let old = Arc::clone(from);
    tokio::spawn(async move {
        old.pool.close().await;
        health::close(&old).await;
        for server in replaced {
            server.pool.close().await;
            health::close(&server).await;
        }
    });
    true
}

/// Why a standby seen as `identity` cannot serve reads for `primary` (another cluster or
/// another timeline), if it cannot. What is unknown on either side is not held against it.
pub(super) fn diverged(primary: &Server, identity: Identity) -> Option<String> {
    let (ours, theirs) = (primary.system_id(), identity.system_id);
    if ours != 0 && theirs != 0 && ours != theirs {
        return Some(format!(
            "belongs to another cluster (system identifier {theirs}, the primary's is {ours})"
        ));
    }
    let (ours, theirs) = (primary.timeline(), identity.timeline);
    if ours != 0 && theirs != 0 && ours != theirs {
        return Some(format!(
            "on timeline {theirs}, the primary is on timeline {ours}: not following the \
             primary, whatever its position"
        ));
    }
    None
}

/// Runs a full check soon (once at a time), for a replica that answers as a primary: whether
/// the writes must move is decided then, not at the next interval.
pub(super) fn elect_soon(shared: &Arc<Shared>) {
    if shared.config().roles != Roles::Observed || shared.electing.swap(true, Ordering::AcqRel) {
        return;
    }
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let Some(shared) = weak.upgrade() else { return };
        let round = Arc::clone(&shared);
        // A round that panics is logged; the next request for one runs again.
        health::supervised("election", async move { health::check_all(&round).await }).await;
        shared.electing.store(false, Ordering::Release);
    });
}

/// Looks for the primary among every configured server, for the probe of a primary out of
/// service (`own`: what the probe saw of it). Returns whether the writes moved.
pub(super) async fn discover(
    shared: &Arc<Shared>,
    current: &Arc<Server>,
    own: Option<&Observation>,
) -> bool {
    if shared.config().roles != Roles::Observed {
        return false;
    }
    // A hung server answers nothing: it must not hold up finding the primary for long.
    let timeout = shared
        .config()
        .health_check_timeout
        .min(std::time::Duration::from_secs(1));
    let replicas = shared.replicas.load_full();
    let mut asks = tokio::task::JoinSet::new();
    for (index, server) in replicas.iter().enumerate() {
        let server = Arc::clone(server);
        asks.spawn(async move { (index, health::observe(&server, timeout, false).await.ok()) });
    }
    let mut seen = asks.join_all().await;
    seen.sort_by_key(|(index, _)| *index);
    let seen: Vec<Option<Observation>> = seen.into_iter().map(|(_, o)| o).collect();
    elect(shared, false, current, own, &replicas, &seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(system_id: u64, timeline: u32, current: bool) -> Contender {
        Contender {
            identity: Identity {
                system_id,
                timeline,
            },
            candidate: true,
            current,
        }
    }

    #[test]
    fn the_only_primary_takes_the_writes_and_the_current_one_keeps_them() {
        // The primary is down; a promoted replica answers.
        let j = decide(&[primary(7, 2, false)], 7, 1);
        assert_eq!(j.moves_to, Some(0));
        assert!(j.refused.is_empty());
        // The current one alone: nothing moves.
        let j = decide(&[primary(7, 1, true)], 7, 1);
        assert_eq!(
            j,
            Judgement {
                moves_to: None,
                refused: vec![]
            }
        );
    }

    #[test]
    fn split_brain_goes_to_the_higher_timeline_and_refuses_the_other() {
        // The old primary still runs on timeline 1; a replica was promoted to timeline 2.
        let j = decide(&[primary(7, 1, true), primary(7, 2, false)], 7, 1);
        assert_eq!(j.moves_to, Some(1));
        assert_eq!(j.refused.len(), 1);
        assert_eq!(j.refused[0].0, 0);
        assert!(j.refused[0].1.contains("split brain"), "{:?}", j.refused);
        // The promoted one is current; the old one comes back as a primary: refused as a
        // former primary (its timeline is under the floor).
        let j = decide(&[primary(7, 2, true), primary(7, 1, false)], 7, 2);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 1);
        assert!(j.refused[0].1.contains("former primary"), "{:?}", j.refused);
    }

    #[test]
    fn a_former_primary_alone_is_never_taken() {
        // The promoted primary is down too; the old one is back on timeline 1.
        let j = decide(&[primary(7, 1, false)], 7, 2);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 1);
    }

    #[test]
    fn a_tie_without_the_current_primary_is_refused_not_guessed() {
        let j = decide(&[primary(7, 3, false), primary(7, 3, false)], 7, 2);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 2);
        assert!(j.refused.iter().all(|(_, r)| r.contains("cannot be told")));
        // With the current primary in the tie, it keeps the writes.
        let j = decide(&[primary(7, 3, true), primary(7, 3, false)], 7, 2);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn other_clusters_and_servers_not_listed_take_nothing() {
        let mut unlisted = primary(7, 5, false);
        unlisted.candidate = false;
        let j = decide(&[primary(7, 1, true), primary(9, 4, false), unlisted], 7, 1);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 2);
        assert!(
            j.refused[0].1.contains("another cluster"),
            "{:?}",
            j.refused
        );
        assert!(
            j.refused[1].1.contains("primaryCandidates"),
            "{:?}",
            j.refused
        );
        // The cluster is unknown at start: the current primary's is taken.
        let j = decide(&[primary(7, 1, true), primary(9, 4, false)], 0, 0);
        assert_eq!(j.moves_to, None);
        assert!(j.refused[0].1.contains("another cluster"));
    }

    #[test]
    fn unknown_timelines_and_identifiers_are_not_held_against_a_server() {
        let j = decide(&[primary(0, 0, false)], 7, 2);
        assert_eq!(j.moves_to, Some(0));
    }
}
