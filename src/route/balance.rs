//! Which server in rotation takes the next plain read (`db.loadBalancing`), once the weighted
//! [`schedule`](super::schedule) has drawn a first candidate: that candidate as it is (weighted
//! round-robin), the least loaded of all (least outstanding), or the cheaper of it and one
//! other (power of two choices over peak-EWMA latency). Pure: the registry hands in each
//! candidate's weight and load as the atomics hold them now.

/// One candidate as a pick sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Candidate {
    /// Reads in progress on it or waiting for one of its connections.
    pub(crate) outstanding: u32,
    /// Its latency estimate in nanoseconds (0: none yet).
    pub(crate) latency_ns: f64,
    pub(crate) weight: u32,
}

/// The least loaded of `count` candidates, per unit of weight, looking from `start` (the
/// schedule's pick) on, so that ties go round by weight. `candidate(i)` gives the `i`th.
pub(crate) fn least_outstanding(
    start: usize,
    count: usize,
    candidate: impl Fn(usize) -> Candidate,
) -> usize {
    let mut best = start;
    let mut best_load = candidate(start);
    for step in 1..count {
        let index = (start + step) % count;
        let load = candidate(index);
        // (a + 1) / wa < (b + 1) / wb, without a division.
        let this = u64::from(load.outstanding + 1) * u64::from(best_load.weight.max(1));
        let that = u64::from(best_load.outstanding + 1) * u64::from(load.weight.max(1));
        if this < that {
            best = index;
            best_load = load;
        }
    }
    best
}

/// The second candidate of a power-of-two-choices pick: one of the `count` other than `first`,
/// spread over them by `ticket` (the schedule draws the first by weight).
pub(crate) fn other(first: usize, count: usize, ticket: usize) -> usize {
    // A multiplicative hash: consecutive tickets land on unrelated candidates.
    let spread = ((ticket as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize;
    (first + 1 + spread % (count - 1)) % count
}

/// A candidate's expected cost: its latency (at least a microsecond, so that unknown latency
/// still counts the reads in progress) times the reads in progress plus this one, per unit of
/// weight.
pub(crate) fn cost(candidate: Candidate) -> f64 {
    candidate.latency_ns.max(1_000.0) * f64::from(candidate.outstanding + 1)
        / f64::from(candidate.weight.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(outstanding: u32, weight: u32) -> Candidate {
        Candidate {
            outstanding,
            latency_ns: 0.0,
            weight,
        }
    }

    #[test]
    fn least_outstanding_takes_the_least_loaded_per_weight() {
        let loads = [at(3, 1), at(1, 1), at(2, 1)];
        assert_eq!(least_outstanding(0, 3, |i| loads[i]), 1);
        // Twice the weight carries twice the reads for the same cost: 3 in progress at weight
        // 2 ((3+1)/2 = 2) is cheaper than 2 at weight 1 ((2+1)/1 = 3).
        let loads = [at(2, 1), at(3, 2)];
        assert_eq!(least_outstanding(0, 2, |i| loads[i]), 1);
    }

    #[test]
    fn least_outstanding_ties_keep_the_schedules_pick() {
        let loads = [at(0, 1), at(0, 1), at(0, 1)];
        for start in 0..3 {
            assert_eq!(least_outstanding(start, 3, |i| loads[i]), start);
        }
        let loads = [at(1, 1), at(0, 1), at(0, 1)];
        assert_eq!(least_outstanding(2, 3, |i| loads[i]), 2);
        assert_eq!(least_outstanding(0, 3, |i| loads[i]), 1);
    }

    #[test]
    fn the_other_choice_is_never_the_first_and_reaches_every_other() {
        for count in 2..=64 {
            for first in [0, count / 2, count - 1] {
                let mut seen = vec![false; count];
                for ticket in 0..count * 64 {
                    let other = other(first, count, ticket);
                    assert_ne!(other, first);
                    seen[other] = true;
                }
                assert_eq!(seen.iter().filter(|s| **s).count(), count - 1, "{count}");
            }
        }
    }

    #[test]
    fn cost_grows_with_latency_and_load_and_falls_with_weight() {
        let base = Candidate {
            outstanding: 1,
            latency_ns: 2_000_000.0,
            weight: 1,
        };
        let slower = Candidate {
            latency_ns: 8_000_000.0,
            ..base
        };
        let busier = Candidate {
            outstanding: 5,
            ..base
        };
        let heavier = Candidate { weight: 4, ..base };
        assert!(cost(slower) > cost(base));
        assert!(cost(busier) > cost(base));
        assert!(cost(heavier) < cost(base));
        // With no latency known yet, reads in progress still count.
        assert!(cost(at(2, 1)) > cost(at(0, 1)));
    }
}
