//! Instructions per request and per pick, counted by callgrind: repeatable to the instruction
//! where timings on a shared machine swing by 2x between runs.
//!
//! `cargo bench --bench instructions` (needs `valgrind`). Each case runs twice under
//! `valgrind --tool=callgrind`, once with a warm-up request only and once with 20,000 more;
//! the difference over 20,000 is the cost of one. Results: `benches/RESULTS.md`.

mod common;

use std::hint::black_box;
use std::process::Command;
use std::time::SystemTime;

use common::{idle_runtime, ready, registry, request, routers};
use rwsplit::{ConsistencyConfig, ConsistencyToken};
use tower::ServiceExt;

const N: u64 = 20_000;
const KEY: &str = "an example signing key of at least 32 bytes";

/// The cases: each router of [`routers`] by name, then replica picks and a token check.
fn cases() -> Vec<String> {
    let runtime = idle_runtime();
    let _entered = runtime.enter();
    let registry = registry(2, ConsistencyConfig::off());
    let mut cases: Vec<String> = routers(&registry)
        .into_iter()
        .map(|(name, _)| format!("request/{name}"))
        .collect();
    cases.extend(["select/2", "select/64", "token/verify and pick"].map(String::from));
    cases
}

/// Runs `case` once to warm up, then `n` times.
fn run(case: &str, n: u64) {
    let runtime = idle_runtime();
    let _entered = runtime.enter();
    if let Some(name) = case.strip_prefix("request/") {
        let registry = registry(2, ConsistencyConfig::off());
        let (_, router) = routers(&registry)
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect("a known router");
        for _ in 0..=n {
            drop(ready(router.clone().oneshot(request())).unwrap());
        }
    } else if let Some(replicas) = case.strip_prefix("select/") {
        let registry = registry(replicas.parse().unwrap(), ConsistencyConfig::off());
        for _ in 0..=n {
            black_box(registry.read());
        }
    } else {
        let registry = registry(2, ConsistencyConfig::lsn().signing_key(KEY));
        let signed = registry.sign_token(&ConsistencyToken::at(1 << 30, SystemTime::now()));
        for _ in 0..=n {
            let token = registry.verify_token(black_box(&signed)).unwrap();
            black_box(registry.read_after(&token));
        }
    }
}

/// Instructions callgrind counts for this program running `case` with `n` repetitions.
fn instructions(case: &str, n: u64) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--cache-sim=no",
        ])
        .arg(exe)
        .args(["--run", case, &n.to_string()])
        .output()
        .expect("run valgrind");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{case}: {stderr}");
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count from callgrind: {stderr}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--run") {
        run(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind is not installed: this benchmark counts instructions with callgrind");
        return;
    }
    let filter = args[1..].iter().find(|a| !a.starts_with("--"));
    let mut baseline = None;
    let mut noop = None;
    println!("instructions per operation (callgrind, {N} repetitions after a warm-up)");
    for case in cases() {
        if filter.is_some_and(|f| !case.contains(f.as_str())) {
            continue;
        }
        let per = (instructions(&case, N) - instructions(&case, 0)) as f64 / N as f64;
        let compared = match (case.as_str(), baseline, noop) {
            ("request/without rwsplit", ..) => {
                baseline = Some(per);
                String::new()
            }
            ("request/a layer that does nothing", Some(base), _) => {
                noop = Some(per);
                format!("  ({:+.0} against without rwsplit)", per - base)
            }
            (c, Some(base), Some(noop)) if c.starts_with("request/") => format!(
                "  ({:+.0} against without rwsplit, {:+.0} against a layer that does nothing; \
                 {:.2}x)",
                per - base,
                per - noop,
                per / base
            ),
            _ => String::new(),
        };
        println!("{case:<50} {per:>8.0}{compared}");
    }
}
