//! The registry's view of the cluster, as one snapshot: the primary, every replica, the
//! rotation (the replicas that take reads, with their schedule) and the settings in force.
//! Replaced whole, and only by `control.rs`, so that a request that loads it once sees one
//! consistent state: never a rotation of one moment with the primary of another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Config;
use crate::health::Checker;
use crate::route::Schedule;
use crate::server::Server;

/// The cluster as the registry sees it now.
#[derive(Debug)]
pub(crate) struct Topology {
    /// Who takes the writes.
    pub(crate) primary: Member,
    /// Every replica, in rotation or not.
    pub(crate) replicas: Vec<Member>,
    /// The replicas that take reads now.
    pub(crate) rotation: Rotation,
    /// The validated configuration in force (thresholds, switches, the defaults of replicas
    /// added at runtime).
    pub(crate) config: Arc<Config>,
}

/// One server, and what the registry keeps to watch it.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) server: Arc<Server>,
    pub(crate) watch: Arc<Watch>,
}

/// What watching one server takes, apart from the server itself: the checker's connection, and
/// whether a probe task runs for it (at most one does).
#[derive(Debug, Default)]
pub(crate) struct Watch {
    pub(crate) checker: Checker,
    probing: AtomicBool,
}

impl Watch {
    /// Claims the right to run the server's probe task; `false` when one is running.
    pub(crate) fn claim_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// Ends the server's probe task, so that another may start.
    pub(crate) fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }
}

impl Member {
    pub(crate) fn new(server: Arc<Server>) -> Member {
        Member {
            server,
            watch: Arc::default(),
        }
    }

    /// Whether this is `server`.
    pub(crate) fn is(&self, server: &Arc<Server>) -> bool {
        Arc::ptr_eq(&self.server, server)
    }
}

/// The replicas in rotation, with their weights, and their pick order (indices into
/// `members`; `members.len()` for the primary, when it takes a share of reads).
#[derive(Debug, Default)]
pub(crate) struct Rotation {
    pub(crate) members: Vec<(Arc<Server>, u32)>,
    pub(crate) schedule: Schedule,
    /// The primary, in the schedule with `primaryReadWeight` while some replica is in it.
    primary: Option<(Arc<Server>, u32)>,
}

impl Rotation {
    /// The rotation of `replicas` as they stand now: those in service with a weight over 0,
    /// and `primary` with `primary_weight` (over 0) beside them.
    pub(crate) fn of(primary: &Arc<Server>, replicas: &[Member], primary_weight: u32) -> Rotation {
        let members: Vec<(Arc<Server>, u32)> = replicas
            .iter()
            .filter(|m| m.server.is_healthy())
            .map(|m| (Arc::clone(&m.server), m.server.weight()))
            .filter(|&(_, weight)| weight > 0)
            .collect();
        let mut weights: Vec<(usize, u32)> = members.iter().map(|(_, w)| *w).enumerate().collect();
        let shares = primary_weight > 0 && !members.is_empty();
        if shares {
            weights.push((members.len(), primary_weight));
        }
        Rotation {
            schedule: Schedule::new(&weights),
            members,
            primary: shares.then(|| (Arc::clone(primary), primary_weight)),
        }
    }

    /// Whether it holds the same servers with the same weights as `other`.
    pub(crate) fn same_as(&self, other: &Rotation) -> bool {
        self.members.len() == other.members.len()
            && self.primary.as_ref().map(|(_, w)| w) == other.primary.as_ref().map(|(_, w)| w)
            && self
                .members
                .iter()
                .zip(&other.members)
                .all(|((a, wa), (b, wb))| Arc::ptr_eq(a, b) && wa == wb)
    }

    pub(crate) fn contains(&self, server: &Arc<Server>) -> bool {
        self.members.iter().any(|(s, _)| Arc::ptr_eq(s, server))
    }

    /// The server for the `ticket`th pick: a replica, or the primary for its share.
    #[inline]
    pub(crate) fn pick(&self, ticket: usize) -> Option<&Arc<Server>> {
        let index = self.schedule.pick(ticket)?;
        self.members
            .get(index)
            .map(|(server, _)| server)
            .or(self.primary.as_ref().map(|(server, _)| server))
    }

    /// Whether the schedule holds the primary, and `server` is it.
    pub(crate) fn shared_with(&self, server: &Arc<Server>) -> bool {
        self.primary
            .as_ref()
            .is_some_and(|(p, _)| Arc::ptr_eq(p, server))
    }

    /// The replicas from the `ticket`th pick on, each once, in schedule order.
    pub(crate) fn from(&self, ticket: usize) -> impl Iterator<Item = &Arc<Server>> + '_ {
        (self.schedule.candidates(ticket)).filter_map(|index| self.members.get(index).map(|m| &m.0))
    }
}

impl Topology {
    /// The primary and every replica.
    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    /// The member that is `server`, if it is one of this topology's.
    pub(crate) fn member(&self, server: &Arc<Server>) -> Option<&Member> {
        self.members().find(|m| m.is(server))
    }

    /// The replica called `name`.
    pub(crate) fn replica(&self, name: &str) -> Option<&Member> {
        self.replicas.iter().find(|m| &*m.server.name == name)
    }

    /// The same cluster with the rotation recomputed from the servers' states now.
    pub(crate) fn rebuilt(&self) -> Topology {
        Topology {
            primary: self.primary.clone(),
            replicas: self.replicas.clone(),
            rotation: Rotation::of(
                &self.primary.server,
                &self.replicas,
                self.config.primary_read_weight,
            ),
            config: Arc::clone(&self.config),
        }
    }
}
