//! Time as the atomics and tokens keep it: milliseconds since the Unix epoch (wall clock), or
//! since an origin of its own (monotonic).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `time` in milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `at` in milliseconds since `origin`, plus one, so that 0 can stand for never: how a
/// server's atomics keep monotonic times.
pub(crate) fn ms_since(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// The time `ms` milliseconds after the Unix epoch; `None` for 0 (never).
pub(crate) fn from_unix_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}
