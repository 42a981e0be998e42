//! What the measuring examples share: their command-line options, and the process's CPU time.

/// The number after `name` on the command line (`--seconds 8`), or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `name` is on the command line (`--pair`).
#[allow(
    dead_code,
    reason = "each example includes this file; not every one takes a flag"
)]
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// CPU time this process has used so far (user and system), in seconds, from `/proc/self/stat`
/// (0 where there is none).
#[allow(
    dead_code,
    reason = "each example includes this file; not every one measures CPU"
)]
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces, inside parentheses).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}
