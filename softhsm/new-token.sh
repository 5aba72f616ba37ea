#!/usr/bin/env bash
# Create a SoftHSM2 development token for vtp. NOT for production: a real TP
# key belongs in an HSM initialized by its operators.
#
# Does what vtp_device::softhsm::create_dev_token does: DIR/tokens/,
# DIR/softhsm2.conf, random PINs in DIR/user.pin and DIR/so.pin (mode 0600),
# and `softhsm2-util --init-token --free`. Prints the lines to use the token.
set -euo pipefail

usage() {
    cat >&2 <<USAGE
usage: $(basename "$0") DIR [LABEL]

Create a SoftHSM2 development token in DIR (created if missing; must not
already hold a softhsm2.conf) with token label LABEL (default: vtp-dev).
Then:   export SOFTHSM2_CONF=DIR/softhsm2.conf
and point the vtp config at the printed module, label and PIN file.
USAGE
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $1 != -h && $1 != --help ]] || usage
dir=$1
label=${2:-vtp-dev}
if (( ${#label} < 1 || ${#label} > 32 )); then
    echo "error: the token label must be 1 to 32 characters" >&2
    exit 2
fi

command -v softhsm2-util >/dev/null || {
    echo "error: softhsm2-util not found (apt-get install softhsm2)" >&2
    exit 1
}
module=
for m in /usr/lib/softhsm/libsofthsm2.so \
         /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
         /usr/local/lib/softhsm/libsofthsm2.so; do
    if [[ -f $m ]]; then module=$m; break; fi
done
[[ -n $module ]] || { echo "error: libsofthsm2.so not found (apt-get install softhsm2)" >&2; exit 1; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
if [[ -e $dir/softhsm2.conf ]]; then
    echo "error: $dir/softhsm2.conf already exists; use a fresh directory" >&2
    exit 1
fi
mkdir -p "$dir/tokens"
cat >"$dir/softhsm2.conf" <<CONF
# SoftHSM2 development token for vtp (NOT for production)
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
CONF

umask 077
# 32 hex digits from the kernel RNG.
new_pin() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
pin=$(new_pin)
so_pin=$(new_pin)
printf '%s\n' "$pin" >"$dir/user.pin"
printf '%s\n' "$so_pin" >"$dir/so.pin"
chmod 600 "$dir/user.pin" "$dir/so.pin"

# PINs on argv are visible in `ps`: acceptable only for a throw-away dev token.
SOFTHSM2_CONF=$dir/softhsm2.conf softhsm2-util --init-token --free \
    --label "$label" --so-pin "$so_pin" --pin "$pin" >/dev/null

cat <<DONE
export SOFTHSM2_CONF=$dir/softhsm2.conf
# module:   $module
# label:    $label
# PIN file: $dir/user.pin
DONE
