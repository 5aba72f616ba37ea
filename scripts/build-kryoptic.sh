#!/usr/bin/env bash
# Build the kryoptic PKCS#11 software token (crates.io `kryoptic`, a cdylib)
# for vtp's second test token, and cache it. Prints the module path as the
# last line of stdout; everything else goes to stderr.
#
#   scripts/build-kryoptic.sh                 # build once, then reuse
#   VTP_CACHE=/some/dir scripts/build-kryoptic.sh
#   KRYOPTIC_VERSION=1.5.4 scripts/build-kryoptic.sh
#
# Result: ${VTP_CACHE:-$HOME/.cache/vtp}/kryoptic-<version>/libkryoptic_pkcs11.so
#
# How: `cargo install` does not install a cdylib, so the script has cargo
# download the published crate (a throw-away manifest + `cargo fetch`), unpacks
# the .crate from cargo's registry cache, and runs `cargo build --release
# --locked` in it with the crate's own Cargo.lock and its own target dir (never
# the workspace's). Features: `--no-default-features --features
# minimal,kryoptic-lib/dynamic`: `minimal` = sqlite storage, AES (GCM), RSA
# (PKCS#1, OAEP, key generation), ECDSA/ECDH, SHA-1/SHA-2 and HMAC, which is
# everything vtp uses; `dynamic` links the system's libcrypto (Debian 12's
# OpenSSL 3.0) instead of building OpenSSL.
# Needs (installed with apt when missing): libssl-dev (headers + libcrypto.so),
# libsqlite3-dev (rusqlite without `bundled` links the system sqlite),
# libclang-dev (bindgen generates the OpenSSL bindings with libclang),
# pkg-config; and opensc (pkcs11-tool, used to initialize development
# tokens), which is checked even when the module is cached.
# First build: under 2 minutes on 2 cores (measured: cargo build 96-108 s,
# 97-118 s end to end); afterwards it only prints the cached path.
set -euo pipefail

version=${KRYOPTIC_VERSION:-1.5.4}
cache=${VTP_CACHE:-$HOME/.cache/vtp}
out_dir=$cache/kryoptic-$version
out=$out_dir/libkryoptic_pkcs11.so
features=minimal,kryoptic-lib/dynamic

log() { echo "build-kryoptic: $*" >&2; }

# --- system packages -------------------------------------------------------
# opensc (pkcs11-tool) initializes development tokens (vtp_device::kryoptic);
# the rest is needed only to build.
need=()
pkg_missing() { ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
want=(opensc)
[[ -s $out ]] || want+=(libssl-dev libsqlite3-dev libclang-dev pkg-config)
for p in "${want[@]}"; do
  pkg_missing "$p" && need+=("$p")
done
[[ -s $out ]] || command -v cc >/dev/null 2>&1 || need+=(build-essential)
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing ${need[*]} (apt-get)..."
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ -s $out ]]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi
command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust first"; exit 1; }

# --- source ------------------------------------------------------------------
mkdir -p "$out_dir"
work=$out_dir/build
rm -rf "$work"
mkdir -p "$work/fetch/src"
cat >"$work/fetch/Cargo.toml" <<EOF
[package]
name = "vtp-kryoptic-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
kryoptic = { version = "=$version", default-features = false }

[workspace]
EOF
: >"$work/fetch/src/lib.rs"
log "fetching kryoptic $version from crates.io..."
(cd "$work/fetch" && cargo fetch -q)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
crate_file=$(ls -1 "$cargo_home"/registry/cache/*/"kryoptic-$version.crate" 2>/dev/null | head -n1 || true)
[[ -n $crate_file ]] || { log "kryoptic-$version.crate not found under $cargo_home/registry/cache"; exit 1; }
tar -xzf "$crate_file" -C "$work"
src=$work/kryoptic-$version

# --- build -------------------------------------------------------------------
log "building kryoptic $version (--no-default-features --features $features)..."
start=$(date +%s)
(
  cd "$src"
  # Its own target dir, outside any workspace (the crate's manifest is a
  # standalone package, so no parent workspace is picked up).
  CARGO_TARGET_DIR=$work/target cargo build --release --locked -q \
    --no-default-features --features "$features"
)
built=$work/target/release/libkryoptic_pkcs11.so
[[ -s $built ]] || { log "the build produced no $built"; exit 1; }
log "built in $(( $(date +%s) - start ))s"

# Keep the module (and the exact feature set) and drop the ~1 GB of build files.
cp "$built" "$out.tmp"
mv "$out.tmp" "$out"
echo "kryoptic $version --no-default-features --features $features" >"$out_dir/BUILD-INFO"
rm -rf "$work"
log "module: $out"
echo "$out"
