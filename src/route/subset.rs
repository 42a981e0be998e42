//! Which replicas one app instance connects to when it is told to use only some of them
//! (`replicasPerInstance`): weighted rendezvous hashing of the instance's id with each replica's
//! name. Every instance ranks the replicas its own way and keeps its first few, so a fleet of
//! N instances spreads over R replicas about evenly (by weight), each instance keeps the same
//! subset across restarts, and adding or removing a replica moves only the instances that pick
//! or picked it. Pure; the registry applies it when it starts and on every reload.

/// The names of the `keep` replicas `instance` uses, of `replicas` (name and weight), in the
/// order given. Replicas of weight 0 take no reads and are never chosen.
pub(crate) fn subset<'a>(
    instance: &str,
    replicas: &'a [(&'a str, u32)],
    keep: usize,
) -> Vec<&'a str> {
    let mut ranked: Vec<(f64, usize)> = replicas
        .iter()
        .enumerate()
        .filter(|(_, (_, weight))| *weight > 0)
        .map(|(i, (name, weight))| (score(instance, name, *weight), i))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut chosen: Vec<usize> = ranked.into_iter().take(keep).map(|(_, i)| i).collect();
    chosen.sort_unstable();
    chosen.into_iter().map(|i| replicas[i].0).collect()
}

/// Weighted rendezvous score: `-weight / ln(u)` for a uniform `u` in (0, 1) drawn from the pair.
fn score(instance: &str, replica: &str, weight: u32) -> f64 {
    let hash = mix(fnv(
        instance.as_bytes(),
        fnv(b"\0", fnv(replica.as_bytes(), FNV_OFFSET)),
    ));
    // 53 random bits, never 0 or 1.
    let u = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight) / u.ln()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, from `state`: stable across platforms and releases, unlike std's hasher.
fn fnv(bytes: &[u8], state: u64) -> u64 {
    bytes.iter().fold(state, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: [(&str, u32); 5] = [("r1", 1), ("r2", 1), ("r3", 1), ("r4", 1), ("r5", 1)];

    #[test]
    fn an_instance_keeps_its_subset_and_a_fleet_spreads_over_the_replicas() {
        assert_eq!(subset("app-7", &FIVE, 2), subset("app-7", &FIVE, 2));
        assert_eq!(subset("app-7", &FIVE, 2).len(), 2);
        assert_eq!(subset("app-7", &FIVE, 9).len(), 5);
        let mut picked = [0usize; 5];
        for i in 0..1000 {
            for name in subset(&format!("app-{i}"), &FIVE, 2) {
                picked[FIVE.iter().position(|(n, _)| *n == name).unwrap()] += 1;
            }
        }
        // 2,000 picks over 5 replicas: 400 each, within 15 %.
        assert!(
            picked.iter().all(|&n| (340..=460).contains(&n)),
            "{picked:?}"
        );
    }

    #[test]
    fn weights_shift_the_share_and_weight_zero_is_never_chosen() {
        let weighted = [("big", 3), ("small", 1), ("drained", 0)];
        let mut big = 0;
        for i in 0..2000 {
            let chosen = subset(&format!("app-{i}"), &weighted, 1);
            assert_ne!(chosen, ["drained"]);
            big += usize::from(chosen == ["big"]);
        }
        // Three quarters of the instances, within a few points.
        assert!((1400..=1600).contains(&big), "{big}");
    }

    #[test]
    fn a_new_replica_moves_only_the_instances_that_pick_it() {
        let six = [FIVE.as_slice(), &[("r6", 1)]].concat();
        let mut moved = 0;
        for i in 0..1000 {
            let id = format!("app-{i}");
            let (before, after) = (subset(&id, &FIVE, 2), subset(&id, &six, 2));
            if before != after {
                moved += 1;
                // What changed is that r6 came in.
                assert!(after.contains(&"r6"), "{before:?} -> {after:?}");
            }
        }
        // About 2 in 6 instances now pick r6.
        assert!((250..=420).contains(&moved), "{moved}");
    }
}
