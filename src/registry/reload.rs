//! [`Registry::reload`]: a new configuration applied to a running registry, as the operators'
//! runbook changes it (separation switched, a rollout stepped, replicas added, drained,
//! removed, reweighted, thresholds tuned), without a restart and without failing a request.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::server::Server;
use super::{Registry, Shared, health};
use crate::config::{Config, Member, ReplicaConfig, Roles};
use crate::error::Error;

impl Registry {
    /// Applies `config` to the running registry and returns the changes made, one line each
    /// (each is also logged once, at `info`).
    ///
    /// - Replicas are matched by name. A new one is added out of rotation and joins it when
    ///   its first check (run before this returns) passes; one no longer listed leaves the
    ///   rotation at once and its pool closes once its connections are back; a changed weight
    ///   applies to the next read (weight 0 drains).
    /// - A replica whose connection settings or pool limits changed gets a new pool, checked
    ///   before it serves; the old one drains and closes.
    /// - `enableReadWriteSeparation`, `readReplicaShare`, the lag thresholds, the health-check
    ///   interval and timeout and `failoverOnPoolExhausted` apply at once.
    /// - The primary's connection settings and pool limits get it a new pool the same way
    ///   (writes use the new one at once; the old one drains and closes).
    /// - `db.consistency` applies at the next start: the change is reported with a warning and
    ///   the running settings stay.
    ///
    /// An invalid configuration is refused whole with the error [`Registry::connect`] would
    /// give, and the running one stays.
    ///
    /// ```
    /// use rwsplit::{Config, Registry};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rwsplit::Error> {
    /// let yaml = "db:
    ///   host: 127.0.0.1
    ///   enableReadWriteSeparation: false
    ///   readReplicas:
    ///     - { name: replica1, host: 127.0.0.1, port: 5433 }
    /// ";
    /// let registry = Registry::connect_lazy(Config::from_yaml(yaml)?)?;
    /// // The runbook's "switch it on, behind a 10 % rollout", as one edit.
    /// let edited = yaml.replace("false", "true\n  readReplicaShare: 10");
    /// let changes = registry.reload(Config::from_yaml(&edited)?).await?;
    /// assert_eq!(
    ///     changes,
    ///     ["enableReadWriteSeparation false -> true", "readReplicaShare 100% -> 10%"]
    /// );
    /// assert_eq!(registry.status().read_replica_share, 10);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reload(&self, config: Config) -> Result<Vec<String>, Error> {
        let config = config.validate()?;
        let shared = &self.shared;
        let _one_at_a_time = shared.reloading.lock().await;
        let old = shared.config.load_full();
        let mut changes = Changes::default();

        changes.setting(
            "enableReadWriteSeparation",
            &old.separation,
            &config.separation,
        );
        changes.setting(
            "readReplicaShare",
            &format!("{}%", old.replica_share),
            &format!("{}%", config.replica_share),
        );
        changes.setting(
            "replicaLagThreshold",
            &old.lag_threshold,
            &config.lag_threshold,
        );
        changes.setting(
            "replicaLagBytesThreshold",
            &old.lag_bytes_threshold,
            &config.lag_bytes_threshold,
        );
        changes.setting(
            "healthCheckInterval",
            &old.health_check_interval,
            &config.health_check_interval,
        );
        changes.setting(
            "healthCheckTimeout",
            &old.health_check_timeout,
            &config.health_check_timeout,
        );
        changes.setting(
            "failoverOnPoolExhausted",
            &old.failover_on_pool_exhausted,
            &config.failover_on_pool_exhausted,
        );
        changes.setting("roles", &old.roles, &config.roles);
        changes.setting(
            "primaryCandidates",
            &old.primary_candidates,
            &config.primary_candidates,
        );
        let old_primary = shared.primary.load_full();
        let member = current_primary_member(&config, &old_primary);
        let primary_options = config.primary_options_at(&member);
        let new_primary = (*old_primary.member != *member.name
            || !old_primary.same_settings(&primary_options, &config.primary.pool, None))
        .then(|| {
            changes.push(
                "primary: connection settings or pool limits changed, new pool; old pool \
                 draining"
                    .to_owned(),
            );
            let server = Server::primary(&config, &member);
            // The same server (or its new address, which the next check confirms): what is
            // known of its position and timeline carries over, so that tokens keep verifying.
            server.set_position(old_primary.position());
            server.set_identity(old_primary.identity());
            server.join(shared);
            server
        });
        // What this registry cannot change while it runs: kept, and said.
        let mut config = config;
        let consistency = |c: &Config| {
            let c = &c.consistency;
            (
                format!("{c:?}"),
                c.signing_key.clone(),
                c.previous_signing_key.clone(),
            )
        };
        if consistency(&config) != consistency(&old) {
            changes.at_restart("db.consistency");
            config.consistency = old.consistency.clone();
        }

        let ReplicaSet {
            next,
            mut retired,
            removed,
            fresh: replicas_fresh,
        } = replica_set(shared, &config, &member.name, &mut changes);
        let mut fresh = replicas_fresh;

        {
            let _guard = shared.rebuild.lock().unwrap_or_else(|e| e.into_inner());
            shared.replicas.store(Arc::new(next));
        }
        if let Some(server) = new_primary {
            shared.primary.store(server);
            retired.push(old_primary);
            fresh = true;
        }
        shared
            .separation
            .store(config.separation, Ordering::Relaxed);
        shared.share.store(config.replica_share, Ordering::Relaxed);
        shared.config.store(Arc::new(config));
        shared.refresh_rotation();
        for server in &removed {
            crate::metrics::forget(server);
        }
        shared.publish_metrics();
        for server in retired {
            tokio::spawn(async move {
                server.pool.close().await;
                health::close(&server).await;
            });
        }
        for change in &changes.applied {
            tracing::info!("configuration reloaded: {change}");
        }
        for change in &changes.kept {
            tracing::warn!("configuration reloaded: {change}");
        }
        if fresh {
            health::check_all(shared).await;
        }
        let Changes { mut applied, kept } = changes;
        applied.extend(kept);
        Ok(applied)
    }
}

/// The configured server the primary should be on under `config`: the one it is
/// on now when `config` still lists it and roles are observed, else the configured `host`.
fn current_primary_member(config: &Config, primary: &Server) -> Member {
    let mut members = config.members();
    let observed = config.roles == Roles::Observed;
    let at = members
        .iter()
        .position(|m| observed && *m.name == *primary.member)
        .unwrap_or(0);
    members.swap_remove(at)
}

/// The replicas under `config` while the primary is on `primary_member`, reusing the running
/// servers that match, and what they replace.
pub(super) struct ReplicaSet {
    pub(super) next: Vec<Arc<Server>>,
    /// Replaced or removed, to close.
    pub(super) retired: Vec<Arc<Server>>,
    /// Gone, to forget in the metrics too.
    pub(super) removed: Vec<Arc<Server>>,
    /// Whether any is new and needs its first check.
    pub(super) fresh: bool,
}

/// Matches the replicas `config` asks for (every configured server but the primary, when roles
/// are observed) with the running ones by name: kept and reweighted, replaced when their
/// settings changed, added, removed. Each change is described in `changes`.
pub(super) fn replica_set(
    shared: &Arc<Shared>,
    config: &Config,
    primary_member: &str,
    changes: &mut Changes,
) -> ReplicaSet {
    let wanted: Vec<ReplicaConfig> = match config.roles {
        Roles::Observed => config
            .members()
            .into_iter()
            .filter(|m| m.name != primary_member)
            .map(|m| m.as_replica)
            .collect(),
        _ => config.replicas.clone(),
    };
    let current = shared.replicas.load_full();
    let mut set = ReplicaSet {
        next: Vec::with_capacity(wanted.len()),
        retired: Vec::new(),
        removed: Vec::new(),
        fresh: false,
    };
    for replica in &wanted {
        let existing = current.iter().find(|s| *s.name == replica.name);
        let options = config.replica_options(replica);
        let pool = config.replica_pool(replica);
        match existing {
            Some(server)
                if server.same_settings(&options, &pool, Some(config.replica_read_only)) =>
            {
                let before = server.weight.swap(replica.weight, Ordering::Relaxed);
                if before != replica.weight {
                    changes.push(format!(
                        "replica {}: weight {before} -> {}",
                        replica.name, replica.weight
                    ));
                }
                set.next.push(Arc::clone(server));
            }
            Some(server) => {
                set.next.push(new_replica(shared, replica, config));
                set.retired.push(Arc::clone(server));
                set.fresh = true;
                changes.push(format!(
                    "replica {}: connection settings or pool limits changed, new pool (in \
                     rotation after its first check), old pool draining",
                    replica.name
                ));
            }
            None => {
                let server = new_replica(shared, replica, config);
                changes.push(format!(
                    "replica {} added at {} with weight {} (in rotation after its first \
                     check)",
                    replica.name, server.address, replica.weight
                ));
                set.next.push(server);
                set.fresh = true;
            }
        }
    }
    for server in current.iter() {
        if !wanted.iter().any(|r| *r.name == *server.name) {
            let why = if *server.name == *primary_member {
                "answers as the primary now"
            } else {
                "removed"
            };
            changes.push(format!(
                "replica {} {why} (out of rotation; its pool closes once its connections are \
                 back)",
                server.name
            ));
            set.retired.push(Arc::clone(server));
            set.removed.push(Arc::clone(server));
        }
    }
    set
}

/// A replica built from `replica`, out of rotation until its first check passes.
pub(super) fn new_replica(
    shared: &Arc<Shared>,
    replica: &ReplicaConfig,
    config: &Config,
) -> Arc<Server> {
    let server = Server::replica(config, replica);
    server.eject("not checked yet".to_owned());
    server.join(shared);
    server
}

/// The changes of one reload: applied, and kept until a restart.
#[derive(Default)]
pub(super) struct Changes {
    pub(super) applied: Vec<String>,
    kept: Vec<String>,
}

impl Changes {
    pub(super) fn push(&mut self, change: String) {
        self.applied.push(change);
    }

    fn setting<T: Debug + PartialEq + ?Sized>(&mut self, key: &str, old: &T, new: &T) {
        if old != new {
            self.push(format!("{key} {old:?} -> {new:?}").replace('"', ""));
        }
    }

    fn at_restart(&mut self, what: &str) {
        self.kept.push(format!(
            "{what} changed: applied at the next start, the running ones stay"
        ));
    }
}
