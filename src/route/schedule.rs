//! Which replica serves the next read: a smooth weighted round-robin schedule, computed once
//! whenever the set of healthy replicas or their weights change (it is part of the registry's
//! topology snapshot), and indexed by a ticket from a counter shared by a few threads: a pick is
//! an atomic increment, a multiplication and an index.
//!
//! The schedule is the sequence nginx's smooth weighted round-robin produces, laid out in
//! advance: weights 2 and 1 give `a b a a b a ...` rather than `a a b`, and any window of the
//! schedule's length holds each replica exactly its weight's share, so every thread's picks,
//! and their sum, follow the weights. Picking costs the same for 1 or 64 replicas and takes no
//! lock.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Most slots a schedule holds; larger weight sums are scaled down to fit.
const MAX_SLOTS: u32 = 4096;

/// How many pick counters a registry keeps; threads are spread over them.
const COUNTERS: usize = 16;

/// The tickets that index the schedule: one counter per group of threads, each on a cache line
/// of its own, so that threads picking at the same moment do not all increment one shared
/// word. Each counter walks the schedule on its own, so the picks made through any one counter
/// follow the weights exactly over whole rounds, and so does their sum.
#[derive(Debug)]
pub(crate) struct Tickets([Counter; COUNTERS]);

#[derive(Debug)]
#[repr(align(128))]
struct Counter(AtomicUsize);

impl Default for Tickets {
    fn default() -> Tickets {
        // Counters start apart, so that threads starting together start on different slots.
        Tickets(std::array::from_fn(|i| Counter(AtomicUsize::new(i * 7))))
    }
}

impl Tickets {
    /// The next ticket for the calling thread.
    #[inline]
    pub(crate) fn next(&self) -> usize {
        // Which counter a thread uses is fixed when the thread first picks: the one piece of
        // thread-local state here, a shard index (as sharded counters keep), never data
        // passed between parts of a request. On two threads one shared counter doubled the
        // cost of a pick under contention (`benches/RESULTS.md`).
        static THREADS: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static COUNTER: usize = THREADS.fetch_add(1, Ordering::Relaxed) % COUNTERS;
        }
        let counter = COUNTER.with(|c| *c);
        self.0[counter].0.fetch_add(1, Ordering::Relaxed)
    }
}

/// A precomputed pick order over replica indices.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schedule {
    slots: Box<[u16]>,
    /// `ceil(2^64 / slots.len())`, for a remainder by multiplication (a division costs more
    /// than the rest of a pick): see [`slot`](Self::slot).
    magic: u64,
}

impl Schedule {
    /// Builds the schedule for `(replica index, weight)` pairs. Zero weights are left out.
    pub(crate) fn new(weights: &[(usize, u32)]) -> Schedule {
        let weights: Vec<(usize, u32)> = weights.iter().copied().filter(|&(_, w)| w > 0).collect();
        if weights.is_empty() {
            return Schedule::default();
        }
        let weights = reduce(&weights);
        let total: i64 = weights.iter().map(|&(_, w)| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        let mut slots = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, &(_, w)) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            slots.push(weights[best].0 as u16);
        }
        Schedule {
            magic: (u64::MAX / slots.len() as u64).wrapping_add(1),
            slots: slots.into_boxed_slice(),
        }
    }

    /// `ticket % len` for 32 bits of the ticket, without a division (Lemire, Kaser and Kurz,
    /// "Faster remainder by direct computation", 2019). The tickets wrap at 2^32: the rotation
    /// then skips ahead once, every four billion picks.
    #[inline]
    fn slot(&self, ticket: usize) -> usize {
        let low = self.magic.wrapping_mul(u64::from(ticket as u32));
        ((u128::from(low) * self.slots.len() as u128) >> 64) as usize
    }

    /// Whether no replica can be picked.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The replica index for the `ticket`th pick.
    #[inline]
    pub(crate) fn pick(&self, ticket: usize) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        Some(usize::from(self.slots[self.slot(ticket)]))
    }

    /// The replica indices from the `ticket`th pick on, each at most once, in schedule order.
    /// For reads that must skip some replicas (ones not caught up with a client's write).
    pub(crate) fn candidates(&self, ticket: usize) -> impl Iterator<Item = usize> + '_ {
        let len = self.slots.len();
        let mut seen: Vec<u64> = Vec::new();
        (0..len).filter_map(move |step| {
            let index = usize::from(self.slots[(ticket + step) % len]);
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            if seen.len() <= word {
                seen.resize(word + 1, 0);
            }
            let fresh = seen[word] & bit == 0;
            seen[word] |= bit;
            fresh.then_some(index)
        })
    }
}

/// Divides weights by their greatest common divisor and, if their sum is still over
/// [`MAX_SLOTS`], scales them down proportionally (keeping every weight at least 1).
fn reduce(weights: &[(usize, u32)]) -> Vec<(usize, u32)> {
    let divisor = weights.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let mut reduced: Vec<(usize, u32)> = weights.iter().map(|&(i, w)| (i, w / divisor)).collect();
    let total: u64 = reduced.iter().map(|&(_, w)| u64::from(w)).sum();
    if total > u64::from(MAX_SLOTS) {
        for (_, w) in &mut reduced {
            let scaled = u64::from(*w) * u64::from(MAX_SLOTS) / total;
            *w = scaled.max(1) as u32;
        }
    }
    reduced
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(schedule: &Schedule, picks: usize, replicas: usize) -> Vec<usize> {
        let mut counts = vec![0; replicas];
        for ticket in 0..picks {
            counts[schedule.pick(ticket).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn the_remainder_without_division_is_the_remainder() {
        for len in (1..=64).chain([100, 999, 4095, 4096]) {
            let schedule = Schedule {
                slots: vec![0; len].into_boxed_slice(),
                magic: (u64::MAX / len as u64).wrapping_add(1),
            };
            for ticket in (0..10_000).chain([u32::MAX as usize - 1, u32::MAX as usize]) {
                assert_eq!(schedule.slot(ticket), ticket % len, "{ticket} % {len}");
            }
        }
    }

    #[test]
    fn shares_follow_weights_exactly_over_whole_rounds() {
        let schedule = Schedule::new(&[(0, 2), (1, 1)]);
        assert_eq!(counts(&schedule, 3000, 2), vec![2000, 1000]);
        let schedule = Schedule::new(&[(0, 5), (1, 3), (2, 2)]);
        assert_eq!(counts(&schedule, 1000, 3), vec![500, 300, 200]);
    }

    #[test]
    fn schedule_is_smooth_not_bursty() {
        let schedule = Schedule::new(&[(0, 2), (1, 1)]);
        let order: Vec<usize> = (0..6).map(|t| schedule.pick(t).unwrap()).collect();
        assert_eq!(order, vec![0, 1, 0, 0, 1, 0]);
        // With weights 5:1 the light replica is not left waiting for five heavy picks in a row
        // more than once per round.
        let schedule = Schedule::new(&[(0, 5), (1, 1)]);
        let order: Vec<usize> = (0..6).map(|t| schedule.pick(t).unwrap()).collect();
        assert_eq!(order.iter().filter(|&&i| i == 1).count(), 1);
        assert_ne!(order[..5], [0, 0, 0, 0, 0]);
    }

    #[test]
    fn zero_weight_drains_and_all_zero_is_empty() {
        let schedule = Schedule::new(&[(0, 0), (1, 3)]);
        assert_eq!(counts(&schedule, 10, 2), vec![0, 10]);
        assert!(Schedule::new(&[(0, 0), (1, 0)]).is_empty());
        assert!(Schedule::new(&[]).is_empty());
        assert_eq!(Schedule::default().pick(7), None);
    }

    #[test]
    fn equal_and_large_weights_reduce() {
        let schedule = Schedule::new(&[(0, 1000), (1, 1000)]);
        assert_eq!(schedule.slots.len(), 2);
        let schedule = Schedule::new(&[(0, 10_000), (1, 1), (2, 9_999)]);
        assert!(schedule.slots.len() <= MAX_SLOTS as usize + 3);
        let c = counts(&schedule, schedule.slots.len(), 3);
        assert!(c[1] >= 1, "a tiny weight keeps at least one slot");
        assert!((c[0] as f64 / c[2] as f64 - 1.0).abs() < 0.01);
    }

    #[test]
    fn many_replicas_share_evenly() {
        let weights: Vec<(usize, u32)> = (0..64).map(|i| (i, 1)).collect();
        let schedule = Schedule::new(&weights);
        assert_eq!(counts(&schedule, 64 * 10, 64), vec![10; 64]);
    }

    #[test]
    fn candidates_visit_each_replica_once_starting_at_the_pick() {
        let schedule = Schedule::new(&[(0, 2), (1, 1), (2, 1)]);
        for ticket in 0..8 {
            let order: Vec<usize> = schedule.candidates(ticket).collect();
            assert_eq!(order.len(), 3);
            assert_eq!(order[0], schedule.pick(ticket).unwrap());
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2]);
        }
        let weights: Vec<(usize, u32)> = (0..70).map(|i| (i, 1)).collect();
        assert_eq!(Schedule::new(&weights).candidates(5).count(), 70);
        assert_eq!(Schedule::default().candidates(3).count(), 0);
    }
}
