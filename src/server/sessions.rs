//! How a server's sessions are read-only (`db.replicaReadOnly`), and the switch from the
//! startup option to a `SET` after connect when a pooler in front refuses the option.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::ReplicaReadOnly;

/// How a server's sessions are read-only now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Means {
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

impl Means {
    fn of(setting: Option<ReplicaReadOnly>) -> Means {
        match setting {
            None => Means::ReadWrite,
            Some(ReplicaReadOnly::SessionSet) => Means::SessionSet,
            Some(ReplicaReadOnly::Transaction) => Means::Transaction,
            Some(ReplicaReadOnly::Standby) => Means::Standby,
            Some(_) => Means::StartupOption,
        }
    }

    fn load(cell: &AtomicU8) -> Means {
        match cell.load(Ordering::Acquire) {
            1 => Means::StartupOption,
            2 => Means::SessionSet,
            3 => Means::Transaction,
            4 => Means::Standby,
            _ => Means::ReadWrite,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Means::ReadWrite => "read-write",
            Means::StartupOption => "startup option",
            Means::SessionSet => "SET after connect",
            Means::Transaction => "read-only transaction per query",
            Means::Standby => "the standby's own read-only state",
        }
    }
}

/// How one server's sessions are read-only: as configured (`None` for the primary's, which are
/// not), and as they are now (shared with the pool's connect hook).
#[derive(Debug)]
pub(crate) struct Sessions {
    setting: Option<ReplicaReadOnly>,
    now: Arc<AtomicU8>,
}

impl Sessions {
    pub(crate) fn new(setting: Option<ReplicaReadOnly>) -> Sessions {
        Sessions {
            setting,
            now: Arc::new(AtomicU8::new(Means::of(setting) as u8)),
        }
    }

    /// The setting they were made with.
    pub(crate) fn setting(&self) -> Option<ReplicaReadOnly> {
        self.setting
    }

    /// `options` as a session connects now: with the startup option, or as they are.
    pub(crate) fn connect_options(&self, options: &PgConnectOptions) -> PgConnectOptions {
        match Means::load(&self.now) {
            Means::StartupOption => options
                .clone()
                .options([("default_transaction_read_only", "on")]),
            _ => options.clone(),
        }
    }

    /// `pool` with the hook that makes a new session read-only by a `SET`, when that is the
    /// means at the time it connects.
    pub(crate) fn hook(&self, pool: PgPoolOptions) -> PgPoolOptions {
        let now = Arc::clone(&self.now);
        pool.after_connect(move |conn, _| {
            let set = Means::load(&now) == Means::SessionSet;
            Box::pin(async move {
                if set {
                    sqlx::raw_sql("SET default_transaction_read_only = on")
                        .execute(conn)
                        .await?;
                }
                Ok(())
            })
        })
    }

    /// Whether a `DbRead`'s query must run in a read-only transaction: on the primary, and on
    /// a replica whose sessions are not read-only by themselves.
    pub(crate) fn need_transaction(&self) -> bool {
        matches!(
            Means::load(&self.now),
            Means::ReadWrite | Means::Transaction
        )
    }

    /// After `error` opening a connection: when it is the startup option refused (a pooler in
    /// front) and the means was left to rwsplit, switches to a `SET` after connect. Returns
    /// whether it switched (a new connection may now succeed).
    pub(crate) fn startup_option_refused(&self, error: &sqlx::Error) -> bool {
        self.setting == Some(ReplicaReadOnly::Auto)
            && refuses_startup_option(error)
            && self
                .now
                .compare_exchange(
                    Means::StartupOption as u8,
                    Means::SessionSet as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// How they are read-only now, for the status endpoint.
    pub(crate) fn means(&self) -> &'static str {
        Means::load(&self.now).as_str()
    }

    /// How they are read-only after a switch, for its log line.
    pub(crate) const SWITCHED: &'static str = "SET after connect";
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
