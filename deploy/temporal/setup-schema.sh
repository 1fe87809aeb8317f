#!/bin/sh
# Creates Temporal's two databases in PostgreSQL, or brings their schema up to the version this
# admin-tools image ships, with Temporal's own schema tool. Safe to run on every start: existing
# databases are kept and only the missing schema versions are applied. The connection comes from
# the environment (SQL_PLUGIN, SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD).
set -eu

schemas=/etc/temporal/schema/postgresql/v12
for database in temporal temporal_visibility; do
  case "$database" in
    temporal) versioned="$schemas/temporal/versioned" ;;
    *) versioned="$schemas/visibility/versioned" ;;
  esac
  echo "schema of $database"
  temporal-sql-tool --db "$database" create
  temporal-sql-tool --db "$database" setup-schema -v 0.0
  temporal-sql-tool --db "$database" update-schema -d "$versioned"
done
echo "Temporal's schema is up to date"
