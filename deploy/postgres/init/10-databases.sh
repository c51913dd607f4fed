#!/bin/sh
# Runs once, when the postgres container starts on an empty data volume (docker-entrypoint-initdb.d).
#
# One database per service, owned by a role of the same name with its own password. Only that role
# (and the superuser) may connect to it, and no service role may connect to the maintenance
# databases, so no service can read another's tables. Each service creates its own schema at start.
#
# The passwords come from the postgres container's environment (see docker-compose.yml); a missing
# one, like any failed statement, fails the initialisation.
set -e

authmesh_create_db() { # name password
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
		-v name="$1" -v password="${2:?password for database $1 is not set}" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;
SQL

authmesh_create_db account "$ACCOUNT_DB_PASSWORD"
authmesh_create_db blog "$BLOG_DB_PASSWORD"
authmesh_create_db shop "$SHOP_DB_PASSWORD"
