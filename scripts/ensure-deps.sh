#!/usr/bin/env bash
# Install what vtp needs on a Debian machine that has Rust: SoftHSM2 (the
# PKCS#11 token used by the demo and the tests). Idempotent; does nothing when
# everything is present. Sourced or run by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

need_apt=()
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
if ! ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so >/dev/null 2>&1; then
  need_apt+=(softhsm2)
fi
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "vtp: installing ${need_apt[*]} (apt-get)..." >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "vtp: cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
