#!/bin/sh
# First start: a cluster owned by $POSTGRES_USER (password $POSTGRES_PASSWORD, SCRAM over the
# network) with the database $POSTGRES_DB; then the server, on every interface of the container.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --username "$POSTGRES_USER" --pwfile "$pwfile" --auth-local trust \
    --auth-host scram-sha-256 --encoding UTF8 --locale C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    createdb --username "$POSTGRES_USER" "$POSTGRES_DB"
  fi
  pg_ctl -w stop >/dev/null
fi
exec postgres -c listen_addresses='*' "$@"
