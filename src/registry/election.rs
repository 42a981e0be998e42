//! Who takes the writes, when roles are observed (`db.roles: observed`, the default): every
//! full check and every probe of a primary out of service asks each configured server whether
//! it answers as a primary, the pure `health::roles::decide` judges them, and this file acts:
//! refusals are logged and counted, and a move builds a read-write pool for the new primary at
//! once, turns the former primary's address into a replica (out of rotation until a check finds
//! it a standby on the new timeline) and takes out every replica not on the new timeline: their
//! data may have forked from the new primary's, whatever their positions say.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::reload::{self, Changes};
use super::topology::{Member, Rotation, Topology};
use super::{Event, Shared, probe, tasks};
use crate::config::{Promotion, Roles};
use crate::health::Observation;
use crate::health::roles::{Contender, Ground, decide, diverged};
use crate::server::{Identity, Server};

/// What the registry knows of the cluster's primaries.
#[derive(Debug, Default)]
pub(crate) struct Election {
    /// The cluster's system identifier, from the first primary seen (0: not yet).
    system_id: AtomicU64,
    /// The timeline the writes are on: the current primary's, as last seen answering as a
    /// primary (0: not known). Only the server taking the writes sets it, so a server
    /// answering with a bogus timeline never changes what the next promotion is judged by.
    timeline: AtomicU32,
    /// A full check asked for by [`elect_soon`] is running.
    electing: AtomicBool,
}

impl Shared {
    /// Records that the primary answered as `identity`: the cluster's identifier (the first
    /// one seen) and the timeline the writes are on.
    pub(crate) fn primary_seen(&self, identity: Identity) {
        let election = &self.election;
        if identity.system_id != 0 {
            let _ = election.system_id.compare_exchange(
                0,
                identity.system_id,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        if identity.timeline != 0 {
            election
                .timeline
                .store(identity.timeline, Ordering::Release);
        }
        crate::metrics::primary_timeline(identity.timeline);
    }
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
    replicas: &[Member],
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
    for (member, observed) in replicas.iter().zip(seen) {
        if let Some(observed) = observed.filter(|o| !o.in_recovery) {
            servers.push((&member.server, observed));
        }
    }
    if servers.is_empty() || (servers.len() == 1 && primary_seen.is_some_and(|o| !o.in_recovery)) {
        return false;
    }
    let contenders: Vec<Contender> = servers
        .iter()
        .map(|(server, observed)| Contender {
            identity: observed.identity,
            followed: server.followed(),
            candidate: candidate(&server.member),
            current: Arc::ptr_eq(server, current),
        })
        .collect();
    let election = &shared.election;
    // The cluster: the first primary's, else what the configured primary (even a standby)
    // answered with.
    let cluster = [
        election.system_id.load(Ordering::Acquire),
        primary_seen.map_or(0, |o| o.identity.system_id),
        current.system_id(),
    ]
    .into_iter()
    .find(|&id| id != 0)
    .unwrap_or(0);
    let ground = Ground {
        cluster,
        timeline: election.timeline.load(Ordering::Acquire),
        holds: current.state().in_service() && !primary_seen.is_some_and(|o| o.in_recovery),
        fenced: config.promotion == Promotion::Fenced,
    };
    let judgement = decide(&contenders, ground);
    // A primary that did not answer this round is judged when it answers or leaves service:
    // a refusal now may be the first sight of a genuine failover, not a split brain.
    let loud = loud && primary_seen.is_some();
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
    let config = shared.config();
    let Some(target) = config.members().into_iter().find(|m| m.name == member) else {
        return false;
    };
    let primary = Server::primary(&config, &target);
    primary.set_identity(observed.identity, false);
    if let Some(position) = observed.position {
        primary.set_position(position);
    }
    let mut changes = Changes::default();
    let mut retired = Vec::new();
    let moved = shared.replace(|topology| {
        if !topology.primary.is(from) {
            return None;
        }
        let set = reload::replica_set(topology, &config, &target.name, &mut changes);
        // The former primary, as a replica, is what it was last seen as (its old timeline)
        // until a check sees it again: never read as a last resort while it has not followed.
        for replica in set.next.iter().filter(|m| m.server.member == from.member) {
            replica.server.set_identity(from.identity(), false);
        }
        for member in &set.removed {
            crate::metrics::forget(&member.server.name);
        }
        retired = set.retired;
        retired.push(topology.primary.clone());
        Some(Topology {
            primary: Member::new(Arc::clone(&primary)),
            replicas: set.next,
            rotation: Rotation::default(),
            config: Arc::clone(&topology.config),
        })
    });
    if moved.is_none() {
        return false;
    }
    shared
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    shared.tokens.forget_samples();
    shared.primary_seen(observed.identity);
    shared.retire(from);
    tracing::error!(
        from = %from.member,
        from_address = %from.address,
        to = %primary.member,
        to_address = %primary.address,
        timeline = observed.identity.timeline,
        "primary moved: writes go to the server that answers as the primary"
    );
    for change in changes.applied {
        tracing::info!("primary moved: {change}");
    }
    crate::metrics::primary_moved(&primary.member);
    // Replicas not seen on the new timeline leave at once: their data may have forked.
    for member in shared.topology_full().replicas.iter() {
        let replica = &member.server;
        match diverged(primary.identity(), replica.identity()) {
            Some(problem) => {
                shared.apply(replica, Event::Diverged(problem));
            }
            None if !replica.is_healthy() => probe::start(shared, member, false),
            None => {}
        }
    }
    tokio::spawn(async move {
        for member in retired {
            member.server.pool.close().await;
            member.watch.checker.close().await;
        }
    });
    true
}

/// Runs a full check soon (once at a time), for a replica that answers as a primary: whether
/// the writes must move is decided then, not at the next interval.
pub(super) fn elect_soon(shared: &Arc<Shared>) {
    let electing = &shared.election.electing;
    if shared.config().roles != Roles::Observed || electing.swap(true, Ordering::AcqRel) {
        return;
    }
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let Some(shared) = weak.upgrade() else { return };
        let round = Arc::clone(&shared);
        // A round that panics is logged; the next request for one runs again.
        tasks::supervised("election", async move { tasks::check_all(&round).await }).await;
        shared.election.electing.store(false, Ordering::Release);
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
        .min(Duration::from_secs(1));
    let replicas = shared.topology_full().replicas.clone();
    let mut asks = tokio::task::JoinSet::new();
    for (index, member) in replicas.iter().enumerate() {
        let (shared, member) = (Arc::clone(shared), member.clone());
        asks.spawn(async move {
            let seen = tasks::observe(&shared, &member, timeout, false).await.ok();
            (index, seen)
        });
    }
    let mut seen = asks.join_all().await;
    seen.sort_by_key(|(index, _)| *index);
    let seen: Vec<Option<Observation>> = seen.into_iter().map(|(_, o)| o).collect();
    elect(shared, false, current, own, &replicas, &seen)
}
