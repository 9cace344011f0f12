#!/usr/bin/env bash
# Push figures (docs/performance.md): a throwaway mdmd on 127.0.0.1 with a test push certificate,
# `mdmd sim fleet` as the APNs stand-in with N enrolled devices woken only by push, then the time
# from POST /v1/commands to each device's result being stored, for 1 target and for all N.
# Loopback only, bounded in count and time.
set -euo pipefail
# Every simulated device enrolls from 127.0.0.1: no per-address enrollment budget for a load run.
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=target/release/mdmd
DEVICES=${DEVICES:-10000}
ROUNDS=${ROUNDS:-20}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 300); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }

# A CA standing in for Apple's, and a push certificate from it (subject UID = topic).
topic="com.apple.mgmt.External.$(cat /proc/sys/kernel/random/uuid)"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/pca.key" -out "$work/pca.pem" -subj "/CN=Test Push CA" -days 2 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$work/push.key" -out "$work/push.csr" -subj "/UID=$topic/CN=APSP:bench" 2>/dev/null
openssl x509 -req -in "$work/push.csr" -CA "$work/pca.pem" -CAkey "$work/pca.key" -CAcreateserial -out "$work/push.pem" -days 2 2>/dev/null

MDMD_LOG=warn $BIN serve --listen 127.0.0.1:18611 --data-dir "$work/d" --certs-dir "$work/c" --api-key bench-key-0123456789abcdefgh \
  --enroll-user sim:sim --apns-url https://127.0.0.1:18612 --apns-ca "$work/standin.pem" >/dev/null 2>&1 &
pids+=($!); wait_port 18611; sleep 1
client=(--server https://127.0.0.1:18611 --api-key bench-key-0123456789abcdefgh --trust-ca "$work/c/ca.pem")
$BIN push-cert set "$work/push.pem" --key "$work/push.key" "${client[@]}" >/dev/null
echo "== $DEVICES devices woken by push; $ROUNDS rounds to 1 device, 3 rounds to all"
timeout 1200 $BIN sim fleet "${client[@]}" -n "$DEVICES" --user sim:sim --apns-listen 127.0.0.1:18612 \
  --push-ca "$work/pca.pem" --write-apns-ca "$work/standin.pem" --measure-rounds "$ROUNDS" --seconds 300
