//! What routing costs a request: the layer and `DbRead` against a bare router, replica
//! selection for 1 to 64 replicas (and under contention), a consistency-token check, and the
//! heap allocations per request.
//!
//! `cargo bench --bench routing`. No database is needed: the registry is built lazily and its
//! health loop never runs (its runtime is never driven), so every replica counts as healthy and
//! nothing here does I/O. Results and the machine they came from: `benches/RESULTS.md`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{balanced, idle_runtime, ready, registry, request, routers};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rwsplit::{ConsistencyConfig, ConsistencyToken, LoadBalancing};
use tower::ServiceExt;

/// Counts heap allocations, to show what a request allocates.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn layer_overhead(c: &mut Criterion) {
    let runtime = idle_runtime();
    let _entered = runtime.enter();
    let registry = registry(2, ConsistencyConfig::off());
    let mut group = c.benchmark_group("request");
    for (name, router) in routers(&registry) {
        group.bench_function(name, |b| {
            b.iter(|| ready(router.clone().oneshot(request())).unwrap())
        });
    }
    group.finish();
}

fn allocations(c: &mut Criterion) {
    let runtime = idle_runtime();
    let _entered = runtime.enter();
    let registry = registry(2, ConsistencyConfig::off());
    let mut counts = Vec::new();
    for (name, router) in routers(&registry) {
        // Warm up once (lazy statics, first-time registrations), then count over many.
        ready(router.clone().oneshot(request())).unwrap();
        const N: u64 = 10_000;
        let requests: Vec<_> = (0..N).map(|_| request()).collect();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for request in requests {
            drop(ready(router.clone().oneshot(request)).unwrap());
        }
        let per_request = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
        counts.push((name, per_request));
    }
    let (base, noop) = (counts[0].1, counts[1].1);
    for (name, per_request) in &counts {
        println!(
            "allocations per request, {name}: {per_request:.2} ({:+.2} against without rwsplit, \
             {:+.2} against a layer that does nothing)",
            per_request - base,
            per_request - noop
        );
    }
    // Keep criterion's report complete: the selection path alone allocates nothing.
    let registry = self::registry(2, ConsistencyConfig::off());
    c.bench_function("allocations/registry.read()", |b| {
        b.iter(|| black_box(registry.read()))
    });
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        black_box(registry.read());
    }
    println!(
        "allocations per registry.read(): {:.2}",
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 10_000.0
    );
}

fn selection(c: &mut Criterion) {
    let runtime = idle_runtime();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("select");
    for replicas in [1usize, 2, 8, 64] {
        let registry = registry(replicas, ConsistencyConfig::off());
        group.bench_with_input(BenchmarkId::new("all in", replicas), &registry, |b, r| {
            b.iter(|| black_box(r.read()))
        });
        if replicas > 1 {
            for i in (0..replicas).step_by(2) {
                registry
                    .set_weight(&format!("replica{}", i + 1), 0)
                    .unwrap();
            }
            group.bench_with_input(BenchmarkId::new("half out", replicas), &registry, |b, r| {
                b.iter(|| black_box(r.read()))
            });
        }
    }
    group.finish();

    // Each strategy, all replicas in: round-robin reads one schedule slot, least-outstanding
    // every server's pool counters, peak-EWMA two servers' counters and latency estimates.
    let mut group = c.benchmark_group("select by strategy");
    for strategy in [
        LoadBalancing::RoundRobin,
        LoadBalancing::LeastOutstanding,
        LoadBalancing::PeakEwma,
    ] {
        for replicas in [1usize, 2, 8, 64] {
            let registry = balanced(replicas, ConsistencyConfig::off(), strategy);
            let id = BenchmarkId::new(format!("{strategy:?}"), replicas);
            group.bench_with_input(id, &registry, |b, r| b.iter(|| black_box(r.read())));
        }
    }
    group.finish();

    // Every core picking from one registry at once: no lock, so the cost per pick stays flat
    // (the shared ticket counter is the only contended word).
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut group = c.benchmark_group("select under contention");
    for replicas in [2usize, 64] {
        let registry = registry(replicas, ConsistencyConfig::off());
        group.bench_with_input(
            BenchmarkId::new(format!("{threads} threads"), replicas),
            &registry,
            |b, registry| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for _ in 0..threads {
                            scope.spawn(|| {
                                for _ in 0..iters {
                                    black_box(registry.read());
                                }
                            });
                        }
                    });
                    // Time per pick on each thread, all running together.
                    start.elapsed()
                })
            },
        );
    }
    group.finish();
}

fn consistency(c: &mut Criterion) {
    let runtime = idle_runtime();
    let _entered = runtime.enter();
    let key = "an example signing key of at least 32 bytes";
    let registry = registry(2, ConsistencyConfig::lsn().signing_key(key));
    let token = ConsistencyToken::at(1 << 30, SystemTime::now());
    let signed = registry.sign_token(&token);
    c.bench_function("token/verify and pick a caught-up server", |b| {
        b.iter(|| {
            let token = registry.verify_token(black_box(&signed)).unwrap();
            black_box(registry.read_after(&token))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = layer_overhead, allocations, selection, consistency
}
criterion_main!(benches);
