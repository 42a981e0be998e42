//! Shares of the reads: whether the primary takes a read for its share of the read schedule
//! (`primaryReadWeight`: the schedule's pick fell on the primary, and the read is one that
//! any server with every write may serve), and which reads a gradual rollout sends to the
//! replicas (`readReplicaShare`).

use super::decide::Ask;
use super::intent::Role;

/// Whether a read whose schedule pick is the primary runs there: a plain read (no token, no
/// barrier, not held back by a rollout), on its first pick (a read failing over follows the
/// failover order), while the primary is in service, has not failed it, and has a connection
/// to `spare` (a primary busy with writes sends its share to the replicas).
pub(crate) fn primary_takes(ask: &Ask, first: bool, spare: bool) -> bool {
    ask.separation
        && first
        && spare
        && ask.intent.role() == Role::Read
        && ask.intent.min_position().is_none()
        && ask.barrier == 0
        && !ask.held_back
        && !ask.primary_tried
        && ask.primary.in_service()
}

/// Whether draw `n` (the `n`th read of a run of draws, such as one counter's tickets) is among
/// the `share` percent of reads sent to replicas during a gradual rollout: each run of 100
/// draws in a row admits exactly `share`, spread over them. 61 is prime to 100, so
/// `n * 61 % 100` visits every value below 100 once in each run of 100 draws, and those under
/// `share` are admitted; 61 (about 100 / golden ratio) spreads the admitted ones evenly.
#[inline]
pub(crate) fn admits(n: usize, share: u8) -> bool {
    share >= 100 || (n % 100) * 61 % 100 < usize::from(share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Reason, RouteIntent};
    use crate::server::State;

    fn plain() -> Ask {
        Ask {
            intent: RouteIntent::read(Reason::Method),
            separation: true,
            stale_reads_when_read_only: false,
            primary: State::Serving,
            primary_tried: false,
            held_back: false,
            barrier: 0,
        }
    }

    #[test]
    fn a_plain_first_read_takes_the_primarys_share_while_it_has_room() {
        assert!(primary_takes(&plain(), true, true));
        assert!(
            !primary_takes(&plain(), true, false),
            "the primary's pool is busy"
        );
        assert!(!primary_takes(&plain(), false, true), "a read failing over");
    }

    #[test]
    fn every_other_read_is_routed_as_without_the_share() {
        let with = |change: fn(&mut Ask)| {
            let mut ask = plain();
            change(&mut ask);
            primary_takes(&ask, true, true)
        };
        assert!(!with(|a| a.separation = false));
        assert!(!with(|a| a.intent = RouteIntent::write(Reason::Method)));
        assert!(!with(
            |a| a.intent = RouteIntent::read(Reason::Method).requiring(42)
        ));
        assert!(!with(|a| a.barrier = 7));
        assert!(!with(|a| a.held_back = true));
        assert!(!with(|a| a.primary_tried = true));
        assert!(!with(|a| a.primary = State::Unreachable));
        assert!(!with(|a| a.primary = State::WrongRole));
    }

    #[test]
    fn a_rollout_admits_its_share_of_every_hundred_reads() {
        for share in 0..=100u8 {
            for start in [0usize, 17, 99, 1_000_000] {
                let admitted = (start..start + 100).filter(|&n| admits(n, share)).count();
                assert_eq!(admitted, usize::from(share), "share {share} from {start}");
            }
            // Spread out: no ten reads in a row stray two reads or more from the share.
            for start in 0..100 {
                let in_ten = (start..start + 10).filter(|&n| admits(n, share)).count() as i64;
                assert!(
                    (in_ten * 10 - i64::from(share)).abs() < 20,
                    "share {share} from {start}: {in_ten} of 10"
                );
            }
        }
    }
}
