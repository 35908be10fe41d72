-- A SELECT-only role for dashboards (Grafana's datasource) and anyone who only reads. It cannot
-- log in; `territory migrate` creates a login member of it when TERRITORY_GRAFANA_DB_PASSWORD
-- is set (storage/roles.py). Roles belong to the cluster, not the database, hence the guard.
-- Tables created by later migrations are covered by the default privileges; a table that must
-- stay private (key hashes, say) revokes SELECT from this role in its own migration.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'territory_readonly') THEN
        CREATE ROLE territory_readonly NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO territory_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO territory_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO territory_readonly;
