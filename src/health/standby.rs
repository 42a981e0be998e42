//! Replicas' replay positions read from the primary's `pg_stat_replication`: one query on the
//! primary for all of them, instead of a position poll on each.
//!
//! A standby streams under a name: the `application_name` of its `primary_conninfo`, or else
//! its `cluster_name` (Patroni, CloudNativePG and most operators set one per instance). Each
//! replica's full check reads the name it streams under; the primary's position poll reads
//! every standby's replay position with its name. A replica whose name no other configured
//! replica shares, and which appears exactly once on the primary, takes its position from that
//! row. Any other replica (no name, a shared name, cascading from another standby, a role that
//! may not read other sessions' positions: without `pg_read_all_stats` or `pg_monitor` they
//! are `NULL`) is polled itself, as before.
//!
//! The position a standby reports to its primary is one it has replayed: never ahead of it. A
//! row only ever clears a replica; one that would take it out for lag is confirmed by asking
//! the replica itself. A full check that finds a replica's own replay position behind the last
//! one read for it under its name shows that the name belongs to another standby: the replica
//! is polled itself from then on, and that is logged once (the server's
//! [`Stream`](crate::server::Stream) keeps the name and what was read).

use std::sync::Arc;

use super::capabilities::{Capabilities, Capability};
use super::check::Observation;
use super::lag::ReplicaPosition;
use crate::server::Identity;

/// The positions for `names` (one per replica) in `rows`, the primary's answer: one
/// `position:name` per line, for each standby whose position this role may read. A replica
/// gets a position only when its name is its own among `names` and appears on one row only.
pub(crate) fn positions(rows: Option<&str>, names: &[Option<Arc<str>>]) -> Vec<Option<u64>> {
    let rows: Vec<(&str, u64)> = rows
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (position, name) = line.split_once(':')?;
            Some((name, position.parse().ok()?))
        })
        .collect();
    let once = |name: &str, among: usize| among == 1 && !name.is_empty();
    names
        .iter()
        .map(|name| {
            let name = name.as_deref()?;
            let configured = names.iter().filter(|n| n.as_deref() == Some(name)).count();
            let mut found = rows.iter().filter(|(n, _)| *n == name);
            let (_, position) = *found.next()?;
            (once(name, configured) && found.next().is_none()).then_some(position)
        })
        .collect()
}

/// The check's column for the name a standby streams under: the `application_name` of its
/// `primary_conninfo` (visible `with_receiver`, in `pg_stat_wal_receiver`), else its
/// `cluster_name`, as its WAL receiver picks it; `NULL` for neither.
pub(crate) fn name_column(with_receiver: bool) -> String {
    let own = "NULLIF(current_setting('cluster_name'), '')";
    match with_receiver {
        true => format!(
            "COALESCE((SELECT substring(conninfo from '(?:^| )application_name=([^ ]+)') \
             FROM pg_stat_wal_receiver), {own})"
        ),
        false => own.to_owned(),
    }
}

/// What a replica's own poll would have seen, from the position the primary read for it: a
/// standby (it streams from the primary), of the identity it last showed, replayed up to
/// `position`.
pub(crate) fn observation(identity: Identity, position: u64) -> Observation {
    Observation {
        in_recovery: true,
        position: None,
        replica: ReplicaPosition {
            received: None,
            replayed: Some(position),
            replay_age: None,
        },
        identity,
        aurora_lag: None,
        capabilities: Capabilities::NONE.with(Capability::ReplayPosition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[Option<&str>]) -> Vec<Option<Arc<str>>> {
        names.iter().map(|n| n.map(Arc::from)).collect()
    }

    #[test]
    fn a_replica_takes_the_row_of_its_own_name_only() {
        let rows = "100:replica1\n250:replica2\n7:other\n";
        let got = positions(
            Some(rows),
            &names(&[Some("replica2"), Some("replica1"), None, Some("gone")]),
        );
        assert_eq!(got, [Some(250), Some(100), None, None]);
    }

    #[test]
    fn a_shared_name_on_either_side_gives_nobody_a_row() {
        // Two standbys streaming as `walreceiver` (neither sets a name).
        let rows = "100:walreceiver\n250:walreceiver\n300:replica3";
        let got = positions(Some(rows), &names(&[Some("walreceiver"), Some("replica3")]));
        assert_eq!(got, [None, Some(300)]);
        // Two configured replicas claiming one name (the same server listed twice, or two
        // servers with one cluster_name).
        let got = positions(Some("5:a"), &names(&[Some("a"), Some("a")]));
        assert_eq!(got, [None, None]);
    }

    #[test]
    fn rows_without_a_readable_position_or_a_name_count_for_nothing() {
        // The view's positions are NULL for a role without pg_read_all_stats: the primary's
        // query leaves those rows out; a malformed line is skipped.
        let got = positions(
            Some("x:replica1\n:replica2\n10:"),
            &names(&[Some("replica1"), Some("replica2"), Some("")]),
        );
        assert_eq!(got, [None, None, None]);
        assert_eq!(positions(None, &names(&[Some("replica1")])), [None]);
    }
}
