#!/usr/bin/env bash
# `make fuzz`: builds the cargo-fuzz targets of fuzz/ (installing cargo-fuzz when absent),
# writes their seed corpora, runs each for FUZZ_SECS seconds and prints executions and
# crashes per target. Exits non-zero when any target crashed; the inputs are kept under
# fuzz/artifacts/<target>/ (replay one: `cargo fuzz run -s none --fuzz-dir fuzz <target>
# fuzz/artifacts/<target>/<file>`).
#
# Toolchain: the repository's pinned stable one, no nightly. cargo-fuzz's default
# AddressSanitizer needs `-Zsanitizer` (nightly, or RUSTC_BOOTSTRAP=1 on stable, whose std
# ships the ASan runtime), and the cc crate then builds zstd's C with ASan too, which
# breaks librdkafka's configure; so the targets run with `-s none`: libFuzzer with
# coverage, debug assertions (overflow checks) on. Our crates forbid `unsafe`, so what ASan
# would add is limited to the C and unsafe code of dependencies.
#
# Usage: scripts/fuzz.sh [SECS] [TARGET...]   (SECS default 60; targets default all)
# FUZZ_DEV=1 builds without optimisation (`cargo fuzz build --dev`): about a third of the
# release build's time on 2 cores, at a tenth of the executions per second; `make fuzz-ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
want="0.13.1"
secs="${1:-60}"
shift || true
all=(envelope incident gateway_lines cap_ack subscription_body ack_body trust_store rules config sse_cursor)
[ "$#" -gt 0 ] && targets=("$@") || targets=("${all[@]}")

if ! cargo fuzz --version 2>/dev/null | grep -q " $want\$"; then
  echo "installing cargo-fuzz $want..."
  cargo install --locked "cargo-fuzz@$want"
fi

profile=()
[ "${FUZZ_DEV:-0}" = 1 ] && profile=(--dev)
start=$(date +%s)
cargo fuzz build "${profile[@]}" -s none --fuzz-dir fuzz
built=$(date +%s)
EWN_FUZZ_SEEDS="$PWD/fuzz/corpus" cargo fuzz run "${profile[@]}" -s none --fuzz-dir fuzz seeds -- -runs=1 \
  >fuzz/seeds.log 2>&1 || { cat fuzz/seeds.log >&2; exit 1; }

results=()
failed=0
for t in "${targets[@]}"; do
  log="fuzz/artifacts/$t.log"
  mkdir -p "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  set +e
  cargo fuzz run "${profile[@]}" -s none --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  crashes=$((after - before))
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    echo "$t: exit $rc, $crashes new artifacts; see $log" >&2
  fi
  results+=("$(printf '| %-17s | %12s | %8s | %7s | %6s |' "$t" "${execs:-?}" "${rate:-?}" "$crashes" "$corpus")")
done
end=$(date +%s)
echo
echo "cargo-fuzz $want, -s none${profile:+ ${profile[*]}}, ${secs} s per target; build $((built - start)) s, total $((end - start)) s"
echo "| target            |   executions |  exec/s  | crashes | corpus |"
echo "|-------------------|-------------:|---------:|--------:|-------:|"
printf '%s\n' "${results[@]}"
exit "$failed"
