-- Broker accounts (docs/broker-auth.md): who may connect to Mosquitto and publish where.
-- The worker renders Mosquitto's password and ACL files from this table. Only Mosquitto's own
-- `$7$` PBKDF2-SHA512 hash is kept: a password is shown once, when it is made.
CREATE TABLE mqtt_accounts (
    -- A device's username is its id; every other account's starts with '@', which no device
    -- id can, so no account can pass for a device through the ACL's `%u` pattern.
    username      text PRIMARY KEY CHECK (username ~ '^@?[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$'),
    kind          text NOT NULL CHECK (kind IN ('device', 'gateway', 'service')),
    -- No foreign key: devices are never deleted (decommissioned instead, which the trigger
    -- below turns into a revocation), and benchmarks TRUNCATE devices between runs.
    device_id     text UNIQUE,
    tenant        text REFERENCES tenants (id),
    -- Gateways: the integration (chirpstack, tts, wmbusmeters), its application or prefix,
    -- and the topic trees it may publish to.
    gateway_kind  text CHECK (gateway_kind IN ('chirpstack', 'tts', 'wmbusmeters')),
    gateway_scope text,
    topics        text[] NOT NULL DEFAULT '{}',
    password_hash text NOT NULL CHECK (password_hash ~ '^\$7\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK ((kind = 'device') = (device_id IS NOT NULL)),
    CHECK (kind <> 'device' OR username = device_id),
    CHECK ((kind = 'device') = (left(username, 1) <> '@')),
    CHECK ((kind = 'gateway') = (gateway_kind IS NOT NULL AND gateway_scope IS NOT NULL))
);
CREATE INDEX mqtt_accounts_updated_idx ON mqtt_accounts (updated_at);

-- One counter moved by every change, in the writer's transaction: the worker re-renders the
-- files only when it moved. (A max(updated_at) would miss a change committed after a later
-- one; writers queue on this row, which registration rates allow.)
CREATE TABLE mqtt_accounts_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO mqtt_accounts_version VALUES (true, 1);

CREATE FUNCTION mqtt_accounts_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mqtt_accounts_version SET version = version + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER mqtt_accounts_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mqtt_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION mqtt_accounts_bump_version();

-- Decommissioning a device revokes its broker account, whichever code path decommissions it.
CREATE FUNCTION mqtt_accounts_revoke_decommissioned() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mqtt_accounts SET revoked_at = now(), updated_at = now()
    WHERE device_id = NEW.id AND revoked_at IS NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER devices_decommission_revokes_mqtt
    AFTER UPDATE OF status ON devices
    FOR EACH ROW WHEN (NEW.status = 'decommissioned' AND OLD.status IS DISTINCT FROM 'decommissioned')
    EXECUTE FUNCTION mqtt_accounts_revoke_decommissioned();

-- Dashboards read through the SELECT-only role: password hashes are not for them.
REVOKE ALL ON mqtt_accounts FROM territory_readonly;
