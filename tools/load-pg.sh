#!/usr/bin/env bash
# Store figures side by side, same client, same run (see docs/performance.md):
#  redb, one instance | PostgreSQL, one instance | PostgreSQL, two instances.
# Each: N devices enroll (profile + SCEP + Authenticate + TokenUpdate), then R
# rounds of enqueue-to-all + every device's session; server CPU from /v1/stats
# (summed over instances) and local PostgreSQL CPU from /proc. Loopback only.
set -euo pipefail
# Every simulated device enrolls from 127.0.0.1: no per-address enrollment budget for a load run.
export MDMD_ENROLL_PER_SOURCE=0
cd "$(dirname "$0")/.."
BIN=target/release/mdmd
# The server build (BEFORE=older/mdmd runs that one; the client is always this build's `mdmd sim`).
SERVER=${BEFORE:-$BIN}
# The command of each round: DeviceInformation (stored as inventory and facts too) or one that
# only stores its result (ProvisioningProfileList): the command loop's own cost.
REQUEST_TYPE=${REQUEST_TYPE:-DeviceInformation}
DEVICES=${DEVICES:-1000}
ROUNDS=${ROUNDS:-5}
BASE=${MDMD_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
work=$(mktemp -d)
pids=()
dbs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${dbs[@]}"; do psql -q "$BASE" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# The port opens before the CA and store are ready: wait for the "listening" line.
wait_port() { for _ in $(seq 1 600); do grep -q "mdmd listening on" "$work/serve-$1.log" 2>/dev/null && return 0; sleep 0.1; done; echo "mdmd on port $1 did not start" >&2; cat "$work/serve-$1.log" >&2; return 1; }
serve() { # port data certs [flags...]
  local port=$1 data=$2 certs=$3; shift 3
  MDMD_LOG=warn $SERVER serve --listen 127.0.0.1:$port --data-dir "$data" --certs-dir "$certs" --api-key bench-key-0123456789abcdefgh \
    --enroll-user sim:sim --enroll-flow single "$@" >"$work/serve-$port.log" 2>&1 &
  pids+=($!); wait_port "$port"
}
load() { # certs server [--also URL]
  local certs=$1 server=$2; shift 2
  $BIN sim load --server "$server" --api-key bench-key-0123456789abcdefgh --trust-ca "$certs/ca.pem" --user sim:sim -n "$DEVICES" -r "$ROUNDS" -c 64 \
    --request-type "$REQUEST_TYPE" "$@" | tee "$work/last.json"
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
m, d = r["server_cpu_ms_per_request"], r.get("db_cpu_ms_per_request")
rt = r.get("db_round_trips_per_request")
rps = r["requests_per_second"]
print(f"-- all rounds: {rps:.0f} requests/s; per request: mdmd {m:.3f} ms"
      + (f" + PostgreSQL {d:.3f} ms = {m + d:.3f} ms" if d is not None else "")
      + (f"; {rt:.2f} round trips" if rt is not None else ""))
st = r.get("steady")
if st:
    m, d, rt = st["server_cpu_ms_per_request"], st.get("db_cpu_ms_per_request"), st.get("db_round_trips_per_request")
    n, k = st["requests"], st["rounds"]
    sc = st["server_commands"]
    print(f"-- last {k} rounds ({n} requests, {sc} of them queued by the server): per request: mdmd {m:.3f} ms"
          + (f" + PostgreSQL {d:.3f} ms = {m + d:.3f} ms" if d is not None else "")
          + (f"; {rt:.2f} round trips" if rt is not None else ""))
' "$work/last.json"
}
newdb() { local d="mdmd_load_$$_$1"; psql -q "$BASE" -c "CREATE DATABASE $d" >/dev/null; dbs+=("$d"); url="${BASE%/*}/$d"; }

echo "== redb, one instance: $DEVICES devices x $ROUNDS rounds"
serve 18611 "$work/r" "$work/rc"
load "$work/rc" https://127.0.0.1:18611

echo "== PostgreSQL, one instance"
newdb 1
serve 18612 "$work/p1" "$work/p1c" --database-url "$url"
load "$work/p1c" https://127.0.0.1:18612

echo "== PostgreSQL, two instances (devices poll both, round-robin)"
newdb 2
serve 18613 "$work/p2a" "$work/p2c" --database-url "$url"
mkdir -p "$work/p2c-b"; cp -p "$work/p2c"/* "$work/p2c-b/"
serve 18614 "$work/p2b" "$work/p2c-b" --database-url "$url"
load "$work/p2c" https://127.0.0.1:18613 --also https://127.0.0.1:18614
