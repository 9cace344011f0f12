#!/usr/bin/env bash
# ADE sync figures (docs/performance.md): a stand-in of Apple's ADE API (`mdmd sim abm`) with
# DEVICES devices (10,000 by default) assigned to a fresh server; time
#   - the first sync: a full fetch in pages of 1000 and the default profile assigned to every device,
#   - a sync with nothing changed (one sync call, an empty page),
#   - a sync after the stand-in's own changes are seen (the assignments come back as `modified`),
# Loopback only; everything is removed afterwards.
set -euo pipefail
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mdmd}
N=${DEVICES:-10000}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
key=bench-key-0123456789abcdefgh
base=https://127.0.0.1:18651
m() { $BIN "$@" --server "$base" --api-key "$key" --trust-ca "$work/c/ca.pem"; }
serve() {
  MDMD_LOG=info $BIN serve --listen 127.0.0.1:18651 --data-dir "$work/d" --certs-dir "$work/c" --api-key "$key" \
    --inventory-interval 0 --ade-sync-interval 100000 "$@" >>"$work/serve.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do [ "$(grep -c "mdmd listening on" "$work/serve.log")" -ge "$serves" ] && break; sleep 0.1; done
}
serves=1; serve --ade-url http://127.0.0.1:1
m ade public-key --out "$work/ade.pem"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
$BIN sim abm --public-key "$work/ade.pem" --token-out "$work/token.p7m" -n "$N" --seconds 3600 >"$work/abm.json" &
pids+=($!)
for _ in $(seq 1 600); do grep -q '^}' "$work/abm.json" 2>/dev/null && break; sleep 0.1; done
url=$(grep '"ade_url"' "$work/abm.json" | sed -E 's/.*"(http[^"]+)".*/\1/')
serves=2; serve --ade-url "$url"
m ade upload-token bench "$work/token.p7m" >/dev/null
echo '{"profile_name": "Bench", "await_device_configured": true}' >"$work/p.json"
m ade set-profile bench "$work/p.json" --default >/dev/null
now() { date +%s.%N; }
s=$(now); m ade sync >"$work/s1.json"; e=$(now)
echo "first sync ($N devices, full fetch + assignment): $(echo "$e - $s" | bc) s; assigned $(grep -m1 '"assigned"' "$work/s1.json" | tr -dc 0-9)"
s=$(now); m ade sync >"$work/s2.json"; e=$(now)
echo "second sync (Apple reports the $N assignments as modified): $(echo "$e - $s" | bc) s; modified $(grep -m1 '"modified"' "$work/s2.json" | tr -dc 0-9)"
s=$(now); m ade sync >/dev/null; e=$(now)
echo "sync with nothing changed: $(echo "$e - $s" | bc) s"
