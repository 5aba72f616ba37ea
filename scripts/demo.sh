#!/usr/bin/env bash
# vtp demo: a SoftHSM-backed trusted party on loopback, an honest exchange,
# and a cheating sender whose recipient is made whole by the TP.
# Installs what is missing, builds, and cleans up after itself.
#   scripts/demo.sh              # KEEP=1 keeps the working directory
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
echo "== building vtp (release)..."
cargo build --release --bins --locked -q
BIN="$PWD/target/release"
VTP="$BIN/vtp"
WORK="$(mktemp -d /tmp/vtp-demo.XXXXXX)"
TP_PID=""
cleanup() {
  [ -n "$TP_PID" ] && kill "$TP_PID" 2>/dev/null && wait "$TP_PID" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "(kept $WORK)"; fi
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '   $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/     /'; }

say "Operator: create a development SoftHSM token and the TP's keys in it"
show "$BIN/tp-daemon" init --data-dir "$WORK/tp" --softhsm --name "vtp demo TP"
# --allow-root: the demo may run as root in a container; a real TP runs as its
# own unprivileged user (deploy/tp-daemon.service) and refuses root otherwise.
"$BIN/tp-daemon" serve --allow-root --config "$WORK/tp/tp.toml" --listen 127.0.0.1:0 \
  >"$WORK/serve.out" 2>"$WORK/tp.log" &
TP_PID=$!
for _ in $(seq 1 100); do grep -q '^listening on' "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
ADDR="$(sed -n 's/^listening on //p' "$WORK/serve.out")"
[ -n "$ADDR" ] || { echo "TP daemon failed to start:"; cat "$WORK/tp.log"; exit 1; }
echo "   TP daemon listening on $ADDR (log: $WORK/tp.log)"

say "Alice and Bob make identities and fetch the TP's card"
mkdir -p "$WORK/alice" "$WORK/bob"
show "$VTP" id new --name Alice --out "$WORK/alice/id.vtp"
show "$VTP" id new --name Bob --out "$WORK/bob/id.vtp"
"$VTP" id card "$WORK/alice/id.vtp" --out "$WORK/alice/card.vtp"
"$VTP" id card "$WORK/bob/id.vtp" --out "$WORK/bob/card.vtp"
show "$VTP" tp fetch --tp-addr "$ADDR" --out "$WORK/tp-card.vtp"
printf 'Bob, the signed lease is attached. Keys under the mat. -- Alice\n' >"$WORK/alice/lease.txt"

say "Scene 1: an honest exchange (the TP never hears of it)"
show "$VTP" send --as "$WORK/alice/id.vtp" --to "$WORK/bob/card.vtp" --tp "$WORK/tp-card.vtp" \
  --deadline 1h --in "$WORK/alice/lease.txt" --out "$WORK/env1.vtp"
show "$VTP" accept --as "$WORK/bob/id.vtp" --tp "$WORK/tp-card.vtp" "$WORK/env1.vtp" --out "$WORK/alice/receipt1.vtp"
show "$VTP" reveal --as "$WORK/alice/id.vtp" "$WORK/env1.vtp" "$WORK/alice/receipt1.vtp" --out "$WORK/bob/opening1.vtp"
show "$VTP" open --as "$WORK/bob/id.vtp" "$WORK/env1.vtp" "$WORK/bob/opening1.vtp" --out "$WORK/bob/lease1.txt"
echo "   Bob reads: $(cat "$WORK/bob/lease1.txt")"
echo "   A judge checks Alice's evidence:"
show "$VTP" verify --tp "$WORK/tp-card.vtp" "$WORK/env1.vtp" "$WORK/alice/receipt1.vtp" \
  --opening "$WORK/bob/opening1.vtp" --message "$WORK/alice/lease.txt" --json

say "Scene 2: Alice cheats — she takes Bob's receipt and never reveals"
show "$VTP" send --as "$WORK/alice/id.vtp" --to "$WORK/bob/card.vtp" --tp "$WORK/tp-card.vtp" \
  --deadline 1h --in "$WORK/alice/lease.txt" --out "$WORK/env2.vtp"
show "$VTP" accept --as "$WORK/bob/id.vtp" --tp "$WORK/tp-card.vtp" "$WORK/env2.vtp" --out "$WORK/bob/receipt2.vtp"
echo "   ... no opening arrives. Bob goes to the TP:"
show "$VTP" claim --as "$WORK/bob/id.vtp" --tp-addr "$ADDR" "$WORK/env2.vtp" "$WORK/bob/receipt2.vtp" \
  --out "$WORK/bob/lease2.txt" --affidavit-out "$WORK/bob/affidavit2.vtp"
echo "   Bob reads: $(cat "$WORK/bob/lease2.txt")"
echo "   Alice collects the receipt the TP holds for her:"
show "$VTP" receipts --as "$WORK/alice/id.vtp" --tp-addr "$ADDR" --out-dir "$WORK/alice/from-tp"
REC="$(ls "$WORK"/alice/from-tp/*.receipt.vtp | head -1)"
AFF="$(ls "$WORK"/alice/from-tp/*.affidavit.vtp | head -1)"
echo "   A judge checks the TP-resolved evidence:"
show "$VTP" verify --tp "$WORK/tp-card.vtp" "$WORK/env2.vtp" "$REC" --affidavit "$AFF" \
  --message "$WORK/alice/lease.txt" --json

say "Scene 3: Bob cheats — he keeps the receipt to himself and claims"
show "$VTP" send --as "$WORK/alice/id.vtp" --to "$WORK/bob/card.vtp" --tp "$WORK/tp-card.vtp" \
  --deadline 1h --in "$WORK/alice/lease.txt" --out "$WORK/env3.vtp"
show "$VTP" accept --as "$WORK/bob/id.vtp" --tp "$WORK/tp-card.vtp" "$WORK/env3.vtp" --out "$WORK/bob/receipt3.vtp"
show "$VTP" claim --as "$WORK/bob/id.vtp" --tp-addr "$ADDR" "$WORK/env3.vtp" "$WORK/bob/receipt3.vtp" --out "$WORK/bob/lease3.txt"
show "$VTP" receipts --as "$WORK/alice/id.vtp" --tp-addr "$ADDR" --out-dir "$WORK/alice/from-tp"

say "What everyone ends up with"
echo "   Bob:   3 messages ($(ls "$WORK"/bob/lease*.txt | wc -l) files), each byte-identical to Alice's: $(for f in "$WORK"/bob/lease*.txt; do cmp -s "$f" "$WORK/alice/lease.txt" && printf ok' '; done)"
echo "   Alice: receipt 1 from Bob directly; receipts 2 and 3 from the TP ($(ls "$WORK"/alice/from-tp/*.receipt.vtp | wc -l) fetched)"
echo "   TP:    touched only by the two cheating exchanges; its log:"
grep -E 'resolved|claim' "$WORK/tp.log" | sed 's/^/     /' | tail -5 || true
