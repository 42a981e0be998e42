#!/bin/sh
# Prepares a primary for streaming replication: a role with the REPLICATION attribute and a
# pg_hba.conf entry that lets it stream. Run by the official postgres image from
# /docker-entrypoint-initdb.d on first start (and by rwsplit's tests against a local primary).
#
# Environment:
#   REPLICATION_USER      role to create                 replicator
#   REPLICATION_PASSWORD  its password (never printed)   required
#   POSTGRES_USER, POSTGRES_DB   as the official image sets them
#   PGDATA                the primary's data directory (for pg_hba.conf)
set -eu

REPLICATION_USER="${REPLICATION_USER:-replicator}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set for the replication role}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  --set=role="$REPLICATION_USER" --set=password="$REPLICATION_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SQL

echo "host replication ${REPLICATION_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
echo "primary-init: replication role ${REPLICATION_USER} ready"
