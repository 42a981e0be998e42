//! How far behind the primary a replica is, in bytes and in time. This file measures lag.
//!
//! Bytes are exact: the primary's current WAL position minus the replica's replayed position.
//!
//! Time is the hard part. The usual `now() - pg_last_xact_replay_timestamp()` grows forever
//! while the primary is idle (the last transaction gets older though nothing is missing), and is
//! NULL on a fresh standby. Instead the registry keeps a short history of the primary's WAL
//! positions as it samples them. A replica that has replayed everything the primary had written
//! has no lag at all. One that has not is behind since the first sample in which the primary
//! was past the replica's position, and its lag is the time since that sample. When the history
//! does not reach back that far (just after start), the replay timestamp stands in only if the
//! replica holds WAL it has not applied (replay is stuck or delayed); a replica that applied all
//! it received is behind by what is in transit, counted from the first sample.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The primary's position as a replica will report it once it has replayed everything:
/// `pg_current_wal_insert_lsn()` with the page-header quirk taken out.
///
/// When the insert position sits exactly at the start of a WAL page, PostgreSQL reports it just
/// past the page header (24 bytes, or 40 at the start of a segment), while a replica that has
/// replayed everything reports the page start. No record data lies in between, so that
/// position is the page start. Without this, an idle primary at a page boundary (as right after
/// a segment switch) would make every replica look behind forever.
pub(crate) fn settled_position(insert: u64, block_size: u64, segment_size: u64) -> u64 {
    if block_size == 0 || segment_size == 0 {
        return insert;
    }
    let offset = insert % block_size;
    let page = insert - offset;
    let header = if page.is_multiple_of(segment_size) {
        40
    } else {
        24
    };
    if offset == header { page } else { insert }
}

/// WAL a primary writes without transactions to replay (a checkpoint, a snapshot of running
/// transactions): less than one page. More than this past a replica's last replayed
/// transaction is work it has not replayed.
const OWN_WAL: u64 = 8192;

/// Samples kept. When full, the history is thinned ([`PrimaryHistory::thin`]): it always
/// reaches back to its first sample, at full resolution for the recent past and at a step of
/// at most [`THINNED_STEP`] of a sample's age for older ones, so a replica stuck for hours is
/// still measured from when it fell behind (a day fits in about a thousand samples).
const HISTORY: usize = 4096;

/// The coarsest step a thinned history keeps, as a share of a sample's age: 1/64 (a lag of an
/// hour is measured to within about a minute).
const THINNED_STEP: u32 = 64;

/// The primary's WAL positions over time, oldest first, one entry per distinct position.
#[derive(Debug, Default)]
pub(crate) struct PrimaryHistory {
    samples: VecDeque<(Instant, u64)>,
}

/// What one check of a replica reported.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplicaPosition {
    /// WAL received from the primary, in bytes since `0/0`.
    pub(crate) received: Option<u64>,
    /// WAL replayed (visible to queries), in bytes since `0/0`.
    pub(crate) replayed: Option<u64>,
    /// Seconds since the last replayed transaction committed on the primary.
    pub(crate) replay_age: Option<Duration>,
}

/// A replica's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lag {
    pub(crate) time: Duration,
    pub(crate) bytes: Option<u64>,
}

impl Lag {
    /// No lag at all: the primary's own.
    pub(crate) const ZERO: Lag = Lag {
        time: Duration::ZERO,
        bytes: Some(0),
    };
}

impl PrimaryHistory {
    /// Records the primary's position at `at`. Positions only move forward; a lower one (a new
    /// primary after a failover) starts the history again.
    pub(crate) fn record(&mut self, at: Instant, position: u64) {
        match self.samples.back() {
            Some(&(_, last)) if last == position => return,
            Some(&(_, last)) if last > position => self.samples.clear(),
            _ => {}
        }
        if self.samples.len() == HISTORY {
            self.thin(at);
        }
        self.samples.push_back((at, position));
    }

    /// Drops the samples (never the first or the last) whose neighbours are close enough
    /// together for their age, the age counted to `now`: what remains is dense where the
    /// present is and sparse where the past is. Should nothing go, the oldest does.
    fn thin(&mut self, now: Instant) {
        let mut kept: VecDeque<(Instant, u64)> = VecDeque::with_capacity(HISTORY);
        let last = self.samples.len().saturating_sub(1);
        for (index, &sample) in self.samples.iter().enumerate() {
            let Some(&(before, _)) = kept.back() else {
                kept.push_back(sample);
                continue;
            };
            let next = self.samples.get(index + 1).map(|&(at, _)| at);
            let gap_without = next.map(|next| next.saturating_duration_since(before));
            let age = next.map(|next| now.saturating_duration_since(next));
            match (gap_without, age) {
                (Some(gap), Some(age)) if index != last && gap * THINNED_STEP <= age => {}
                _ => kept.push_back(sample),
            }
        }
        if kept.len() == self.samples.len() {
            kept.pop_front();
        }
        self.samples = kept;
    }

    /// Forgets every sample: the primary moved, and the new one's positions are not
    /// comparable with the old one's.
    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    /// Whether no position of the primary has been recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// A replica's lag in time when its byte positions cannot be read, from its replay
    /// timestamp alone (`replay_age`: how old its last replayed transaction is): the time since
    /// the primary moved more than [`OWN_WAL`] past where it was at that transaction, or none
    /// when it has not (an idle primary makes the timestamp grow, not the lag). `None` when
    /// it cannot be measured: no timestamp, or no history of the primary to compare with.
    pub(crate) fn lag_by_time(
        &self,
        replay_age: Option<Duration>,
        now: Instant,
    ) -> Option<Duration> {
        let age = replay_age?;
        let &(first_at, first) = self.samples.front()?;
        // Where the primary was when the replica's last transaction committed there: the last
        // sample at or before that moment (or the first one, when that is older than them all).
        let replayed_at = now.checked_sub(age).unwrap_or(first_at);
        let base = self
            .samples
            .iter()
            .take_while(|&&(at, _)| at <= replayed_at)
            .last()
            .map_or(first, |&(_, p)| p);
        let moved = self
            .samples
            .iter()
            .find(|&&(at, p)| at > replayed_at && p > base.saturating_add(OWN_WAL));
        Some(match moved {
            Some(&(at, _)) => now.saturating_duration_since(at),
            None => Duration::ZERO,
        })
    }

    /// The lag of a replica at `now`, given the primary's position from this round of checks
    /// (`None` when the primary could not be asked).
    pub(crate) fn lag(&self, primary: Option<u64>, replica: ReplicaPosition, now: Instant) -> Lag {
        let Some(replayed) = replica.replayed else {
            // A standby that has replayed nothing yet is as far behind as it can be.
            return Lag {
                time: replica.replay_age.unwrap_or(Duration::MAX),
                bytes: primary,
            };
        };
        let bytes = primary.map(|p| p.saturating_sub(replayed));
        let caught_up = match primary {
            Some(p) => replayed >= p,
            // Without the primary, all we know is whether the replica applied what it got.
            None => replica.received.is_some_and(|r| replayed >= r),
        };
        if caught_up {
            return Lag {
                time: Duration::ZERO,
                bytes,
            };
        }
        let first_ahead = self.samples.iter().position(|&(_, p)| p > replayed);
        let time = match first_ahead {
            // The primary was still at or before the replica's position in an earlier sample,
            // so the replica has been behind since this one.
            Some(i) if i > 0 => now.saturating_duration_since(self.samples[i].0),
            // The history does not reach back to when the primary passed this position.
            Some(_) => {
                let watched = now.saturating_duration_since(self.samples[0].0);
                let stuck = replica.received.is_some_and(|r| r > replayed);
                match replica.replay_age {
                    Some(age) if stuck => age.max(watched),
                    _ => watched,
                }
            }
            // No sample is past the replica: it is behind only what it has received and not
            // applied yet, which its replay timestamp measures.
            None => replica.replay_age.unwrap_or(Duration::ZERO),
        };
        Lag { time, bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn at(replayed: u64) -> ReplicaPosition {
        ReplicaPosition {
            received: Some(replayed),
            replayed: Some(replayed),
            replay_age: None,
        }
    }

    #[test]
    fn a_replica_stuck_far_longer_than_the_history_holds_is_measured_from_when_it_fell_behind() {
        // A poll every 100 ms for 2 hours: 72,000 samples through a 4096-sample history.
        let t0 = Instant::now();
        let mut history = PrimaryHistory::default();
        let step = Duration::from_millis(100);
        let polls = 72_000u32;
        for n in 0..polls {
            history.record(t0 + step * n, 1_000 + u64::from(n) * 100);
        }
        // A day of polls would fit too: far fewer samples than the bound are left.
        assert!(
            history.samples.len() <= HISTORY,
            "{}",
            history.samples.len()
        );
        let now = t0 + step * polls;
        let primary = Some(1_000 + u64::from(polls - 1) * 100);
        // Stuck since the primary passed it 100 s, 20 min and 1 h 50 min after the start.
        for stuck_at in [secs(100), secs(1200), secs(6600)] {
            let polls_before = u64::try_from(stuck_at.as_millis() / 100).unwrap();
            let lag = history
                .lag(primary, at(1_000 + polls_before * 100), now)
                .time;
            let truth = now - (t0 + stuck_at);
            // Within the history's step at that age: never more than the truth, never less
            // by more than 1/64 of it (and a poll).
            assert!(
                lag <= truth && lag + truth / THINNED_STEP + step >= truth,
                "{lag:?} for {truth:?}"
            );
        }
        // The recent past stays fine-grained: 3 s behind reads as 3 s.
        let recent = 1_000 + u64::from(polls - 30) * 100;
        let lag = history.lag(primary, at(recent), now).time;
        assert!(lag <= secs(3) && lag >= secs(3) - step, "{lag:?}");
    }

    #[test]
    fn lag_by_time_alone_ignores_an_idle_primary_and_counts_from_its_next_writes() {
        let t0 = Instant::now();
        let mut history = PrimaryHistory::default();
        // Nothing to compare with: not measurable.
        assert_eq!(history.lag_by_time(Some(secs(5)), t0), None);
        history.record(t0, 100_000);
        // A checkpoint's few bytes later on: still idle.
        history.record(t0 + secs(300), 100_200);
        // The last transaction replayed an hour ago, the primary idle since: no lag.
        let now = t0 + secs(3600);
        assert_eq!(
            history.lag_by_time(Some(secs(3600)), now),
            Some(Duration::ZERO)
        );
        // Writes from 3600 s on; the replica's last transaction is from 3590 s.
        history.record(now, 200_000);
        let later = now + secs(7);
        assert_eq!(history.lag_by_time(Some(secs(17)), later), Some(secs(7)));
        // It replayed a transaction after the writes began: caught up to there.
        assert_eq!(
            history.lag_by_time(Some(secs(1)), later),
            Some(Duration::ZERO)
        );
        // No timestamp: not measurable.
        assert_eq!(history.lag_by_time(None, later), None);
    }

    #[test]
    fn an_idle_primary_does_not_make_a_caught_up_replica_lag() {
        let t0 = Instant::now();
        let mut history = PrimaryHistory::default();
        for i in 0..100 {
            history.record(t0 + secs(i * 30), 5_000);
        }
        let replica = ReplicaPosition {
            replay_age: Some(secs(3000)),
            ..at(5_000)
        };
        let lag = history.lag(Some(5_000), replica, t0 + secs(3000));
        assert_eq!(
            lag,
            Lag {
                time: Duration::ZERO,
                bytes: Some(0)
            }
        );
    }

    #[test]
    fn lag_counts_from_when_the_primary_moved_past_the_replica() {
        let t0 = Instant::now();
        let mut history = PrimaryHistory::default();
        history.record(t0, 1_000);
        history.record(t0 + secs(10), 1_000);
        history.record(t0 + secs(20), 2_000);
        history.record(t0 + secs(30), 3_000);
        // Replayed up to 1000, primary now at 3000: behind since the sample at 20 s, even
        // though the last replayed transaction is an hour old.
        let replica = ReplicaPosition {
            replay_age: Some(secs(3600)),
            ..at(1_000)
        };
        let lag = history.lag(Some(3_000), replica, t0 + secs(35));
        assert_eq!(
            lag,
            Lag {
                time: secs(15),
                bytes: Some(2_000)
            }
        );
        // Replayed up to 2000: behind since the sample at 30 s.
        let lag = history.lag(Some(3_000), at(2_000), t0 + secs(35));
        assert_eq!(lag.time, secs(5));
    }

    #[test]
    fn without_enough_history_the_replay_timestamp_stands_in_for_stuck_replay_only() {
        let t0 = Instant::now();
        let mut history = PrimaryHistory::default();
        history.record(t0, 9_000);
        // Replay stuck behind what it received: as old as its last replayed commit.
        let stuck = ReplicaPosition {
            received: Some(9_000),
            replayed: Some(1_000),
            replay_age: Some(secs(42)),
        };
        assert_eq!(history.lag(Some(9_000), stuck, t0).time, secs(42));
        // Applied all it received, an idle hour after its last commit: the primary's newest
        // record is merely in transit, so it is behind only since we started watching.
        let idle = ReplicaPosition {
            replay_age: Some(secs(3600)),
            ..at(1_000)
        };
        assert_eq!(history.lag(Some(9_000), idle, t0).time, Duration::ZERO);
        assert_eq!(
            history.lag(Some(9_000), at(1_000), t0 + secs(3)).time,
            secs(3)
        );
    }

    #[test]
    fn without_the_primary_received_equals_replayed_means_caught_up() {
        let history = PrimaryHistory::default();
        let lag = history.lag(None, at(7), Instant::now());
        assert_eq!(
            lag,
            Lag {
                time: Duration::ZERO,
                bytes: None
            }
        );
        let behind = ReplicaPosition {
            received: Some(10),
            replayed: Some(7),
            replay_age: Some(secs(4)),
        };
        assert_eq!(history.lag(None, behind, Instant::now()).time, secs(4));
    }

    #[test]
    fn a_standby_with_nothing_replayed_is_maximally_behind() {
        let history = PrimaryHistory::default();
        let lag = history.lag(Some(10), ReplicaPosition::default(), Instant::now());
        assert_eq!(lag.time, Duration::MAX);
    }

    #[test]
    fn insert_positions_just_past_a_page_header_settle_on_the_page_start() {
        const BLOCK: u64 = 8192;
        const SEGMENT: u64 = 16 << 20;
        // Start of a segment: long header.
        assert_eq!(
            settled_position(SEGMENT * 3 + 40, BLOCK, SEGMENT),
            SEGMENT * 3
        );
        // Start of any other page: short header.
        assert_eq!(
            settled_position(SEGMENT + BLOCK * 5 + 24, BLOCK, SEGMENT),
            SEGMENT + BLOCK * 5
        );
        // Record data: left alone, including a record ending 40 bytes into a short-header page.
        for position in [
            SEGMENT + BLOCK * 5 + 40,
            SEGMENT * 3 + 24,
            SEGMENT + 100,
            SEGMENT,
        ] {
            assert_eq!(settled_position(position, BLOCK, SEGMENT), position);
        }
        assert_eq!(settled_position(1234, 0, 0), 1234);
    }

    #[test]
    fn history_is_bounded_and_restarts_when_the_position_goes_back() {
        let t0 = Instant::now();
        let mut history = PrimaryHistory::default();
        for i in 0..(HISTORY as u64 + 10) {
            history.record(t0, i);
        }
        assert!(history.samples.len() <= HISTORY);
        history.record(t0, 3);
        assert_eq!(history.samples.len(), 1);
        assert_eq!(history.samples.back().map(|&(_, p)| p), Some(3));
    }
}
