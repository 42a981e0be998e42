//! One database server: its pool, and its state as the checks, probes and failed connections
//! last left it, in atomics that the request path reads without locking.
//!
//! A server knows nothing of the registry that holds it. Its state is written by one piece of
//! the registry (`registry/control.rs`), which turns what the checks, probes and failed
//! connections found into these atomics, the rotation, the gauges and one log line.

mod idle;
mod load;
mod sessions;
mod state;
mod stream;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use self::idle::Doubt;
pub(crate) use self::load::Load;
pub(crate) use self::sessions::Sessions;
pub(crate) use self::state::State;
pub(crate) use self::stream::Stream;
use crate::clock::{from_unix_ms, ms_since, now_ms};
use crate::config::{Config, Member, PRIMARY_NAME, PoolConfig, ReplicaConfig, ReplicaReadOnly};
use crate::metrics::ServerMetrics;

/// Whether a server is the primary or a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Primary,
    Replica,
}

/// Which cluster a server belongs to and which timeline it is on, as a check saw them; 0
/// for what could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) system_id: u64,
    pub(crate) timeline: u32,
}

/// A server, its pool and its last known state.
///
/// Aligned to 128 bytes (two cache lines, as the ticket counters are) so that in its `Arc` the
/// reference counts, which every request changes from whichever core serves it, share no cache
/// line with the fields every request reads.
#[repr(align(128))]
pub(crate) struct Server {
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    /// The configured server this is (a replica's name; the configured primary's
    /// `host:port`): for the primary, the member that answers as the primary now.
    pub(crate) member: Arc<str>,
    pub(crate) address: String,
    /// The replica group it serves (`None`: plain reads; always for the primary).
    pub(crate) group: Option<Arc<str>>,
    pub(crate) pool: PgPool,
    pub(crate) header_value: Option<HeaderValue>,
    /// The connection settings as configured, without what makes a session read-only.
    pub(crate) options: PgConnectOptions,
    pub(crate) sessions: Sessions,
    /// When its open connections were last doubted (a replica's pool pings those).
    doubt: Doubt,
    pub(super) max_idle: Option<u32>,
    weight: AtomicU32,
    /// A [`State`].
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    /// Set when the primary moved away from this server: work waiting for one of its
    /// connections goes to the new primary.
    retired: AtomicBool,
    /// Woken when work was refused because this server is out of service, or got a connection
    /// from it while it was out: whoever probes it then probes without waiting out a backoff.
    pub(crate) wanted: tokio::sync::Notify,
    /// Woken when the server leaves service, so reads waiting on its pool move on at once.
    pub(crate) left: tokio::sync::Notify,
    /// Woken when the server comes back into service, for work waiting on its probe.
    pub(crate) back: tokio::sync::Notify,
    /// Replication lag in microseconds (`u64::MAX`: unknown).
    lag_micros: AtomicU64,
    /// Replication lag in bytes (`u64::MAX`: unknown).
    lag_bytes: AtomicU64,
    /// The WAL position this server has replayed (replicas) or written (primary), in bytes
    /// since `0/0`; 0 until known. Compared with consistency tokens on the request path.
    position: AtomicU64,
    /// The timeline it was last seen on (a primary's WAL timeline, what a standby receives or
    /// has replayed); 0 until known.
    timeline: AtomicU32,
    /// `pg_control_system().system_identifier`; 0 until known.
    system_id: AtomicU64,
    /// The timeline it was last seen following as a standby (0: never seen so).
    followed: AtomicU32,
    /// What this role may ask the server, as `health::Capabilities` stores it; 0 until found.
    capabilities: AtomicU32,
    /// When the server was built: the origin of `served_ms`.
    born: Instant,
    /// Milliseconds since `born` (plus one, so that 0 means none yet) when the server last gave
    /// the application a connection: a server answering work is not taken out for one slow
    /// check. Monotonic, so that the request path reuses the clock read it makes anyway.
    served_ms: AtomicU64,
    /// When work waiting for a new connection last asked whether the server refuses
    /// connections, and when it last did (ms since the Unix epoch; 0: never).
    reach_checked_ms: AtomicU64,
    refused_ms: AtomicU64,
    /// When the last check finished, and the last one that passed (ms; 0: none yet).
    last_check_ms: AtomicU64,
    last_ok_ms: AtomicU64,
    /// Its per-request and pool metrics, registered on first use.
    pub(crate) metrics: ServerMetrics,
    /// The name it streams WAL under, and what the primary last said of it.
    pub(crate) stream: Stream,
    /// Its work in progress and latency, for the load-aware strategies.
    pub(crate) load: Load,
}

impl Server {
    fn new(
        name: &str,
        member: &str,
        kind: Kind,
        options: PgConnectOptions,
        pool_config: &PoolConfig,
        replica: Option<&ReplicaConfig>,
        read_only: Option<ReplicaReadOnly>,
    ) -> Arc<Server> {
        let weight = replica.map_or(0, |r| r.weight);
        let sessions = Sessions::new(read_only);
        let born = Instant::now();
        let doubt = Doubt::new(born);
        let mut pool_options = sessions.hook(
            PgPoolOptions::new()
                .max_connections(pool_config.max_connections)
                .acquire_timeout(pool_config.connect_timeout)
                .max_lifetime(pool_config.max_lifetime)
                .idle_timeout(pool_config.idle_timeout),
        );
        if kind == Kind::Replica {
            pool_options = doubt.hook(pool_options);
        }
        let unknown_lag = if kind == Kind::Primary { 0 } else { u64::MAX };
        Arc::new(Server {
            name: Arc::from(name),
            member: Arc::from(member),
            kind,
            address: format!("{}:{}", options.get_host(), options.get_port()),
            group: replica.and_then(|r| r.get_group()).map(Arc::from),
            pool: pool_options.connect_lazy_with(sessions.connect_options(&options)),
            header_value: HeaderValue::from_str(name).ok(),
            options,
            sessions,
            doubt,
            max_idle: pool_config.max_idle,
            weight: AtomicU32::new(weight),
            // Until checked, a server counts as serving: `Registry::connect` checks before it
            // returns, and a failed first check is logged as the server leaving.
            state: AtomicU8::new(State::Serving as u8),
            last_error: Mutex::new(None),
            retired: AtomicBool::new(false),
            wanted: tokio::sync::Notify::new(),
            left: tokio::sync::Notify::new(),
            back: tokio::sync::Notify::new(),
            stream: Stream::default(),
            load: Load::default(),
            lag_micros: AtomicU64::new(unknown_lag),
            lag_bytes: AtomicU64::new(unknown_lag),
            position: AtomicU64::new(0),
            timeline: AtomicU32::new(0),
            system_id: AtomicU64::new(0),
            followed: AtomicU32::new(0),
            capabilities: AtomicU32::new(0),
            born,
            served_ms: AtomicU64::new(0),
            reach_checked_ms: AtomicU64::new(0),
            refused_ms: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            last_ok_ms: AtomicU64::new(0),
            metrics: ServerMetrics::new(name),
        })
    }

    /// The primary as `config` describes it, on the configured server `member`: read-write
    /// sessions with the primary's credentials and settings at the member's address.
    pub(crate) fn primary(config: &Config, member: &Member) -> Arc<Server> {
        Server::new(
            PRIMARY_NAME,
            &member.name,
            Kind::Primary,
            config.primary_options_at(member),
            &config.primary.pool,
            None,
            None,
        )
    }

    /// The replica `replica` as `config` describes it (read-only sessions, its pool, weight).
    pub(crate) fn replica(config: &Config, replica: &ReplicaConfig) -> Arc<Server> {
        let means = config.replica_read_only;
        let server = Server::new(
            &replica.name,
            &replica.name,
            Kind::Replica,
            config.replica_options(replica),
            &config.replica_pool(replica),
            Some(replica),
            Some(means),
        );
        if !matches!(
            means,
            ReplicaReadOnly::Auto | ReplicaReadOnly::StartupOption
        ) {
            tracing::info!(
                replica = %replica.name,
                means = server.sessions.means(),
                "replica sessions kept read-only as db.replicaReadOnly sets"
            );
        }
        server
    }

    /// The connection settings a new session with this server uses (the checker's too).
    pub(crate) fn connect_options(&self) -> PgConnectOptions {
        self.sessions.connect_options(&self.options)
    }

    /// Whether a `DbRead`'s query on this server must run in a read-only transaction: on the
    /// primary, and on a replica whose sessions are not read-only by themselves.
    pub(crate) fn reads_in_read_only_transaction(&self) -> bool {
        self.sessions.need_transaction()
    }

    /// After `error` opening a connection: when it is the startup option refused (a pooler in
    /// front) and the means was left to rwsplit, switches this server's sessions to a `SET`
    /// after connect and says so once. Returns whether it switched.
    pub(crate) fn startup_option_refused(&self, error: &sqlx::Error) -> bool {
        let switched = self.sessions.startup_option_refused(error);
        if switched {
            self.pool.set_connect_options(self.options.clone());
            tracing::warn!(
                replica = %self.name,
                address = %self.address,
                means = Sessions::SWITCHED,
                "the server (or a pooler in front of it) refuses the `options` startup parameter: \
                 replica sessions are made read-only by `SET default_transaction_read_only = on` \
                 after connect. Behind transaction pooling set db.replicaReadOnly to transaction \
                 or standby"
            );
        }
        switched
    }

    /// Whether this server's pool was made from these connection settings and limits.
    pub(crate) fn same_settings(
        &self,
        options: &PgConnectOptions,
        pool: &PoolConfig,
        read_only: Option<ReplicaReadOnly>,
    ) -> bool {
        if self.sessions.setting() != read_only {
            return false;
        }
        let made = self.pool.options();
        // Compared through `Debug`, which PgConnectOptions has and PartialEq it has not; the
        // text is never shown.
        format!("{:?}", self.options) == format!("{options:?}")
            && made.get_max_connections() == pool.max_connections
            && made.get_acquire_timeout() == pool.connect_timeout
            && made.get_max_lifetime() == pool.max_lifetime
            && made.get_idle_timeout() == pool.idle_timeout
            && self.max_idle == pool.max_idle
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.kind == Kind::Primary
    }

    /// Whether the server is in service (serving, or suspected while a probe decides).
    pub(crate) fn is_healthy(&self) -> bool {
        self.state().in_service()
    }

    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Sets where the server stands, with why it cannot serve (none when it can), releasing
    /// the reads waiting on its pool when it leaves service. Returns the state before.
    /// `registry/control.rs` is its one caller.
    pub(crate) fn set_state(&self, state: State, problem: Option<String>) -> State {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = problem;
        let was = State::from_u8(self.state.swap(state as u8, Ordering::AcqRel));
        if was.in_service() != state.in_service() {
            self.doubt.raise();
        }
        if !state.in_service() {
            self.left.notify_waiters();
        } else if !was.in_service() {
            self.back.notify_waiters();
        }
        was
    }

    /// Marks a serving server suspect; returns whether it was serving. `registry/control.rs`
    /// is its one caller.
    pub(crate) fn set_suspect(&self) -> bool {
        // A lost session may be a connection that died idle: its siblings may have too.
        self.doubt.raise();
        self.state
            .compare_exchange(
                State::Serving as u8,
                State::Suspect as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Marks the server as no longer the primary, and wakes the work waiting for its
    /// connections.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.left.notify_waiters();
    }

    /// Whether the primary moved away from this server.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets the weight; returns the one before. `registry/control.rs` is its one caller.
    pub(crate) fn set_weight(&self, weight: u32) -> u32 {
        self.weight.swap(weight, Ordering::Relaxed)
    }

    /// Records when a check finished, whether it passed, and the lag it found.
    pub(crate) fn set_checked(&self, passed: bool, lag: Option<(Duration, Option<u64>)>) {
        let now = now_ms();
        self.last_check_ms.store(now, Ordering::Relaxed);
        if passed {
            self.last_ok_ms.store(now, Ordering::Relaxed);
        }
        let (micros, bytes) = match lag {
            Some((time, bytes)) => (
                u64::try_from(time.as_micros()).unwrap_or(u64::MAX),
                bytes.unwrap_or(u64::MAX),
            ),
            None => (u64::MAX, u64::MAX),
        };
        self.lag_micros.store(micros, Ordering::Relaxed);
        self.lag_bytes.store(bytes, Ordering::Relaxed);
    }

    /// How long the pool waits for a connection.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.pool.options().get_acquire_timeout()
    }

    pub(crate) fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    pub(crate) fn set_position(&self, position: u64) {
        self.position.store(position, Ordering::Release);
    }

    /// Raises the known position to `position` (a replica's replay only moves forward).
    pub(crate) fn advance_position(&self, position: u64) {
        self.position.fetch_max(position, Ordering::AcqRel);
    }

    /// The timeline it was last seen on (0: unknown).
    pub(crate) fn timeline(&self) -> u32 {
        self.timeline.load(Ordering::Acquire)
    }

    /// Its system identifier (0: unknown).
    pub(crate) fn system_id(&self) -> u64 {
        self.system_id.load(Ordering::Acquire)
    }

    /// The cluster and timeline it was last seen on.
    pub(crate) fn identity(&self) -> Identity {
        Identity {
            system_id: self.system_id(),
            timeline: self.timeline(),
        }
    }

    /// The timeline it was last seen following as a standby (0: never seen so).
    pub(crate) fn followed(&self) -> u32 {
        self.followed.load(Ordering::Acquire)
    }

    /// Records the identity a check saw (unknown parts keep what was known); `standby`: it
    /// answered in recovery.
    pub(crate) fn set_identity(&self, identity: Identity, standby: bool) {
        if standby && identity.timeline != 0 {
            self.followed.store(identity.timeline, Ordering::Release);
        }
        if identity.system_id != 0 {
            self.system_id.store(identity.system_id, Ordering::Release);
        }
        if identity.timeline != 0 {
            self.timeline.store(identity.timeline, Ordering::Release);
        }
    }

    /// What this role may ask the server, as `health::Capabilities` stores it (0: not found
    /// out yet).
    pub(crate) fn capabilities_stored(&self) -> u32 {
        self.capabilities.load(Ordering::Acquire)
    }

    /// Records what this role may ask the server. Returns whether that changed.
    pub(crate) fn set_capabilities_stored(&self, stored: u32) -> bool {
        self.capabilities.swap(stored, Ordering::AcqRel) != stored
    }

    /// Records that the server gave the application a connection at `now`.
    #[inline]
    pub(crate) fn served(&self, now: Instant) {
        let at = self.since_born(now);
        // Written at most once a millisecond: every request's checkout passes here, and a
        // store on each would bounce the cache line between cores.
        if self.served_ms.load(Ordering::Relaxed) != at {
            self.served_ms.store(at, Ordering::Relaxed);
        }
    }

    /// `now` in milliseconds since the server was built, plus one.
    fn since_born(&self, now: Instant) -> u64 {
        ms_since(self.born, now)
    }

    /// Whether the server is in service and answered the application within the last
    /// `window`: then a check, probe or new connection that got no answer in time says it is
    /// busy, not that it is gone.
    pub(crate) fn answered_within(&self, window: Duration) -> bool {
        let served = self.served_ms.load(Ordering::Relaxed);
        let now = self.since_born(Instant::now());
        self.is_healthy() && served != 0 && now.saturating_sub(served) <= window.as_millis() as u64
    }

    /// Claims the right to ask whether the server refuses connections: at most once a second,
    /// however much work waits for it.
    pub(crate) fn claim_reach_check(&self) -> bool {
        let now = now_ms();
        let last = self.reach_checked_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1_000
            && self
                .reach_checked_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Records that the server refused a connection just now.
    pub(crate) fn note_refusal(&self) {
        self.refused_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the server refused a connection within the last second.
    pub(crate) fn refused_recently(&self) -> bool {
        let at = self.refused_ms.load(Ordering::Relaxed);
        at != 0 && now_ms().saturating_sub(at) < 1_000
    }

    pub(crate) fn lag(&self) -> Option<Duration> {
        match self.lag_micros.load(Ordering::Relaxed) {
            u64::MAX => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    pub(crate) fn lag_bytes(&self) -> Option<u64> {
        match self.lag_bytes.load(Ordering::Relaxed) {
            u64::MAX => None,
            bytes => Some(bytes),
        }
    }

    pub(crate) fn last_check(&self) -> Option<SystemTime> {
        from_unix_ms(self.last_check_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn last_success(&self) -> Option<SystemTime> {
        from_unix_ms(self.last_ok_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl fmt::Debug for Server {
    // The pool and connect options are left out: sqlx's `Debug` for them shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("member", &self.member)
            .field("state", &self.state())
            .field("timeline", &self.timeline())
            .field("weight", &self.weight())
            .finish()
    }
}
