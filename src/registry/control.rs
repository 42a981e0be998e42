//! The one writer of server state. Whatever finds something out about a server (a check, a
//! poll, a probe, a failed connection, a lost session, an operator's weight) hands it here as
//! an [`Event`]; this file turns it into the server's atomics, a rebuilt topology when the
//! rotation changed, the gauges, and one log line. Topology changes of another kind (a reload,
//! a replica added or removed, the primary moved) come through [`Shared::replace`].
//!
//! A server built to replace another starts from what was known of it before it is published;
//! once in the topology, only this file writes its state. What the request path stamps on a
//! server as it uses it (when it last answered, when it last refused a connection) is the
//! request path's own record, read by the judges as evidence.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Shared;
use super::probe;
use super::topology::{Member, Topology};
use crate::health::capabilities::Discovery;
use crate::health::verdict::summary;
use crate::health::{Source, Verdict};
use crate::metrics::{self, ServerGauges};
use crate::server::{Server, State};

/// Something found out about one server.
pub(crate) enum Event<'e> {
    /// A check, poll or probe judged it.
    Judged(&'e Verdict, Source),
    /// A session on it was lost, or its reads got no answer for `connectTimeout` (`cause`): it
    /// stays in service while a probe decides at once.
    Suspected {
        cause: &'static str,
        error: &'e dyn fmt::Display,
    },
    /// It gave no connection (`cause`): out of service at once; its probes put it back.
    Failed {
        cause: &'static str,
        error: &'e dyn fmt::Display,
    },
    /// A replica found on another timeline than a new primary, without a check of its own.
    Diverged(String),
    /// An operator changed its weight; `said`: the change is logged elsewhere (a reload's
    /// change lines).
    Weighed { weight: u32, said: bool },
}

impl Shared {
    /// Applies `event` to `server`: its atomics, the rotation when it changed, the gauges, one
    /// log line. Returns whether the server's service changed (in or out).
    pub(crate) fn apply(self: &Arc<Self>, server: &Arc<Server>, event: Event<'_>) -> bool {
        let changed = self.write(server, event);
        self.rebuild();
        changed
    }

    /// Applies the verdicts of one round of checks, then rebuilds the rotation once.
    pub(crate) fn apply_all<'e>(
        self: &Arc<Self>,
        events: impl IntoIterator<Item = (&'e Arc<Server>, Event<'e>)>,
    ) {
        for (server, event) in events {
            self.write(server, event);
        }
        self.rebuild();
    }

    /// Replaces the topology with what `change` makes of the current one (a reload, a replica
    /// added or removed, the primary moved), under the rebuild lock; the rotation is recomputed
    /// from the servers' states. `change` returns `None` to leave it as it is. Returns the
    /// topology that was replaced, when it was.
    pub(crate) fn replace(
        &self,
        change: impl FnOnce(&Topology) -> Option<Topology>,
    ) -> Option<Arc<Topology>> {
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.topology.load_full();
        let next = change(&current)?.rebuilt();
        self.topology.store(Arc::new(next));
        drop(_guard);
        self.publish();
        Some(current)
    }

    /// Records a replica's replay position learned outside a check (asked for a read with a
    /// token): it only moves forward.
    pub(crate) fn replayed(&self, server: &Server, position: u64) {
        server.advance_position(position);
    }

    /// Records the name `server` streams its WAL under, as its full check read it.
    pub(crate) fn streams_as(&self, server: &Server, name: Option<&str>) {
        server.stream.named(name);
    }

    /// Records a replica's replay position as the primary reported it under the replica's
    /// name (never ahead of the replica): it only moves forward.
    pub(crate) fn streamed(&self, server: &Server, position: u64) {
        server.stream.read(position);
        server.advance_position(position);
    }

    /// Records that a poll asked a replica its position itself.
    pub(crate) fn asked_itself(&self, server: &Server) {
        server.stream.asked();
    }

    /// Compares a replica's own replay position, from a full check, with what the primary
    /// reported under its name before: a report ahead of it was another standby's, and the
    /// replica is polled itself from now on.
    pub(crate) fn confirm_stream(&self, server: &Server, replayed: u64) {
        if server.stream.confirm(replayed) {
            tracing::warn!(
                replica = %server.name,
                "the primary reports a standby under this replica's name that is ahead of it: \
                 the name is another standby's; the replica is polled itself for its position"
            );
        }
    }

    /// Records the primary's position, sampled just now.
    pub(crate) fn primary_at(&self, primary: &Server, position: u64) {
        primary.set_position(position);
    }

    /// Marks `server` as no longer the primary: the work waiting for its connections goes to
    /// the new one.
    pub(crate) fn retire(&self, server: &Server) {
        server.retire();
    }

    /// Records what a check found out about the capabilities of `server`, and says so once
    /// when that changed.
    pub(crate) fn discovered(&self, server: &Server, discovery: &Discovery) {
        let capabilities = discovery.capabilities;
        if !server.set_capabilities_stored(capabilities.to_stored()) {
            return;
        }
        let offered = crate::health::Capability::ALL
            .iter()
            .map(|&c| (c.as_str(), capabilities.has(c)));
        metrics::capabilities(&server.name, offered);
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

    /// Writes one event into `server`'s atomics, logs it, and starts its probe when it is out
    /// or suspected. Returns whether its service changed.
    fn write(self: &Arc<Self>, server: &Arc<Server>, event: Event<'_>) -> bool {
        match event {
            Event::Judged(verdict, by) => self.judged(server, verdict, by),
            Event::Suspected { cause, error } => {
                if server.set_suspect() {
                    metrics::suspected(&server.name, cause);
                    if cause == "no_answer" {
                        // Long reads look the same until the probe answers: its verdict is
                        // what an operator needs to see (a server leaving is logged).
                        tracing::debug!(
                            server = %server.name,
                            %error,
                            "no answer to reads; probing the server on a fresh connection"
                        );
                    } else {
                        tracing::info!(
                            server = %server.name,
                            address = %server.address,
                            cause,
                            %error,
                            "session lost; probing the server on a fresh connection"
                        );
                    }
                    self.probe(server, true);
                }
                false
            }
            Event::Failed { cause, error } => self.failed(server, cause, error),
            Event::Diverged(problem) => {
                let was = server.set_state(State::Diverged, Some(problem.clone()));
                if was.in_service() {
                    tracing::warn!(
                        replica = %server.name,
                        address = %server.address,
                        reason = %problem,
                        "replica removed from rotation"
                    );
                }
                self.probe(server, false);
                was.in_service()
            }
            Event::Weighed { weight, said } => {
                let before = server.set_weight(weight);
                if before != weight && !said {
                    tracing::info!(
                        replica = %server.name,
                        from = before,
                        to = weight,
                        "replica weight changed"
                    );
                }
                false
            }
        }
    }

    fn judged(self: &Arc<Self>, server: &Arc<Server>, verdict: &Verdict, by: Source) -> bool {
        if let Some(identity) = verdict.identity {
            server.set_identity(
                identity,
                !server.is_primary() && !verdict.answers_as_primary,
            );
        }
        if !server.is_primary()
            && let Some(position) = verdict.position
        {
            server.set_position(position);
        }
        let lag = verdict.lag.map(|lag| (lag.time, lag.bytes));
        server.set_checked(verdict.passed(), lag);
        let (state, problem) = match &verdict.problem {
            // The status endpoint shows a connection error's kind, never the driver's text;
            // the log line has all of it.
            Some((State::Unreachable, text)) => {
                (State::Unreachable, Some(summary(text).to_owned()))
            }
            Some((state, text)) => (*state, Some(text.clone())),
            None => (State::Serving, None),
        };
        let was = server.set_state(state, problem);
        let changed = was.in_service() != state.in_service();
        if changed {
            self.log_service(server, verdict, by);
        }
        if verdict.answers_as_primary && was != State::WrongRole {
            // A replica that answers as a primary may have been promoted: who takes the writes
            // is decided again now, not at the next full check.
            super::election::elect_soon(self);
        }
        if !state.in_service() {
            self.probe(server, false);
        }
        changed
    }

    fn log_service(&self, server: &Server, verdict: &Verdict, by: Source) {
        let reason = verdict.problem.as_ref().map(|(_, text)| text.as_str());
        let lag_seconds = verdict
            .lag
            .map(|l| l.time.as_secs_f64())
            .filter(|s| s.is_finite());
        let lag_bytes = verdict.lag.and_then(|l| l.bytes);
        let by = by.as_str();
        let (name, address) = (&server.name, &server.address);
        match (verdict.passed(), server.is_primary()) {
            (false, true) => tracing::error!(
                server = %name,
                address = %address,
                reason = reason.unwrap_or_default(),
                by,
                "primary failed its check"
            ),
            (true, true) => {
                metrics::readmitted(name, by);
                tracing::info!(server = %name, address = %address, by, "primary healthy again");
            }
            (false, false) => tracing::warn!(
                replica = %name,
                address = %address,
                reason = reason.unwrap_or_default(),
                lag_seconds,
                lag_bytes,
                by,
                "replica removed from rotation"
            ),
            (true, false) => {
                metrics::readmitted(name, by);
                tracing::info!(
                    replica = %name,
                    address = %address,
                    lag_seconds,
                    lag_bytes,
                    by,
                    "replica back in rotation"
                );
            }
        }
    }

    /// Takes `server` out at once after a failed connection, until a probe passes.
    fn failed(
        self: &Arc<Self>,
        server: &Arc<Server>,
        cause: &'static str,
        error: &dyn fmt::Display,
    ) -> bool {
        let problem = format!("{cause}: {}", summary(&error.to_string()));
        let was = server.set_state(State::Unreachable, Some(problem));
        metrics::ejected(&server.name, cause);
        if let Some(member) = self.member(server) {
            // Its next check opens a new connection: the old one may still work on a server
            // that accepts no more.
            member.watch.checker.renew();
        }
        self.probe(server, false);
        if !was.in_service() {
            return false;
        }
        if server.is_primary() {
            tracing::error!(
                server = %server.name,
                address = %server.address,
                cause,
                %error,
                "primary unreachable: writes fail fast with 503 until it passes a probe"
            );
        } else {
            tracing::warn!(
                replica = %server.name,
                address = %server.address,
                cause,
                %error,
                "replica removed from rotation after a failed connection; reads go elsewhere"
            );
        }
        true
    }

    /// Starts probing `server` (when it is still one of the registry's).
    fn probe(self: &Arc<Self>, server: &Arc<Server>, at_once: bool) {
        if let Some(member) = self.member(server) {
            probe::start(self, &member, at_once);
        }
    }

    /// The member that is `server` now.
    pub(crate) fn member(&self, server: &Arc<Server>) -> Option<Member> {
        self.topology.load().member(server).cloned()
    }

    /// Recomputes the rotation from the servers' states and weights; stores a new topology
    /// when it changed, and publishes the gauges either way.
    fn rebuild(&self) {
        {
            let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.topology.load();
            let next = current.rebuilt();
            if !next.rotation.same_as(&current.rotation) {
                self.topology.store(Arc::new(next));
            }
        }
        self.publish();
    }

    /// Publishes every server's gauges, and logs the moment reads start or stop falling back
    /// to the primary, once each way.
    pub(crate) fn publish(&self) {
        let topology = self.topology.load();
        let rotation = &topology.rotation;
        for member in topology.members() {
            let server = &member.server;
            metrics::server_state(&gauges(server, rotation.contains(server)));
        }
        metrics::replicas_in_rotation(rotation.members.len());
        for (group, in_group) in rotation.groups() {
            metrics::group_in_rotation(group, in_group.members.len());
        }
        let empty = rotation.members.is_empty();
        // The replicas of no group: those of a group take none of the plain reads.
        let replicas = topology
            .replicas
            .iter()
            .filter(|m| m.server.group.is_none())
            .count();
        if !topology.config.separation || replicas == 0 {
            return;
        }
        let was = self.falling_back.swap(empty, Ordering::AcqRel);
        if empty && !was {
            tracing::warn!(
                replicas,
                "no healthy read replicas available, falling back to primary"
            );
        } else if !empty && was {
            tracing::info!(
                in_rotation = rotation.members.len(),
                "read replicas available again, reads leave the primary"
            );
        }
    }
}

/// `server`'s state, as its gauges show it.
fn gauges(server: &Server, in_rotation: bool) -> ServerGauges {
    let size = server.pool.size();
    ServerGauges {
        name: Arc::clone(&server.name),
        primary: server.is_primary(),
        healthy: server.is_healthy(),
        in_rotation: in_rotation || server.is_primary(),
        weight: server.weight(),
        last_success_age: server
            .last_success()
            .map(|at| at.elapsed().unwrap_or_default()),
        pool_size: size,
        pool_idle: u32::try_from(server.pool.num_idle()).unwrap_or(u32::MAX),
        pool_max: server.max_connections(),
        timeline: server.timeline(),
        lag: server.lag(),
        lag_bytes: server.lag_bytes(),
    }
}
