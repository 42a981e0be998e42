//! What is known of the stream a replica receives its WAL on: the name it streams under, read
//! by its full checks, and the last position the primary's `pg_stat_replication` gave for it
//! (see `health/standby.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What is known of the stream one replica receives its WAL on.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// The name it streams under, as its last full check read it.
    name: Mutex<Option<Arc<str>>>,
    /// The last position read for it from the primary, plus one (0: none yet).
    read: AtomicU64,
    /// Its name was found to belong to another standby: it is polled itself.
    refused: AtomicBool,
    /// Its last poll took its position from the primary (rather than asking it).
    from_primary: AtomicBool,
}

impl Stream {
    /// Records the name the replica streams under; a new name is trusted afresh.
    pub(crate) fn named(&self, name: Option<&str>) {
        let mut held = self.name.lock().unwrap_or_else(|e| e.into_inner());
        if held.as_deref() != name {
            *held = name.map(Arc::from);
            self.read.store(0, Ordering::Release);
            self.refused.store(false, Ordering::Release);
        }
    }

    /// The name to look for on the primary, unless it was found to be another standby's.
    pub(crate) fn to_follow(&self) -> Option<Arc<str>> {
        if self.refused.load(Ordering::Acquire) {
            return None;
        }
        self.name()
    }

    /// Records a position read for it from the primary.
    pub(crate) fn read(&self, position: u64) {
        self.read
            .fetch_max(position.saturating_add(1), Ordering::AcqRel);
        self.from_primary.store(true, Ordering::Release);
    }

    /// Records that its last poll asked the replica itself.
    pub(crate) fn asked(&self) {
        self.from_primary.store(false, Ordering::Release);
    }

    /// Whether its last poll took its position from the primary.
    pub(crate) fn read_from_primary(&self) -> bool {
        self.from_primary.load(Ordering::Acquire)
    }

    /// The name it streams under, as its last full check read it.
    pub(crate) fn name(&self) -> Option<Arc<str>> {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Compares the replica's own replay position, from a full check that started after the
    /// positions read for it, with those: a row of its own is never ahead of it. Returns
    /// `true` when this shows, for the first time, that the rows read were another standby's.
    pub(crate) fn confirm(&self, replayed: u64) -> bool {
        let read = self.read.load(Ordering::Acquire);
        read > replayed.saturating_add(1) && !self.refused.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_ahead_of_the_replicas_own_replay_disowns_the_name_once() {
        let stream = Stream::default();
        stream.named(Some("replica1"));
        stream.read(100);
        assert!(!stream.confirm(100), "a row at the replica's own position");
        assert!(!stream.confirm(150), "a row behind it");
        assert_eq!(stream.to_follow().as_deref(), Some("replica1"));
        stream.read(200);
        assert!(stream.confirm(150), "a row ahead: another standby's");
        assert!(!stream.confirm(150), "said once");
        assert_eq!(stream.to_follow(), None);
        // A new name (the standby was reconfigured) is trusted afresh.
        stream.named(Some("replica1-b"));
        assert_eq!(stream.to_follow().as_deref(), Some("replica1-b"));
        assert!(!stream.confirm(0));
    }
}
