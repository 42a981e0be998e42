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

mod attempt;
mod barrier;
mod capabilities;
mod file;
mod handle;
mod health;
mod lag;
mod probe;
mod reach;
mod reload;
mod roles;
mod rounds;
mod route;
mod select;
mod server;
mod target;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::watch;

pub(crate) use self::attempt::Attempts;
pub use self::barrier::CaughtUp;
pub(crate) use self::capabilities::{Capabilities, Capability};
pub(crate) use self::handle::BEGIN_READ_ONLY;
pub use self::handle::{Access, Db, DbConnection, DbRead, DbWrite, ReadOnly, ReadWrite};
use self::lag::{Lag, PrimaryHistory, settled_position};
use self::rounds::Rounds;
use self::route::{Ask, Decision, Seen};
use self::select::{PickTable, Schedule, Tickets};
use self::server::Kind;
pub(crate) use self::server::Server;
pub(crate) use self::target::Checkout;
pub(crate) use self::target::Target;
use crate::config::{Config, ConfigError, ReplicaConfig};
use crate::consistency::{CLOCK_SKEW_MS, ConsistencyToken, Sticky, StickyMode, TokenRejection};
use crate::error::Error;
use crate::intent::{Reason, Role, RouteIntent};

/// A replica's replay position, asked when a read with a token finds no replica known to have
/// its write. Marked so that `pg_stat_statements` counts it apart.
const ASK_REPLAY: &str = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8 \
     /* rwsplit replay position */";

/// A token's position when the primary's could not be read: more than any replica has, so
/// its client reads from the primary until the token expires.
pub(crate) const PINNED: u64 = u64::MAX;

/// The shared handle to the primary and replica pools. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// Replaced whole by a reload that changes its connection settings or pool limits.
    primary: ArcSwap<Server>,
    /// Every configured replica, in rotation or not. Replaced whole when replicas are added or
    /// removed at runtime.
    replicas: ArcSwap<Vec<Arc<Server>>>,
    rotation: ArcSwap<Rotation>,
    /// The validated configuration: thresholds and switches, and the defaults of replicas
    /// added at runtime. Replaced whole by [`Registry::reload`].
    config: ArcSwap<Config>,
    /// `enableReadWriteSeparation` and `readReplicaShare`, read by every request.
    separation: AtomicBool,
    share: AtomicU8,
    /// `consistency.staleReadsWhenReadOnly`, as the read-your-writes settings fixed at start.
    stale_reads: bool,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The cluster's system identifier, from the first primary seen (0: not yet).
    system_id: AtomicU64,
    /// The highest timeline a primary has been seen on: a primary on a lower one is a former
    /// primary and takes nothing.
    timeline_floor: AtomicU32,
    /// A full check asked for by `roles::elect_soon` is running.
    electing: AtomicBool,
    /// The position every read must see (`Registry::wait_for_replicas`; 0: none).
    barrier: AtomicU64,
    tickets: Tickets,
    /// Unique among the registries of this process, for the threads' snapshots.
    id: u64,
    /// Bumped after each new rotation.
    version: AtomicU64,
    history: Mutex<PrimaryHistory>,
    rebuild: Mutex<()>,
    falling_back: AtomicBool,
    sticky: Sticky,
    /// When the primary's position (`primary.position()`) was last sampled, in Unix ms.
    primary_sampled_ms: AtomicU64,
    stop: watch::Sender<bool>,
    /// Replay positions asked of the replicas in rotation, for reads with a token.
    replay_rounds: Rounds<()>,
    /// The primary's position for tokens, when writes share its query.
    token_rounds: Rounds<ConsistencyToken>,
    tokens: crate::metrics::TokenCounters,
    /// `rwsplit_request_duration_seconds` for requests that used no database, registered on
    /// first use.
    unserved_duration: OnceLock<metrics::Histogram>,
}

/// The replicas in rotation, with their weights, and their pick order (indices into
/// `members`); replaced whole when any of it changes, so a pick never sees half an update.
#[derive(Debug, Default)]
struct Rotation {
    members: Vec<(Arc<Server>, u32)>,
    schedule: Schedule,
    /// The same, as the threads that pick keep it.
    table: Arc<PickTable>,
}

impl Rotation {
    fn contains(&self, server: &Arc<Server>) -> bool {
        self.members.iter().any(|(s, _)| Arc::ptr_eq(s, server))
    }
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
        health::check_all(&registry.shared).await;
        for server in registry.shared.servers() {
            if server.is_healthy() {
                tracing::info!(
                    server = %server.name,
                    address = %server.address,
                    role = if server.kind == Kind::Primary { "primary" } else { "replica" },
                    "connected"
                );
            }
        }
        health::spawn(&registry.shared, false, registry.shared.stop.subscribe());
        Ok(registry)
    }

    /// Validates `config` and builds the registry without any I/O: pools connect on first use
    /// and the health loop makes its first round at once in the background. Until that round
    /// ends every replica counts as healthy.
    ///
    /// Must be called within a Tokio runtime; returns [`Error::NoRuntime`] otherwise.
    pub fn connect_lazy(config: Config) -> Result<Registry, Error> {
        let registry = Registry::build(config)?;
        health::spawn(&registry.shared, true, registry.shared.stop.subscribe());
        Ok(registry)
    }

    fn build(config: Config) -> Result<Registry, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let config = config.validate()?;
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
        let primary = Server::primary(&config, &config.members()[0]);
        let replicas: Vec<Arc<Server>> = config
            .replicas
            .iter()
            .map(|replica| Server::replica(&config, replica))
            .collect();
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            primary: ArcSwap::new(primary),
            replicas: ArcSwap::from_pointee(replicas),
            rotation: ArcSwap::from_pointee(Rotation::default()),
            tickets: Tickets::default(),
            id: {
                static REGISTRIES: AtomicU64 = AtomicU64::new(0);
                REGISTRIES.fetch_add(1, Ordering::Relaxed)
            },
            version: AtomicU64::new(0),
            history: Mutex::new(PrimaryHistory::default()),
            rebuild: Mutex::new(()),
            falling_back: AtomicBool::new(false),
            sticky: Sticky::new(&config.consistency, config.detection_delay()),
            primary_sampled_ms: AtomicU64::new(0),
            stop,
            replay_rounds: Rounds::default(),
            token_rounds: Rounds::default(),
            tokens: crate::metrics::TokenCounters::default(),
            unserved_duration: OnceLock::new(),
            separation: AtomicBool::new(config.separation),
            share: AtomicU8::new(config.replica_share),
            stale_reads: config.consistency.stale_reads_when_read_only,
            reloading: tokio::sync::Mutex::new(()),
            system_id: AtomicU64::new(0),
            timeline_floor: AtomicU32::new(0),
            electing: AtomicBool::new(false),
            barrier: AtomicU64::new(0),
            config: ArcSwap::from_pointee(config),
        });
        for server in shared.servers() {
            server.join(&shared);
        }
        shared.refresh_rotation();
        Ok(Registry { shared })
    }

    /// A server for reading: the next replica in rotation, or the primary when separation is
    /// disabled or no replica can serve.
    pub fn read(&self) -> DbRead {
        Db::new(self.resolve(RouteIntent::read(Reason::Direct)))
    }

    /// The primary, for writing (or for reads that must see the latest data).
    pub fn write(&self) -> DbWrite {
        Db::new(self.resolve(RouteIntent::write(Reason::Direct)))
    }

    /// The primary's pool: what code written before read/write separation used, and still the
    /// right default for anything that has not been looked at. A handle (cheap to clone): a
    /// reload that changes the primary's connection settings replaces the pool, and the next
    /// call returns the new one.
    pub fn primary(&self) -> PgPool {
        self.shared.primary().pool.clone()
    }

    /// Begins a transaction. Transactions always run on the primary. Errors are sqlx's own,
    /// as from [`PgPool::begin`].
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.write().begin().await
    }

    /// Whether reads go to replicas.
    pub fn separation_enabled(&self) -> bool {
        self.shared.separation()
    }

    /// A server for reading data written before `token` was taken: a replica in rotation that
    /// has replayed the token's position, or the primary.
    pub fn read_after(&self, token: &ConsistencyToken) -> DbRead {
        let intent = RouteIntent::read(Reason::Direct).requiring(self.shared.token_need(token));
        Db::new(self.resolve(intent))
    }

    /// The primary's current WAL position as a token, for code outside HTTP that wrote and
    /// hands the work on (for example to a job, which then uses [`read_after`](Self::read_after)).
    pub async fn consistency_token(&self) -> Result<ConsistencyToken, Error> {
        let shared = &self.shared;
        // By default each write asks on its own: sharing (`shareTokenQueries`) saves queries
        // but makes writes wait for the query in flight.
        let sharing = shared.config().consistency.share_token_queries;
        let token = match sharing {
            None => shared.primary_position().await?,
            Some(gather) => {
                shared
                    .token_rounds
                    .join(gather, || shared.primary_position())
                    .await?
            }
        };
        shared.observe_primary(token.position(), token.issued_at_ms());
        Ok(token)
    }

    /// Signs `token` for a client, as the layer does after a write.
    pub fn sign_token(&self, token: &ConsistencyToken) -> String {
        self.shared.sticky.sign(token)
    }

    /// Checks a token from a client: the signature (current or previous key), its age, and
    /// that the primary had reached its position when it was issued. Rejections are counted in
    /// `rwsplit_consistency_tokens_rejected_total`.
    pub fn verify_token(&self, text: &str) -> Result<ConsistencyToken, TokenRejection> {
        let shared = &self.shared;
        let verified = shared.sticky.verify(text).and_then(|token| {
            // A genuine token names a position the primary had reached when it was issued; if
            // a sample taken later (beyond clock skew) is still behind it, it is not genuine.
            // Positions compare within one timeline only.
            let sampled = shared.primary_sampled_ms.load(Ordering::Acquire);
            let primary = shared.primary();
            // A pinned token names no position (only a key holder can make one).
            let ahead = token.position() != PINNED
                && token.position() > primary.position()
                && same_timeline(token.timeline(), primary.timeline())
                && sampled > token.issued_at_ms().saturating_add(CLOCK_SKEW_MS);
            if ahead && shared.sticky.mode == StickyMode::Lsn {
                Err(TokenRejection::AheadOfPrimary)
            } else {
                Ok(token)
            }
        });
        if let Err(reason) = verified {
            crate::metrics::token_rejected(reason);
        }
        verified
    }

    /// The position a request's reads must see, from the token in `headers` (0 when there is
    /// none, it is rejected, or consistency is off; `u64::MAX` inside a time window).
    pub(crate) fn required_position(&self, headers: &http::HeaderMap) -> u64 {
        let sticky = &self.shared.sticky;
        if sticky.mode == StickyMode::Off {
            return 0;
        }
        let Some(text) = sticky.find(headers) else {
            return 0;
        };
        match self.verify_token(text) {
            Ok(token) => {
                self.shared.tokens.honoured();
                match sticky.mode {
                    StickyMode::Window => u64::MAX,
                    _ => self.shared.token_need(&token),
                }
            }
            Err(_) => 0,
        }
    }

    /// `rwsplit_request_duration_seconds{server="none"}`: requests that used no database.
    pub(crate) fn unserved_duration(&self) -> &metrics::Histogram {
        self.shared
            .unserved_duration
            .get_or_init(crate::metrics::unserved_duration)
    }

    /// Counts a token issued after a write.
    pub(crate) fn token_issued(&self) {
        self.shared.tokens.issued();
    }

    pub(crate) fn sticky(&self) -> &Sticky {
        &self.shared.sticky
    }

    /// The server for an intent, as [`route`](route) decides it. A request nobody can serve
    /// now gets the primary with the reason it would have had: the extractors refuse it with a
    /// 503 (the primary is down), and direct users get the primary's error.
    pub(crate) fn resolve(&self, intent: RouteIntent) -> Target {
        let shared = &self.shared;
        let reason = match shared.route(intent, &[]) {
            Decision::Replica(server, reason) => {
                return Target::new(server, intent.with(Role::Read, reason));
            }
            Decision::Refuse(reason) => {
                shared.wanted(intent);
                reason
            }
            Decision::Primary(reason) => {
                // Waiting for a primary out of service: its probe runs soon.
                if !shared.primary().is_healthy() {
                    shared.wanted(intent);
                }
                reason
            }
        };
        let role = match reason {
            Reason::Disabled => Role::Write,
            _ => intent.role(),
        };
        Target::primary(shared, intent.with(role, reason))
    }

    /// As [`resolve`](Self::resolve), but a read held back by a token may wait up to the
    /// configured `waitForReplica` for a replica to catch up.
    pub(crate) async fn resolve_waiting(&self, intent: RouteIntent) -> Target {
        let target = self.resolve(intent);
        // No replica can have what a token from another timeline needs: no use waiting.
        if target.intent().reason() != Reason::Sticky
            || target.intent().min_position() == Some(u64::MAX)
        {
            return target;
        }
        // The polled positions cannot tell that a replica has the write: ask the replicas (a
        // round shared with every read waiting meanwhile) before using the primary.
        let shared = &self.shared;
        if shared.polls_positions() {
            let _ = shared
                .replay_rounds
                .join(Duration::ZERO, || shared.ask_replicas())
                .await;
            let again = self.resolve(intent);
            if again.intent().reason() != Reason::Sticky {
                return again;
            }
        }
        let wait = self.shared.sticky.wait_for_replica;
        if wait.is_zero() {
            return target;
        }
        let deadline = health::after(tokio::time::Instant::now(), wait);
        let step = (self.shared.sticky.poll_interval / 4).max(Duration::from_millis(1));
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(step).await;
            let again = self.resolve(intent);
            if again.intent().reason() != Reason::Sticky {
                return again;
            }
        }
        target
    }

    /// Runs one round of health checks now, instead of waiting for the next interval.
    pub async fn check_now(&self) {
        health::check_all(&self.shared).await;
    }

    /// The state of every server, as the last checks saw it.
    pub fn status(&self) -> RegistryStatus {
        let shared = &self.shared;
        let rotation = shared.rotation.load();
        let primary = shared.primary();
        RegistryStatus {
            separation: shared.separation(),
            read_replica_share: shared.share.load(Ordering::Relaxed),
            roles: match shared.config().roles {
                crate::config::Roles::Observed => "observed",
                _ => "configured",
            },
            primary_member: primary.member.to_string(),
            primary: ServerStatus::of(&primary, true),
            replicas: shared
                .replicas
                .load()
                .iter()
                .map(|s| ServerStatus::of(s, rotation.contains(s)))
                .collect(),
        }
    }

    /// Changes a replica's weight at runtime. Weight 0 drains it: no new reads go to it, and
    /// reads already running finish normally.
    ///
    /// Fails with [`Error::Config`] when no replica has that name.
    pub fn set_weight(&self, replica: &str, weight: u32) -> Result<(), Error> {
        let server = self.shared.replica(replica)?;
        let before = server.weight.swap(weight, Ordering::Relaxed);
        if before != weight {
            tracing::info!(
                replica,
                from = before,
                to = weight,
                "replica weight changed"
            );
        }
        self.shared.refresh_rotation();
        self.shared.publish_metrics();
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
        let server = reload::new_replica(shared, added, &config);
        {
            let _guard = shared.rebuild.lock().unwrap_or_else(|e| e.into_inner());
            let current = shared.replicas.load();
            if current.iter().any(|s| s.name == server.name) {
                return Err(ConfigError::invalid(
                    "replica name",
                    &added.name,
                    "a replica of that name is already registered",
                )
                .into());
            }
            let mut next = Vec::clone(&current);
            next.push(Arc::clone(&server));
            shared.replicas.store(Arc::new(next));
        }
        tracing::info!(replica = %server.name, address = %server.address, "replica added");
        health::check_all(shared).await;
        Ok(())
    }

    /// Removes a replica at runtime. It leaves the rotation at once; reads already holding one
    /// of its connections finish, and its pool closes in the background once they are
    /// returned. Reads that picked it but had not yet taken a connection go to another server.
    ///
    /// Fails with [`Error::Config`] when no replica has that name.
    pub fn remove_replica(&self, replica: &str) -> Result<(), Error> {
        let shared = &self.shared;
        let server = {
            let _guard = shared.rebuild.lock().unwrap_or_else(|e| e.into_inner());
            let current = shared.replicas.load();
            let Some(server) = current.iter().find(|s| &*s.name == replica).cloned() else {
                return Err(shared.unknown_replica(replica));
            };
            let next: Vec<Arc<Server>> = current
                .iter()
                .filter(|s| !Arc::ptr_eq(s, &server))
                .cloned()
                .collect();
            shared.replicas.store(Arc::new(next));
            server
        };
        shared.refresh_rotation();
        shared.publish_metrics();
        crate::metrics::forget(&server);
        tracing::info!(replica, address = %server.address, "replica removed");
        tokio::spawn(async move {
            server.pool.close().await;
            health::close(&server).await;
        });
        Ok(())
    }

    /// Stops the health loop and closes every pool, waiting for checked-out connections to be
    /// returned. The registry keeps answering [`read`](Self::read) and
    /// [`write`](Self::write), but their pools refuse new work.
    pub async fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
        for server in self.shared.servers() {
            health::close(&server).await;
            server.pool.close().await;
        }
    }
}

impl Shared {
    /// The primary and every replica, for the health loop and shutdown.
    pub(super) fn servers(&self) -> Vec<Arc<Server>> {
        let replicas = self.replicas.load();
        let mut servers = Vec::with_capacity(replicas.len() + 1);
        servers.push(self.primary.load_full());
        servers.extend(replicas.iter().cloned());
        servers
    }

    #[inline]
    fn pick_replica(&self) -> Option<Arc<Server>> {
        let version = self.version.load(Ordering::Acquire);
        if let Some(picked) = select::pick_from_snapshot(self.id, version) {
            return picked;
        }
        // This thread's first pick here, or the rotation changed: a new snapshot, whose
        // ticket starts from the shared counters (threads that alternate between registries
        // take this path every time and still share each one's load by weight).
        let rotation = self.rotation.load();
        let ticket = self.tickets.next();
        select::keep_snapshot(self.id, version, &rotation.table, ticket.wrapping_add(1));
        let index = rotation.schedule.pick(ticket)?;
        Some(Arc::clone(&rotation.members[index].0))
    }

    /// The primary's insert position now, as a token. The insert position, not the write
    /// position: it covers a session's commit even with `synchronous_commit = off`, where the
    /// commit record may not be written yet.
    ///
    /// Where this role cannot read the primary's position, the token names no position
    /// ([`PINNED`]): the client reads from the primary until it expires (`maxPin`).
    async fn primary_position(&self) -> Result<ConsistencyToken, Error> {
        let primary = self.primary.load_full();
        let capabilities = primary.capabilities().unwrap_or(Capabilities::POSTGRES);
        let Some(sql) = capabilities.position_query(capabilities::PositionFor::Token) else {
            return Ok(ConsistencyToken::new(PINNED));
        };
        let row: Result<capabilities::PositionRow, sqlx::Error> =
            capabilities::one_row(&primary.pool, sql).await;
        let (insert, block, segment, walfile) = match row {
            Ok(row) => row,
            // Revoked since the last check: the next check finds out again.
            Err(error) if capabilities::is_statements(&error) => {
                return Ok(ConsistencyToken::new(PINNED));
            }
            Err(error) => return Err(Error::database(&primary, error)),
        };
        let (block, segment) = (block.unwrap_or(0) as u64, segment.unwrap_or(0) as u64);
        let walfile = walfile.unwrap_or_default();
        let position = settled_position(insert as u64, block, segment);
        let timeline = health::walfile_timeline(&walfile).unwrap_or(primary.timeline());
        Ok(ConsistencyToken::new(position).on_timeline(timeline))
    }

    /// Asks every replica in rotation for its replay position, on a connection of its pool,
    /// within a poll interval (at most 250 ms). A replica whose pool has every connection in
    /// use is skipped: this never queues behind application reads.
    async fn ask_replicas(&self) -> Result<(), std::convert::Infallible> {
        let bound = self.sticky.poll_interval.min(Duration::from_millis(250));
        let mut asks = tokio::task::JoinSet::new();
        for (server, _) in self.rotation.load().members.iter() {
            let can = server
                .capabilities()
                .is_none_or(|c| c.has(Capability::ReplayPosition));
            if server.exhausted() || !can {
                continue;
            }
            let server = Arc::clone(server);
            asks.spawn(async move {
                let ask = async {
                    let mut conn = server.pool.acquire().await?;
                    capabilities::one_row::<(Option<i64>,)>(&mut *conn, ASK_REPLAY.to_owned()).await
                };
                if let Ok(Ok((Some(position),))) = tokio::time::timeout(bound, ask).await {
                    server.advance_position(position as u64);
                }
            });
        }
        asks.join_all().await;
        Ok(())
    }

    /// The position a replica must have replayed to serve reads after `token`: its position,
    /// or, for a token from another timeline than the primary's (a failover since), more
    /// than any replica has, so that the primary serves them.
    fn token_need(&self, token: &ConsistencyToken) -> u64 {
        match same_timeline(token.timeline(), self.primary().timeline()) {
            true => token.position().max(1),
            false => u64::MAX,
        }
    }

    /// Whether reads compare tokens with replay positions, which then need polling.
    fn polls_positions(&self) -> bool {
        self.separation() && self.sticky.mode == StickyMode::Lsn
    }

    /// The primary now.
    #[inline]
    pub(crate) fn primary(&self) -> arc_swap::Guard<Arc<Server>> {
        self.primary.load()
    }

    /// The configuration now in force.
    pub(super) fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The configuration now in force, to hold across other work.
    pub(super) fn config_full(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Records that a primary answered as `identity`: the cluster's identifier (the first
    /// one seen) and the highest timeline reached.
    pub(super) fn primary_seen(&self, identity: server::Identity) {
        if identity.system_id != 0 {
            let _ = self.system_id.compare_exchange(
                0,
                identity.system_id,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        self.timeline_floor
            .fetch_max(identity.timeline, Ordering::AcqRel);
        crate::metrics::primary_timeline(identity.timeline);
    }

    /// Whether reads go to replicas.
    fn separation(&self) -> bool {
        self.separation.load(Ordering::Relaxed)
    }

    /// Records a sample of the primary's position taken at `at_ms` (Unix ms).
    pub(super) fn observe_primary(&self, position: u64, at_ms: u64) {
        let primary = self.primary();
        // A pinned token's position is no position of the primary's.
        if position != PINNED && position >= primary.position() {
            primary.set_position(position);
            self.primary_sampled_ms.fetch_max(at_ms, Ordering::AcqRel);
        }
    }

    /// Publishes every server's state gauges.
    fn publish_metrics(&self) {
        let rotation = self.rotation.load();
        crate::metrics::server_state(&self.primary(), true);
        for server in self.replicas.load().iter() {
            crate::metrics::server_state(server, rotation.contains(server));
        }
        crate::metrics::replicas_in_rotation(rotation.members.len());
    }

    fn lag_problem(&self, lag: Lag) -> Option<String> {
        let Lag { time, bytes } = lag;
        let config = self.config();
        if time > config.lag_threshold {
            let shown = if time == Duration::MAX {
                "an unknown time".to_owned()
            } else {
                format!("{:.1}s", time.as_secs_f64())
            };
            return Some(format!(
                "lagging {shown} behind the primary (threshold {:.1}s)",
                config.lag_threshold.as_secs_f64()
            ));
        }
        match (bytes, config.lag_bytes_threshold) {
            (Some(bytes), Some(limit)) if bytes > limit => Some(format!(
                "lagging {bytes} bytes of WAL behind the primary (threshold {limit})"
            )),
            _ => None,
        }
    }

    /// Rebuilds the rotation from the replicas' current health and weights, if it changed.
    fn refresh_rotation(&self) {
        let _guard = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let members: Vec<(Arc<Server>, u32)> = self
            .replicas
            .load()
            .iter()
            .filter(|s| s.is_healthy())
            .map(|s| (Arc::clone(s), s.weight()))
            .filter(|&(_, w)| w > 0)
            .collect();
        let current = self.rotation.load();
        let same = members.len() == current.members.len()
            && members
                .iter()
                .zip(current.members.iter())
                .all(|((a, wa), (b, wb))| Arc::ptr_eq(a, b) && wa == wb);
        if same {
            self.log_fallback(members.is_empty());
            return;
        }
        let weights: Vec<(usize, u32)> = members.iter().map(|(_, w)| *w).enumerate().collect();
        let schedule = Schedule::new(&weights);
        let empty = schedule.is_empty();
        let table = Arc::new(PickTable::new(&schedule, &members));
        self.rotation.store(Arc::new(Rotation {
            members,
            schedule,
            table,
        }));
        // After the store: a thread that sees the new version finds the new rotation.
        self.version.fetch_add(1, Ordering::Release);
        self.log_fallback(empty);
    }

    /// Logs the moment reads start or stop falling back to the primary, once each way.
    fn log_fallback(&self, empty: bool) {
        let replicas = self.replicas.load().len();
        if !self.separation() || replicas == 0 {
            return;
        }
        let was = self.falling_back.swap(empty, Ordering::AcqRel);
        if empty && !was {
            tracing::warn!(
                replicas,
                "no healthy read replicas available, falling back to primary"
            );
        } else if !empty && was {
            tracing::info!(
                in_rotation = self.rotation.load().members.len(),
                "read replicas available again, reads leave the primary"
            );
        }
    }

    fn replica(&self, name: &str) -> Result<Arc<Server>, Error> {
        self.replicas
            .load()
            .iter()
            .find(|s| &*s.name == name)
            .cloned()
            .ok_or_else(|| self.unknown_replica(name))
    }

    fn unknown_replica(&self, name: &str) -> Error {
        let known: Vec<String> = self
            .replicas
            .load()
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        ConfigError::invalid(
            "replica name",
            name,
            &format!("no replica of that name (replicas: {})", known.join(", ")),
        )
        .into()
    }

    /// Where `intent`'s work goes, the servers in `tried` having failed it: the registry's
    /// current state handed to [`route::decide`], replicas in service first in schedule order
    /// (the calling thread's next pick first), then those out of service.
    pub(super) fn route(
        &self,
        intent: RouteIntent,
        tried: &[Arc<Server>],
    ) -> Decision<Arc<Server>> {
        let was_tried = |s: &Arc<Server>| tried.iter().any(|t| Arc::ptr_eq(t, s));
        let separation = self.separation();
        let primary = self.primary();
        let ask = Ask {
            intent,
            separation,
            stale_reads_when_read_only: self.stale_reads,
            primary: primary.state(),
            primary_tried: was_tried(&primary),
            held_back: separation
                && intent.is_read()
                && tried.is_empty()
                && !route::rollout_admits(self.share.load(Ordering::Relaxed)),
            barrier: match intent.is_read() {
                true => self.barrier(),
                false => 0,
            },
        };
        // A replica last seen on another timeline than the primary's has forked from it,
        // whatever its state says until its next check.
        let timeline = primary.timeline();
        let seen = |server: Arc<Server>| {
            let state = match same_timeline(server.timeline(), timeline) {
                true => server.state(),
                false => server::State::Diverged,
            };
            let seen = Seen {
                state,
                position: server.position(),
                tried: was_tried(&server),
            };
            (server, seen)
        };
        // A plain read's first choice comes from this thread's snapshot of the rotation; the
        // rest is looked at only when that one will not do.
        let first = match (intent.role(), intent.min_position(), tried.is_empty()) {
            (Role::Read, None, true) if separation && !ask.held_back && ask.barrier == 0 => {
                self.pick_replica()
            }
            _ => None,
        };
        let rest = std::iter::once_with(|| {
            let rotation = self.rotation.load_full();
            let ticket = self.tickets.next();
            let in_rotation: Vec<Arc<Server>> = rotation
                .schedule
                .candidates(ticket)
                .map(|index| Arc::clone(&rotation.members[index].0))
                .collect();
            let out: Vec<Arc<Server>> = self
                .replicas
                .load()
                .iter()
                .filter(|s| s.weight() > 0 && !rotation.contains(s))
                .cloned()
                .collect();
            in_rotation.into_iter().chain(out)
        })
        .flatten();
        route::decide(ask, first.into_iter().chain(rest).map(seen))
    }

    /// Wakes the probes of the servers that could have done `intent`'s work, which was refused
    /// for want of them: the primary, and for a read the replicas out of service too.
    pub(super) fn wanted(&self, intent: RouteIntent) {
        self.primary().wanted.notify_one();
        if intent.is_read() {
            for replica in self.replicas.load().iter().filter(|s| !s.is_healthy()) {
                replica.wanted.notify_one();
            }
        }
    }

    /// Whether `server` is one of this registry's servers now (not removed).
    pub(super) fn owns(&self, server: &Arc<Server>) -> bool {
        Arc::ptr_eq(server, &self.primary())
            || self.replicas.load().iter().any(|s| Arc::ptr_eq(s, server))
    }

    /// Suspects `server` after a session on it was lost (`cause`): it stays in service while a
    /// probe on a fresh connection decides at once. Returns whether it was serving until now.
    pub(super) fn suspect(
        self: &Arc<Self>,
        server: &Arc<Server>,
        cause: &'static str,
        error: &dyn fmt::Display,
    ) -> bool {
        if !server.suspect() {
            return false;
        }
        crate::metrics::suspected(&server.name, cause);
        tracing::info!(
            server = %server.name,
            address = %server.address,
            cause,
            %error,
            "session lost; probing the server on a fresh connection"
        );
        probe::start(self, server, true);
        true
    }

    /// Takes `server` out of service at once because it gave no connection, without waiting
    /// for the next check; its probes put it back once one passes. Returns whether it was in
    /// service until now.
    pub(super) fn eject(
        self: &Arc<Self>,
        server: &Arc<Server>,
        cause: &'static str,
        error: &dyn fmt::Display,
    ) -> bool {
        let problem = format!("{cause}: {error}");
        let was_healthy = server.eject(problem);
        crate::metrics::ejected(server, cause);
        probe::start(self, server, false);
        if was_healthy {
            if server.is_primary() {
                tracing::error!(
                    server = %server.name,
                    address = %server.address,
                    cause,
                    %error,
                    "primary unreachable: writes fail fast with 503 until it passes a probe"
                );
            } else {
                tracing::warn!(
                    replica = %server.name,
                    address = %server.address,
                    cause,
                    %error,
                    "replica removed from rotation after a failed connection; reads go elsewhere"
                );
            }
            self.refresh_rotation();
            self.publish_metrics();
        }
        was_healthy
    }
}

/// Whether two timelines may be compared as one: equal, or either not known (0).
fn same_timeline(a: u32, b: u32) -> bool {
    a == b || a == 0 || b == 0
}

/// A snapshot of the registry's state, from [`Registry::status`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RegistryStatus {
    /// Whether reads go to replicas.
    pub separation: bool,
    /// `readReplicaShare`: the percentage of the reads that may go to a replica that do.
    pub read_replica_share: u8,
    /// `roles`: `observed` (the primary is whichever configured server answers as one) or
    /// `configured`.
    pub roles: &'static str,
    /// The configured server that takes the writes now: the configured primary's
    /// `host:port`, or the name of a replica that was promoted.
    pub primary_member: String,
    /// The primary.
    pub primary: ServerStatus,
    /// The replicas, in configuration order.
    pub replicas: Vec<ServerStatus>,
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
    /// The monitoring capabilities this role may use on it (`replay_position`,
    /// `system_identifier`, ...; see the README's "Where it runs"), `None` until found out.
    pub capabilities: Option<Vec<&'static str>>,
    /// The expected capabilities it lacks: what its checks do without.
    pub missing_capabilities: Vec<&'static str>,
    /// How its sessions are kept read-only: `read-write` (the primary), `startup option`,
    /// `SET after connect`, `read-only transaction per query` or `the standby's own read-only
    /// state` (see [`ReplicaReadOnly`](crate::ReplicaReadOnly)).
    pub read_only: &'static str,
}

impl ServerStatus {
    fn of(server: &Server, in_rotation: bool) -> ServerStatus {
        let size = server.pool.size();
        let idle = u32::try_from(server.pool.num_idle()).unwrap_or(u32::MAX);
        ServerStatus {
            name: server.name.to_string(),
            address: server.address.clone(),
            weight: server.weight(),
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
            capabilities: server
                .capabilities()
                .map(|c| c.offered().map(Capability::as_str).collect()),
            missing_capabilities: server
                .capabilities()
                .map(|c| c.missing().map(Capability::as_str).collect())
                .unwrap_or_default(),
            read_only: server.read_only_means(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

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

        // One registry alone, from the thread's snapshot.
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
