#!/usr/bin/env bash
# The fault suite (tests/faults.rs) on a saturated machine: stress-ng keeps four CPU workers
# busy on this host (started here, stopped on exit) while the suite runs RUNS times in a row
# (default 5). Each run prints its table beside the plain sqlx pools measured in the same run.
# Needs Debian's stress-ng (apt-get install -y stress-ng).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
command -v stress-ng >/dev/null || { echo "stress-ng is not installed" >&2; exit 1; }
cargo test --test faults --no-run
stress-ng --cpu 4 --quiet &
stress=$!
trap 'kill "$stress" 2>/dev/null || true; wait "$stress" 2>/dev/null || true' EXIT
for run in $(seq 1 "$runs"); do
  echo "== fault suite under stress-ng --cpu 4: run $run of $runs"
  cargo test --test faults -- --nocapture --test-threads 1
done
echo "== $runs runs in a row passed under stress-ng --cpu 4"
