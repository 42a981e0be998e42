//! [`Db`]: the one handle to a chosen server, read-only ([`DbRead`]) or read-write
//! ([`DbWrite`]). The extractors hand them to handlers; [`Registry::read`](crate::Registry::read)
//! and [`Registry::write`](crate::Registry::write) hand them to jobs and CLIs.
//!
//! Both have the same methods ([`name`](Db::name), [`is_primary`](Db::is_primary),
//! [`intent`](Db::intent), [`acquire`](Db::acquire), [`begin`](Db::begin)) and both run sqlx
//! queries directly (`fetch_one(&db)`), with failover for reads.
//!
//! A [`DbRead`] is read-only wherever it runs: on a replica (its sessions are opened with
//! `default_transaction_read_only = on`) and on the primary (each query runs in a
//! `BEGIN READ ONLY` transaction, which costs one round trip). So a handler that writes
//! through it by mistake fails the same way in development, with separation disabled, during
//! a fallback and in production: with [`DbErrorKind::WriteThroughRead`](crate::DbErrorKind),
//! a 500.
//!
//! ```
//! use rwsplit::{Config, DbRead, DbWrite, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rwsplit::Error> {
//! let registry = Registry::connect_lazy(Config::new("127.0.0.1"))?;
//! let read: DbRead = registry.read();
//! let write: DbWrite = registry.write();
//! assert!(read.is_primary() && write.is_primary()); // separation is off by default
//! // One snapshot for several reads, on whatever server the read got:
//! // let mut tx = read.begin().await?;   // REPEATABLE READ, READ ONLY
//! // A read-write transaction, always on the primary:
//! // let mut tx = write.begin().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres, SqlSafeStr, Transaction};

use super::attempt::Attempts;
use super::target::Target;
use crate::consistency::ConsistencyToken;
use crate::registry::Registry;
use crate::route::{Reason, RouteIntent};

/// The statement that runs a [`DbRead`]'s query, or hands out its connection, on the primary.
pub(crate) const BEGIN_READ_ONLY: &str = "BEGIN READ ONLY";

/// The statement that starts a [`DbRead`]'s transactions: one snapshot for all their reads
/// (allowed on a hot standby, unlike `SERIALIZABLE`).
const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// What a [`Db`] handle may do: [`ReadOnly`] ([`DbRead`]) or [`ReadWrite`] ([`DbWrite`]).
pub trait Access: Send + Sync + 'static {
    /// Whether the handle's work is read-only.
    #[doc(hidden)]
    const READ_ONLY: bool;
}

/// The [`Access`] of a [`DbRead`]: every query, connection and transaction is read-only.
#[derive(Debug)]
pub enum ReadOnly {}

/// The [`Access`] of a [`DbWrite`]: the primary, read-write.
#[derive(Debug)]
pub enum ReadWrite {}

impl Access for ReadOnly {
    const READ_ONLY: bool = true;
}

impl Access for ReadWrite {
    const READ_ONLY: bool = false;
}

/// A server chosen for some work, with what the work may do. See the
/// [module docs](crate::Db).
pub struct Db<A: Access> {
    target: Target,
    access: PhantomData<fn() -> A>,
}

/// A read-only handle: a replica in rotation for a read, the primary for a write intent or
/// when no replica can serve; read-only on either. See the [module docs](crate::Db).
pub type DbRead = Db<ReadOnly>;

/// The primary, read-write, whatever the request's intent. Derefs to the primary's
/// [`PgPool`]. See the [module docs](crate::Db).
pub type DbWrite = Db<ReadWrite>;

impl<A: Access> Db<A> {
    pub(crate) fn new(target: Target) -> Db<A> {
        Db {
            target,
            access: PhantomData,
        }
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// `primary`, or the replica's configured name.
    pub fn name(&self) -> &str {
        self.target.name()
    }

    /// Whether this is the primary.
    pub fn is_primary(&self) -> bool {
        self.target.is_primary()
    }

    /// The intent this server was chosen for. Its reason is
    /// [`Fallback`](crate::Reason::Fallback) when a read went to the primary because no
    /// replica could serve, and [`Disabled`](crate::Reason::Disabled) when separation is off.
    pub fn intent(&self) -> RouteIntent {
        self.target.intent()
    }

    /// Takes a connection for this handle's work, timed in the pool metrics
    /// (`rwsplit_pool_acquire_duration_seconds`, `rwsplit_pool_acquire_timeouts_total`).
    ///
    /// For a [`DbRead`] it is read-only: a replica's session (which fails over to the next
    /// server in rotation when the replica gives no connection), or a `BEGIN READ ONLY`
    /// transaction on the primary (rolled back when dropped). A write on it fails with
    /// PostgreSQL's `25006`.
    ///
    /// Errors are sqlx's own, as from [`PgPool::acquire`]: a handler's `?` converts them
    /// wherever it converted the pool's.
    pub async fn acquire(&self) -> Result<DbConnection, sqlx::Error> {
        let mut attempts = Attempts::new(&self.target, A::READ_ONLY);
        loop {
            let mut conn = attempts.checkout().await?;
            let server = attempts.server();
            // A read on the primary (chosen for it, or failed over to it): read-only there too.
            let ready = if A::READ_ONLY && server.reads_in_read_only_transaction() {
                Transaction::begin(conn, Some(BEGIN_READ_ONLY.into_sql_str()))
                    .await
                    .map(DbConnection::read_only)
            } else if server.is_primary() {
                // The primary's pool pinged it.
                return Ok(DbConnection(Conn::Pooled(conn)));
            } else {
                // A replica's pool hands out a connection used lately without a ping, and what
                // the caller runs on it cannot run again elsewhere: one round trip here, as a
                // plain pool's ping.
                conn.ping().await.map(|()| DbConnection(Conn::Pooled(conn)))
            };
            match ready {
                Ok(conn) => {
                    attempts.done(false);
                    return Ok(conn);
                }
                Err(error) => attempts.failed(error, true)?,
            }
        }
    }

    /// Begins a transaction on this handle's server, timed as [`acquire`](Self::acquire): for
    /// a [`DbRead`], `BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY` on the replica (or
    /// primary) the request got, so that several reads see one snapshot; for a [`DbWrite`], a
    /// read-write transaction on the primary.
    ///
    /// The connection is taken as for a query: a read whose replica gives no connection moves
    /// on to the next server, and a stopped server is found without waiting out
    /// `connectTimeout`. Once begun, a transaction stays on its server.
    ///
    /// Errors are sqlx's own, as from [`PgPool::begin`].
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let statement = A::READ_ONLY.then_some(BEGIN_SNAPSHOT);
        let mut attempts = Attempts::new(&self.target, A::READ_ONLY);
        loop {
            let conn = attempts.checkout().await?;
            // `PgPool::begin` is this call on a connection the pool just gave. A read whose
            // `BEGIN` fails for its server begins on the next: nothing has run yet.
            match Transaction::begin(conn, statement.map(SqlSafeStr::into_sql_str)).await {
                Ok(tx) => {
                    attempts.done(false);
                    return Ok(tx);
                }
                Err(error) => attempts.failed(error, true)?,
            }
        }
    }
}

impl Registry {
    /// A server for reading: the next replica in rotation, or the primary when separation is
    /// disabled or no replica can serve.
    pub fn read(&self) -> DbRead {
        self.handle(RouteIntent::read(Reason::Direct))
    }

    /// A server for reading from the replica group `group` (`group:` on a replica), for a job
    /// or a report kept off the replicas that serve plain reads: the next replica of the group
    /// in rotation or, with none in service, where the group's fallback says
    /// (`db.replicaGroups`; the replicas of no group by default). With `fallback: none` its
    /// work fails with an error naming the group.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn job(registry: rwsplit::Registry) -> Result<(), sqlx::Error> {
    /// let total: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
    ///     .fetch_one(&registry.read_from("analytics"))
    ///     .await?;
    /// # let _ = total;
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_from(&self, group: &'static str) -> DbRead {
        self.handle(RouteIntent::read(Reason::Direct).for_group(Some(group)))
    }

    /// The primary, for writing (or for reads that must see the latest data).
    pub fn write(&self) -> DbWrite {
        self.handle(RouteIntent::write(Reason::Direct))
    }

    /// Begins a transaction. Transactions always run on the primary. Errors are sqlx's own,
    /// as from [`PgPool::begin`].
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.write().begin().await
    }

    /// A server for reading data written before `token` was taken: a replica in rotation that
    /// has replayed the token's position, or the primary.
    pub fn read_after(&self, token: &ConsistencyToken) -> DbRead {
        let need = self.shared.token_need(token);
        self.handle(RouteIntent::read(Reason::Direct).requiring(need))
    }

    fn handle<A: Access>(&self, intent: RouteIntent) -> Db<A> {
        Db::new(Target::new(self, self.shared.resolve(intent)))
    }
}

impl Db<ReadWrite> {
    /// A read-only view of this handle: the same primary, for helpers that take a
    /// [`DbRead`]. Its queries see what this request wrote (they run on the primary) and
    /// stay read-only there (each in `BEGIN READ ONLY`).
    ///
    /// ```
    /// use rwsplit::{DbError, DbRead, DbWrite};
    ///
    /// async fn count(db: &DbRead) -> Result<i64, DbError> {
    ///     Ok(sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(db).await?)
    /// }
    ///
    /// async fn add(db: DbWrite, name: String) -> Result<String, DbError> {
    ///     sqlx::query("INSERT INTO items (name) VALUES ($1)").bind(name).execute(&db).await?;
    ///     // The count includes the row just written: the view reads from the primary.
    ///     Ok(count(&db.as_read()).await?.to_string())
    /// }
    /// # let _ = add;
    /// ```
    pub fn as_read(&self) -> DbRead {
        Db::new(self.target.clone())
    }

    /// The primary's pool: for APIs that need a pool (migrations, `LISTEN`). Queries run on
    /// it take their connection inside sqlx, without rwsplit's metrics.
    pub fn pool(&self) -> &PgPool {
        self.target.pool()
    }

    /// The primary's pool.
    pub fn into_pool(self) -> PgPool {
        self.target.pool().clone()
    }
}

/// A [`DbWrite`] where a [`DbRead`] is expected: see [`DbWrite::as_read`].
impl From<Db<ReadWrite>> for Db<ReadOnly> {
    fn from(db: Db<ReadWrite>) -> Db<ReadOnly> {
        Db::new(db.target)
    }
}

impl Deref for Db<ReadWrite> {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        self.target.pool()
    }
}

impl<A: Access> Clone for Db<A> {
    fn clone(&self) -> Self {
        Db::new(self.target.clone())
    }
}

impl<A: Access> fmt::Debug for Db<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(if A::READ_ONLY { "DbRead" } else { "DbWrite" })
            .field("server", &self.name())
            .field("intent", &self.intent())
            .finish()
    }
}

/// A connection from [`Db::acquire`]: derefs to [`PgConnection`], so queries run on
/// `&mut *conn`. Returned to its pool when dropped (a read-only transaction on the primary is
/// rolled back first).
pub struct DbConnection(Conn);

enum Conn {
    Pooled(PoolConnection<Postgres>),
    ReadOnly(Transaction<'static, Postgres>),
}

impl DbConnection {
    fn read_only(tx: Transaction<'static, Postgres>) -> DbConnection {
        DbConnection(Conn::ReadOnly(tx))
    }
}

impl Deref for DbConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match &self.0 {
            Conn::Pooled(conn) => conn,
            Conn::ReadOnly(tx) => tx,
        }
    }
}

impl DerefMut for DbConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match &mut self.0 {
            Conn::Pooled(conn) => conn,
            Conn::ReadOnly(tx) => tx,
        }
    }
}

impl fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Conn::Pooled(_) => "pooled",
            Conn::ReadOnly(_) => "read-only transaction",
        };
        f.debug_tuple("DbConnection").field(&kind).finish()
    }
}
