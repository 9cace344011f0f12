#!/usr/bin/env bash
# Server CPU of one whole enrollment, three-phase and single-profile, with every request on a
# fresh TCP+TLS connection (the worst a device can be), beside the floor the issue sets: the
# CPU of 16 RSA-2048 signatures measured by `openssl speed` in the same run.
# BEFORE=path/to/older/mdmd measures that build too (same client: this build's `mdmd sim`).
# Loopback only; N devices per run (default 200), RUNS runs per build and flow (default 2).
set -euo pipefail
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mdmd}
N=${N:-200}
RUNS=${RUNS:-2}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 300); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }

speed() {
  # "rsa 2048 bits 0.000868s 0.000025s 1152.0 40000.0": seconds per sign is the 4th field.
  openssl speed -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ { printf "%.3f", $4 * 1000 }'
}
sign_ms=$(speed)
echo "openssl speed rsa2048: ${sign_ms} ms per signature; floor = 16 x = $(awk "BEGIN { printf \"%.2f\", 16 * $sign_ms }") ms"

port=18680
builds=("after=$BIN")
if [ -n "${BEFORE:-}" ]; then builds=("before=$BEFORE" "${builds[@]}"); fi
for run in $(seq 1 "$RUNS"); do
  for b in "${builds[@]}"; do
    name=${b%%=*}; bin=${b#*=}
    for flow in three-phase single; do
      d="$work/$name-$flow-$run"
      MDMD_LOG=warn "$bin" serve --listen 127.0.0.1:$port --data-dir "$d/data" --certs-dir "$d/certs" \
        --api-key bench-key-0123456789abcdefgh --enroll-user sim:sim --enroll-flow $flow >/dev/null 2>&1 &
      pids+=($!); wait_port $port; sleep 1
      out=$("$BIN" sim load --server https://127.0.0.1:$port --api-key bench-key-0123456789abcdefgh \
        --trust-ca "$d/certs/ca.pem" --user sim:sim -n "$N" -r 1 -c 8 --connections per-request)
      kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
      echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
name, flow, run, sign = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
per = r["server_cpu_ms_per_device"]
hs = (r["tls_handshakes_profiles"] + r["tls_handshakes_enrolling"]) / r["devices"]
eps = r["enrollments_per_second"]
print(f"{name:6} {flow:11} run {run}: {per:6.2f} ms server CPU per enrollment = {per / sign:5.1f} RSA-2048 signatures; "
      f"{hs:.1f} TLS handshakes each; {eps:.0f} enrollments/s")
' "$name" "$flow" "$run" "$sign_ms"
      port=$((port+1))
    done
  done
done
echo "openssl speed rsa2048 again: $(speed) ms per signature"
