#!/usr/bin/env bash
# Runs every fuzz target for the given number of seconds (default 60), each from its committed
# seeds in fuzz/seeds/<target> plus what earlier runs found in fuzz/corpus/<target>.
# Exits non-zero on the first crash; libFuzzer leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
mkdir -p logs
# An assignment, not a `for` word list, so that a failing `cargo fuzz list` stops the script.
targets=$(cargo fuzz list)
[ -n "$targets" ] || { echo "no fuzz targets found" >&2; exit 1; }
for target in $targets; do
  mkdir -p "corpus/$target"
  echo "-- $target for $seconds s"
  log="logs/$target.log"
  if ! cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$log"
done
