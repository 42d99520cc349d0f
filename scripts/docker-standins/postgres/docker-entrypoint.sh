#!/usr/bin/env bash
# Entrypoint of the local postgres:15 stand-in (scripts/docker-standins/postgres).
# A subset of the official image's docker-entrypoint.sh contract:
# - started as root, it owns PGDATA and the socket directory to postgres, then runs
#   itself again as postgres (uid 999);
# - on the first start only (no PGDATA/PG_VERSION), initdb with POSTGRES_USER
#   (default postgres) and POSTGRES_PASSWORD (required unless
#   POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_INITDB_ARGS; local connections are
#   trusted, other hosts authenticate with POSTGRES_HOST_AUTH_METHOD (default
#   scram-sha-256); POSTGRES_DB (default POSTGRES_USER) is created; *.sql and *.sh
#   in /docker-entrypoint-initdb.d run once;
# - then it exec's the command (postgres, in the foreground, listening on all
#   addresses), so that the server is PID 1 and gets the stop signal (SIGINT).
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi
# `postgres --version` and the like print and exit: no set-up for them.
want_help=0
for arg in "$@"; do
  case $arg in '-?' | --help | --describe-config | -V | --version) want_help=1 ;; esac
done

if [ "$1" = postgres ] && [ "$want_help" = 0 ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  chmod 3777 /var/run/postgresql
  export HOME=/var/lib/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = postgres ] && [ "$want_help" = 0 ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    echo "error: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
    echo "       (set it, or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
    exit 1
  fi

  initdb_args=(--username="$user")
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    initdb_args+=(--pwfile=/dev/stdin)
  fi
  # POSTGRES_INITDB_ARGS is a list of words, as in the official image.
  # shellcheck disable=SC2206
  initdb_args+=(${POSTGRES_INITDB_ARGS:-})
  initdb "${initdb_args[@]}" <<<"${POSTGRES_PASSWORD:-}"
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

  # A server on the socket only, for the set-up; stopped before the real start.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
  export PGUSER=$user PGPASSWORD=${POSTGRES_PASSWORD:-}
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --no-password --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db";'
  fi
  shopt -s nullglob
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "running $f"; bash "$f" ;;
      *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --no-password --dbname "$db" -f "$f" ;;
      *) echo "ignoring $f" ;;
    esac
  done
  unset PGPASSWORD
  pg_ctl -D "$PGDATA" -m fast -w stop
  echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
