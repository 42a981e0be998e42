//! The startup barrier: after a migration (or any write the whole app depends on), no read is
//! served by a replica that has not replayed it. [`Registry::wait_for_replicas`] takes the
//! primary's position, holds every read to it (a replica serves reads again once it has
//! replayed that far; until then they go to the primary) and waits, up to a limit, for the
//! replicas in rotation to get there.
//!
//! The barrier is one atomic in the registry: while it is up, reads take the routing path that
//! compares positions (as reads with a consistency token do); once every replica in rotation
//! has passed it, the health loop takes it down and plain reads take the fast path again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::tokens::PINNED;
use super::{Registry, Shared};
use crate::error::Error;
use crate::health::{Capabilities, Capability};

/// What [`Registry::wait_for_replicas`] found when it returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaughtUp {
    /// The primary's WAL position the reads are held to (`None` when this role cannot read
    /// it: nothing is held back then).
    pub position: Option<u64>,
    /// The replicas in rotation that have replayed it.
    pub replicas: Vec<String>,
    /// The replicas in rotation that had not when the wait ended: they serve reads once they
    /// have, and until then those reads go to the primary.
    pub behind: Vec<String>,
}

impl CaughtUp {
    /// Whether every replica in rotation has replayed the position.
    pub fn all(&self) -> bool {
        self.behind.is_empty()
    }
}

impl Registry {
    /// Holds reads to what the primary has now, and waits up to `timeout` for the replicas in
    /// rotation to replay it. Call it after startup migrations: from the moment it is called,
    /// no read is served by a replica that has not replayed the migration (those reads go to
    /// the primary), so the first `GET` never meets the old schema.
    ///
    /// It returns when every replica in rotation has caught up, or when `timeout` has passed
    /// (a replica still behind is not an error: it serves reads once it has caught up). It
    /// fails only when the primary's position cannot be asked (the primary is unreachable).
    /// With separation off, or no replica, it returns at once.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use rwsplit::{Config, Registry};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = Registry::connect(Config::from_env()?).await?;
    /// sqlx::query("CREATE TABLE IF NOT EXISTS items (id bigserial PRIMARY KEY, name text)")
    ///     .execute(&registry.primary())
    ///     .await?;
    /// // `sqlx::migrate!().run(&registry.primary()).await?` works the same way.
    /// let caught_up = registry.wait_for_replicas(Duration::from_secs(10)).await?;
    /// if !caught_up.all() {
    ///     tracing::warn!(behind = ?caught_up.behind, "reads stay on the primary for these");
    /// }
    /// # Ok(())
    /// # }
    /// # let _ = run;
    /// ```
    pub async fn wait_for_replicas(&self, timeout: Duration) -> Result<CaughtUp, Error> {
        let shared = &self.shared;
        if !shared.topology().config.separation || shared.topology().replicas.is_empty() {
            return Ok(CaughtUp::default());
        }
        let token = shared.primary_position().await?;
        let position = token.position();
        if position == PINNED {
            tracing::warn!(
                "the primary's WAL position is not readable by this role: reads are not held \
                 back until the replicas have replayed what the primary has now"
            );
            return Ok(CaughtUp::default());
        }
        shared.barrier.fetch_max(position, Ordering::AcqRel);
        shared.observe_primary(position, token.issued_at_ms());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let _ = shared.ask_replicas().await;
            let caught_up = shared.caught_up(position);
            shared.lift_barrier();
            if caught_up.all() || tokio::time::Instant::now() >= deadline {
                tracing::info!(
                    position,
                    caught_up = caught_up.replicas.len(),
                    behind = caught_up.behind.len(),
                    "replicas waited for"
                );
                return Ok(caught_up);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
    }
}

impl Shared {
    /// The position reads are held to (0: none).
    pub(super) fn barrier(&self) -> u64 {
        self.barrier.load(Ordering::Acquire)
    }

    /// Which replicas in rotation have replayed `position`.
    fn caught_up(&self, position: u64) -> CaughtUp {
        let mut caught_up = CaughtUp {
            position: Some(position),
            ..CaughtUp::default()
        };
        for (server, _) in &self.topology().rotation.members {
            let name = server.name.to_string();
            match server.position() >= position {
                true => caught_up.replicas.push(name),
                false => caught_up.behind.push(name),
            }
        }
        caught_up
    }

    /// Takes the barrier down once every replica in rotation that reports its position has
    /// replayed it.
    pub(super) fn lift_barrier(&self) {
        let barrier = self.barrier();
        if barrier == 0 {
            return;
        }
        let passed = self.topology().rotation.members.iter().all(|(server, _)| {
            let reports = Capabilities::from_stored(server.capabilities_stored())
                .is_none_or(|c| c.has(Capability::ReplayPosition));
            !reports || server.position() >= barrier
        });
        if passed {
            let _ = self
                .barrier
                .compare_exchange(barrier, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}
