#!/usr/bin/env bash
# Runs the cargo-fuzz targets for a while each (docs/fuzzing.md).
#
#   fuzz/run.sh                  every target, 60 s each
#   fuzz/run.sh router config    those targets
#   FUZZ_SECONDS=600 fuzz/run.sh etcd_value
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). New inputs go to fuzz/target/work-corpus/<target> (not
# committed; fold the useful ones into fuzz/corpus/<target> with `cargo fuzz cmin`), crashes
# to fuzz/artifacts/<target>/. Exits non-zero when a target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "no nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi

cargo +nightly fuzz build -a
status=0
summary=()
for target in "${targets[@]}"; do
    work="fuzz/target/work-corpus/$target"
    log="fuzz/target/$target.log"
    mkdir -p "$work"
    echo "== $target: ${seconds} s"
    if cargo +nightly fuzz run -a "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        result="ok"
    else
        result="CRASH (see $log and fuzz/artifacts/$target/)"
        status=1
    fi
    execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo '?')"
    summary+=("$target: $result, ${execs} execs, coverage ${cov} edges in ${seconds} s")
done
printf '%s\n' "${summary[@]}"
exit "$status"
