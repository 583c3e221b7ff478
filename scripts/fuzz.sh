#!/usr/bin/env bash
# Runs every cargo-fuzz target for a number of executions (default one million each) and
# prints libFuzzer's final line per target. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Crashes are kept under fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [runs] [target ...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
runs=${1:-1000000}
shift || true
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo +nightly fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  start=$(date +%s)
  log=$(mktemp)
  # Hand-written seeds (fuzz/seeds/<target>, committed) start the search where parsers accept.
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  if ! cargo +nightly fuzz run -O "$target" "corpus/$target" "${seeds[@]}" -- -runs="$runs" -max_len=65536 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "$target: FAILED (see fuzz/artifacts/$target)"
    exit 1
  fi
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+.*DONE' "$log" | tail -1 | grep -oE 'cov: [0-9]+' || true)
  echo "$target: ${execs:-?} executions in $(( $(date +%s) - start )) s, ${cov:-cov: ?}, no crash"
  rm -f "$log"
done
