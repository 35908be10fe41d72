-- Tenants (one per intercommunality sharing the platform) and API keys with roles
-- (docs/auth.md). Every device belongs to exactly one tenant; devices registered before
-- tenants existed go to `default`.
CREATE TABLE tenants (
    id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- What the tenant publishes as open data (off by default).
    open_data  jsonb NOT NULL DEFAULT '{"parking": false, "waste": false, "water": false}',
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenants (id, name) VALUES ('default', 'Default');

ALTER TABLE devices ADD COLUMN tenant text NOT NULL DEFAULT 'default' REFERENCES tenants (id);
CREATE INDEX devices_tenant_idx ON devices (tenant, id);

-- A key is shown once: `tk_<prefix>_<secret>`. Only the SHA-256 of the whole key is kept (the
-- secret is 32 random bytes, so a slow password hash would add nothing), with the readable
-- prefix to find the row and to recognise a leaked key. Revocation and expiry are checked on
-- every request, in every API process.
CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    prefix     text NOT NULL UNIQUE CHECK (prefix ~ '^[a-z0-9]{8}$'),
    key_sha256 bytea NOT NULL CHECK (length(key_sha256) = 32),
    role       text NOT NULL CHECK (role IN ('admin', 'integrator', 'operator', 'crew', 'viewer')),
    tenant     text REFERENCES tenants (id),
    label      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    -- Every role but admin works within one tenant.
    CHECK ((role = 'admin') = (tenant IS NULL))
);
-- Dashboards read through the SELECT-only role: key hashes are not for them.
REVOKE ALL ON api_keys FROM territory_readonly;
