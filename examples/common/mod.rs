//! What the measuring examples share: their command-line options.

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
