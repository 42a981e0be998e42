//! One database server: its pool, and its state as the checks, probes and failed connections
//! last left it, in atomics that the request path reads without locking.

use std::fmt;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::Shared;
use super::capabilities::Capabilities;
use super::lag::Lag;
use crate::config::{Config, Member, PRIMARY_NAME, PoolConfig, ReplicaConfig, ReplicaReadOnly};
use crate::consistency::unix_ms;
use crate::metrics::RouteTable;

/// Whether a server is the primary or a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Primary,
    Replica,
}

/// Where a server stands. `Serving` and `Suspect` are in service; the others are out of it,
/// each for its own reason, and re-probed on a short backoff until they pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// In service.
    Serving = 0,
    /// In service, but a session on it was lost: a probe on a fresh connection decides.
    Suspect = 1,
    /// Out: it gives no connections, or its checks get no answer.
    Unreachable = 2,
    /// Out: a replica lagging past a threshold.
    Lagging = 3,
    /// Out: a primary in recovery, or a replica that is not a standby.
    WrongRole = 4,
    /// Out: a replica of another cluster (system identifier) or on another timeline than the
    /// primary: its data has forked from the primary's, whatever its position says.
    Diverged = 5,
}

impl State {
    fn from_u8(value: u8) -> State {
        match value {
            0 => State::Serving,
            1 => State::Suspect,
            2 => State::Unreachable,
            3 => State::Lagging,
            4 => State::WrongRole,
            _ => State::Diverged,
        }
    }

    /// Whether work may be sent to a server in this state.
    pub(crate) fn in_service(self) -> bool {
        matches!(self, State::Serving | State::Suspect)
    }

    /// Whether work that only this server can do waits for one of its connections, as it would
    /// on a plain pool: in service, or out only for being unreachable (it may be restarting).
    /// A server out for its role or its timeline refuses such work at once.
    pub(crate) fn awaited(self) -> bool {
        self.in_service() || self == State::Unreachable
    }

    /// The state as a lowercase label, for logs, metrics and the status endpoint.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Serving => "serving",
            State::Suspect => "suspect",
            State::Unreachable => "unreachable",
            State::Lagging => "lagging",
            State::WrongRole => "wrong_role",
            State::Diverged => "diverged",
        }
    }
}

/// A server, its pool and its last known state.
pub(crate) struct Server {
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    /// The configured server this is (a replica's name; the configured primary's
    /// `host:port`): for the primary, the member that answers as the primary now.
    pub(crate) member: Arc<str>,
    pub(crate) address: String,
    pub(crate) pool: PgPool,
    pub(crate) header_value: Option<HeaderValue>,
    /// The connection settings as configured, without what makes a session read-only.
    pub(crate) options: PgConnectOptions,
    /// How its sessions are read-only, as configured (`None`: the primary's are not).
    read_only_setting: Option<ReplicaReadOnly>,
    /// How they are now: a [`Sessions`], shared with the pool's connect hook.
    sessions: Arc<AtomicU8>,
    max_idle: Option<u32>,
    pub(crate) weight: AtomicU32,
    /// A [`State`].
    state: AtomicU8,
    /// Whether a probe task is running for this server (at most one is).
    probing: AtomicBool,
    /// Set when the primary moved away from this server: work waiting for one of its
    /// connections goes to the new primary.
    retired: AtomicBool,
    /// Woken when work was refused because this server is out of service: its probe task
    /// then probes without waiting out its backoff (see `probe`).
    pub(crate) wanted: tokio::sync::Notify,
    /// Set when the server was taken out of service after a failed connection: its next check
    /// must open a new connection, so that it returns only when it accepts new connections
    /// again (the checker's old connection may still work on a server that accepts no more).
    pub(crate) fresh_check: AtomicBool,
    /// Woken when the server leaves service, so reads waiting on its pool move on at once.
    pub(crate) left: tokio::sync::Notify,
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
    /// What this role may ask the server (see [`Capabilities`]); 0 until found out.
    capabilities: AtomicU32,
    /// Milliseconds since the Unix epoch when a query of the application last completed on
    /// this server (0: none yet): a server answering work is not taken out for one slow check.
    served_ms: AtomicU64,
    /// Milliseconds since the Unix epoch when work waiting for a new connection last asked
    /// whether the server refuses connections (0: never), and when it last did (0: never).
    reach_checked_ms: AtomicU64,
    refused_ms: AtomicU64,
    /// Milliseconds since the Unix epoch of the last finished check (0: none yet).
    last_check_ms: AtomicU64,
    /// Milliseconds since the Unix epoch of the last successful check (0: none yet).
    last_ok_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The health checker's own connection, so checks never wait behind application traffic.
    pub(crate) check_conn: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
    /// This server's per-request metrics, by route.
    pub(crate) routes: RouteTable,
    /// `rwsplit_pool_acquire_duration_seconds` for this server, registered on first use.
    pub(crate) acquire_duration: OnceLock<metrics::Histogram>,
    /// The registry that owns this server, for targets that fail over; set once when the
    /// server joins it. Weak: a server never keeps its registry alive.
    registry: OnceLock<Weak<Shared>>,
}

/// How a server's sessions are read-only now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Sessions {
    /// Read-write: the primary's.
    ReadWrite = 0,
    /// `default_transaction_read_only` as a startup option.
    StartupOption = 1,
    /// `SET default_transaction_read_only = on` after connect.
    SessionSet = 2,
    /// Each `DbRead` query in `BEGIN READ ONLY`.
    Transaction = 3,
    /// The standby's own.
    Standby = 4,
}

impl Sessions {
    fn of(setting: Option<ReplicaReadOnly>) -> Sessions {
        match setting {
            None => Sessions::ReadWrite,
            Some(ReplicaReadOnly::SessionSet) => Sessions::SessionSet,
            Some(ReplicaReadOnly::Transaction) => Sessions::Transaction,
            Some(ReplicaReadOnly::Standby) => Sessions::Standby,
            Some(_) => Sessions::StartupOption,
        }
    }

    fn load(cell: &AtomicU8) -> Sessions {
        match cell.load(Ordering::Acquire) {
            1 => Sessions::StartupOption,
            2 => Sessions::SessionSet,
            3 => Sessions::Transaction,
            4 => Sessions::Standby,
            _ => Sessions::ReadWrite,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Sessions::ReadWrite => "read-write",
            Sessions::StartupOption => "startup option",
            Sessions::SessionSet => "SET after connect",
            Sessions::Transaction => "read-only transaction per query",
            Sessions::Standby => "the standby's own read-only state",
        }
    }
}

/// `options` as a session of this kind connects: with the startup option, or as they are.
fn session_options(options: &PgConnectOptions, sessions: Sessions) -> PgConnectOptions {
    match sessions {
        Sessions::StartupOption => options
            .clone()
            .options([("default_transaction_read_only", "on")]),
        _ => options.clone(),
    }
}

/// Whether `error`, from opening a connection, is a pooler or proxy refusing the `options`
/// startup parameter (PgBouncer: `unsupported startup parameter: options`).
pub(crate) fn refuses_startup_option(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let message = db.message();
            message.contains("options")
                && (message.contains("startup parameter") || db.code().as_deref() == Some("08P01"))
        }
        _ => false,
    }
}

impl Server {
    pub(crate) fn new(
        name: &str,
        member: &str,
        kind: Kind,
        options: PgConnectOptions,
        pool_config: &PoolConfig,
        weight: u32,
        read_only: Option<ReplicaReadOnly>,
    ) -> Arc<Server> {
        let initial = Sessions::of(read_only);
        let sessions = Arc::new(AtomicU8::new(initial as u8));
        let hook = Arc::clone(&sessions);
        let pool_options = PgPoolOptions::new()
            .max_connections(pool_config.max_connections)
            .acquire_timeout(pool_config.connect_timeout)
            .max_lifetime(pool_config.max_lifetime)
            .idle_timeout(pool_config.idle_timeout)
            .after_connect(move |conn, _| {
                let set = Sessions::load(&hook) == Sessions::SessionSet;
                Box::pin(async move {
                    if set {
                        sqlx::raw_sql("SET default_transaction_read_only = on")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        Arc::new(Server {
            name: Arc::from(name),
            member: Arc::from(member),
            kind,
            address: format!("{}:{}", options.get_host(), options.get_port()),
            pool: pool_options.connect_lazy_with(session_options(&options, initial)),
            header_value: HeaderValue::from_str(name).ok(),
            options,
            read_only_setting: read_only,
            sessions,
            max_idle: pool_config.max_idle,
            weight: AtomicU32::new(weight),
            // Until checked, a server counts as serving: `Registry::connect` checks before it
            // returns, and a failed first check is logged as the server leaving.
            state: AtomicU8::new(State::Serving as u8),
            probing: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            wanted: tokio::sync::Notify::new(),
            fresh_check: AtomicBool::new(false),
            left: tokio::sync::Notify::new(),
            lag_micros: AtomicU64::new(if kind == Kind::Primary { 0 } else { u64::MAX }),
            lag_bytes: AtomicU64::new(if kind == Kind::Primary { 0 } else { u64::MAX }),
            position: AtomicU64::new(0),
            timeline: AtomicU32::new(0),
            system_id: AtomicU64::new(0),
            capabilities: AtomicU32::new(0),
            served_ms: AtomicU64::new(0),
            reach_checked_ms: AtomicU64::new(0),
            refused_ms: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            last_ok_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            check_conn: tokio::sync::Mutex::new(None),
            routes: RouteTable::default(),
            acquire_duration: OnceLock::new(),
            registry: OnceLock::new(),
        })
    }

    /// The primary as `config` describes it, on the configured server `member`: read-write
    /// sessions with the primary's credentials at the member's address, the primary's pool.
    pub(crate) fn primary(config: &Config, member: &Member) -> Arc<Server> {
        Server::new(
            PRIMARY_NAME,
            &member.name,
            Kind::Primary,
            config.primary_options_at(member),
            &config.primary.pool,
            0,
            None,
        )
    }

    /// The replica `replica` as `config` describes it (read-only sessions, its pool, weight).
    pub(crate) fn replica(config: &Config, replica: &ReplicaConfig) -> Arc<Server> {
        let means = config.replica_read_only;
        if !matches!(
            means,
            ReplicaReadOnly::Auto | ReplicaReadOnly::StartupOption
        ) {
            tracing::info!(
                replica = %replica.name,
                means = Sessions::of(Some(means)).as_str(),
                "replica sessions kept read-only as db.replicaReadOnly sets"
            );
        }
        Server::new(
            &replica.name,
            &replica.name,
            Kind::Replica,
            config.replica_options(replica),
            &config.replica_pool(replica),
            replica.weight,
            Some(config.replica_read_only),
        )
    }

    /// The connection settings a new session with this server uses (the checker's too).
    pub(crate) fn connect_options(&self) -> PgConnectOptions {
        session_options(&self.options, Sessions::load(&self.sessions))
    }

    /// Whether a `DbRead`'s query on this server must run in a read-only transaction: on the
    /// primary, and on a replica whose sessions are not read-only by themselves.
    pub(crate) fn reads_in_read_only_transaction(&self) -> bool {
        matches!(
            Sessions::load(&self.sessions),
            Sessions::ReadWrite | Sessions::Transaction
        )
    }

    /// After `error` opening a connection: when it is the startup option refused (a pooler in
    /// front) and the means was left to rwsplit, switches this server's sessions to a `SET`
    /// after connect and says so once. Returns whether it switched (a new connection may now
    /// succeed).
    pub(crate) fn startup_option_refused(&self, error: &sqlx::Error) -> bool {
        if self.read_only_setting != Some(ReplicaReadOnly::Auto) || !refuses_startup_option(error) {
            return false;
        }
        let switched = self
            .sessions
            .compare_exchange(
                Sessions::StartupOption as u8,
                Sessions::SessionSet as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if switched {
            self.pool.set_connect_options(self.options.clone());
            tracing::warn!(
                replica = %self.name,
                address = %self.address,
                means = Sessions::SessionSet.as_str(),
                "the server (or a pooler in front of it) refuses the `options` startup parameter: \
                 replica sessions are made read-only by `SET default_transaction_read_only = on` \
                 after connect. Behind transaction pooling set db.replicaReadOnly to transaction \
                 or standby"
            );
        }
        switched
    }

    /// How its sessions are read-only now, for the status endpoint.
    pub(crate) fn read_only_means(&self) -> &'static str {
        Sessions::load(&self.sessions).as_str()
    }

    /// Whether this server's pool was made from these connection settings and limits.
    pub(crate) fn same_settings(
        &self,
        options: &sqlx::postgres::PgConnectOptions,
        pool: &PoolConfig,
        read_only: Option<ReplicaReadOnly>,
    ) -> bool {
        if self.read_only_setting != read_only {
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

    /// Records the registry this server belongs to (once).
    pub(crate) fn join(&self, registry: &Arc<Shared>) {
        let _ = self.registry.set(Arc::downgrade(registry));
    }

    /// The registry this server belongs to, while any handle to it exists.
    pub(crate) fn registry(&self) -> Option<Arc<Shared>> {
        self.registry.get()?.upgrade()
    }

    /// Closes idle connections beyond `maxIdleConns`. Run by the health loop: sqlx has no
    /// idle cap of its own, and a cap checked when connections are returned would race with
    /// other returns in flight.
    pub(crate) async fn trim_idle(&self) {
        let Some(max_idle) = self.max_idle else {
            return;
        };
        while self.pool.num_idle() > max_idle as usize {
            let Some(conn) = self.pool.try_acquire() else {
                break;
            };
            let _ = conn.close().await;
        }
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

    /// Marks a serving server suspect. Returns whether it was serving (and so whether a probe
    /// is due).
    pub(crate) fn suspect(&self) -> bool {
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

    /// Claims the right to run this server's probe task; `false` when one is running.
    pub(crate) fn claim_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// Ends this server's probe task, so that another may start.
    pub(crate) fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Records what a check or a probe found: `problem` is why the server cannot serve, with
    /// the state that puts it in (none when it can), `lag` its replication lag (none when
    /// unknown). Returns whether it is in service when that changed.
    pub(crate) fn record(
        &self,
        problem: Option<(State, String)>,
        lag: Option<Lag>,
    ) -> Option<bool> {
        let now = unix_ms(SystemTime::now());
        self.last_check_ms.store(now, Ordering::Relaxed);
        let (micros, bytes) = match lag {
            Some(lag) => (
                u64::try_from(lag.time.as_micros()).unwrap_or(u64::MAX),
                lag.bytes.unwrap_or(u64::MAX),
            ),
            None => (u64::MAX, u64::MAX),
        };
        self.lag_micros.store(micros, Ordering::Relaxed);
        self.lag_bytes.store(bytes, Ordering::Relaxed);
        if problem.is_none() {
            self.last_ok_ms.store(now, Ordering::Relaxed);
        }
        let healthy = problem.is_none();
        (self.set_problem(problem) != healthy).then_some(healthy)
    }

    /// Takes the server out of service because using it failed (passive ejection), until a
    /// probe or a check passes. Returns whether it was in service.
    pub(crate) fn eject(&self, problem: String) -> bool {
        self.fresh_check.store(true, Ordering::Release);
        self.set_problem(Some((State::Unreachable, problem)))
    }

    /// Sets why the server cannot serve (serving when nothing), releasing the reads waiting on
    /// its pool when it leaves service. Returns whether it was in service before.
    fn set_problem(&self, problem: Option<(State, String)>) -> bool {
        let (state, text) = match problem {
            Some((state, text)) => (state, Some(text)),
            None => (State::Serving, None),
        };
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = text;
        let was = State::from_u8(self.state.swap(state as u8, Ordering::AcqRel));
        if !state.in_service() {
            self.left.notify_waiters();
        }
        was.in_service()
    }

    /// The most connections the pool may open.
    pub(crate) fn max_connections(&self) -> u32 {
        self.pool.options().get_max_connections()
    }

    /// Whether the pool has opened all the connections it may.
    pub(crate) fn full(&self) -> bool {
        self.pool.size() >= self.max_connections()
    }

    /// Whether the pool has no connection to give without waiting: all open, none idle.
    pub(crate) fn exhausted(&self) -> bool {
        self.full() && self.pool.num_idle() == 0
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

    /// Records the identity a check saw (unknown parts keep what was known).
    pub(crate) fn set_identity(&self, identity: Identity) {
        if identity.system_id != 0 {
            self.system_id.store(identity.system_id, Ordering::Release);
        }
        if identity.timeline != 0 {
            self.timeline.store(identity.timeline, Ordering::Release);
        }
    }

    /// What this role may ask the server, once found out.
    pub(crate) fn capabilities(&self) -> Option<Capabilities> {
        Capabilities::from_stored(self.capabilities.load(Ordering::Acquire))
    }

    /// Records what this role may ask the server. Returns whether that changed.
    pub(crate) fn set_capabilities(&self, capabilities: Capabilities) -> bool {
        let stored = capabilities.to_stored();
        self.capabilities.swap(stored, Ordering::AcqRel) != stored
    }

    /// Records that a query of the application completed on this server just now.
    #[inline]
    pub(crate) fn served(&self) {
        let now = unix_ms(SystemTime::now());
        // Written at most once a millisecond: every request's checkout passes here, and a
        // store on each would bounce the cache line between cores.
        if self.served_ms.load(Ordering::Relaxed) != now {
            self.served_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Claims the right to ask whether the server refuses connections: at most once a second,
    /// however much work waits for it.
    pub(crate) fn claim_reach_check(&self) -> bool {
        let now = unix_ms(SystemTime::now());
        let last = self.reach_checked_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1_000
            && self
                .reach_checked_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Records that the server refused a connection just now.
    pub(crate) fn note_refusal(&self) {
        self.refused_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// Whether the server refused a connection within the last second.
    pub(crate) fn refused_recently(&self) -> bool {
        let at = self.refused_ms.load(Ordering::Relaxed);
        at != 0 && unix_ms(SystemTime::now()).saturating_sub(at) < 1_000
    }

    /// Whether the server is in service and answered the application within the last
    /// `window`: then a check, probe or new connection that got no answer in time says it is
    /// busy, not that it is gone.
    pub(crate) fn answered_within(&self, window: Duration) -> bool {
        let since = unix_ms(SystemTime::now()).saturating_sub(window.as_millis() as u64);
        self.is_healthy() && self.served_ms.load(Ordering::Relaxed) >= since
    }

    /// How long the pool waits for a connection.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.pool.options().get_acquire_timeout()
    }

    /// Takes the server out of service as `state` with `problem` (a replica found diverged
    /// without a check of its own). Returns whether it was in service.
    pub(crate) fn take_out(&self, state: State, problem: String) -> bool {
        self.set_problem(Some((state, problem)))
    }

    pub(crate) fn lag(&self) -> Option<Duration> {
        match self.lag_micros.load(Ordering::Relaxed) {
            u64::MAX => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// The lag last recorded, as a check records it.
    pub(crate) fn known_lag(&self) -> Option<Lag> {
        self.lag().map(|time| Lag {
            time,
            bytes: self.lag_bytes(),
        })
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

/// Which cluster a server belongs to and which timeline it is on, as a check saw them; 0
/// for what could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) system_id: u64,
    pub(crate) timeline: u32,
}

fn from_unix_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}
