#!/usr/bin/env bash
# Blueprint figures (docs/performance.md): seed DEVICES enrollments (100,000 by default) into a
# fresh redb store, serve it, and time
#   - the first sweep (every device gets its reconcile record),
#   - a profile installed on every device the old way (POST /v1/profiles/{id}/install, the floor:
#     one command stored once and queued to all) and through a blueprint for "*" (edit → every
#     device's command queued, from the server's own log),
#   - a template edit under that blueprint (re-install everywhere),
#   - the periodic sweep and a full reconcile of the unchanged fleet (must queue nothing),
#   - one device reconciled after a fact change (groups evaluated again), median of REPEAT.
# Profiles are not encrypted here (seeded devices have no identity certificate to encrypt to): a
# profile without variables is then one signed copy for every device. Bounded; everything is
# removed afterwards. Loopback only.
set -euo pipefail
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mdmd}
N=${DEVICES:-100000}
REPEAT=${REPEAT:-20}
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
key=bench-key-0123456789abcdefgh
base=https://127.0.0.1:18641

echo "== seeding $N enrollments"
$BIN sim seed --store "$work/d" -n "$N" | tr -d '\n '; echo
MDMD_LOG=info $BIN serve --listen 127.0.0.1:18641 --data-dir "$work/d" --certs-dir "$work/c" --api-key "$key" \
  --inventory-interval 0 --ddm-enable false --profiles-dir "$work/none" --blueprints-dir "$work/none" \
  --reconcile-interval 100000 --encrypt-profiles false >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q "mdmd listening on" "$work/serve.log" && break; sleep 0.1; done
c=(curl -s --cacert "$work/c/ca.pem" -H "Authorization: Bearer $key")
t=(curl -s -o /dev/null -w '%{time_total}\n' --cacert "$work/c/ca.pem" -H "Authorization: Bearer $key")
# The Nth log line matching $1, waited for; prints its seconds= value.
logged() {
  for _ in $(seq 1 6000); do
    line=$(grep -a "$1" "$work/serve.log" | sed -n "${2}p" || true)
    if [ -n "$line" ]; then echo "$line" | sed -E 's/.*seconds=([0-9.]+).*/\1/'; return; fi
    sleep 0.1
  done
  echo "timeout"
}
commands() { echo "$1" | sed -E 's/.*commands=([0-9]+).*/\1/'; }
profile() {
  cat <<XML
<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>$1</string><key>PayloadUUID</key><string>$(cat /proc/sys/kernel/random/uuid | tr a-f A-F)</string>
<key>PayloadDisplayName</key><string>bench</string><key>PayloadContent</key><array><dict>
<key>PayloadType</key><string>com.apple.webClip.managed</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>$1.clip</string><key>PayloadUUID</key><string>$(cat /proc/sys/kernel/random/uuid | tr a-f A-F)</string>
<key>URL</key><string>$2</string><key>Label</key><string>bench</string></dict></array></dict></plist>
XML
}
upload() { profile "$1" "$2" | "${c[@]}" -o /dev/null -H 'content-type: application/x-apple-aspen-config' --data-binary @- "$base/v1/profiles"; }

echo "first sweep at start (a reconcile record for every device): $(logged 'blueprint sweep' 1) s"
runs() { grep -ac 'fleet reconciled' "$work/serve.log" || true; }
# Wait for whole-fleet run number $1; print "seconds commands".
run_n() {
  for _ in $(seq 1 6000); do [ "$(runs)" -ge "$1" ] && break; sleep 0.05; done
  grep -a 'fleet reconciled' "$work/serve.log" | sed -n "${1}p" | sed -E 's/.*commands=([0-9]+).*seconds=([0-9.]+).*/\2 s, \1 commands/'
}
upload com.example.direct https://a.example.com/
run_n 1 >/dev/null
python3 - "$N" > "$work/targets.json" <<'PY'
import json, sys
print(json.dumps({"targets": ["00008101-%016X" % i for i in range(int(sys.argv[1]))]}))
PY
printf 'floor: one profile installed on %s devices by an admin (POST /v1/profiles/{id}/install): ' "$N"
"${t[@]}" -H 'content-type: application/json' --data-binary @"$work/targets.json" "$base/v1/profiles/com.example.direct/install" | awk '{printf "%.2f s\n", $1}'

n=$(runs)
upload com.example.bench https://b.example.com/
n=$((n + 1)); run_n "$n" >/dev/null
start=$(date +%s.%N)
"${c[@]}" -o /dev/null -X PUT -H 'content-type: application/json' \
  --data '{"groups":["*"],"profiles":["com.example.bench"]}' "$base/v1/blueprints/all"
r=$(run_n $((n + 1)))
echo "blueprint edit for every device → every command queued: $r (the run); $(echo "$(date +%s.%N) - $start" | bc) s from the PUT"

start=$(date +%s.%N)
upload com.example.bench https://b2.example.com/
r=$(run_n $((n + 2)))
echo "template edit under that blueprint → re-installed everywhere: $r (the run); $(echo "$(date +%s.%N) - $start" | bc) s from the upload"
sleep 3

out=$("${c[@]}" -X POST "$base/v1/reconcile?sweep=true")
echo "periodic sweep, unchanged fleet: $(logged 'reconcile asked for' 1) s; $out"
out=$("${c[@]}" -X POST "$base/v1/reconcile")
echo "full reconcile (groups evaluated, everything compared), unchanged fleet: $(logged 'reconcile asked for' 2) s; $out"

"${c[@]}" -o /dev/null -X PUT -H 'content-type: application/json' --data '{"rule":"version_cmp(device.os_version, \"18.0\") >= 0 && device.attributes.DEPARTMENT == \"sales\""}' "$base/v1/groups/sales"
"${c[@]}" -o /dev/null -X PUT -H 'content-type: application/json' --data '{"rule":"device.compliance == \"non_compliant\""}' "$base/v1/groups/noncompliant"
sleep 1; run_n $((n + 3)) >/dev/null; sleep 3
mid=$(printf '00008101-%016X' $((N / 2)))
"${c[@]}" -o /dev/null -X PUT -H 'content-type: application/json' --data '{"DEPARTMENT":"sales"}' "$base/v1/devices/$mid/attributes"
printf 'one device after a fact change (2 dynamic groups evaluated, compared, nothing to queue), median of %s: ' "$REPEAT"
for _ in $(seq 1 "$REPEAT"); do "${t[@]}" -X POST "$base/v1/reconcile?device=$mid"; done | sort -n | awk '{a[NR]=$1} END {printf "%.1f ms\n", a[int((NR+1)/2)]*1000}'
printf 'the same device page read (GET /v1/devices/{id}), for scale: '
for _ in $(seq 1 "$REPEAT"); do "${t[@]}" "$base/v1/devices/$mid"; done | sort -n | awk '{a[NR]=$1} END {printf "%.1f ms\n", a[int((NR+1)/2)]*1000}'
echo "server RSS: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
