#!/bin/sh
# Entrypoint of the replica containers: on first start, make PGDATA a streaming hot standby of
# the primary with the shared scripts/replica-bootstrap.sh (pg_basebackup -R -X stream), then
# hand over to the official image's entrypoint, which finds PGDATA initialised and starts the
# standby.
set -eu

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  gosu postgres /usr/local/bin/replica-bootstrap.sh
fi
exec docker-entrypoint.sh "$@"
