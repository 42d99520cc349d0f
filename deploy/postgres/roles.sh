#!/usr/bin/env bash
# Each service's own least-privileged role, owner of its own database and of nothing
# else: no superuser, no CREATEDB, no CREATEROLE; neither role may connect to the other's
# database. Idempotent: creates what is missing and sets the passwords again.
#
#   ORDERS_DB_PASSWORD=… PAYMENTS_DB_PASSWORD=… deploy/postgres/roles.sh
#
# Run as a superuser, with psql's usual PG* variables saying where (docker-compose.yml
# runs it as an init script of the postgres container, on its first start; for a volume
# made before, run `docker compose exec postgres bash /docker-entrypoint-initdb.d/10-roles.sh`).
# ORDERS_DB_NAME and PAYMENTS_DB_NAME (default orders, payments) name both the role and
# its database.
set -euo pipefail
: "${ORDERS_DB_PASSWORD:?set ORDERS_DB_PASSWORD, the password of the orders role}"
: "${PAYMENTS_DB_PASSWORD:?set PAYMENTS_DB_PASSWORD, the password of the payments role}"

for pair in "${ORDERS_DB_NAME:-orders}:ORDERS_DB_PASSWORD" "${PAYMENTS_DB_NAME:-payments}:PAYMENTS_DB_PASSWORD"; do
  name=${pair%%:*}
  password_variable=${pair#*:}
  psql -v ON_ERROR_STOP=1 --no-password --quiet --dbname postgres \
    --set name="$name" --set password="${!password_variable}" <<'SQL'
SELECT format('CREATE ROLE %I', :'name')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'name') \gexec
ALTER ROLE :"name" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \gexec
ALTER DATABASE :"name" OWNER TO :"name";
-- Only its owner (and superusers) may connect: not the other service's role.
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"name" TO :"name";
SQL
  echo "role and database $name: ready"
done
