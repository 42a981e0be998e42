//! The settings of the `db:` block that a running registry takes at once on a reload, each
//! named once: its key (as the YAML writes it, in error messages and in the reload's change
//! lines) and how its value reads.

use super::Config;

pub(crate) const SEPARATION: &str = "enableReadWriteSeparation";
pub(crate) const SHARE: &str = "readReplicaShare";
pub(crate) const PRIMARY_READ_WEIGHT: &str = "primaryReadWeight";
pub(crate) const LOAD_BALANCING: &str = "loadBalancing";
pub(crate) const REPLICA_GROUPS: &str = "replicaGroups";
pub(crate) const REPLICA_DISCOVERY: &str = "replicaDiscovery";
pub(crate) const LAG_THRESHOLD: &str = "replicaLagThreshold";
pub(crate) const LAG_BYTES_THRESHOLD: &str = "replicaLagBytesThreshold";
pub(crate) const MAX_STALENESS: &str = "replicaMaxStaleness";
pub(crate) const HEALTH_CHECK_INTERVAL: &str = "healthCheckInterval";
pub(crate) const HEALTH_CHECK_TIMEOUT: &str = "healthCheckTimeout";
pub(crate) const FAILOVER_ON_POOL_EXHAUSTED: &str = "failoverOnPoolExhausted";
pub(crate) const ROLES: &str = "roles";
pub(crate) const PROMOTION: &str = "promotion";
pub(crate) const PRIMARY_CANDIDATES: &str = "primaryCandidates";

/// One live setting: its key, and its value as a change line shows it.
pub(crate) struct Live {
    pub(crate) key: &'static str,
    pub(crate) show: fn(&Config) -> String,
}

/// Every live setting, in the order a reload reports them.
pub(crate) const LIVE: [Live; 15] = [
    Live {
        key: SEPARATION,
        show: |c| c.separation.to_string(),
    },
    Live {
        key: SHARE,
        show: |c| format!("{}%", c.replica_share),
    },
    Live {
        key: PRIMARY_READ_WEIGHT,
        show: |c| c.primary_read_weight.to_string(),
    },
    Live {
        key: LOAD_BALANCING,
        show: |c| c.load_balancing.key().to_owned(),
    },
    Live {
        key: REPLICA_GROUPS,
        show: |c| {
            let fallbacks: Vec<String> = (c.groups.iter())
                .map(|(group, fallback)| format!("{group}: {}", fallback.as_str()))
                .collect();
            format!("{{{}}}", fallbacks.join(", "))
        },
    },
    Live {
        key: REPLICA_DISCOVERY,
        show: |c| {
            let sources: Vec<String> = (c.discovery.iter())
                .map(|d| {
                    let group = d.group.as_deref().unwrap_or("-");
                    format!(
                        "{} {:?} port {} every {:?} drain {:?} weight {} group {group}",
                        d.dns, d.records, d.port, d.interval, d.drain_delay, d.weight
                    )
                })
                .collect();
            format!("[{}]", sources.join(", "))
        },
    },
    Live {
        key: LAG_THRESHOLD,
        show: |c| format!("{:?}", c.lag_threshold),
    },
    Live {
        key: LAG_BYTES_THRESHOLD,
        show: |c| format!("{:?}", c.lag_bytes_threshold),
    },
    Live {
        key: MAX_STALENESS,
        show: |c| format!("{:?}", c.max_staleness),
    },
    Live {
        key: HEALTH_CHECK_INTERVAL,
        show: |c| format!("{:?}", c.health_check_interval),
    },
    Live {
        key: HEALTH_CHECK_TIMEOUT,
        show: |c| format!("{:?}", c.health_check_timeout),
    },
    Live {
        key: FAILOVER_ON_POOL_EXHAUSTED,
        show: |c| c.failover_on_pool_exhausted.to_string(),
    },
    Live {
        key: ROLES,
        show: |c| format!("{:?}", c.roles),
    },
    Live {
        key: PROMOTION,
        show: |c| format!("{:?}", c.promotion).to_lowercase(),
    },
    Live {
        key: PRIMARY_CANDIDATES,
        show: |c| format!("{:?}", c.primary_candidates).replace('"', ""),
    },
];

/// The change lines between `old` and `new`: `replicaLagThreshold 10s -> 5s`.
pub(crate) fn changes(old: &Config, new: &Config) -> Vec<String> {
    LIVE.iter()
        .filter_map(|live| {
            let (before, after) = ((live.show)(old), (live.show)(new));
            (before != after).then(|| format!("{} {before} -> {after}", live.key))
        })
        .collect()
}

/// `db.<key>`, as error messages name a live setting.
pub(crate) fn path(key: &str) -> String {
    format!("db.{key}")
}
