#!/usr/bin/env bash
# Fuzz smoke test: build every cargo-fuzz target in fuzz/ and run each for a
# few seconds from the committed corpus; fail if any target crashes (panic,
# failed property assertion, timeout, out-of-memory).
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]      # default 20
#
# Environment:
#   FUZZ_TARGETS    space-separated subset of targets (default: all, from `cargo fuzz list`)
#   FUZZ_JOBS       targets fuzzed at once (default: number of cores, at most 4)
#   FUZZ_SANITIZER  none (default) | address
#
# How this works on a stable toolchain (no nightly on these machines):
# - cargo-fuzz is installed from crates.io if missing (`cargo install
#   cargo-fuzz --locked`, pinned below); it needs no nightly of its own.
# - The coverage instrumentation libFuzzer needs is stable rustc: cargo-fuzz
#   passes `-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`.
#   The only nightly-only flag it adds is `-Zsanitizer=address`, so we build
#   with `--sanitizer none` by default: panics, overflow checks (the build has
#   debug assertions on) and the targets' property assertions are what finds
#   bugs in this safe-Rust code, and it runs ~2.5x faster than with ASan.
# - FUZZ_SANITIZER=address builds with ASan by setting RUSTC_BOOTSTRAP=1,
#   which lets stable rustc accept `-Zsanitizer=address` (works with the
#   rustc on this machine; use it for longer local runs if you like).
# - libFuzzer itself is C++ compiled by the libfuzzer-sys crate's build
#   script (needs a C++ compiler: g++ is on the machine).
# The committed corpus (fuzz/corpus/<target>/) is copied to a temporary
# directory so runs never grow the repository's corpus. Crash inputs land in
# fuzz/artifacts/<target>/ (git-ignored) and are also printed as base64 so a
# CI log is enough to reproduce:
#   cargo fuzz run --fuzz-dir fuzz -s none <target> fuzz/artifacts/<target>/crash-...
#
# Measured on the 2-core machine (see docs/fuzzing.md): cold build of all six
# targets ~2-3 min, then 6 targets x 20 s two at a time ~1 min; installing
# cargo-fuzz the first time adds ~45 s.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
fuzz_dir=$root/fuzz
target_dir=$fuzz_dir/target
secs=${1:-20}
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
sanitizer=${FUZZ_SANITIZER:-none}
cores=$(nproc 2>/dev/null || echo 2)
jobs=${FUZZ_JOBS:-$((cores < 4 ? cores : 4))}
cargo_fuzz_version=0.13.2

t0=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
echo "fuzz-smoke: $(cargo fuzz --version), $(rustc --version), sanitizer=$sanitizer"

if [ "$sanitizer" != none ] && ! rustc --version | grep -q nightly; then
    # Stable rustc refuses -Z flags unless told it is bootstrapping.
    export RUSTC_BOOTSTRAP=1
fi
# A parent CARGO_TARGET_DIR must not move the fuzz build elsewhere.
unset CARGO_TARGET_DIR

t1=$(date +%s)
cargo fuzz build --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" -s "$sanitizer"
t2=$(date +%s)

host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$host/release
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$fuzz_dir" | tr '\n' ' ')}"
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz-smoke: no targets" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vtp-fuzz-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT

run_target() {
    local t=$1 corpus=$work/corpus/$1 art=$fuzz_dir/artifacts/$1
    mkdir -p "$corpus" "$art"
    if [ -d "$fuzz_dir/corpus/$t" ]; then
        cp -R "$fuzz_dir/corpus/$t/." "$corpus/"
    fi
    # -timeout: one input taking this long is a hang (inputs take ms here).
    "$bin_dir/$t" "$corpus" \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 \
        -artifact_prefix="$art/" -print_final_stats=1 \
        >"$work/$t.log" 2>&1
}

summary() {
    local log=$work/$1.log
    local execs rate cov
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    printf '  %-16s %s execs (%s/s), %s, corpus %s -> %s files\n' "$1" "${execs:-?}" "${rate:-?}" \
        "${cov:-cov: ?}" "$(find "$fuzz_dir/corpus/$1" -type f 2>/dev/null | wc -l)" \
        "$(find "$work/corpus/$1" -type f | wc -l)"
}

echo "fuzz-smoke: ${#targets[@]} targets x ${secs}s, $jobs at a time"
failed=()
for ((i = 0; i < ${#targets[@]}; i += jobs)); do
    batch=("${targets[@]:i:jobs}")
    pids=()
    for t in "${batch[@]}"; do
        [ -x "$bin_dir/$t" ] || { echo "fuzz-smoke: no binary for target $t" >&2; exit 1; }
        run_target "$t" &
        pids+=($!)
    done
    for j in "${!batch[@]}"; do
        t=${batch[$j]}
        if wait "${pids[$j]}"; then
            summary "$t"
        else
            failed+=("$t")
            echo "  $t: FAILED; end of its log:"
            { grep -v -E '^#[0-9]+' "$work/$t.log" || true; } | tail -n 60 | sed 's/^/    /'
            for f in $({ grep -o -E "$fuzz_dir/artifacts/$t/[a-z-]+-[0-9a-f]+" "$work/$t.log" || true; } | sort -u); do
                echo "    input $f (base64): $(base64 -w0 "$f")"
                echo "    reproduce: cargo fuzz run --fuzz-dir fuzz -s $sanitizer $t ${f#"$root"/}"
            done
        fi
    done
done
t3=$(date +%s)

echo "fuzz-smoke: setup $((t1 - t0))s, build $((t2 - t1))s, fuzzing $((t3 - t2))s, total $((t3 - t0))s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} passed, 0 failed"
