#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds every binary, runs
# every test (unit, device tests on a real SoftHSM token, end-to-end tests with
# real daemon processes and the real CLI), then checks formatting and lints.
#   scripts/test.sh            # everything
#   VTP_SKIP_LINT=1 scripts/test.sh   # tests only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh

cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast

if [ -z "${VTP_SKIP_LINT:-}" ]; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi
