#!/usr/bin/env bash
# Measure mdmd on this machine (see docs/performance.md). Loopback only, bounded in count and time.
#  1. connect round trips with N simulated devices over HTTPS with signed messages;
#  2. SCEP issuance side by side with Debian's scepserver, same client, same run.
set -euo pipefail
# Every simulated device enrolls from 127.0.0.1: no per-address enrollment budget for a load run.
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=target/release/mdmd
DEVICES=${DEVICES:-1000}
ROUNDS=${ROUNDS:-5}
SCEP_N=${SCEP_N:-300}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 300); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }

echo "== connect round trips: $DEVICES devices x $ROUNDS rounds (HTTPS, Mdm-Signature on every message)"
MDMD_LOG=warn $BIN serve --listen 127.0.0.1:18601 --data-dir "$work/d1" --certs-dir "$work/c1" --api-key bench-key-0123456789abcdefgh --enroll-user sim:sim >/dev/null 2>&1 &
pids+=($!); wait_port 18601; sleep 1
$BIN sim load --server https://127.0.0.1:18601 --api-key bench-key-0123456789abcdefgh --trust-ca "$work/c1/ca.pem" --user sim:sim -n "$DEVICES" -r "$ROUNDS" -c 64

# How clients use connections changes the server's cost (TLS handshakes): the same run per mode.
MODE_DEVICES=${MODE_DEVICES:-300}
MODE_ROUNDS=${MODE_ROUNDS:-2}
port=18610
for mode in shared per-device per-request; do
  echo "== connections $mode: $MODE_DEVICES devices x $MODE_ROUNDS rounds (server CPU per enrollment and per connect request, handshakes)"
  MDMD_LOG=warn $BIN serve --listen 127.0.0.1:$port --data-dir "$work/m$port" --certs-dir "$work/mc$port" --api-key bench-key-0123456789abcdefgh --enroll-user sim:sim --enroll-flow single >/dev/null 2>&1 &
  pids+=($!); wait_port $port; sleep 1
  $BIN sim load --server https://127.0.0.1:$port --api-key bench-key-0123456789abcdefgh --trust-ca "$work/mc$port/ca.pem" --user sim:sim \
    -n "$MODE_DEVICES" -r "$MODE_ROUNDS" -c 16 --connections $mode \
    | grep -E '"(connections|enrollments_per_second|server_cpu_ms_per_profile|server_cpu_ms_per_enrollment|requests_per_second|server_cpu_ms_per_request|tls_handshakes_enrolling|tls_handshakes_rounds|tls_resumed|tls_handshakes_per_second)"'
  port=$((port+1))
done

# scepserver's file depot races under concurrent requests ("open depot/serial: file exists"),
# so the side-by-side runs one request at a time; mdmd is also measured with 8 at once.
echo "== SCEP issuance, $SCEP_N requests, same client: mdmd (plain HTTP) vs Debian scepserver"
MDMD_LOG=warn $BIN serve --plain-http --listen 127.0.0.1:18602 --data-dir "$work/d2" --certs-dir "$work/c2" --api-key bench-key-0123456789abcdefgh --scep-challenge bench-challenge-0123456789abcdef >/dev/null 2>&1 &
p=$!; pids+=($p); wait_port 18602; sleep 1
echo "mdmd, 1 at a time:"; $BIN sim scep-bench --url http://127.0.0.1:18602/scep --challenge bench-challenge-0123456789abcdef -n "$SCEP_N" -c 1 --pid "$p"
echo "mdmd, 8 at a time:"; $BIN sim scep-bench --url http://127.0.0.1:18602/scep --challenge bench-challenge-0123456789abcdef -n "$SCEP_N" -c 8 --pid "$p"
if command -v scepserver >/dev/null; then
  (cd "$work" && scepserver ca -init >/dev/null 2>&1)
  (cd "$work" && exec scepserver -port 18603 -challenge bench-challenge-0123456789abcdef -depot depot >"$work/scepserver.log" 2>&1) &
  p=$!; pids+=($p); wait_port 18603
  echo "scepserver, 1 at a time:"; $BIN sim scep-bench --url http://127.0.0.1:18603/scep --challenge bench-challenge-0123456789abcdef -n "$SCEP_N" -c 1 --pid "$p" || { grep -E "msg=|err=[^n]" "$work/scepserver.log" | tail -3; exit 1; }
else
  echo "scepserver not installed (apt-get install scep): comparison skipped"
fi
