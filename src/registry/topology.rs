//! The registry's view of the cluster, as one snapshot: the primary, every replica, the
//! rotation (the replicas that take reads, with their schedule) and the settings in force.
//! Replaced whole, and only by `control.rs`, so that a request that loads it once sees one
//! consistent state: never a rotation of one moment with the primary of another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{Config, LoadBalancing};
use crate::health::Checker;
use crate::route::Schedule;
use crate::route::balance;
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
    /// Found by DNS (`replicaDiscovery`): added and removed by discovery, kept by a reload.
    pub(crate) found: bool,
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
            found: false,
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
    /// How a pick chooses with the schedule (`loadBalancing`).
    balancing: LoadBalancing,
    /// Each replica group's own rotation, by name (the replicas above are those of no group).
    groups: Vec<(Arc<str>, Rotation)>,
}

impl Rotation {
    /// The rotation of `replicas` as they stand now (those in service with a weight over 0,
    /// and the primary with `primaryReadWeight`, over 0, beside them), chosen from as
    /// `config` says.
    pub(crate) fn of(primary: &Arc<Server>, replicas: &[Member], config: &Config) -> Rotation {
        let mut names: Vec<&Arc<str>> = replicas
            .iter()
            .filter_map(|m| m.server.group.as_ref())
            .collect();
        names.sort_unstable();
        names.dedup();
        let groups = names
            .into_iter()
            .map(|name| {
                (
                    Arc::clone(name),
                    Rotation::among(replicas, Some(name), None, config),
                )
            })
            .collect();
        let primary = (primary, config.primary_read_weight);
        Rotation {
            groups,
            ..Rotation::among(replicas, None, Some(primary), config)
        }
    }

    /// The rotation of the replicas of `group` in service with a weight over 0, and the
    /// `primary` with its weight (over 0) beside them.
    fn among(
        replicas: &[Member],
        group: Option<&Arc<str>>,
        primary: Option<(&Arc<Server>, u32)>,
        config: &Config,
    ) -> Rotation {
        let (primary, primary_weight) = primary.map_or((None, 0), |(p, w)| (Some(p), w));
        let members: Vec<(Arc<Server>, u32)> = replicas
            .iter()
            .filter(|m| m.server.group.as_ref() == group)
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
            primary: primary
                .filter(|_| shares)
                .map(|p| (Arc::clone(p), primary_weight)),
            balancing: config.load_balancing,
            groups: Vec::new(),
        }
    }

    /// The rotation of the replica group `name`, if a replica is in it.
    pub(crate) fn group(&self, name: &str) -> Option<&Rotation> {
        self.groups
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, r)| r)
    }

    /// The replica groups, with their rotations.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&str, &Rotation)> {
        self.groups.iter().map(|(n, r)| (&**n, r))
    }

    /// Whether it holds the same servers with the same weights as `other`.
    pub(crate) fn same_as(&self, other: &Rotation) -> bool {
        self.groups.len() == other.groups.len()
            && (self.groups.iter().zip(&other.groups))
                .all(|((a, ra), (b, rb))| a == b && ra.same_as(rb))
            && self.members.len() == other.members.len()
            && self.balancing == other.balancing
            && self.primary.as_ref().map(|(_, w)| w) == other.primary.as_ref().map(|(_, w)| w)
            && self
                .members
                .iter()
                .zip(&other.members)
                .all(|((a, wa), (b, wb))| Arc::ptr_eq(a, b) && wa == wb)
    }

    /// Whether `server` is in this rotation or in one of its groups'.
    pub(crate) fn contains(&self, server: &Arc<Server>) -> bool {
        self.members.iter().any(|(s, _)| Arc::ptr_eq(s, server))
            || self.groups.iter().any(|(_, r)| r.contains(server))
    }

    /// The server for the `ticket`th pick, a replica or the primary for its share: the
    /// schedule's, or with a load-aware strategy the least loaded of all or of two.
    #[inline]
    pub(crate) fn pick(&self, ticket: usize) -> Option<&Arc<Server>> {
        let first = self.schedule.pick(ticket)?;
        let count = self.members.len() + usize::from(self.primary.is_some());
        let index = match self.balancing {
            LoadBalancing::RoundRobin => first,
            _ if count < 2 => first,
            LoadBalancing::LeastOutstanding => {
                balance::least_outstanding(first, count, |i| self.candidate(i, None))
            }
            LoadBalancing::PeakEwma => {
                let now = Some(std::time::Instant::now());
                let other = balance::other(first, count, ticket);
                let (a, b) = (self.candidate(first, now), self.candidate(other, now));
                if balance::cost(b) < balance::cost(a) {
                    other
                } else {
                    first
                }
            }
        };
        self.entry(index).map(|(server, _)| server)
    }

    /// The `index`th server of the schedule: a replica, or past them the primary.
    fn entry(&self, index: usize) -> Option<&(Arc<Server>, u32)> {
        self.members.get(index).or(self.primary.as_ref())
    }

    /// The `index`th server as a load-aware pick compares it.
    fn candidate(&self, index: usize, now: Option<std::time::Instant>) -> balance::Candidate {
        match self.entry(index) {
            Some((server, weight)) => balance::Candidate {
                outstanding: server.outstanding(),
                latency_ns: now.map_or(0.0, |now| server.load.latency_ns(now)),
                weight: *weight,
            },
            None => balance::Candidate {
                outstanding: u32::MAX - 1,
                latency_ns: f64::MAX,
                weight: 1,
            },
        }
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
            rotation: Rotation::of(&self.primary.server, &self.replicas, &self.config),
            config: Arc::clone(&self.config),
        }
    }
}
