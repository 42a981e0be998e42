//! Which server takes the writes, when roles are observed (`db.roles: observed`, the default):
//! whichever configured server answers as a primary, refusing the ones that cannot be it.
//!
//! Every full check and every probe of a primary out of service asks each configured server
//! whether it is in recovery, which cluster it belongs to (`pg_control_system()`) and which
//! timeline it is on. The servers answering as a primary are then judged ([`decide`]). One
//! that is not the current primary takes the writes only if it is:
//!
//! - listed in `primaryCandidates` (or there is no list);
//! - of this cluster: its system identifier is known and equal to the cluster's;
//! - promoted from the timeline the writes are on: on a higher timeline (a copy that was not
//!   promoted, such as a restored backup, stays on it; a former primary started again is on a
//!   lower one), and not seen following an older timeline than that before;
//! - alone on the highest such timeline (a tie is refused rather than guessed);
//! - and, with `promotion: confirmed` (the default), only once the current primary stops being
//!   one: while it is in service and answers as a primary, the other is a split brain (a
//!   replica promoted to detach a copy) and takes nothing. `promotion: fenced` moves at once.
//!
//! What cannot be known (a timeline this role may not read) is not held against a server,
//! except its cluster: a server not known to be of this cluster never takes the writes.
//!
//! Pure, and unit-tested without PostgreSQL: the registry's election (`registry/election.rs`)
//! asks the servers, moves the writes and logs the refusals.

use crate::server::Identity;

/// One server answering as a primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Contender {
    pub(crate) identity: Identity,
    /// The timeline it was last seen following as a standby (0: never seen so).
    pub(crate) followed: u32,
    /// Listed in `primaryCandidates` (or no list).
    pub(crate) candidate: bool,
    /// It is the primary now.
    pub(crate) current: bool,
}

/// What the contenders are judged against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ground {
    /// The cluster's system identifier (0: not known).
    pub(crate) cluster: u64,
    /// The timeline the writes are on: the current primary's, as last seen answering as a
    /// primary (0: not known).
    pub(crate) timeline: u32,
    /// The current primary is in service and answers as a primary.
    pub(crate) holds: bool,
    /// `promotion: fenced`: a promoted server takes the writes even while the current primary
    /// holds them.
    pub(crate) fenced: bool,
}

/// The outcome of judging the servers that answer as primary.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Judgement {
    /// The contender (index) that must take the writes from the current primary, if any.
    pub(crate) moves_to: Option<usize>,
    /// Contenders that take nothing, and why.
    pub(crate) refused: Vec<(usize, String)>,
}

/// Why `c`, answering as a primary and not the current one, may never take the writes, if so.
fn unfit(c: &Contender, ground: &Ground) -> Option<String> {
    let Identity {
        system_id,
        timeline,
    } = c.identity;
    let ours = ground.timeline;
    let reason = if !c.candidate {
        "is not listed in primaryCandidates".to_owned()
    } else if system_id == 0 {
        "cannot be told to be of this cluster: this role may not read its system identifier \
         (grant EXECUTE on pg_control_system())"
            .to_owned()
    } else if ground.cluster == 0 {
        "cannot be told to be of this cluster: the cluster's system identifier is not known"
            .to_owned()
    } else if system_id != ground.cluster {
        format!(
            "is of another cluster (system identifier {system_id}, expected {})",
            ground.cluster
        )
    } else if ours != 0 && timeline != 0 && timeline < ours {
        format!("is on timeline {timeline}, below the primary's timeline {ours}: a former primary")
    } else if ours != 0 && timeline == ours {
        format!(
            "is on the primary's own timeline {ours}: not promoted from it (a copy, such as a \
             restored backup)"
        )
    } else if ours != 0 && c.followed != 0 && c.followed < ours {
        format!(
            "was seen following timeline {}, older than the primary's timeline {ours}: forked \
             from an older history",
            c.followed
        )
    } else {
        return None;
    };
    Some(format!(
        "answers as a primary but {reason}: it takes nothing"
    ))
}

/// Judges `contenders` (each answering as a primary) against `ground`.
pub(crate) fn decide(contenders: &[Contender], ground: Ground) -> Judgement {
    let mut refused = Vec::new();
    let mut eligible = Vec::new();
    for (i, c) in contenders.iter().enumerate() {
        if c.current {
            continue;
        }
        match unfit(c, &ground) {
            Some(reason) => refused.push((i, reason)),
            None => eligible.push(i),
        }
    }
    let current = contenders.iter().position(|c| c.current);
    let timeline = |i: usize| contenders[i].identity.timeline;
    let best = eligible.iter().map(|&i| timeline(i)).max();
    let winners: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| Some(timeline(i)) == best)
        .collect();
    // On a tie with the current primary, or above one on an unknown timeline, it keeps them.
    let above_current = |i: usize| current.is_none_or(|k| timeline(i) > timeline(k));
    let held = ground.holds && !ground.fenced;
    let moves_to = match winners.as_slice() {
        [only] if above_current(*only) && !held => Some(*only),
        _ => None,
    };
    for &i in &eligible {
        if Some(i) == moves_to {
            continue;
        }
        let at = timeline(i);
        let reason = if winners.len() > 1 && winners.contains(&i) && !held {
            format!(
                "split brain: {} servers answer as a primary on timeline {at}; which one is the \
                 primary cannot be told, so none takes the writes",
                winners.len()
            )
        } else if held && above_current(i) {
            format!(
                "split brain: answers as a primary on timeline {at} while the primary is in \
                 service and answers as one (db.promotion: confirmed): it takes nothing until \
                 the primary stops being one; where an HA manager fences the old primary, \
                 promotion: fenced moves the writes at once"
            )
        } else {
            format!(
                "split brain: answers as a primary on timeline {at}, the primary is on \
                 timeline {}: it takes nothing",
                current.map_or(ground.timeline, timeline)
            )
        };
        refused.push((i, reason));
    }
    if let (Some(to), Some(k)) = (moves_to, current) {
        refused.push((
            k,
            format!(
                "split brain: answers as a primary on timeline {}, while a server promoted to \
                 timeline {} takes the writes: it takes nothing",
                timeline(k),
                timeline(to)
            ),
        ));
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
            followed: 0,
            candidate: true,
            current,
        }
    }

    /// The current primary of cluster 7 on timeline 1 has stopped being one.
    fn gone(timeline: u32) -> Ground {
        Ground {
            cluster: 7,
            timeline,
            holds: false,
            fenced: false,
        }
    }

    #[test]
    fn the_only_primary_takes_the_writes_and_the_current_one_keeps_them() {
        // The primary is down; a promoted replica answers.
        let j = decide(&[primary(7, 2, false)], gone(1));
        assert_eq!(j.moves_to, Some(0));
        assert!(j.refused.is_empty());
        // The current one alone: nothing moves.
        let holds = Ground {
            holds: true,
            ..gone(1)
        };
        let j = decide(&[primary(7, 1, true)], holds);
        assert_eq!(
            j,
            Judgement {
                moves_to: None,
                refused: vec![]
            }
        );
    }

    #[test]
    fn a_promotion_while_the_primary_holds_is_a_split_brain_unless_fenced() {
        // The primary answers and serves; an operator promoted replica1 to detach a copy.
        let holds = Ground {
            holds: true,
            ..gone(1)
        };
        let j = decide(&[primary(7, 1, true), primary(7, 2, false)], holds);
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 1);
        assert_eq!(j.refused[0].0, 1);
        assert!(j.refused[0].1.contains("split brain"), "{:?}", j.refused);
        assert!(
            j.refused[0].1.contains("promotion: fenced"),
            "{:?}",
            j.refused
        );
        // The same while the primary's check got no answer this round but it still serves.
        assert_eq!(decide(&[primary(7, 2, false)], holds).moves_to, None);
        // Once it stops being one, the promoted one takes the writes.
        assert_eq!(decide(&[primary(7, 2, false)], gone(1)).moves_to, Some(0));
        // Fenced: at once, and the old primary is refused.
        let fenced = Ground {
            fenced: true,
            ..holds
        };
        let j = decide(&[primary(7, 1, true), primary(7, 2, false)], fenced);
        assert_eq!(j.moves_to, Some(1));
        assert_eq!(j.refused.len(), 1);
        assert_eq!(j.refused[0].0, 0);
        assert!(j.refused[0].1.contains("split brain"), "{:?}", j.refused);
    }

    #[test]
    fn only_a_server_of_this_cluster_promoted_from_our_timeline_takes_the_writes() {
        // A former primary started again, alone.
        let j = decide(&[primary(7, 1, false)], gone(2));
        assert_eq!(j.moves_to, None);
        assert!(j.refused[0].1.contains("former primary"), "{:?}", j.refused);
        // A copy on the primary's own timeline (a restored backup, a clone) never takes them.
        let j = decide(&[primary(7, 2, false)], gone(2));
        assert_eq!(j.moves_to, None);
        assert!(j.refused[0].1.contains("own timeline"), "{:?}", j.refused);
        // A standby last seen on an older timeline, promoted: forked before our history.
        let mut stranded = primary(7, 3, false);
        stranded.followed = 1;
        let j = decide(&[stranded], gone(2));
        assert_eq!(j.moves_to, None);
        assert!(j.refused[0].1.contains("older history"), "{:?}", j.refused);
        // Seen following ours (or a later one), promoted: taken.
        for followed in [2, 3] {
            let mut promoted = primary(7, 4, false);
            promoted.followed = followed;
            assert_eq!(decide(&[promoted], gone(2)).moves_to, Some(0));
        }
        // Unknown system identifier: not known to be of this cluster.
        let j = decide(&[primary(0, 3, false)], gone(2));
        assert_eq!(j.moves_to, None);
        assert!(
            j.refused[0].1.contains("pg_control_system"),
            "{:?}",
            j.refused
        );
        // Unknown cluster: nothing to compare with.
        let j = decide(
            &[primary(7, 3, false)],
            Ground {
                cluster: 0,
                ..gone(2)
            },
        );
        assert_eq!(j.moves_to, None);
        // An unknown timeline is not held against it.
        assert_eq!(decide(&[primary(7, 0, false)], gone(2)).moves_to, Some(0));
        assert_eq!(decide(&[primary(7, 5, false)], gone(0)).moves_to, Some(0));
    }

    #[test]
    fn a_bogus_timeline_never_poisons_what_comes_after() {
        // A server reporting timeline FFFFFFFF while the primary holds is refused, and the
        // ground (the primary's own timeline) does not move: a real promotion later is taken.
        let holds = Ground {
            holds: true,
            ..gone(1)
        };
        let j = decide(&[primary(7, 1, true), primary(7, u32::MAX, false)], holds);
        assert_eq!(j.moves_to, None);
        assert_eq!(decide(&[primary(7, 2, false)], gone(1)).moves_to, Some(0));
    }

    #[test]
    fn a_tie_without_the_current_primary_is_refused_not_guessed() {
        let j = decide(&[primary(7, 3, false), primary(7, 3, false)], gone(2));
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.len(), 2);
        assert!(j.refused.iter().all(|(_, r)| r.contains("cannot be told")));
        // The current primary (out of service but answering) keeps them on a tie.
        let j = decide(&[primary(7, 3, true), primary(7, 3, false)], gone(0));
        assert_eq!(j.moves_to, None);
        assert_eq!(j.refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn other_clusters_and_servers_not_listed_take_nothing() {
        let mut unlisted = primary(7, 5, false);
        unlisted.candidate = false;
        let j = decide(&[primary(9, 4, false), unlisted], gone(1));
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
    }
}
