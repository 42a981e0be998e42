//! A server's load: whether its pool has a connection to give and, for the load-aware
//! strategies (`db.loadBalancing`), the work waiting for one of its connections, the
//! connections its pool has handed out, and a peak-EWMA estimate of how long its work takes.
//! Atomics only: written by the work that ran there, read by each pick, never locked.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Server;

/// How fast a latency estimate forgets: a sample's weight halves in about `DECAY * ln 2`, and an
/// estimate with no new sample decays towards zero at that rate, so that a replica that was
/// slow is tried again.
const DECAY: Duration = Duration::from_secs(1);

/// What the load-aware strategies know of one server. On cache lines of its own: every query
/// changes the waiting count, from whichever core runs it, and the server's other fields are
/// read as often.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Load {
    /// Work waiting for one of the server's connections.
    waiting: AtomicU32,
    /// The latency estimate, an `f64` of nanoseconds (0: none yet).
    latency: AtomicU64,
    /// When the estimate was last updated, in nanoseconds since `origin`.
    stamp: AtomicU64,
    origin: Instant,
}

impl Default for Load {
    fn default() -> Load {
        Load {
            waiting: AtomicU32::new(0),
            latency: AtomicU64::new(0f64.to_bits()),
            stamp: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }
}

/// One piece of work waiting for a connection, counted while it lives (a wait given up when
/// its request is dropped stops counting too).
pub(crate) struct Waiting<'s>(&'s Load);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    /// Counts a wait for a connection until the guard drops.
    pub(crate) fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self)
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes one piece of work's latency into the estimate. Two updates at once may lose one
    /// of them, as an estimate may.
    pub(crate) fn observe(&self, latency: Duration, now: Instant) {
        let now = self.nanos(now);
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let estimate = f64::from_bits(self.latency.load(Ordering::Relaxed));
        let sample = latency.as_nanos() as f64;
        let age = now.saturating_sub(last) as f64;
        let next = observed(estimate, age, sample);
        self.latency.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The latency estimate now, in nanoseconds: decayed since its last sample.
    pub(crate) fn latency_ns(&self, now: Instant) -> f64 {
        let estimate = f64::from_bits(self.latency.load(Ordering::Relaxed));
        let age = self
            .nanos(now)
            .saturating_sub(self.stamp.load(Ordering::Relaxed));
        decayed(estimate, age as f64)
    }
}

impl Server {
    /// The most connections the pool may open.
    pub(crate) fn max_connections(&self) -> u32 {
        self.pool.options().get_max_connections()
    }

    /// Whether the pool has opened all the connections it may.
    pub(crate) fn full(&self) -> bool {
        self.pool.size() >= self.max_connections()
    }

    /// Whether the pool has no connection to give without waiting: all open, none idle.
    pub(crate) fn exhausted(&self) -> bool {
        self.full() && self.pool.num_idle() == 0
    }

    /// Whether the server looks silent: connections of its pool are out with work, and for
    /// `connectTimeout` it has answered none of its work and passed no check or probe.
    pub(crate) fn silent(&self) -> bool {
        let wait = self.connect_timeout();
        let out = (self.pool.size() as usize).saturating_sub(self.pool.num_idle());
        let checked_ms = crate::clock::now_ms()
            .saturating_sub(self.last_ok_ms.load(std::sync::atomic::Ordering::Relaxed));
        out > 0 && !self.answered_within(wait) && u128::from(checked_ms) > wait.as_millis()
    }

    /// Closes idle connections beyond `maxIdleConns`. Run by the health loop: sqlx has no
    /// idle cap of its own, and a cap checked when connections are returned would race with
    /// other returns in flight.
    pub(crate) async fn trim_idle(&self) {
        let Some(max_idle) = self.max_idle else {
            return;
        };
        while self.pool.num_idle() > max_idle as usize {
            let Some(conn) = self.pool.try_acquire() else {
                break;
            };
            let _ = conn.close().await;
        }
    }

    /// The work on this server now: connections its pool has handed out, and work waiting
    /// for one.
    pub(crate) fn outstanding(&self) -> u32 {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        let in_use = self.pool.size().saturating_sub(idle);
        in_use + self.load.waiting.load(Ordering::Relaxed)
    }
}

/// An estimate of `estimate` nanoseconds made `age` nanoseconds ago, now: decayed towards zero.
fn decayed(estimate: f64, age_ns: f64) -> f64 {
    estimate * kept(age_ns)
}

/// The share of an estimate `age` nanoseconds old that is kept now.
fn kept(age_ns: f64) -> f64 {
    (-age_ns / DECAY.as_nanos() as f64).exp()
}

/// The estimate after a `sample`, `age` nanoseconds after the last one: a sample above the
/// decayed estimate becomes the estimate at once (a peak is believed), one below moves the
/// estimate towards it by the weight of the time since the last (an average over about
/// [`DECAY`]).
fn observed(estimate: f64, age_ns: f64, sample: f64) -> f64 {
    let keep = kept(age_ns);
    if sample >= estimate * keep {
        return sample;
    }
    estimate * keep + sample * (1.0 - keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peak_is_believed_at_once_and_forgotten_over_time() {
        let ms = 1_000_000.0;
        // A slow sample replaces a low estimate at once.
        assert_eq!(observed(1.0 * ms, 1_000.0, 50.0 * ms), 50.0 * ms);
        // Fast samples a millisecond apart barely move it...
        let after_one = observed(50.0 * ms, ms, 1.0 * ms);
        assert!(
            after_one > 49.0 * ms && after_one < 50.0 * ms,
            "{after_one}"
        );
        // ...but a second of them brings it close to the fast latency.
        let mut estimate = 50.0 * ms;
        for _ in 0..1000 {
            estimate = observed(estimate, ms, 1.0 * ms);
        }
        assert!(estimate < 20.0 * ms, "{estimate}");
        // With no sample at all, it decays towards zero: a slow replica is tried again.
        assert!(decayed(50.0 * ms, 5_000.0 * ms) < 0.5 * ms);
        assert_eq!(decayed(50.0 * ms, 0.0), 50.0 * ms);
    }
}
