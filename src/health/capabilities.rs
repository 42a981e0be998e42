//! What this role may ask each server about replication, found out when a server is first
//! reached and after every reconnect of its checker, and the check query built from it.
//!
//! Managed and hardened PostgreSQL take monitoring functions away: `pg_control_*()` revoked
//! from `PUBLIC`, `pg_last_wal_receive_lsn()` raising `feature_not_supported` on an Aurora
//! reader, `pg_stat_wal_receiver` hidden from roles without `pg_read_all_stats`. Each function
//! is tried on its own; one that fails with an error of the statement (permission denied,
//! undefined, not supported, ...) is left out of the checks and removes only what needs it.
//! Only `pg_is_in_recovery()` itself is required: without it a server cannot be told apart
//! from a standby, and its failure is the server's.
//!
//! | capability | asks | without it |
//! |---|---|---|
//! | `insert_position` | `pg_current_wal_insert_lsn()` | no primary position: lag by time only, tokens keep a client on the primary for `maxPin` |
//! | `wal_file` | `pg_walfile_name(pg_current_wal_lsn())` | the primary's timeline comes from `pg_control_checkpoint()`, or is unknown |
//! | `receive_position` | `pg_last_wal_receive_lsn()` | replay position only |
//! | `replay_position` | `pg_last_wal_replay_lsn()` | no byte positions on the replica: lag by time only, tokens never satisfied by it |
//! | `replay_timestamp` | `pg_last_xact_replay_timestamp()` | lag by bytes only |
//! | `system_identifier` | `pg_control_system()` | replicas of another cluster are not recognised |
//! | `checkpoint_timeline`, `recovery_timeline`, `wal_receiver` | `pg_control_checkpoint()`, `pg_control_recovery()`, `pg_stat_wal_receiver` | fewer sources of a standby's timeline; with none, promotions are followed by role alone |
//! | `standby_positions` | `pg_stat_replication` (its positions need `pg_read_all_stats`) | each replica is polled itself for its position |
//! | `aurora` | `aurora_version()`, `aurora_replica_status()` | (not expected outside Aurora) |

use std::fmt;

use sqlx::PgConnection;

use crate::fault::{Fault, Phase, fault};

/// One thing a check may ask a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Capability {
    InsertPosition,
    WalFile,
    ReceivePosition,
    ReplayPosition,
    ReplayTimestamp,
    SystemIdentifier,
    CheckpointTimeline,
    RecoveryTimeline,
    WalReceiver,
    WalSettings,
    StandbyPositions,
    Aurora,
}

impl Capability {
    /// Every capability, in the order they are tried.
    pub(crate) const ALL: [Capability; 12] = [
        Capability::InsertPosition,
        Capability::WalFile,
        Capability::ReceivePosition,
        Capability::ReplayPosition,
        Capability::ReplayTimestamp,
        Capability::SystemIdentifier,
        Capability::CheckpointTimeline,
        Capability::RecoveryTimeline,
        Capability::WalReceiver,
        Capability::WalSettings,
        Capability::StandbyPositions,
        Capability::Aurora,
    ];

    fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Its name, for the log, the status endpoint and the `capability` metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Capability::InsertPosition => "insert_position",
            Capability::WalFile => "wal_file",
            Capability::ReceivePosition => "receive_position",
            Capability::ReplayPosition => "replay_position",
            Capability::ReplayTimestamp => "replay_timestamp",
            Capability::SystemIdentifier => "system_identifier",
            Capability::CheckpointTimeline => "checkpoint_timeline",
            Capability::RecoveryTimeline => "recovery_timeline",
            Capability::WalReceiver => "wal_receiver",
            Capability::WalSettings => "wal_settings",
            Capability::StandbyPositions => "standby_positions",
            Capability::Aurora => "aurora",
        }
    }

    /// The function or view it needs, as the log names it.
    fn needs(self) -> &'static str {
        match self {
            Capability::InsertPosition => "pg_current_wal_insert_lsn()",
            Capability::WalFile => "pg_walfile_name(pg_current_wal_lsn())",
            Capability::ReceivePosition => "pg_last_wal_receive_lsn()",
            Capability::ReplayPosition => "pg_last_wal_replay_lsn()",
            Capability::ReplayTimestamp => "pg_last_xact_replay_timestamp()",
            Capability::SystemIdentifier => "pg_control_system()",
            Capability::CheckpointTimeline => "pg_control_checkpoint()",
            Capability::RecoveryTimeline => "pg_control_recovery()",
            Capability::WalReceiver => "pg_stat_wal_receiver",
            Capability::WalSettings => "current_setting('wal_block_size')",
            Capability::StandbyPositions => "pg_stat_replication",
            Capability::Aurora => "aurora_replica_status()",
        }
    }

    /// What rwsplit cannot do on a server without it.
    fn lost(self) -> &'static str {
        match self {
            Capability::InsertPosition => {
                "no primary WAL position: lag by time only, and read-your-writes keeps a client \
                 on the primary for maxPin after a write"
            }
            Capability::WalFile => "the primary's timeline from its last checkpoint, if at all",
            Capability::ReceivePosition => "replay position only",
            Capability::ReplayPosition => {
                "no replay position: lag by time only, and reads after a write never use it"
            }
            Capability::ReplayTimestamp => "lag by bytes only",
            Capability::SystemIdentifier => "replicas of another cluster are not recognised",
            Capability::CheckpointTimeline
            | Capability::RecoveryTimeline
            | Capability::WalReceiver => "one source of a standby's timeline fewer",
            Capability::WalSettings => "positions taken as reported (no page-boundary settling)",
            Capability::StandbyPositions => "each replica is polled itself for its position",
            Capability::Aurora => "no Aurora replica lag",
        }
    }

    /// What the check asks for it: one or more typed columns. Primary-only functions sit in
    /// `CASE WHEN pg_is_in_recovery()`: on a standby they are not called, but their `EXECUTE`
    /// privilege is still checked when the query starts, so trying the column tells.
    fn columns(self) -> &'static str {
        match self {
            Capability::InsertPosition => {
                "CASE WHEN pg_is_in_recovery() THEN NULL \
                 ELSE pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::int8 END"
            }
            Capability::WalFile => {
                "CASE WHEN pg_is_in_recovery() THEN NULL \
                 ELSE pg_walfile_name(pg_current_wal_lsn()) END"
            }
            Capability::ReceivePosition => {
                "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::int8"
            }
            Capability::ReplayPosition => "pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8",
            Capability::ReplayTimestamp => {
                "EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8"
            }
            Capability::SystemIdentifier => "(SELECT system_identifier FROM pg_control_system())",
            Capability::CheckpointTimeline => "(SELECT timeline_id FROM pg_control_checkpoint())",
            Capability::RecoveryTimeline => {
                "(SELECT min_recovery_end_timeline FROM pg_control_recovery())"
            }
            Capability::WalReceiver => "(SELECT received_tli FROM pg_stat_wal_receiver)",
            Capability::WalSettings => {
                "current_setting('wal_block_size')::int8, \
                 pg_size_bytes(current_setting('wal_segment_size'))"
            }
            // One `position:name` line per standby whose position this role may read.
            Capability::StandbyPositions => {
                "(SELECT string_agg(pg_wal_lsn_diff(replay_lsn, '0/0')::int8 || ':' || \
                 application_name, E'\\n') FROM pg_stat_replication)"
            }
            Capability::Aurora => {
                "(SELECT replica_lag_in_msec FROM aurora_replica_status() \
                 WHERE server_id = aurora_db_instance_identifier() LIMIT 1)::float8"
            }
        }
    }

    /// What stands in for [`columns`](Self::columns) when it is missing.
    fn nulls(self) -> &'static str {
        match self {
            Capability::WalFile | Capability::StandbyPositions => "NULL::text",
            Capability::ReplayTimestamp | Capability::Aurora => "NULL::float8",
            Capability::WalSettings => "NULL::int8, NULL::int8",
            _ => "NULL::int8",
        }
    }

    /// The query that tells whether it is there: its columns, and for Aurora the function
    /// that only Aurora has.
    fn probe(self) -> String {
        match self {
            Capability::Aurora => format!("SELECT aurora_version(), {}", self.columns()),
            _ => format!("SELECT {}", self.columns()),
        }
    }

    /// Whether a server without it is degraded (everything but Aurora's functions, which only
    /// Aurora has).
    fn expected(self) -> bool {
        self != Capability::Aurora
    }
}

/// A row of [`Capabilities::position_query`]: insert position, WAL block size, WAL segment
/// size, WAL file name, standbys' positions (see `health/standby.rs`).
pub(crate) type PositionRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// The capabilities a server offers this role, as a set.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Capabilities(u32);

/// Set in a server's stored capabilities once they are known.
const KNOWN: u32 = 1 << 31;

impl Capabilities {
    /// Everything PostgreSQL offers a superuser, without Aurora's functions: what a server is
    /// checked with before its capabilities are known.
    pub(crate) const POSTGRES: Capabilities =
        Capabilities((1 << Capability::ALL.len()) - 1 - (1 << Capability::Aurora as u32));

    /// Nothing but `pg_is_in_recovery()`.
    pub(crate) const NONE: Capabilities = Capabilities(0);

    pub(crate) fn has(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    pub(crate) fn with(self, capability: Capability) -> Capabilities {
        Capabilities(self.0 | capability.bit())
    }

    #[cfg(test)]
    pub(crate) fn without(self, capability: Capability) -> Capabilities {
        Capabilities(self.0 & !capability.bit())
    }

    /// The expected capabilities it lacks.
    pub(crate) fn missing(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| c.expected() && !self.has(*c))
    }

    /// The capabilities it has.
    pub(crate) fn offered(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.has(*c))
    }

    /// As stored in a server's atomic: with the known bit.
    pub(crate) fn to_stored(self) -> u32 {
        self.0 | KNOWN
    }

    /// From a server's atomic; `None` while not known.
    pub(crate) fn from_stored(stored: u32) -> Option<Capabilities> {
        (stored & KNOWN != 0).then_some(Capabilities(stored & !KNOWN))
    }

    /// Its columns when it is there, what stands in for them when it is not.
    fn pick(self, capability: Capability) -> &'static str {
        match self.has(capability) {
            true => capability.columns(),
            false => capability.nulls(),
        }
    }

    /// The one check query for a server with these capabilities. Its columns are always the
    /// same (what is not there is `NULL`): in recovery; a primary's insert position; WAL block
    /// and segment size; a standby's received and replayed positions and replay age; system
    /// identifier; a primary's current WAL file; a standby's timeline (the highest source);
    /// Aurora replica lag in milliseconds; the name a standby streams under.
    pub(crate) fn check_query(self) -> String {
        let timelines: Vec<_> = [
            Capability::CheckpointTimeline,
            Capability::RecoveryTimeline,
            Capability::WalReceiver,
        ]
        .into_iter()
        .filter(|c| self.has(*c))
        .map(Capability::columns)
        .collect();
        let timeline = match timelines.is_empty() {
            true => "NULL::int8".to_owned(),
            false => format!("GREATEST({})::int8", timelines.join(", ")),
        };
        let mut columns = vec!["pg_is_in_recovery()"];
        columns.extend(
            [
                Capability::InsertPosition,
                Capability::WalSettings,
                Capability::ReceivePosition,
                Capability::ReplayPosition,
                Capability::ReplayTimestamp,
                Capability::SystemIdentifier,
                Capability::WalFile,
            ]
            .map(|c| self.pick(c)),
        );
        columns.push(&timeline);
        columns.push(self.pick(Capability::Aurora));
        let name = super::standby::name_column(self.has(Capability::WalReceiver));
        columns.push(&name);
        format!("SELECT {} /* rwsplit health check */", columns.join(", "))
    }

    /// The primary's position query `for` a token or a poll: its insert position, WAL block
    /// and segment size, (for a token) the WAL file of that position and (for a poll) every
    /// standby's replay position, `NULL` for what this role cannot read. `None` without the insert position. The two are written apart, not
    /// only marked apart, so that `pg_stat_statements` (which ignores comments) counts them
    /// apart.
    pub(crate) fn position_query(self, purpose: PositionFor) -> Option<String> {
        if !self.has(Capability::InsertPosition) {
            return None;
        }
        let (insert, walfile, standbys, marker) = match purpose {
            PositionFor::Token => (
                "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8",
                match self.has(Capability::WalFile) {
                    true => "pg_walfile_name(pg_current_wal_insert_lsn())",
                    false => "NULL::text",
                },
                "NULL::text",
                "rwsplit consistency token",
            ),
            PositionFor::Poll => (
                "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::int8",
                "NULL::text",
                self.pick(Capability::StandbyPositions),
                "rwsplit primary position",
            ),
        };
        Some(format!(
            "SELECT {insert}, {}, {walfile}, {standbys} /* {marker} */",
            self.pick(Capability::WalSettings)
        ))
    }
}

/// What the primary's position is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PositionFor {
    /// A consistency token after a write.
    Token,
    /// The health loop's position poll.
    Poll,
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.offered().map(Capability::as_str))
            .finish()
    }
}

/// What trying each capability on a server found.
#[derive(Debug)]
pub(crate) struct Discovery {
    pub(crate) capabilities: Capabilities,
    /// Each expected capability that is missing, with the error that said so.
    pub(crate) missing: Vec<(Capability, String)>,
}

impl Discovery {
    /// One line per missing capability: the function, why, and what is lost.
    pub(crate) fn describe_missing(&self) -> String {
        self.missing
            .iter()
            .map(|(c, why)| format!("{} ({why}): {}", c.needs(), c.lost()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Runs a monitoring query `sql` (built from this file's constants only) as one message of
/// the simple query protocol and reads its one row. One message is one transaction for a
/// pooler in transaction pooling, which may hand the next message to another server: sqlx's
/// extended protocol (parse, then bind and execute) is not safe there, even unnamed.
pub(crate) async fn one_row<'c, T>(
    executor: impl sqlx::PgExecutor<'c>,
    sql: String,
) -> Result<T, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_one(executor)
        .await?;
    T::from_row(&row)
}

/// Whether `error` from a monitoring query is the statement's (the function is missing,
/// revoked or unsupported), rather than the server's or the session's.
pub(crate) fn is_statements(error: &sqlx::Error) -> bool {
    matches!(
        fault(error, Phase::Query),
        Fault::Statement | Fault::Conflict
    )
}

/// Tries each capability on `conn`. `Err` only when `pg_is_in_recovery()` fails or the
/// session does (the server's fault); a capability that fails with an error of the
/// statement is left out.
pub(crate) async fn discover(conn: &mut PgConnection) -> Result<Discovery, sqlx::Error> {
    sqlx::raw_sql("SELECT pg_is_in_recovery()")
        .execute(&mut *conn)
        .await?;
    let mut capabilities = Capabilities::NONE;
    let mut missing = Vec::new();
    for capability in Capability::ALL {
        // Built from the constants above only.
        let probe = sqlx::AssertSqlSafe(capability.probe());
        match sqlx::raw_sql(probe).execute(&mut *conn).await {
            Ok(_) => capabilities = capabilities.with(capability),
            Err(error) if is_statements(&error) => {
                if capability.expected() {
                    missing.push((capability, reason(&error)));
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Discovery {
        capabilities,
        missing,
    })
}

/// The SQLSTATE and the server's message, without anything of the connection's.
fn reason(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{code} {}", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_set_asks_what_a_superuser_can_and_nothing_of_aurora() {
        let all = Capabilities::POSTGRES;
        assert!(all.missing().next().is_none());
        assert!(!all.has(Capability::Aurora));
        let sql = all.check_query();
        for needed in [
            "pg_current_wal_insert_lsn()",
            "pg_control_system()",
            "pg_control_checkpoint()",
            "pg_control_recovery()",
            "pg_stat_wal_receiver",
            "pg_last_xact_replay_timestamp()",
        ] {
            assert!(sql.contains(needed), "{needed} in {sql}");
        }
        assert!(!sql.contains("aurora"));
    }

    #[test]
    fn a_missing_function_is_never_named_in_the_check() {
        for capability in Capability::ALL {
            let without = Capabilities::POSTGRES
                .with(Capability::Aurora)
                .without(capability);
            let sql = without.check_query();
            let function = capability.needs();
            let name = function.split('(').next().unwrap_or(function);
            // `pg_current_wal_lsn` is part of the WAL file's column only.
            if capability != Capability::WalSettings {
                assert!(!sql.contains(name), "{name} still asked in {sql}");
            }
            assert_eq!(
                without.missing().any(|c| c == capability),
                capability.expected()
            );
        }
        // With nothing, only the role is asked; the columns stay the same in number.
        let none = Capabilities::NONE.check_query();
        assert!(none.starts_with("SELECT pg_is_in_recovery(), NULL::int8"));
        assert_eq!(none.matches("NULL::").count(), 10, "{none}");
    }

    #[test]
    fn the_primary_position_asks_only_what_is_there() {
        assert_eq!(Capabilities::NONE.position_query(PositionFor::Token), None);
        let all = Capabilities::POSTGRES
            .position_query(PositionFor::Token)
            .unwrap();
        assert!(all.contains("pg_walfile_name") && all.contains("wal_block_size"));
        let poll = Capabilities::POSTGRES
            .position_query(PositionFor::Poll)
            .unwrap();
        assert!(!poll.contains("pg_walfile_name") && poll.contains("wal_block_size"));
        let bare = Capabilities::NONE.with(Capability::InsertPosition);
        let sql = bare.position_query(PositionFor::Token).unwrap();
        assert!(!sql.contains("pg_walfile_name") && !sql.contains("wal_block_size"));
        assert!(sql.ends_with("/* rwsplit consistency token */"), "{sql}");
        assert_eq!(sql.matches("NULL::").count(), 4, "{sql}");
        assert!(poll.contains("pg_stat_replication") && !all.contains("pg_stat_replication"));
    }

    #[test]
    fn stored_capabilities_keep_known_apart_from_empty() {
        assert_eq!(Capabilities::from_stored(0), None);
        let none = Capabilities::NONE.to_stored();
        assert_eq!(Capabilities::from_stored(none), Some(Capabilities::NONE));
        let some = Capabilities::POSTGRES.without(Capability::WalFile);
        assert_eq!(Capabilities::from_stored(some.to_stored()), Some(some));
    }

    #[test]
    fn missing_or_revoked_functions_are_the_statements_fault_and_a_lost_session_is_not() {
        assert!(!is_statements(&sqlx::Error::Io(std::io::Error::other(
            "reset"
        ))));
        assert!(!is_statements(&sqlx::Error::PoolTimedOut));
        assert!(is_statements(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
