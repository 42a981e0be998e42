//! Rounds of one query shared by everyone waiting for it: the replay positions asked of the
//! replicas when a read with a token finds no replica known to have its write, and (when
//! `shareTokenQueries` is set) the primary's position for writes' tokens.
//!
//! A caller needs a result taken *after* it arrived (a position read after its commit covers
//! it). One round runs at a time; callers that arrive while it runs wait for the next one,
//! which then serves them all. So the query runs at most back to back, and under load one
//! round serves every caller that arrived during the one before.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Single-flight rounds of a query whose result is a `T`.
///
/// ```text
/// caller A ──join──▶ round 1 ───────────▶ A
/// callers B, C ─join (during round 1)─▶ wait ─▶ round 2 (run by B) ─▶ B, C
/// ```
#[derive(Debug)]
pub(crate) struct Rounds<T> {
    /// Callers so far; a round covers those who arrived before it started.
    arrived: AtomicU64,
    /// Held while a round runs; keeps the last round's result with how many callers it
    /// covers.
    last: tokio::sync::Mutex<Option<(u64, T)>>,
    /// Rounds run, for the metrics and tests.
    run: AtomicU64,
}

impl<T> Default for Rounds<T> {
    fn default() -> Self {
        Rounds {
            arrived: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(None),
            run: AtomicU64::new(0),
        }
    }
}

impl<T: Clone> Rounds<T> {
    /// A result of `round` that started after this call: the running round's successor,
    /// shared with everyone who arrived meanwhile. A caller that starts a round first waits
    /// `gather` for more callers to arrive, and the round covers them too.
    pub(crate) async fn join<E, F, Fut>(&self, gather: Duration, round: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let me = self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if let Some((covers, result)) = last.as_ref()
            && *covers > me
        {
            return Ok(result.clone());
        }
        if !gather.is_zero() {
            tokio::time::sleep(gather).await;
        }
        // Everyone who arrived before this point is covered by a round that starts now.
        let covers = self.arrived.load(Ordering::SeqCst);
        self.run.fetch_add(1, Ordering::Relaxed);
        let result = round().await?;
        *last = Some((covers, result.clone()));
        Ok(result)
    }

    /// How many rounds ran.
    #[cfg(test)]
    pub(crate) fn rounds(&self) -> u64 {
        self.run.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn callers_during_a_round_share_the_next_one() {
        let rounds = Arc::new(Rounds::<u64>::default());
        let position = Arc::new(AtomicU64::new(0));
        let round = |rounds: Arc<Rounds<u64>>, position: Arc<AtomicU64>| async move {
            rounds
                .join(Duration::ZERO, || async {
                    // The position when the round starts; the query takes 10 ms.
                    let seen = position.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok::<_, ()>(seen)
                })
                .await
                .unwrap()
        };
        // One caller starts a round; nine arrive (after writing position 5) while it runs.
        let first = tokio::spawn(round(Arc::clone(&rounds), Arc::clone(&position)));
        tokio::time::sleep(Duration::from_millis(1)).await;
        position.store(5, Ordering::SeqCst);
        let later: Vec<_> = (0..9)
            .map(|_| tokio::spawn(round(Arc::clone(&rounds), Arc::clone(&position))))
            .collect();
        assert_eq!(first.await.unwrap(), 0);
        for caller in later {
            // Each sees a result taken after it arrived, never the round that was running.
            assert_eq!(caller.await.unwrap(), 5);
        }
        assert_eq!(rounds.rounds(), 2, "ten callers, two rounds");

        // Alone, a caller runs its own round.
        position.store(7, Ordering::SeqCst);
        assert_eq!(round(Arc::clone(&rounds), Arc::clone(&position)).await, 7);
        assert_eq!(rounds.rounds(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_within_the_gathering_time_share_the_round_it_starts() {
        let rounds = Arc::new(Rounds::<u64>::default());
        let callers: Vec<_> = (0..5u64)
            .map(|i| {
                let rounds = Arc::clone(&rounds);
                tokio::spawn(async move {
                    // One caller every millisecond; the first gathers for 10 ms.
                    tokio::time::sleep(Duration::from_millis(i)).await;
                    rounds
                        .join(Duration::from_millis(10), || async { Ok::<_, ()>(i) })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), 0, "the first caller's round");
        }
        assert_eq!(rounds.rounds(), 1, "five callers, one round");
    }

    #[tokio::test]
    async fn a_failed_round_fails_its_caller_and_the_next_caller_runs_again() {
        let rounds = Rounds::<u64>::default();
        assert_eq!(
            rounds
                .join(Duration::ZERO, || async { Err::<u64, _>("down") })
                .await,
            Err("down")
        );
        assert_eq!(
            rounds
                .join(Duration::ZERO, || async { Ok::<_, &str>(3) })
                .await,
            Ok(3)
        );
        assert_eq!(rounds.rounds(), 2);
    }
}
