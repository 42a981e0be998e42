//! The registry's side of each routing decision: what it knows now (one topology snapshot, the
//! schedule's next ticket, the servers' states and positions) handed to the pure
//! [`route::decide`](crate::route::decide), for a request's first server and for every failover
//! step of its work.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::topology::{Rotation, Topology};
use crate::config::{GroupFallback, LoadBalancing};
use crate::route::{self, Ask, Decision, Reason, Role, RouteIntent, Seen};
use crate::server::{Server, State};

/// The server chosen for some work, and the intent it was chosen for (its reason says why:
/// `fallback` when a read went to the primary, `sticky`, `barrier`, `rollout`, ...).
#[derive(Clone, Debug)]
pub(crate) struct Routed {
    pub(crate) server: Arc<Server>,
    pub(crate) intent: RouteIntent,
    /// Refused: a read for a replica group with none of it in service, and `fallback: none`.
    pub(crate) unavailable: bool,
    /// The live settings its work reads, taken from the snapshot the choice was made in.
    pub(crate) settings: WorkSettings,
}

/// The live settings a query's attempts read, copied when its server is chosen so that the
/// query path reads no configuration snapshot of its own. A handle keeps them for its life: an
/// extractor's lives one request; one that a job keeps across a reload of these settings works
/// with the old ones until it takes a new handle.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WorkSettings {
    /// `failoverOnPoolExhausted`: a read whose replica's pool is full tries another replica.
    pub(crate) exhaustion_failover: bool,
    /// `loadBalancing: peakEwma`: each query's latency feeds its server's estimate.
    pub(crate) sampled: bool,
}

impl WorkSettings {
    fn of(topology: &Topology) -> WorkSettings {
        WorkSettings {
            exhaustion_failover: topology.config.failover_on_pool_exhausted,
            sampled: topology.config.load_balancing == LoadBalancing::PeakEwma,
        }
    }
}

impl Shared {
    /// Where `intent`'s work goes, the servers in `tried` having failed it: replicas in
    /// rotation in schedule order from the next ticket, then those out of rotation, the
    /// primary, or nobody.
    pub(crate) fn route(
        &self,
        intent: RouteIntent,
        tried: &[Arc<Server>],
    ) -> Decision<Arc<Server>> {
        self.route_grouped(&self.topology(), intent, tried).0
    }

    /// As [`route`](Self::route), and whether the work was refused for its replica group
    /// (none of it in service, and `fallback: none`). A read for a group goes to the group's
    /// replicas; with none of them in service, where the group's fallback says: the replicas
    /// of no group, the primary, another group, or nowhere.
    fn route_grouped(
        &self,
        topology: &Topology,
        intent: RouteIntent,
        tried: &[Arc<Server>],
    ) -> (Decision<Arc<Server>>, bool) {
        let Some(first) = intent.group() else {
            return (self.route_in(topology, intent, None, tried), false);
        };
        let mut group = Some(first);
        // Each group at most once: validation refuses fallbacks in a circle.
        for _ in 0..=topology.config.groups.len() {
            let decision = self.route_in(topology, intent, group, tried);
            let Some(name) = group.filter(|_| falls_back(&decision)) else {
                return (decision, false);
            };
            group = match topology.config.fallback_of(name) {
                GroupFallback::Replicas => None,
                GroupFallback::Group(next) => Some(next.as_str()),
                GroupFallback::Refuse => return (Decision::Refuse(Reason::Fallback), true),
                _ => return (decision, false),
            };
        }
        (self.route_in(topology, intent, None, tried), false)
    }

    /// Where `intent`'s work goes among the replicas of `group` (`None`: of no group) and the
    /// primary.
    #[inline]
    fn route_in(
        &self,
        topology: &Topology,
        intent: RouteIntent,
        group: Option<&str>,
        tried: &[Arc<Server>],
    ) -> Decision<Arc<Server>> {
        let config = &topology.config;
        let primary = &topology.primary.server;
        let was_tried = |s: &Arc<Server>| tried.iter().any(|t| Arc::ptr_eq(t, s));
        let separation = config.separation;
        let is_read = intent.is_read();
        let share = config.replica_share;
        let ask = Ask {
            intent,
            separation,
            stale_reads_when_read_only: self.tokens.stale_reads(),
            primary: primary.state(),
            primary_tried: was_tried(primary),
            held_back: separation
                && is_read
                && share < 100
                && tried.is_empty()
                && !route::admits(self.tokens.draw(), share),
            barrier: if is_read { self.barrier() } else { 0 },
        };
        // A replica last seen on another timeline than the primary's has forked from it,
        // whatever its state says until its next check.
        let timeline = primary.timeline();
        let max_staleness = config.max_staleness;
        let seen = |server: &Arc<Server>| {
            let state = match same_timeline(server.timeline(), timeline) {
                true => server.state(),
                false => State::Diverged,
            };
            let within_staleness = state == State::Lagging
                && max_staleness.is_some_and(|max| server.lag().is_some_and(|lag| lag <= max));
            let seen = Seen {
                state,
                position: server.position(),
                tried: was_tried(server),
                within_staleness,
            };
            (Arc::clone(server), seen)
        };
        let empty;
        let rotation = match group {
            None => &topology.rotation,
            Some(name) => match topology.rotation.group(name) {
                Some(rotation) => rotation,
                None => {
                    empty = Rotation::default();
                    &empty
                }
            },
        };
        let ticket = self.tickets.next();
        // The pick for this ticket first: a plain read looks no further. The rest is listed
        // only when that one will not do. A pick of the primary (its share of plain reads)
        // that this read may not take goes to the replicas in schedule order.
        let mut pick = rotation.pick(ticket);
        if pick.is_some_and(|s| rotation.shared_with(s)) {
            if route::primary_takes(&ask, tried.is_empty(), !primary.exhausted()) {
                return Decision::Replica(Arc::clone(primary), intent.reason());
            }
            pick = None;
        }
        let rest = std::iter::once_with(|| {
            let out = topology
                .replicas
                .iter()
                .map(|m| &m.server)
                .filter(|s| s.group.as_deref() == group)
                .filter(|s| s.weight() > 0 && !rotation.contains(s));
            rotation.from(ticket).chain(out)
        })
        .flatten();
        route::decide(ask, pick.into_iter().chain(rest).map(seen))
    }

    /// The server for an intent, as [`route`](Self::route) decides it. A request nobody can
    /// serve now gets the primary with the reason it would have had: the extractors refuse it
    /// with a 503 (the primary is down), and direct users get the primary's error.
    pub(crate) fn resolve(&self, intent: RouteIntent) -> Routed {
        let topology = self.topology();
        let settings = WorkSettings::of(&topology);
        let (decision, unavailable) = self.route_grouped(&topology, intent, &[]);
        if intent.group().is_some() {
            let chosen = match &decision {
                _ if unavailable => None,
                Decision::Replica(server, _) => Some(server),
                _ => Some(&topology.primary.server),
            };
            group_fallback(intent, chosen);
        }
        // No replica to read from: where DNS lists them, they may have moved.
        if falls_back(&decision) && !topology.config.discovery.is_empty() {
            self.discovery.want();
        }
        let reason = match decision {
            Decision::Replica(server, reason) => {
                return Routed {
                    server,
                    intent: intent.with(Role::Read, reason),
                    unavailable,
                    settings,
                };
            }
            Decision::Refuse(reason) => {
                self.wanted(intent);
                reason
            }
            Decision::Primary(reason) => {
                // Waiting for a primary out of service: its probe runs soon.
                if !self.primary().is_healthy() {
                    self.wanted(intent);
                }
                reason
            }
        };
        let role = match reason {
            Reason::Disabled => Role::Write,
            _ => intent.role(),
        };
        Routed {
            server: self.primary(),
            intent: intent.with(role, reason),
            unavailable,
            settings,
        }
    }

    /// As [`resolve`](Self::resolve), but a read held back by a token asks the replicas their
    /// positions (a round shared with every read waiting meanwhile) and may wait up to
    /// `waitForReplica` for one to catch up.
    pub(crate) async fn resolve_waiting(self: &Arc<Self>, intent: RouteIntent) -> Routed {
        let routed = self.resolve(intent);
        // No replica can have what a token from another timeline needs: no use waiting.
        if routed.intent.reason() != Reason::Sticky
            || routed.intent.min_position() == Some(u64::MAX)
        {
            return routed;
        }
        if self.polls_positions() {
            self.ask_replicas_together().await;
            let again = self.resolve(intent);
            if again.intent.reason() != Reason::Sticky {
                return again;
            }
        }
        let sticky = self.tokens.sticky();
        if sticky.wait_for_replica.is_zero() {
            return routed;
        }
        let deadline = super::tasks::after(tokio::time::Instant::now(), sticky.wait_for_replica);
        let step = (sticky.poll_interval / 4).max(Duration::from_millis(1));
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(step).await;
            let again = self.resolve(intent);
            if again.intent.reason() != Reason::Sticky {
                return again;
            }
        }
        routed
    }

    /// Wakes the probes of the servers that could have done `intent`'s work, which was refused
    /// or waits for want of them: the primary, and for a read the replicas out of service too.
    pub(crate) fn wanted(&self, intent: RouteIntent) {
        let topology = self.topology();
        topology.primary.server.wanted.notify_one();
        if intent.is_read() {
            for member in topology.replicas.iter().filter(|m| !m.server.is_healthy()) {
                member.server.wanted.notify_one();
            }
        }
    }
}

/// Whether two timelines may be compared as one: equal, or either not known (0).
pub(crate) fn same_timeline(a: u32, b: u32) -> bool {
    a == b || a == 0 || b == 0
}

/// Whether `decision` sends a read past the replicas it asked for: no replica could serve it.
fn falls_back<R>(decision: &Decision<R>) -> bool {
    matches!(
        decision,
        Decision::Primary(Reason::Fallback) | Decision::Refuse(Reason::Fallback)
    )
}

/// Counts a read for a replica group that goes to `to`, outside its group (`None`: refused),
/// in `rwsplit_group_fallbacks_total`.
pub(crate) fn group_fallback(intent: RouteIntent, to: Option<&Arc<Server>>) {
    let Some(group) = intent.group() else {
        return;
    };
    let to = match to {
        None => "none",
        Some(server) if server.is_primary() => "primary",
        Some(server) => match server.group.as_deref() {
            Some(same) if same == group => return,
            Some(other) => other,
            None => "replicas",
        },
    };
    crate::metrics::group_fallback(group, to);
}
