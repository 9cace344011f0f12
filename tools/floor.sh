#!/usr/bin/env bash
# Connect requests beside the floor (docs/performance.md): mdmd and a bare TLS
# endpoint (mdmd's own listener code, same certificate, empty 200) in one run,
# same client, keep-alive and a fresh TCP+TLS connection per request.
# Loopback only, bounded. BIN= to measure another build, DEVICES= simulated devices.
set -euo pipefail
# Every simulated device enrolls from 127.0.0.1: no per-address enrollment budget for a load run.
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mdmd}
DEVICES=${DEVICES:-16}
KEEPALIVE_N=${KEEPALIVE_N:-20000}
FRESH_N=${FRESH_N:-8000}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 300); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }

MDMD_LOG=warn $BIN serve --listen 127.0.0.1:18650 --data-dir "$work/d" --certs-dir "$work/c" --api-key bench-key-0123456789abcdefgh \
  --enroll-user sim:sim --inventory-interval 0 --ddm-enable false >/dev/null 2>&1 &
m=$!; pids+=($m); wait_port 18650
for _ in $(seq 1 300); do [ -s "$work/c/tls.key" ] && break; sleep 0.1; done; sleep 0.5
MDMD_LOG=warn $BIN sim bare-server --listen 127.0.0.1:18651 --tls-cert "$work/c/tls.pem" --tls-key "$work/c/tls.key" >"$work/bare.log" 2>&1 &
b=$!; pids+=($b); wait_port 18651 || { cat "$work/bare.log"; exit 1; }
field() { grep -oE "\"$1\": *[0-9.]+" | head -1 | grep -oE '[0-9.]+$'; }
for mode in shared per-request; do
  n=$KEEPALIVE_N; [ "$mode" = per-request ] && n=$FRESH_N
  out_m=$($BIN sim idle-bench --server https://127.0.0.1:18650 --trust-ca "$work/c/ca.pem" --user sim:sim --devices "$DEVICES" \
    --url https://127.0.0.1:18650/mdm/connect -n "$n" --connections $mode --pid $m 2>/dev/null)
  out_b=$($BIN sim idle-bench --server https://127.0.0.1:18650 --trust-ca "$work/c/ca.pem" --user sim:sim --devices "$DEVICES" \
    --url https://127.0.0.1:18651/mdm/connect -n "$n" --connections $mode --pid $b 2>/dev/null)
  cm=$(echo "$out_m" | field server_cpu_ms_per_request); cb=$(echo "$out_b" | field server_cpu_ms_per_request)
  rm_=$(echo "$out_m" | field requests_per_second); rb=$(echo "$out_b" | field requests_per_second)
  printf '%-12s devices %-5s mdmd %.3f ms/request (%.0f req/s)   bare %.3f ms/request (%.0f req/s)   ratio %.2fx\n' \
    "$mode" "$DEVICES" "$cm" "$rm_" "$cb" "$rb" "$(awk -v a="$cm" -v b="$cb" 'BEGIN { print a / b }')"
done
