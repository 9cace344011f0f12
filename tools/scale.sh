#!/usr/bin/env bash
# Fleet size (docs/performance.md): seed DEVICES enrollments (1,000,000 by default) straight into
# a fresh redb store, serve it, and report the store's size, the server's RSS, and the time of a
# device page, a single-device read and a 100,000-target enqueue at that size, ENQUEUES (12) in a
# row so the last ones find 10+ commands already pending on every target (reads: median of
# REPEAT, from curl's own timing, over HTTPS on loopback). Bounded; everything is removed afterwards.
set -euo pipefail
# Every simulated device enrolls from 127.0.0.1: no per-address enrollment budget for a load run.
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mdmd}
N=${DEVICES:-1000000}
TARGETS=${TARGETS:-100000}
REPEAT=${REPEAT:-5}
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$1/status"; }

echo "== seeding $N enrollments"
$BIN sim seed --store "$work/d" -n "$N" | tr -d '\n '; echo
echo "store size: $(du -sh "$work/d/mdmd.redb" | cut -f1)"
MDMD_LOG=warn $BIN serve --listen 127.0.0.1:18631 --data-dir "$work/d" --certs-dir "$work/c" --api-key bench-key-0123456789abcdefgh \
  --inventory-interval 0 --ddm-enable false --profiles-dir "$work/none" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q "mdmd listening on" "$work/serve.log" && break; sleep 0.1; done
echo "server RSS after start: $(rss $pid)"
base=https://127.0.0.1:18631
c=(curl -s -o /dev/null -w '%{time_total}\n' --cacert "$work/c/ca.pem" -H "Authorization: Bearer bench")
median() { sort -n | awk '{a[NR]=$1} END {printf "%.1f ms", a[int((NR+1)/2)]*1000}'; }
mid=$(printf '00008101-%016X' $((N / 2)))
echo "device page (GET /v1/devices?limit=50, from the middle): $(for _ in $(seq 1 "$REPEAT"); do "${c[@]}" "$base/v1/devices?limit=50&after=$mid"; done | median)"
echo "single device (GET /v1/devices/{id}): $(for _ in $(seq 1 "$REPEAT"); do "${c[@]}" "$base/v1/devices/$mid"; done | median)"
python3 - "$TARGETS" "$N" > "$work/targets.json" <<'PY'
import json, sys
t, n = int(sys.argv[1]), int(sys.argv[2])
step = max(1, n // t)
ids = ["00008101-%016X" % i for i in range(0, n, step)][:t]
print(json.dumps({"targets": ids, "command": {"RequestType": "SecurityInfo"}, "push": False}))
PY
echo "enqueue one command to $TARGETS enrollments (POST /v1/commands, durable):"
for i in $(seq 1 "${ENQUEUES:-12}"); do
  printf '  #%s: ' "$i"; "${c[@]}" -H 'content-type: application/json' --data-binary @"$work/targets.json" "$base/v1/commands" | awk '{printf "%.2f s\n", $1}'
done
echo "server RSS after: $(rss $pid)"
echo "store size after: $(du -sh "$work/d/mdmd.redb" | cut -f1)"
