//! Which server takes the writes, when roles are observed (`db.roles: observed`, the default):
//! whichever configured server answers as a primary, refusing the ones that cannot be it.
//!
//! Every full check and every probe of a primary out of service asks each configured server
//! whether it is in recovery, which cluster it belongs to (`pg_control_system()`) and which
//! timeline it is on. The servers answering as a primary are then judged ([`decide`]):
//!
//! - one not listed in `primaryCandidates`, or of another cluster (system identifier), takes
//!   nothing;
//! - one on a timeline lower than a primary already reached is a former primary started again
//!   after a promotion: it takes nothing;
//! - of the rest, the one on the highest timeline takes the writes (after a promotion, the
//!   promoted one); the current primary keeps them on a tie, and a tie without it is refused
//!   rather than guessed.
//!
//! Pure, and unit-tested without PostgreSQL: the registry's election (`registry/election.rs`)
//! asks the servers, moves the writes and logs the refusals.

use crate::server::Identity;

/// One server answering as a primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Contender {
    pub(crate) identity: Identity,
    /// Listed in `primaryCandidates` (or no list).
    pub(crate) candidate: bool,
    /// It is the primary now.
    pub(crate) current: bool,
}

/// The outcome of judging the servers that answer as primary.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Judgement {
    /// The contender (index) that must take the writes from the current primary, if any.
    pub(crate) moves_to: Option<usize>,
    /// Contenders that take nothing, and why.
    pub(crate) refused: Vec<(usize, String)>,
}

/// Judges `contenders` (each answering as a primary) for a cluster whose system identifier is
/// `cluster` (0: not known yet) and whose primaries have reached timeline `floor`.
pub(crate) fn decide(contenders: &[Contender], cluster: u64, floor: u32) -> Judgement {
    let mut refused = Vec::new();
    // Without a known cluster, the current primary's (or, when all agree, everyone's) is it.
    let cluster = match cluster {
        0 => contenders
            .iter()
            .find(|c| c.current)
            .or_else(|| contenders.first())
            .map_or(0, |c| c.identity.system_id),
        known => known,
    };
    let mut eligible = Vec::new();
    for (i, c) in contenders.iter().enumerate() {
        let Identity {
            system_id,
            timeline,
        } = c.identity;
        if !c.candidate {
            refused.push((
                i,
                "answers as a primary but is not listed in primaryCandidates: it takes nothing"
                    .to_owned(),
            ));
        } else if cluster != 0 && system_id != 0 && system_id != cluster {
            refused.push((
                i,
                format!(
                    "answers as a primary of another cluster (system identifier {system_id}, \
                     expected {cluster}): it takes nothing"
                ),
            ));
        } else if timeline != 0 && timeline < floor {
            refused.push((
                i,
                format!(
                    "answers as a primary on timeline {timeline}, but a primary has reached \
                     timeline {floor}: a former primary, it takes nothing"
                ),
            ));
        } else {
            eligible.push(i);
        }
    }
    let best = eligible
        .iter()
        .map(|&i| contenders[i].identity.timeline)
        .max();
    let winners: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| Some(contenders[i].identity.timeline) == best)
        .collect();
    let current_wins = winners.iter().any(|&i| contenders[i].current);
    let moves_to = match winners.as_slice() {
        [only] if !contenders[*only].current => Some(*only),
        _ => None,
    };
    let keeper = match (current_wins, moves_to) {
        (true, _) => winners.iter().copied().find(|&i| contenders[i].current),
        (false, Some(to)) => Some(to),
        (false, None) => None,
    };
    for &i in &eligible {
        if Some(i) == keeper {
            continue;
        }
        let timeline = contenders[i].identity.timeline;
        let reason = match keeper {
            Some(k) => format!(
                "split brain: answers as a primary on timeline {timeline}, the primary is on \
                 timeline {}: it takes nothing",
                contenders[k].identity.timeline
            ),
            None => format!(
                "split brain: {} servers answer as a primary on timeline {timeline}; which one \
                 is the primary cannot be told, so none takes the writes",
                winners.len()
            ),
        };
        refused.push((i, reason));
    }
    refused.sort_by_key(|(i, _)| *i);
    Judgement { moves_to, refused }
}

/// Why a standby seen as `identity` cannot serve reads for `primary` (another cluster or
/// another timeline), if it cannot. What is unknown on either side is not held against it.
pub(crate) fn diverged(primary: Identity, identity: Identity) -> Option<String> {
    let (ours, theirs) = (primary.system_id, identity.system_id);
    if ours != 0 && theirs != 0 && ours != theirs {
        return Some(format!(
            "belongs to another cluster (system identifier {theirs}, the primary's is {ours})"
        ));
    }
    let (ours, theirs) = (primary.timeline, identity.timeline);
    if ours != 0 && theirs != 0 && ours != theirs {
        return Some(format!(
            "on timeline {theirs}, the primary is on timeline {ours}: not following the \
             primary, whatever its position"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(system_id: u64, timeline: u32, current: bool) -> Contender {
        Contender {
            identity: Identity {
                system_id,
                timeline,
            },
            candidate: true,
            current,
        }
    }

    #[test]
    fn the_only_primary_takes_the_writes_and_the_current_one_keeps_them() {
        // The primary is down; a promoted replica answers.
        let j = decide(&[primary(7, 2, false)], 7, 1);
        assert_eq!(j.moves_to, Some(0));
        assert!(j.refused.is_empty());
        // The current one alone: nothing moves.
        let j = decide(&[primary(7, 1, true)], 7, 1);
        assert_eq!(
            j,
            Judgement {
                moves_to: None,
                refused: vec![]
            }
        );
    }

    #[test]
    fn split_brain_goes_to_the_higher_timeline_and_refuses_the_other() {
        // The old primary still runs on timeline 1; a replica was promoted to timeline 2.
        let j = decide(&[primary(7, 1, true), primary(7, 2, false)], 7, 1);
        assert_eq!(j.moves_to, Some(1));
        assert_eq!(j.refused.len(), 1);
        assert_eq!(j.refused[0].0, 0);
        assert!(j.refused[0].1.contains("split brain"), "{:?}", j.refused);
        // The promoted one is current; the old one comes back as a primary: refused as a
        // former primary (its timeline is under the floor).
        let j = decide(&[primary(7, 2, true), primary(7, 1, false)], 7, 2);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 1);
        assert!(j.refused[0].1.contains("former primary"), "{:?}", j.refused);
    }

    #[test]
    fn a_former_primary_alone_is_never_taken() {
        // The promoted primary is down too; the old one is back on timeline 1.
        let j = decide(&[primary(7, 1, false)], 7, 2);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 1);
    }

    #[test]
    fn a_tie_without_the_current_primary_is_refused_not_guessed() {
        let j = decide(&[primary(7, 3, false), primary(7, 3, false)], 7, 2);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 2);
        assert!(j.refused.iter().all(|(_, r)| r.contains("cannot be told")));
        // With the current primary in the tie, it keeps the writes.
        let j = decide(&[primary(7, 3, true), primary(7, 3, false)], 7, 2);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn other_clusters_and_servers_not_listed_take_nothing() {
        let mut unlisted = primary(7, 5, false);
        unlisted.candidate = false;
        let j = decide(&[primary(7, 1, true), primary(9, 4, false), unlisted], 7, 1);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 2);
        assert!(
            j.refused[0].1.contains("another cluster"),
            "{:?}",
            j.refused
        );
        assert!(
            j.refused[1].1.contains("primaryCandidates"),
            "{:?}",
            j.refused
        );
        // The cluster is unknown at start: the current primary's is taken.
        let j = decide(&[primary(7, 1, true), primary(9, 4, false)], 0, 0);
        assert_eq!(j.moves_to, None);
        assert!(j.refused[0].1.contains("another cluster"));
    }

    #[test]
    fn unknown_timelines_and_identifiers_are_not_held_against_a_server() {
        let j = decide(&[primary(0, 0, false)], 7, 2);
        assert_eq!(j.moves_to, Some(0));
    }
}
