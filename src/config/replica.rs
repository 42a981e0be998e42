//! One read replica as configured: where it is, its weight, and what it does not inherit from
//! the primary; and every configured server as a candidate for the primary role.

use std::path::PathBuf;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::{Base, Config, DEFAULT_PORT, PRIMARY_NAME, PoolConfig, PoolOverrides, Secret};

/// One read replica: where it is, its weight, and what it does not inherit from the primary.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) weight: u32,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) database: Option<String>,
    pub(crate) ssl_mode: Option<PgSslMode>,
    pub(crate) ssl_root_cert: Option<PathBuf>,
    pub(crate) pool: PoolOverrides,
    /// The replica group it serves (`group:`); `None`: plain reads.
    pub(crate) group: Option<String>,
    /// Connection settings it was made from ([`ReplicaConfig::from_connect_options`]).
    pub(crate) base: Option<Base>,
}

impl ReplicaConfig {
    /// A replica called `name` at `host`, port 5432, weight 1, inheriting everything else from
    /// the primary. The name shows in logs, metrics, the status endpoint and the
    /// `x-db-target` header.
    pub fn new(name: impl Into<String>, host: impl Into<String>) -> ReplicaConfig {
        ReplicaConfig {
            name: name.into(),
            host: host.into(),
            port: DEFAULT_PORT,
            weight: 1,
            username: None,
            password: None,
            database: None,
            ssl_mode: None,
            ssl_root_cert: None,
            pool: PoolOverrides::default(),
            group: None,
            base: None,
        }
    }

    /// The replica's port. Default `5432`.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Its share of reads relative to the other replicas. Default `1`; `0` takes it out of new
    /// traffic (draining) while it stays checked.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Role to connect as. Default: the primary's.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Password. Default: the primary's. Never printed.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// Database. Default: the primary's.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// TLS mode. Default: the primary's.
    pub fn ssl_mode(mut self, mode: PgSslMode) -> Self {
        self.ssl_mode = Some(mode);
        self
    }

    /// Most connections in this replica's pool. Default: the primary's `maxConnections`.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.pool.max_connections = Some(max);
        self
    }

    /// Most idle connections this replica's pool keeps. Default: the primary's.
    pub fn max_idle_connections(mut self, max: u32) -> Self {
        self.pool.max_idle = Some(max);
        self
    }

    /// Puts the replica in the group `group` (`group: analytics`): it then serves only the
    /// reads that ask for that group ([`RouteOverride::replica_group`](crate::RouteOverride::replica_group),
    /// [`Registry::read_from`](crate::Registry::read_from)), never plain reads, and those reads
    /// go to no other replica while one of the group is in service. Default: no group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The replica's group, if it has one.
    pub fn get_group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The replica's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The replica's weight.
    pub fn get_weight(&self) -> u32 {
        self.weight
    }
}

/// One configured server, as a candidate for the primary role and as a replica.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    /// A replica's name; the configured primary's `host:port`.
    pub(crate) name: String,
    /// Whether this is the primary's `host`.
    pub(crate) configured_primary: bool,
    /// Whether it may take the writes (`primaryCandidates`).
    pub(crate) candidate: bool,
    /// Its settings as a replica (the configured primary's: its address, weight 1).
    pub(crate) as_replica: ReplicaConfig,
}

impl Config {
    pub(crate) fn primary_options(&self) -> PgConnectOptions {
        self.primary
            .connect_options(&self.primary.host, self.primary.port)
    }

    /// Every configured server, the primary's `host` first: the candidates for the primary
    /// role when roles are observed, and what each is as a replica.
    pub(crate) fn members(&self) -> Vec<Member> {
        let primary = &self.primary;
        let first = Member {
            name: format!("{}:{}", primary.host, primary.port),
            configured_primary: true,
            candidate: self.is_candidate(PRIMARY_NAME),
            as_replica: ReplicaConfig::new(
                format!("{}:{}", primary.host, primary.port),
                primary.host.clone(),
            )
            .port(primary.port),
        };
        let replicas = self.replicas.iter().map(|replica| Member {
            name: replica.name.clone(),
            configured_primary: false,
            candidate: self.is_candidate(&replica.name),
            as_replica: replica.clone(),
        });
        std::iter::once(first).chain(replicas).collect()
    }

    fn is_candidate(&self, name: &str) -> bool {
        match &self.primary_candidates {
            None => true,
            Some(list) => list.iter().any(|c| c == name),
        }
    }

    /// Connection settings for writing to `member`: the primary's credentials, database and
    /// TLS settings at the member's address. A replica's own `sslMode` (a `disable` meant for
    /// reads on a private link, say) never carries the primary's password once it takes the
    /// writes.
    pub(crate) fn primary_options_at(&self, member: &Member) -> PgConnectOptions {
        if member.configured_primary {
            return self.primary_options();
        }
        let replica = &member.as_replica;
        self.primary.connect_options(&replica.host, replica.port)
    }

    pub(crate) fn replica_options(&self, replica: &ReplicaConfig) -> PgConnectOptions {
        let mut server = self.primary.clone();
        if replica.base.is_some() {
            // Made from settings of its own: nothing of the primary's but what is set after.
            server.base = replica.base.clone();
            server.password = None;
            server.ssl_root_cert = None;
        }
        if let Some(username) = &replica.username {
            server.username = username.clone();
        }
        if replica.password.is_some() {
            server.password = replica.password.clone();
        }
        if let Some(database) = &replica.database {
            server.database = database.clone();
        }
        if let Some(mode) = replica.ssl_mode {
            server.ssl_mode = mode;
        }
        if replica.ssl_root_cert.is_some() {
            server.ssl_root_cert = replica.ssl_root_cert.clone();
        }
        // Read-only sessions are the server's to set up (see `ReplicaReadOnly`).
        server.connect_options(&replica.host, replica.port)
    }

    pub(crate) fn replica_pool(&self, replica: &ReplicaConfig) -> PoolConfig {
        let base = &self.primary.pool;
        let o = &replica.pool;
        PoolConfig {
            max_connections: o.max_connections.unwrap_or(base.max_connections),
            max_idle: o.max_idle.or(base.max_idle),
            max_lifetime: o.max_lifetime.unwrap_or(base.max_lifetime),
            idle_timeout: o.idle_timeout.unwrap_or(base.idle_timeout),
            connect_timeout: o.connect_timeout.unwrap_or(base.connect_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgSslMode;

    #[test]
    fn writes_to_a_promoted_replica_use_the_primarys_tls_settings() {
        let config = Config::new("db-1.internal")
            .ssl_mode(PgSslMode::VerifyFull)
            .replica(
                ReplicaConfig::new("replica1", "db-2.internal")
                    .port(5433)
                    .ssl_mode(PgSslMode::Disable),
            );
        let member = config
            .members()
            .into_iter()
            .find(|m| m.name == "replica1")
            .unwrap();
        let writes = config.primary_options_at(&member);
        assert_eq!(
            (writes.get_host(), writes.get_port()),
            ("db-2.internal", 5433)
        );
        assert!(matches!(writes.get_ssl_mode(), PgSslMode::VerifyFull));
        // Its reads keep its own.
        let reads = config.replica_options(&member.as_replica);
        assert!(matches!(reads.get_ssl_mode(), PgSslMode::Disable));
    }
}
