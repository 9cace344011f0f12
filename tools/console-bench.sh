#!/usr/bin/env bash
# Web console at fleet size (docs/performance.md): seed DEVICES enrollments (100,000 by default)
# straight into a fresh redb store as inventory leaves them, serve it, sign in to the console
# as admin, and report the server time of the device list (first page, a page from the middle,
# a search by serial) and of a device page — median of REPEAT, curl's own timing, HTTPS on
# loopback. Bounded; everything is removed afterwards.
set -euo pipefail
# Every simulated device enrolls from 127.0.0.1: no per-address enrollment budget for a load run.
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mdmd}
N=${DEVICES:-100000}
REPEAT=${REPEAT:-9}
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
echo "== seeding $N enrollments"
$BIN sim seed --store "$work/d" -n "$N" | tr -d '\n '; echo
MDMD_LOG=warn $BIN serve --listen 127.0.0.1:18632 --data-dir "$work/d" --certs-dir "$work/c" --api-key bench-key-0123456789abcdefgh \
  --inventory-interval 0 --ddm-enable false --profiles-dir "$work/none" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q "mdmd listening on" "$work/serve.log" && break; sleep 0.1; done
base=https://127.0.0.1:18632
jar="$work/jar"
c=(curl -s --cacert "$work/c/ca.pem" -c "$jar" -b "$jar")
token=$("${c[@]}" "$base/ui/login" | grep -o 'name="csrf" value="[^"]*"' | sed 's/.*value="//; s/"$//')
"${c[@]}" -o /dev/null -X POST --data-urlencode "csrf=$token" -d "name=admin&secret=bench&next=/ui/" "$base/ui/login"
median() { sort -n | awk '{a[NR]=$1} END {printf "%.1f ms", a[int((NR+1)/2)]*1000}'; }
t() { for _ in $(seq 1 "$REPEAT"); do "${c[@]}" -o /dev/null -w '%{time_total}\n' "$base$1"; done | median; }
mid=$(printf '00008101-%016X' $((N / 2)))
serial=$(curl -s --cacert "$work/c/ca.pem" -H "Authorization: Bearer bench" "$base/v1/devices/$mid" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"].get("serial_number",""))')
code=$("${c[@]}" -o /dev/null -w '%{http_code}' "$base/ui/devices/$mid")
[ "$code" = 200 ] || { echo "device page answered $code (not signed in?)"; exit 1; }
echo "device list, first page (/ui/devices, 50 rows): $(t /ui/devices)"
echo "device list from the middle (/ui/devices?after=…): $(t "/ui/devices?after=$mid")"
echo "device search by serial (/ui/devices?q=$serial): $(t "/ui/devices?q=$serial")"
os=$(curl -s --cacert "$work/c/ca.pem" -H "Authorization: Bearer bench" "$base/v1/devices/$mid" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"].get("os_version",""))')
echo "device list filtered by OS $os and a check-in within 30 days: $(t "/ui/devices?os=$os&seen=30")"
echo "device search by a name no device has (every lookup, then the names): $(t "/ui/devices?q=nobody-has-this")"
echo "device page (/ui/devices/{udid}): $(t "/ui/devices/$mid")"
echo "dashboard (/ui/): $(t /ui/)"
