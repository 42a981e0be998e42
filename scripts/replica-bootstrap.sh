#!/bin/sh
# Turns an empty PGDATA into a streaming hot standby of a running primary.
#
# Used by the local cluster (rwsplit-testkit, for the tests, the demo and the benches) and by the
# replicas of docker-compose.yml, so that the part of the Docker topology that can run without
# Docker is the part the tests exercise.
#
# Environment:
#   PGDATA            data directory to create (must be absent or empty)       required
#   PRIMARY_HOST      primary host name or address                             required
#   PRIMARY_PORT      primary port                                             5432
#   REPLICATION_USER  role with the REPLICATION attribute                      replicator
#   PGPASSWORD        its password (read by libpq; never printed)              unset
#   PG_BIN            directory holding pg_isready and pg_basebackup           PATH lookup
#   WAIT_SECONDS      how long to wait for the primary to accept connections   60
#   REPLICATION_SLOT  physical slot to create and stream from                  none
#   STANDBY_NAME      name to stream under (its cluster_name, which the        none
#                     primary's pg_stat_replication shows as application_name)
set -eu

: "${PGDATA:?PGDATA must name the standby data directory}"
: "${PRIMARY_HOST:?PRIMARY_HOST must name the primary}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
WAIT_SECONDS="${WAIT_SECONDS:-60}"

bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN/$1"; else echo "$1"; fi
}

if [ -s "$PGDATA/PG_VERSION" ]; then
  echo "replica-bootstrap: $PGDATA already holds a cluster; leaving it as it is"
  exit 0
fi

waited=0
until "$(bin pg_isready)" -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" -d postgres; do
  waited=$((waited + 1))
  if [ "$waited" -ge "$WAIT_SECONDS" ]; then
    echo "replica-bootstrap: primary $PRIMARY_HOST:$PRIMARY_PORT did not accept connections within ${WAIT_SECONDS}s" >&2
    exit 1
  fi
  sleep 1
done

mkdir -p "$PGDATA"
chmod 0700 "$PGDATA"

set -- -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" -D "$PGDATA" \
  -R -X stream --checkpoint=fast --no-password
if [ -n "${REPLICATION_SLOT:-}" ]; then
  set -- "$@" --create-slot --slot="$REPLICATION_SLOT"
fi
"$(bin pg_basebackup)" "$@"
if [ -n "${STANDBY_NAME:-}" ]; then
  printf "cluster_name = '%s'\n" "$STANDBY_NAME" >> "$PGDATA/postgresql.auto.conf"
fi
echo "replica-bootstrap: $PGDATA is a standby of $PRIMARY_HOST:$PRIMARY_PORT"
