//! Replicas found by DNS (`db.replicaDiscovery`): a name whose A/AAAA records (with a port) or
//! SRV records (with theirs) are the replicas, re-resolved at an interval. The resolving is
//! `registry/discovery.rs`'s.

use std::net::SocketAddr;
use std::time::Duration;

use super::validate::invalid;
use super::{Config, ConfigError, DEFAULT_PORT, MAX_WEIGHT, ReplicaConfig};

/// Which records of the name are the replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Records {
    /// `A`: its A and AAAA records, each address at the source's `port`. The default.
    #[default]
    Address,
    /// `SRV`: its SRV records, each target's addresses at the record's port (as Consul and
    /// Kubernetes headless services publish them).
    Service,
}

/// One DNS name whose records are replicas (`db.replicaDiscovery[]`).
///
/// Each address found becomes a replica named `<dns>/<address>:<port>`, with the primary's
/// credentials and pool settings, and this source's weight and group. It is checked before it
/// takes reads; an address that leaves the answer takes no new reads at once and is
/// disconnected after [`drain_delay`](Self::drain_delay); a failed lookup keeps the last
/// good answer.
///
/// ```
/// use std::time::Duration;
/// use rwsplit::{Config, DiscoveryConfig};
///
/// let config = Config::new("10.0.0.10").replica_discovery(
///     DiscoveryConfig::srv("_postgresql._tcp.replicas.service.consul")
///         .interval(Duration::from_secs(30))
///         .drain_delay(Duration::from_secs(60)),
/// );
/// # let _ = config;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    pub(crate) dns: String,
    pub(crate) records: Records,
    pub(crate) port: u16,
    pub(crate) interval: Duration,
    pub(crate) drain_delay: Duration,
    pub(crate) weight: u32,
    pub(crate) group: Option<String>,
    pub(crate) nameserver: Option<SocketAddr>,
}

impl DiscoveryConfig {
    /// The A/AAAA records of `dns`, each address at port 5432 (see [`port`](Self::port)).
    pub fn addresses(dns: impl Into<String>) -> DiscoveryConfig {
        DiscoveryConfig {
            dns: dns.into(),
            records: Records::Address,
            port: DEFAULT_PORT,
            interval: Duration::from_secs(60),
            drain_delay: Duration::from_secs(30),
            weight: 1,
            group: None,
            nameserver: None,
        }
    }

    /// The SRV records of `dns`, each target at its record's port.
    pub fn srv(dns: impl Into<String>) -> DiscoveryConfig {
        DiscoveryConfig {
            records: Records::Service,
            ..DiscoveryConfig::addresses(dns)
        }
    }

    /// The port of the addresses of A/AAAA records. Default `5432`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How often the name is resolved again. Default 60 seconds.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long an address that left the answer keeps its connections (taking no new reads)
    /// before they are closed, so that reads running on it finish. Default 30 seconds.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// The weight of each replica found. Default `1`.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The replica group of each replica found (see [`ReplicaConfig::group`]).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The DNS server to ask (`127.0.0.1:8600` for a local Consul agent). Default: the
    /// system's (`/etc/resolv.conf`).
    pub fn nameserver(mut self, address: SocketAddr) -> Self {
        self.nameserver = Some(address);
        self
    }

    /// The replica found at `address`.
    pub(crate) fn replica(&self, address: SocketAddr) -> ReplicaConfig {
        let mut replica =
            ReplicaConfig::new(format!("{}/{address}", self.dns), address.ip().to_string())
                .port(address.port())
                .weight(self.weight);
        replica.group = self.group.clone();
        replica
    }
}

impl Config {
    /// Adds replicas found by DNS: see [`DiscoveryConfig`]. Replicas listed with
    /// [`replica`](Self::replica) and found ones mix.
    pub fn replica_discovery(mut self, source: DiscoveryConfig) -> Self {
        self.discovery.push(source);
        self
    }

    /// Each source names a host, resolves at least once a second, names a port and a weight
    /// in range, and a group as groups are named.
    pub(crate) fn check_discovery(&self) -> Result<(), ConfigError> {
        for (i, source) in self.discovery.iter().enumerate() {
            let key = |field: &str| format!("db.replicaDiscovery[{i}].{field}");
            if source.dns.trim().is_empty() || source.dns.contains(char::is_whitespace) {
                return Err(invalid(&key("dns"), &source.dns, "a DNS name is required"));
            }
            if source.interval < Duration::from_secs(1) {
                let interval = format!("{:?}", source.interval);
                return Err(invalid(&key("interval"), &interval, "must be 1s or more"));
            }
            if source.port == 0 {
                return Err(invalid(&key("port"), &0, "a port is 1 to 65535"));
            }
            if source.weight > MAX_WEIGHT {
                let reason = format!("must be at most {MAX_WEIGHT}");
                return Err(invalid(&key("weight"), &source.weight, &reason));
            }
            if let Some(group) = &source.group {
                super::reads::check_name(&key("group"), group)?;
            }
        }
        Ok(())
    }
}
