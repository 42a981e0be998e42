//! The registry: the primary's pool, one pool per replica, and which replicas are in rotation.
//!
//! A [`Registry`] is a cheap `Clone` handle; clone it into your axum state and anywhere else
//! (jobs, CLIs) that needs the database. It owns a background health loop that checks every
//! server each interval and takes replicas out of rotation when they are unreachable, are not
//! standbys, or lag more than the threshold, and puts them back when they recover. When no
//! replica can serve, reads go to the primary. With roles observed (the default), the primary
//! is whichever configured server answers as one: a promotion is followed without a restart,
//! and a replica on another timeline than the primary is never read (see `Roles`).
//!
//! ```
//! use rwsplit::{Config, Registry, ReplicaConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rwsplit::Error> {
//! let config = Config::new("127.0.0.1")
//!     .read_write_separation(true)
//!     .replica(ReplicaConfig::new("replica1", "127.0.0.1").port(5433));
//! // `connect` checks every server before it returns; `connect_lazy` does no I/O at all and
//! // lets the health loop check in the background.
//! let registry = Registry::connect_lazy(config)?;
//!
//! let read = registry.read();   // a replica in rotation, or the primary
//! let write = registry.write(); // always the primary
//! assert_eq!(read.name(), "replica1");
//! assert!(write.is_primary());
//! // Queries run on either (the read one read-only, failing over):
//! // let rows = sqlx::query("SELECT 1").fetch_all(&read).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Inside, each file owns one concern: `topology.rs` the snapshot of the cluster that requests
//! read, `control.rs` the only writer of server state, `routing.rs` the registry's side of each
//! routing decision, `tasks.rs` the health loop, `probe.rs` the re-probing of servers out of
//! service, `election.rs` who takes the writes, `tokens.rs` read-your-writes; `reload.rs`,
//! `file.rs`, `admin.rs` and `barrier.rs` what operators and startup code change, `status.rs`
//! what they see.

mod admin;
mod barrier;
mod control;
mod discovery;
mod election;
mod file;
mod probe;
mod reload;
mod routing;
mod silence;
mod status;
mod tasks;
mod tokens;
mod topology;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use sqlx::PgPool;
use tokio::sync::watch;

pub use self::barrier::CaughtUp;
pub(crate) use self::control::Event;
pub(crate) use self::routing::{Routed, WorkSettings, group_fallback};
pub use self::status::{GroupStatus, RegistryStatus, ServerStatus};
use self::topology::{Member, Rotation, Topology};
use crate::config::Config;
use crate::error::Error;
use crate::health::PrimaryHistory;
use crate::route::Tickets;
use crate::server::Server;

/// The shared handle to the primary and replica pools. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    pub(crate) shared: Arc<Shared>,
}

/// What a registry's handles, tasks and handles' work share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The cluster now: replaced whole, by `control.rs` only.
    topology: ArcSwap<Topology>,
    /// One topology change at a time.
    rebuild: Mutex<()>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The tickets that index the rotation's schedule and a rollout's draws.
    tickets: Tickets,
    /// The primary's positions over time, that lag is measured against.
    history: Mutex<PrimaryHistory>,
    /// Whether reads fall back to the primary now, for saying so once.
    falling_back: AtomicBool,
    /// Who may take the writes (`election.rs`).
    election: election::Election,
    /// Read-your-writes (`tokens.rs`).
    tokens: tokens::Tokens,
    /// The position every read must see (`Registry::wait_for_replicas`; 0: none).
    barrier: AtomicU64,
    /// Shuts the background tasks down (also when the registry is dropped).
    stop: watch::Sender<bool>,
    /// `rwsplit_request_duration_seconds` for requests that used no database, registered on
    /// first use.
    unserved_duration: OnceLock<metrics::Histogram>,
    /// Replicas found by DNS (`discovery.rs`).
    discovery: discovery::Discovery,
}

impl Registry {
    /// Validates `config`, opens pools to every server, checks each once (bounded by the
    /// health-check timeout) so that the first requests see the real state, and starts the
    /// background health loop. Unreachable servers do not make this fail: they are logged and
    /// left out of rotation until a later check succeeds.
    ///
    /// Must be called within a Tokio runtime.
    pub async fn connect(config: Config) -> Result<Registry, Error> {
        let registry = Registry::build(config)?;
        // Replicas found by DNS are added, and checked with the rest, before the first request.
        discovery::round(&registry.shared, true, false).await;
        tasks::check_all(&registry.shared).await;
        for member in registry.shared.topology().members() {
            let server = &member.server;
            if server.is_healthy() {
                tracing::info!(
                    server = %server.name,
                    address = %server.address,
                    role = if server.is_primary() { "primary" } else { "replica" },
                    "connected"
                );
            }
        }
        tasks::spawn(&registry.shared, false);
        silence::spawn(&registry.shared);
        discovery::spawn(&registry.shared);
        Ok(registry)
    }

    /// Validates `config` and builds the registry without any I/O: pools connect on first use
    /// and the health loop makes its first round at once in the background. Until that round
    /// ends every replica counts as healthy.
    ///
    /// Must be called within a Tokio runtime; returns [`Error::NoRuntime`] otherwise.
    pub fn connect_lazy(config: Config) -> Result<Registry, Error> {
        let registry = Registry::build(config)?;
        tasks::spawn(&registry.shared, true);
        silence::spawn(&registry.shared);
        discovery::spawn(&registry.shared);
        Ok(registry)
    }

    fn build(config: Config) -> Result<Registry, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let config = reload::this_instance(config.validate()?);
        crate::metrics::describe();
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            primary = %format_args!("{}:{}", config.primary.host, config.primary.port),
            database = %config.primary.database,
            username = %config.primary.username,
            replicas = config.replicas.len(),
            separation = config.separation,
            lag_threshold_seconds = config.lag_threshold.as_secs_f64(),
            health_check_interval_seconds = config.health_check_interval.as_secs_f64(),
            "rwsplit configuration"
        );
        let primary = Member::new(Server::primary(&config, &config.members()[0]));
        let replicas: Vec<Member> = config
            .replicas
            .iter()
            .map(|replica| Member::new(Server::replica(&config, replica)))
            .collect();
        let (stop, _) = watch::channel(false);
        let tokens = tokens::Tokens::new(&config);
        let topology = Topology {
            rotation: Rotation::of(&primary.server, &replicas, &config),
            primary,
            replicas,
            config: Arc::new(config),
        };
        let shared = Arc::new(Shared {
            topology: ArcSwap::from_pointee(topology),
            rebuild: Mutex::new(()),
            reloading: tokio::sync::Mutex::new(()),
            tickets: Tickets::default(),
            history: Mutex::new(PrimaryHistory::default()),
            falling_back: AtomicBool::new(false),
            election: election::Election::default(),
            tokens,
            barrier: AtomicU64::new(0),
            stop,
            unserved_duration: OnceLock::new(),
            discovery: discovery::Discovery::default(),
        });
        shared.publish();
        Ok(Registry { shared })
    }

    /// The primary's pool: what code written before read/write separation used, and still the
    /// right default for anything that has not been looked at. A handle (cheap to clone): a
    /// reload that changes the primary's connection settings replaces the pool, and the next
    /// call returns the new one.
    pub fn primary(&self) -> PgPool {
        self.shared.primary().pool.clone()
    }

    /// Whether reads go to replicas.
    pub fn separation_enabled(&self) -> bool {
        self.shared.topology().config.separation
    }

    /// Runs one round of health checks now, instead of waiting for the next interval.
    pub async fn check_now(&self) {
        tasks::check_all(&self.shared).await;
    }

    /// Stops the health loop and closes every pool, waiting for checked-out connections to be
    /// returned. The registry keeps answering [`read`](Self::read) and
    /// [`write`](Self::write), but their pools refuse new work.
    pub async fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
        for member in self.shared.topology().members() {
            member.watch.checker.close().await;
            member.server.pool.close().await;
        }
    }

    /// `rwsplit_request_duration_seconds{server="none"}`: requests that used no database.
    pub(crate) fn unserved_duration(&self) -> &metrics::Histogram {
        self.shared
            .unserved_duration
            .get_or_init(crate::metrics::unserved_duration)
    }
}

impl Shared {
    /// The cluster now.
    #[inline]
    pub(crate) fn topology(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.topology.load()
    }

    /// The cluster now, to hold across other work.
    pub(crate) fn topology_full(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// The primary now.
    pub(crate) fn primary(&self) -> Arc<Server> {
        Arc::clone(&self.topology.load().primary.server)
    }

    /// The configuration now in force.
    pub(crate) fn config(&self) -> Arc<Config> {
        Arc::clone(&self.topology.load().config)
    }

    /// Whether `server` is one of this registry's servers now (not removed).
    pub(crate) fn owns(&self, server: &Arc<Server>) -> bool {
        self.topology.load().member(server).is_some()
    }

    /// Whether the background tasks are to stop.
    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Woken when the registry shuts down.
    pub(crate) fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::{DbRead, ReplicaConfig};

    /// A registry whose health loop never runs (the test never yields to it): every replica
    /// stays in rotation and nothing is connected.
    fn lazy(weights: &[u32]) -> Registry {
        let mut config = Config::new("127.0.0.1")
            .read_write_separation(true)
            .health_check_interval(Duration::from_secs(3600));
        for (i, weight) in weights.iter().enumerate() {
            let name = format!("r{}", i + 1);
            config = config.replica(
                ReplicaConfig::new(name, "127.0.0.1")
                    .port(1)
                    .weight(*weight),
            );
        }
        Registry::connect_lazy(config).unwrap()
    }

    fn tally(counts: &mut BTreeMap<String, usize>, target: &DbRead) {
        *counts.entry(target.name().to_owned()).or_default() += 1;
    }

    #[tokio::test]
    async fn picks_follow_the_weights_alone_in_turns_and_after_a_change() {
        let (a, b) = (lazy(&[2, 1]), lazy(&[1, 1]));
        // One thread picking from two registries in turn: each still splits by its weights.
        let (mut on_a, mut on_b) = (BTreeMap::new(), BTreeMap::new());
        for _ in 0..300 {
            tally(&mut on_a, &a.read());
            tally(&mut on_b, &b.read());
        }
        assert_eq!(on_a["r1"], 200, "{on_a:?}");
        assert_eq!(on_a["r2"], 100, "{on_a:?}");
        assert_eq!(on_b["r1"], 150, "{on_b:?}");
        assert_eq!(on_b["r2"], 150, "{on_b:?}");

        // One registry alone.
        let mut alone = BTreeMap::new();
        for _ in 0..300 {
            tally(&mut alone, &a.read());
        }
        assert_eq!((alone["r1"], alone["r2"]), (200, 100), "{alone:?}");

        // A change of weights reaches the next pick.
        a.set_weight("r1", 0).unwrap();
        assert!((0..30).all(|_| a.read().name() == "r2"));
        a.set_weight("r2", 0).unwrap();
        assert!((0..30).all(|_| a.read().is_primary()));
    }
}
