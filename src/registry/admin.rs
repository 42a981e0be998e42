//! The runbook's steps one at a time, in code: a replica reweighted, added or removed while the
//! registry runs. [`Registry::reload`] does the same from a whole configuration.

use super::topology::{Member, Topology};
use super::{Event, Registry, Shared, reload, tasks};
use crate::config::{Config, ConfigError, ReplicaConfig};
use crate::error::Error;

impl Registry {
    /// Changes a replica's weight at runtime. Weight 0 drains it: no new reads go to it, and
    /// reads already running finish normally.
    ///
    /// Fails with [`Error::Config`] when no replica has that name.
    pub fn set_weight(&self, replica: &str, weight: u32) -> Result<(), Error> {
        let shared = &self.shared;
        let member = shared.replica(replica)?;
        shared.apply(
            &member.server,
            Event::Weighed {
                weight,
                said: false,
            },
        );
        Ok(())
    }

    /// Adds a replica at runtime. It is checked at once (as every server is in each round)
    /// and joins the rotation if it passes; until then it takes no reads.
    ///
    /// The replica inherits what it does not set from the primary, as in the configuration;
    /// fails with [`Error::Config`] if it is invalid or its name is taken.
    pub async fn add_replica(&self, replica: ReplicaConfig) -> Result<(), Error> {
        let shared = &self.shared;
        // Validated on its own against the primary's settings: the names registered now (not
        // the ones in the original file, some of which may have been removed) are checked below.
        let mut config = Config::clone(&shared.config());
        config.replicas = vec![replica];
        let config = config.validate()?;
        let added = &config.replicas[0];
        // Out of rotation until it passes a check.
        let member = reload::new_replica(added, &config);
        let mut taken = false;
        shared.replace(|topology| {
            taken = topology.replica(&added.name).is_some();
            if taken {
                return None;
            }
            let mut replicas = topology.replicas.clone();
            replicas.push(member.clone());
            Some(Topology {
                replicas,
                ..topology.rebuilt()
            })
        });
        if taken {
            return Err(ConfigError::invalid(
                "replica name",
                &added.name,
                "a replica of that name is already registered",
            )
            .into());
        }
        let server = &member.server;
        tracing::info!(replica = %server.name, address = %server.address, "replica added");
        tasks::check_all(shared).await;
        Ok(())
    }

    /// Removes a replica at runtime. It leaves the rotation at once; reads already holding one
    /// of its connections finish, and its pool closes in the background once they are
    /// returned. Reads that picked it but had not yet taken a connection go to another server.
    ///
    /// Fails with [`Error::Config`] when no replica has that name.
    pub fn remove_replica(&self, replica: &str) -> Result<(), Error> {
        let shared = &self.shared;
        let mut removed = None;
        shared.replace(|topology| {
            let member = topology.replica(replica)?.clone();
            let replicas = topology
                .replicas
                .iter()
                .filter(|m| !m.is(&member.server))
                .cloned()
                .collect();
            removed = Some(member);
            Some(Topology {
                replicas,
                ..topology.rebuilt()
            })
        });
        let Some(member) = removed else {
            return Err(shared.unknown_replica(replica));
        };
        crate::metrics::forget(&member.server.name);
        tracing::info!(replica, address = %member.server.address, "replica removed");
        tokio::spawn(async move {
            member.server.pool.close().await;
            member.watch.checker.close().await;
        });
        Ok(())
    }
}

impl Shared {
    /// The replica called `name`, or an error that lists the replicas there are.
    fn replica(&self, name: &str) -> Result<Member, Error> {
        self.topology()
            .replica(name)
            .cloned()
            .ok_or_else(|| self.unknown_replica(name))
    }

    fn unknown_replica(&self, name: &str) -> Error {
        let known: Vec<String> = self
            .topology()
            .replicas
            .iter()
            .map(|m| m.server.name.to_string())
            .collect();
        ConfigError::invalid(
            "replica name",
            name,
            &format!("no replica of that name (replicas: {})", known.join(", ")),
        )
        .into()
    }
}
