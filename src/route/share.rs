//! Whether the primary takes a read for its share of the read schedule
//! (`primaryReadWeight`): the schedule's pick fell on the primary, and the read is one that
//! any server with every write may serve.

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
}
