#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds every binary, runs
# every test (unit, device tests on a real SoftHSM token, end-to-end tests with
# real daemon processes and the real CLI), runs the device and end-to-end
# tests again on kryoptic, then checks formatting and lints.
#   scripts/test.sh            # everything
#   VTP_SKIP_LINT=1 scripts/test.sh   # without fmt/clippy
#   VTP_SKIP_KRYOPTIC=1 scripts/test.sh   # SoftHSM2 only (no kryoptic build)
#   VTP_SKIP_FUZZ=1 scripts/test.sh       # without the fuzz smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh

cargo build --workspace --bins --locked
echo "== all tests, SoftHSM2 token"
cargo test --workspace --locked --no-fail-fast

# The device and end-to-end suites again on a second PKCS#11 implementation,
# kryoptic (built once from crates.io and cached; see scripts/build-kryoptic.sh).
if [ -z "${VTP_SKIP_KRYOPTIC:-}" ]; then
  echo "== device and end-to-end tests, kryoptic token"
  VTP_KRYOPTIC_MODULE="$(bash scripts/build-kryoptic.sh | tail -1)"
  export VTP_KRYOPTIC_MODULE
  VTP_TEST_TOKEN=kryoptic cargo test -p vtp-device -p vtp-e2e --locked --no-fail-fast
fi

# A short fuzz run of every target over the committed corpus (libFuzzer via
# cargo-fuzz on stable; see docs/fuzzing.md). VTP_FUZZ_SECONDS per target.
if [ -z "${VTP_SKIP_FUZZ:-}" ]; then
  echo "== fuzz smoke"
  bash scripts/fuzz-smoke.sh "${VTP_FUZZ_SECONDS:-20}"
fi

if [ -z "${VTP_SKIP_LINT:-}" ]; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi
