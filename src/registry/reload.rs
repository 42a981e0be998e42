//! [`Registry::reload`]: a new configuration applied to a running registry, as the operators'
//! runbook changes it (separation switched, a rollout stepped, replicas added, drained,
//! removed, reweighted, thresholds tuned), without a restart and without failing a request.

use std::sync::Arc;
use std::time::Duration;

use super::topology::{Member, Rotation, Topology};
use super::{Event, Registry, Shared, tasks};
use crate::config::{self, Config, ConsistencyConfig, ReplicaConfig, Roles, live};
use crate::error::Error;
use crate::server::{Server, State};

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
        let config = this_instance(config.validate()?);
        let shared = &self.shared;
        let _one_at_a_time = shared.reloading.lock().await;
        let old = shared.config();
        let mut changes = Changes {
            applied: live::changes(&old, &config),
            kept: Vec::new(),
        };
        let member = current_primary_member(&config, &shared.primary());
        let new_primary = new_primary(&shared.primary(), &config, &member, &mut changes);
        let config = Arc::new(kept_until_restart(config, &old, shared, &mut changes));
        let mut fresh = new_primary.is_some();
        let mut retired = Vec::new();
        let mut reweighed = Vec::new();
        shared.replace(|topology| {
            let set = replica_set(topology, &config, &member.name, &mut changes);
            fresh |= set.fresh;
            reweighed = set.reweighed;
            for member in &set.removed {
                crate::metrics::forget(&member.server.name);
            }
            retired = set.retired;
            let primary = match &new_primary {
                Some(primary) => {
                    retired.push(topology.primary.clone());
                    primary.clone()
                }
                None => topology.primary.clone(),
            };
            Some(Topology {
                primary,
                replicas: set.next,
                rotation: Rotation::default(),
                config: Arc::clone(&config),
            })
        });
        shared.apply_all(reweighed.iter().map(|(member, weight)| {
            let event = Event::Weighed {
                weight: *weight,
                said: true,
            };
            (&member.server, event)
        }));
        for member in retired {
            tokio::spawn(async move {
                member.server.pool.close().await;
                member.watch.checker.close().await;
            });
        }
        for change in &changes.applied {
            tracing::info!("configuration reloaded: {change}");
        }
        for change in &changes.kept {
            tracing::warn!("configuration reloaded: {change}");
        }
        if fresh {
            tasks::check_all(shared).await;
        }
        let Changes { mut applied, kept } = changes;
        applied.extend(kept);
        Ok(applied)
    }
}

/// A new primary when `config` moves it to another configured server, or changes its
/// connection settings or pool limits: the running one's position and timeline carry over,
/// so that tokens keep verifying.
fn new_primary(
    running: &Server,
    config: &Config,
    member: &config::Member,
    changes: &mut Changes,
) -> Option<Member> {
    let options = config.primary_options_at(member);
    let same = *running.member == *member.name
        && running.same_settings(&options, &config.primary.pool, None);
    if same {
        return None;
    }
    changes.push(
        "primary: connection settings or pool limits changed, new pool; old pool draining"
            .to_owned(),
    );
    let server = Server::primary(config, member);
    server.set_position(running.position());
    server.set_identity(running.identity(), false);
    Some(Member::new(server))
}

/// `config` with what a running registry cannot change kept as in `old`, and said. Of
/// `db.consistency`, the keys and the clock skew apply at once (a rolling key rotation
/// reloads them); the rest waits for a restart.
fn kept_until_restart(
    mut config: Config,
    old: &Config,
    shared: &Shared,
    changes: &mut Changes,
) -> Config {
    let keys = |c: &Config| {
        let c = &c.consistency;
        let keys: Vec<_> = c.accepted_keys().cloned().collect();
        (c.signing_key.clone(), keys, c.clock_skew)
    };
    let rest = |c: &Config| {
        let mut c = c.consistency.clone();
        c.signing_key = None;
        c.previous_signing_key = None;
        c.verification_keys.clear();
        c.clock_skew = Duration::ZERO;
        format!("{c:?}")
    };
    if keys(&config) != keys(old) {
        shared.tokens.sticky().reload_keys(&config.consistency);
        let accepted = config.consistency.accepted_keys().count();
        changes.push(format!(
            "db.consistency: signing and verification keys ({accepted} accepted), clockSkew {:?}",
            config.consistency.clock_skew
        ));
    }
    if rest(&config) != rest(old) {
        changes.at_restart("db.consistency");
        let live = config.consistency.clone();
        config.consistency = ConsistencyConfig {
            signing_key: live.signing_key,
            previous_signing_key: live.previous_signing_key,
            verification_keys: live.verification_keys,
            clock_skew: live.clock_skew,
            ..old.consistency.clone()
        };
    }
    config
}

/// The configured server the primary should be on under `config`: the one it is
/// on now when `config` still lists it and roles are observed, else the configured `host`.
fn current_primary_member(config: &Config, primary: &Server) -> config::Member {
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
    pub(super) next: Vec<Member>,
    /// Kept, with their new weights (applied once the set is in place).
    pub(super) reweighed: Vec<(Member, u32)>,
    /// Replaced or removed, to close.
    pub(super) retired: Vec<Member>,
    /// Gone, to forget in the metrics too.
    pub(super) removed: Vec<Member>,
    /// Whether any is new and needs its first check.
    pub(super) fresh: bool,
}

/// Matches the replicas `config` asks for (every configured server but the primary, when roles
/// are observed) with the running ones of `topology` by name: kept and reweighted, replaced
/// when their settings changed, added, removed. Each change is described in `changes`.
pub(super) fn replica_set(
    topology: &Topology,
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
    let mut set = ReplicaSet {
        next: Vec::with_capacity(wanted.len()),
        reweighed: Vec::new(),
        retired: Vec::new(),
        removed: Vec::new(),
        fresh: false,
    };
    for replica in &wanted {
        set.place(topology.replica(&replica.name), replica, config, changes);
    }
    for member in &topology.replicas {
        let name = &member.server.name;
        if wanted.iter().any(|r| *r.name == **name) {
            continue;
        }
        // Found by DNS: discovery adds and removes it, not the configuration.
        if member.found {
            set.next.push(member.clone());
            continue;
        }
        let why = if **name == *primary_member {
            "answers as the primary now"
        } else {
            "removed"
        };
        changes.push(format!(
            "replica {name} {why} (out of rotation; its pool closes once its connections are \
             back)"
        ));
        set.retired.push(member.clone());
        set.removed.push(member.clone());
    }
    set
}

impl ReplicaSet {
    /// Places the configured `replica`: the running `existing` kept (and reweighted) when its
    /// settings and group are unchanged, a new pool in its stead when they changed, or a new
    /// replica.
    fn place(
        &mut self,
        existing: Option<&Member>,
        replica: &ReplicaConfig,
        config: &Config,
        changes: &mut Changes,
    ) {
        let options = config.replica_options(replica);
        let pool = config.replica_pool(replica);
        match existing {
            Some(member)
                if member.server.group.as_deref() == replica.get_group()
                    && member.server.same_settings(
                        &options,
                        &pool,
                        Some(config.replica_read_only),
                    ) =>
            {
                let before = member.server.weight();
                if before != replica.weight {
                    changes.push(format!(
                        "replica {}: weight {before} -> {}",
                        replica.name, replica.weight
                    ));
                    self.reweighed.push((member.clone(), replica.weight));
                }
                self.next.push(member.clone());
            }
            Some(member) => {
                self.next.push(new_replica(replica, config));
                self.retired.push(member.clone());
                self.fresh = true;
                changes.push(format!(
                    "replica {}: connection settings, pool limits or group changed, new pool \
                     (in rotation after its first check), old pool draining",
                    replica.name
                ));
            }
            None => {
                let member = new_replica(replica, config);
                changes.push(format!(
                    "replica {} added at {} with weight {} (in rotation after its first \
                     check)",
                    replica.name, member.server.address, replica.weight
                ));
                self.next.push(member);
                self.fresh = true;
            }
        }
    }
}

/// A replica built from `replica`, out of rotation until its first check passes.
pub(super) fn new_replica(replica: &ReplicaConfig, config: &Config) -> Member {
    let server = Server::replica(config, replica);
    server.set_state(State::Unreachable, Some("not checked yet".to_owned()));
    Member::new(server)
}

/// The changes of one reload: applied, and kept until a restart.
#[derive(Default)]
pub(super) struct Changes {
    pub(super) applied: Vec<String>,
    pub(super) kept: Vec<String>,
}

impl Changes {
    pub(super) fn push(&mut self, change: String) {
        self.applied.push(change);
    }

    fn at_restart(&mut self, what: &str) {
        self.kept.push(format!(
            "{what} changed: applied at the next start, the running ones stay"
        ));
    }
}

/// `config` as this instance runs it: with `replicasPerInstance`, only its subset of the
/// replicas (`route::subset`), said at INFO.
pub(super) fn this_instance(mut config: Config) -> Config {
    let Some(keep) = config.replicas_per_instance else {
        return config;
    };
    let id = config.instance_id_setting();
    let named: Vec<(&str, u32)> = config
        .replicas
        .iter()
        .map(|r| (r.name.as_str(), r.weight))
        .collect();
    let chosen: Vec<String> = crate::route::subset::subset(&id, &named, keep)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let of = config.replicas.len();
    config.replicas.retain(|r| chosen.contains(&r.name));
    tracing::info!(
        instance = %id,
        replicas = %chosen.join(", "),
        "replicasPerInstance: this instance uses {} of {of} replicas",
        chosen.len()
    );
    config
}
