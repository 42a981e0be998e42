//! What operators see: every server's state as the last checks saw it, as plain data
//! ([`Registry::status`]); `http/status.rs` serves it as JSON.

use std::time::{Duration, SystemTime};

use super::Registry;
use crate::health::{Capabilities, Capability};
use crate::server::Server;

impl Registry {
    /// The state of every server, as the last checks saw it.
    pub fn status(&self) -> RegistryStatus {
        let topology = self.shared.topology();
        let rotation = &topology.rotation;
        let config = &topology.config;
        let primary = &topology.primary.server;
        RegistryStatus {
            separation: config.separation,
            read_replica_share: config.replica_share,
            primary_read_weight: config.primary_read_weight,
            primary_reads: rotation.shared_with(primary),
            load_balancing: config.load_balancing.key(),
            roles: match config.roles {
                crate::config::Roles::Observed => "observed",
                _ => "configured",
            },
            primary_member: primary.member.to_string(),
            groups: config
                .group_names()
                .into_iter()
                .map(|name| GroupStatus {
                    name: name.to_owned(),
                    fallback: config.fallback_of(name).as_str().to_owned(),
                    in_rotation: rotation.group(name).map_or(0, |r| r.members.len()),
                })
                .collect(),
            primary: ServerStatus::of(primary, true),
            replicas: topology
                .replicas
                .iter()
                .map(|m| ServerStatus::of(&m.server, rotation.contains(&m.server)))
                .collect(),
        }
    }
}

/// A snapshot of the registry's state, from [`Registry::status`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RegistryStatus {
    /// Whether reads go to replicas.
    pub separation: bool,
    /// `readReplicaShare`: the percentage of the reads that may go to a replica that do.
    pub read_replica_share: u8,
    /// `primaryReadWeight`: the primary's weight in the read schedule (0: off).
    pub primary_read_weight: u32,
    /// Whether the primary is in the read schedule now (its weight over 0 and some replica
    /// in rotation).
    pub primary_reads: bool,
    /// `loadBalancing`: `roundRobin`, `leastOutstanding` or `peakEwma`.
    pub load_balancing: &'static str,
    /// `roles`: `observed` (the primary is whichever configured server answers as one) or
    /// `configured`.
    pub roles: &'static str,
    /// The configured server that takes the writes now: the configured primary's
    /// `host:port`, or the name of a replica that was promoted.
    pub primary_member: String,
    /// The replica groups: those a replica is in and those `replicaGroups` names.
    pub groups: Vec<GroupStatus>,
    /// The primary.
    pub primary: ServerStatus,
    /// The replicas, in configuration order.
    pub replicas: Vec<ServerStatus>,
}

/// One replica group, from [`RegistryStatus`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GroupStatus {
    /// The group's name.
    pub name: String,
    /// Where its reads go while none of its replicas is in service: `replicas`, `primary`,
    /// `none` or another group's name.
    pub fallback: String,
    /// Its replicas taking its reads now.
    pub in_rotation: usize,
}

/// One server's state, as the last check saw it. Holds no credentials.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerStatus {
    /// `primary` or the replica's name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// The replica's weight (0 for the primary).
    pub weight: u32,
    /// The replica group it serves (`None`: plain reads).
    pub group: Option<String>,
    /// Whether the server is in service: the last check or probe passed, and no connection to
    /// it has failed since (a suspect is still in service).
    pub healthy: bool,
    /// `serving`, `suspect` (a session was lost; a probe is deciding), `unreachable`,
    /// `lagging`, `wrong_role` or `diverged` (another cluster, or another timeline than the
    /// primary's).
    pub state: &'static str,
    /// Whether reads are sent to it now (replicas: healthy with a weight over 0).
    pub in_rotation: bool,
    /// Replication lag in time (`None`: unknown; always zero for the primary).
    pub lag: Option<Duration>,
    /// Replication lag in bytes of WAL (`None`: unknown).
    pub lag_bytes: Option<u64>,
    /// The timeline it was last seen on (`None`: not known yet).
    pub timeline: Option<u32>,
    /// Its cluster's system identifier (`None`: not known yet).
    pub system_identifier: Option<u64>,
    /// When the last check finished.
    pub last_check: Option<SystemTime>,
    /// When the last check passed.
    pub last_success: Option<SystemTime>,
    /// Why the last check failed, if it did.
    pub last_error: Option<String>,
    /// Connections open in its pool.
    pub pool_size: u32,
    /// Of those, idle.
    pub pool_idle: u32,
    /// Most connections its pool may open.
    pub pool_max: u32,
    /// Work on it now: connections handed out, and work waiting for one.
    pub outstanding: u32,
    /// Its latency estimate (peak-EWMA, decayed to now) when `loadBalancing: peakEwma` has
    /// sampled it; `None` before.
    pub latency: Option<Duration>,
    /// The monitoring capabilities this role may use on it (`replay_position`,
    /// `system_identifier`, ...; see the README's "Where it runs"), `None` until found out.
    pub capabilities: Option<Vec<&'static str>>,
    /// The expected capabilities it lacks: what its checks do without.
    pub missing_capabilities: Vec<&'static str>,
    /// How its sessions are kept read-only: `read-write` (the primary), `startup option`,
    /// `SET after connect`, `read-only transaction per query` or `the standby's own read-only
    /// state` (see [`ReplicaReadOnly`](crate::ReplicaReadOnly)).
    pub read_only: &'static str,
    /// The name a replica streams its WAL under (its `primary_conninfo`'s `application_name`,
    /// else its `cluster_name`), as its last full check read it.
    pub stream_name: Option<String>,
    /// Whether its last position poll read its position from the primary's
    /// `pg_stat_replication` under that name, rather than asking it (see the README's "Health
    /// and lag").
    pub positions_from_primary: bool,
}

impl ServerStatus {
    fn of(server: &Server, in_rotation: bool) -> ServerStatus {
        let capabilities = Capabilities::from_stored(server.capabilities_stored());
        let size = server.pool.size();
        let idle = u32::try_from(server.pool.num_idle()).unwrap_or(u32::MAX);
        ServerStatus {
            name: server.name.to_string(),
            address: server.address.clone(),
            weight: server.weight(),
            group: server.group.as_deref().map(str::to_owned),
            healthy: server.is_healthy(),
            state: server.state().as_str(),
            in_rotation,
            lag: server.lag(),
            lag_bytes: server.lag_bytes(),
            timeline: Some(server.timeline()).filter(|&t| t != 0),
            system_identifier: Some(server.system_id()).filter(|&id| id != 0),
            last_check: server.last_check(),
            last_success: server.last_success(),
            last_error: server.last_error(),
            pool_size: size,
            pool_idle: idle.min(size),
            pool_max: server.max_connections(),
            outstanding: server.outstanding(),
            latency: Some(server.load.latency_ns(std::time::Instant::now()))
                .filter(|&ns| ns > 0.0)
                .map(|ns| Duration::from_nanos(ns as u64)),
            stream_name: server.stream.name().map(|n| n.to_string()),
            positions_from_primary: server.stream.read_from_primary(),
            capabilities: capabilities.map(|c| c.offered().map(Capability::as_str).collect()),
            missing_capabilities: capabilities
                .map(|c| c.missing().map(Capability::as_str).collect())
                .unwrap_or_default(),
            read_only: server.sessions.means(),
        }
    }
}
