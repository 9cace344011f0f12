#!/usr/bin/env bash
# Fleet-sized NAC figures (docs/performance.md): seed DEVICES devices into a fresh
# store, serve it, and time Cisco ISE device queries by MAC; report store size and
# the server's RSS. Loopback only, bounded. STORE=postgres uses MDMD_BENCH_DATABASE_URL.
set -euo pipefail
# Every simulated device enrolls from 127.0.0.1: no per-address enrollment budget for a load run.
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=target/release/mdmd
N=${DEVICES:-100000}
REQ=${REQUESTS:-5000}
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
rss() { awk '/VmRSS/ {print $2/1024 " MiB"}' "/proc/$1/status"; }

echo "== seeding $N devices"
$BIN sim seed --store "$work/d" -n "$N"
echo "store size: $(du -sh "$work/d/mdmd.redb" | cut -f1)"
MDMD_LOG=warn $BIN serve --listen 127.0.0.1:18621 --data-dir "$work/d" --certs-dir "$work/c" --api-key bench-key-0123456789abcdefgh \
  --inventory-interval 0 --profiles-dir "$work/none" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q "mdmd listening on" "$work/serve.log" && break; sleep 0.1; done
echo "server RSS after start: $(rss $pid)"
secret=$($BIN accounts add ise --role nac --server https://127.0.0.1:18621 --api-key bench-key-0123456789abcdefgh --trust-ca "$work/c/ca.pem" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
opts=(--server https://127.0.0.1:18621 --api-key bench-key-0123456789abcdefgh --trust-ca "$work/c/ca.pem")
echo "== $REQ ISE queries by MAC, 1 at a time"
$BIN sim ise-bench "${opts[@]}" --account "ise:$secret" --devices "$N" -n "$REQ" -c 1
echo "== $REQ ISE queries by MAC, 8 at a time"
$BIN sim ise-bench "${opts[@]}" --account "ise:$secret" --devices "$N" -n "$REQ" -c 8
echo "server RSS after queries: $(rss $pid)"
