//! Where plain reads go among the replicas: how a read chooses among the servers in rotation
//! (`db.loadBalancing`), and the replica groups (`group:` on a replica, `db.replicaGroups`)
//! with what a read for a group does when none of its replicas is in service. The choosing is
//! `route/balance.rs`'s and `registry/routing.rs`'s.

use super::validate::invalid;
use super::{Config, ConfigError};

/// How a read chooses among the servers in rotation (`db.loadBalancing`). Every strategy
/// follows the weights, takes no lock and reads only atomics; they differ in what they make
/// of a replica that is slower than its peers (a noisy neighbour, a long vacuum, a far zone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LoadBalancing {
    /// `roundRobin`: each server in turn by weight, whatever its load. Shares are exact and
    /// predictable; a slow replica keeps its full share. The default.
    #[default]
    RoundRobin,
    /// `leastOutstanding`: the server with the fewest reads in progress or waiting for one of
    /// its connections, per unit of weight; ties go round by weight. A slow replica holds its
    /// connections longer and so gets fewer reads. Looks at every server in rotation.
    LeastOutstanding,
    /// `peakEwma`: two servers, one drawn by weight and one at random, and the one with the
    /// lower expected cost (recent latency, peak-sensitive, times the reads in progress, per
    /// unit of weight) takes the read, as tower's balancer and Finagle choose. Reacts to a
    /// replica slowing down within a few reads, and lets it back as its latency decays.
    PeakEwma,
}

impl LoadBalancing {
    /// The name the `db:` block writes.
    pub(crate) fn key(self) -> &'static str {
        match self {
            LoadBalancing::RoundRobin => "roundRobin",
            LoadBalancing::LeastOutstanding => "leastOutstanding",
            LoadBalancing::PeakEwma => "peakEwma",
        }
    }

    /// The strategy a `db:` block's text names (`roundRobin`, `leastOutstanding`, `peakEwma`,
    /// and their snake_case spellings).
    pub(crate) fn parse(text: &str) -> Option<LoadBalancing> {
        match text.trim() {
            "roundRobin" | "round_robin" => Some(LoadBalancing::RoundRobin),
            "leastOutstanding" | "least_outstanding" => Some(LoadBalancing::LeastOutstanding),
            "peakEwma" | "peak_ewma" => Some(LoadBalancing::PeakEwma),
            _ => None,
        }
    }
}

/// Where a read for a replica group goes when none of the group's replicas is in service
/// (`db.replicaGroups.<group>.fallback`). Every such read is counted in
/// `rwsplit_group_fallbacks_total{group, to}`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GroupFallback {
    /// `replicas`: the replicas of no group, as a plain read (and, with none of them in
    /// service, the primary, as every read falls back). The default.
    #[default]
    Replicas,
    /// `primary`: the primary.
    Primary,
    /// `none`: nowhere. Extractors refuse the request with `503` and
    /// `replica_group_unavailable`; a direct read fails with an error naming the group.
    Refuse,
    /// Another group's name: that group's replicas, then its own fallback.
    Group(String),
}

impl GroupFallback {
    /// The text the `db:` block writes.
    pub(crate) fn parse(text: &str) -> GroupFallback {
        match text.trim() {
            "replicas" => GroupFallback::Replicas,
            "primary" => GroupFallback::Primary,
            "none" => GroupFallback::Refuse,
            group => GroupFallback::Group(group.to_owned()),
        }
    }

    /// As the `db:` block writes it, and as metrics and the status endpoint show it.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            GroupFallback::Replicas => "replicas",
            GroupFallback::Primary => "primary",
            GroupFallback::Refuse => "none",
            GroupFallback::Group(group) => group,
        }
    }
}

/// Words a group may not be called: they name fallbacks.
const RESERVED: [&str; 3] = ["replicas", "primary", "none"];

impl Config {
    /// How a plain read chooses among the servers in rotation: see [`LoadBalancing`]. Default
    /// [`RoundRobin`](LoadBalancing::RoundRobin). [`Registry::reload`](crate::Registry::reload)
    /// changes it live.
    pub fn load_balancing(mut self, strategy: LoadBalancing) -> Self {
        self.load_balancing = strategy;
        self
    }

    /// Where reads for the replica group `group` go while none of its replicas is in service.
    /// Default [`GroupFallback::Replicas`]. See
    /// [`ReplicaConfig::group`](crate::ReplicaConfig::group).
    pub fn group_fallback(mut self, group: impl Into<String>, fallback: GroupFallback) -> Self {
        let group = group.into();
        self.groups.retain(|(name, _)| *name != group);
        self.groups.push((group, fallback));
        self
    }

    /// The fallback of `group`.
    pub(crate) fn fallback_of(&self, group: &str) -> &GroupFallback {
        const DEFAULT: &GroupFallback = &GroupFallback::Replicas;
        self.groups
            .iter()
            .find(|(name, _)| name == group)
            .map_or(DEFAULT, |(_, fallback)| fallback)
    }

    /// Every group a replica (listed or found) is in or `replicaGroups` names.
    pub(crate) fn group_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.replicas.iter().filter_map(|r| r.get_group()).collect();
        names.extend(self.discovery.iter().filter_map(|d| d.group.as_deref()));
        names.extend(self.groups.iter().map(|(name, _)| name.as_str()));
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Group names are words (letters, digits, `-`, `_`), not a fallback's; a fallback names
    /// a group that exists, and following fallbacks from any group ends.
    pub(crate) fn check_groups(&self) -> Result<(), ConfigError> {
        for (i, replica) in self.replicas.iter().enumerate() {
            if let Some(group) = replica.get_group() {
                check_name(&format!("db.readReplicas[{i}].group"), group)?;
            }
        }
        let names = self.group_names();
        for (group, fallback) in &self.groups {
            check_name(&format!("db.replicaGroups.{group}"), group)?;
            let key = format!("db.replicaGroups.{group}.fallback");
            let GroupFallback::Group(next) = fallback else {
                continue;
            };
            if !names.contains(&next.as_str()) {
                return Err(invalid(
                    &key,
                    next,
                    "must be replicas, primary, none or a group a replica is in",
                ));
            }
            // Following the fallbacks from here must end: each group at most once.
            let mut seen = vec![group.as_str()];
            let mut at = next.as_str();
            while let GroupFallback::Group(after) = self.fallback_of(at) {
                seen.push(at);
                if seen.contains(&after.as_str()) {
                    return Err(invalid(
                        &key,
                        next,
                        &format!(
                            "the fallbacks go round in a circle: {} -> {after}",
                            seen.join(" -> ")
                        ),
                    ));
                }
                at = after;
            }
        }
        Ok(())
    }
}

pub(super) fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let word = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !word {
        return Err(invalid(
            key,
            &name,
            "a group is named with letters, digits, - and _ (at most 63)",
        ));
    }
    if RESERVED.contains(&name) {
        return Err(invalid(
            key,
            &name,
            "replicas, primary and none name fallbacks, not groups",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_written() {
        for strategy in [
            LoadBalancing::RoundRobin,
            LoadBalancing::LeastOutstanding,
            LoadBalancing::PeakEwma,
        ] {
            assert_eq!(LoadBalancing::parse(strategy.key()), Some(strategy));
        }
        assert_eq!(
            LoadBalancing::parse("least_outstanding"),
            Some(LoadBalancing::LeastOutstanding)
        );
        assert_eq!(LoadBalancing::parse("random"), None);
    }
}
