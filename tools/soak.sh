#!/usr/bin/env bash
# The soak (docs/performance.md, "An hour at a steady load"): one mdmd (release, redb) on
# 127.0.0.1 with its TLS certificate from a real ACME CA (Debian's pebble) and a test push
# certificate; `mdmd sim soak` as the APNs stand-in with DEVICES devices that check in, are
# pushed, answer a stream of commands and profile installs, and renew their identities; samples
# every minute (RSS, open files, store size, server CPU, request p50/p99) into $OUT/samples.jsonl,
# plotted by tools/soak_plot.py into $OUT/soak.png. Renewals inside the hour by configuration,
# not by hand: device identities are issued for a day and renewed a day before they expire (the
# sweep every RENEW_SECS, so each sweep renews the fleet), and Pebble's certificates live 30
# days + ACME_MINUTES, so mdmd (--acme-renew-days 30) renews them every ACME_MINUTES.
# Loopback only; bounded by MINUTES. Not part of `make test`.
set -euo pipefail
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mdmd}
DEVICES=${DEVICES:-2000}
MINUTES=${MINUTES:-60}
ACME_MINUTES=${ACME_MINUTES:-25}
RENEW_SECS=${RENEW_SECS:-1500}
POLL_SECS=${POLL_SECS:-60}
OUT=${OUT:-soak-out}
mkdir -p "$OUT"
rm -f "$OUT/samples.jsonl"
for c in pebble openssl python3; do command -v $c >/dev/null || { echo "soak needs $c (apt-get install pebble openssl python3)" >&2; exit 1; }; done
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib \
  || { echo "soak plots need matplotlib (pip install matplotlib)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 300); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }
PORT=18811 HTTP01=18812 APNS=18813 PEB=18814 PEBM=18815 PEBTLS=18816
key=soak-key-0123456789abcdefghij

# Pebble, with certificates that live 30 days + ACME_MINUTES.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/peb.key" -out "$work/peb.pem" \
  -days 2 -subj /CN=pebble -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
cat > "$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$PEB", "managementListenAddress": "127.0.0.1:$PEBM",
  "certificate": "$work/peb.pem", "privateKey": "$work/peb.key", "httpPort": $HTTP01, "tlsPort": $PEBTLS,
  "ocspResponderURL": "", "externalAccountBindingRequired": false,
  "certificateValidityPeriod": $(( 30 * 86400 + ACME_MINUTES * 60 ))}}
JSON
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config "$work/pebble.json" >"$work/pebble.log" 2>&1 &
pids+=($!); wait_port $PEB

# A CA standing in for Apple's, and a push certificate from it (subject UID = topic).
topic="com.apple.mgmt.External.$(cat /proc/sys/kernel/random/uuid)"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/pca.key" -out "$work/pca.pem" -subj "/CN=Test Push CA" -days 2 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$work/push.key" -out "$work/push.csr" -subj "/UID=$topic/CN=APSP:soak" 2>/dev/null
openssl x509 -req -in "$work/push.csr" -CA "$work/pca.pem" -CAkey "$work/pca.key" -CAcreateserial -out "$work/push.pem" -days 2 2>/dev/null

MDMD_LOG=${MDMD_LOG:-warn} $BIN serve --listen 127.0.0.1:$PORT --data-dir "$work/d" --certs-dir "$work/c" --api-key $key \
  --enroll-user sim:sim --apns-url https://127.0.0.1:$APNS --apns-ca "$work/standin.pem" \
  --acme-domain localhost --acme-directory https://127.0.0.1:$PEB/dir --acme-root "$work/peb.pem" \
  --acme-http-listen 127.0.0.1:$HTTP01 --acme-renew-days 30 \
  --identity-days 1 --renew-before-days 1 --renew-interval "$RENEW_SECS" >"$OUT/server.log" 2>&1 &
server=$!; pids+=($server); wait_port $PORT
# Until the server presents Pebble's certificate.
for _ in $(seq 1 120); do
  if openssl s_client -connect 127.0.0.1:$PORT -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -issuer 2>/dev/null | grep -q Pebble; then break; fi
  sleep 0.5
done
curl -sfk https://127.0.0.1:$PEBM/roots/0 >"$work/root.pem"
cat "$work/root.pem" "$work/c/ca.pem" >"$work/trust.pem"
client=(--server https://localhost:$PORT --api-key $key --trust-ca "$work/trust.pem")
$BIN push-cert set "$work/push.pem" --key "$work/push.key" "${client[@]}" >/dev/null
echo "== soak: $DEVICES devices, $MINUTES minutes; samples in $OUT/samples.jsonl"
timeout $(( MINUTES * 60 + 1800 )) $BIN sim soak "${client[@]}" -n "$DEVICES" --user sim:sim --minutes "$MINUTES" \
  --poll-secs "$POLL_SECS" --apns-listen 127.0.0.1:$APNS --push-ca "$work/pca.pem" --write-apns-ca "$work/standin.pem" \
  --server-pid $server --data-dir "$work/d" --out "$OUT/samples.jsonl" | tee "$OUT/report.json"
python3 tools/soak_plot.py "$OUT/samples.jsonl" "$OUT/soak.png" \
  "mdmd soak: $DEVICES devices, $MINUTES minutes, redb ($(date -u +%F), $(nproc) cores)"
echo "== plotted: $OUT/soak.png"
