#!/usr/bin/env bash
# Chaos at fleet size (docs/performance.md): N devices (default 1,000) poll and answer a stream of
# commands while mdmd instances are SIGKILLed and restarted in turn; every check of `mdmd sim chaos`
# must pass. First redb with one instance, then PostgreSQL behind two instances with PostgreSQL
# itself restarted once (PG_RESTART=, default: pg_ctlcluster for the cluster on 5432 when run as
# root). MDMD_BENCH_DATABASE_URL= picks the server (a database of its own is made and dropped).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/mdmd}
N=${N:-1000}
KILLS=${KILLS:-4}
INTERVAL=${INTERVAL:-15}
echo "== redb, one instance, $N devices, $KILLS kills"
"$BIN" sim chaos -n "$N" --kills "$KILLS" --interval "$INTERVAL"
BASE=${MDMD_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB="mdmd_chaos_$$"
psql -q "$BASE" -c "CREATE DATABASE $DB"
trap 'psql -q "$BASE" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true' EXIT
if [ -z "${PG_RESTART:-}" ] && [ "$(id -u)" = 0 ] && command -v pg_lsclusters >/dev/null; then
  cluster=$(pg_lsclusters --no-header | awk '$3 == 5432 && $4 == "online" { print $1 " " $2; exit }')
  [ -n "$cluster" ] && PG_RESTART="pg_ctlcluster $cluster restart"
fi
echo "== PostgreSQL, two instances, $N devices, $KILLS kills, PostgreSQL restart: ${PG_RESTART:-none}"
"$BIN" sim chaos -n "$N" --database-url "${BASE%/*}/$DB" --instances 2 --kills "$KILLS" --interval "$INTERVAL" \
  ${PG_RESTART:+--pg-restart "$PG_RESTART"}
