-- Alerts: what needs a person, opened and cleared by `territory worker`, delivered through an
-- outbox written in the same transaction as each state change (docs/alerts.md).

-- When the platform last heard from each device (its own receive time, never a keepalive),
-- kept current by the worker from the change feed so that offline detection never scans the
-- readings. The newest battery level is kept too: many frames carry none, and a decision on
-- "no value" would flap.
CREATE TABLE device_activity (
    device_id        text PRIMARY KEY,
    last_received_at timestamptz NOT NULL,
    battery_pct      double precision,
    battery_ts       timestamptz
);

-- One deadline per (device, silence type): the moment the device counts as offline (or a
-- parking space as stale) unless heard from again. `tripped` says the alert is open, so that
-- each cycle only looks at deadlines just crossed and at tripped rows, both through an index.
CREATE TABLE alert_silence (
    device_id text NOT NULL,
    type      text NOT NULL,
    deadline  timestamptz NOT NULL,
    tripped   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (device_id, type)
);
CREATE INDEX alert_silence_due_idx ON alert_silence (deadline) WHERE NOT tripped;
CREATE INDEX alert_silence_tripped_idx ON alert_silence (deadline) WHERE tripped;

CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id       text NOT NULL,
    type            text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_]{0,31}$'),
    severity        text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'acknowledged', 'cleared')),
    opened_at       timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    cleared_at      timestamptz,
    count           integer NOT NULL DEFAULT 1 CHECK (count >= 1),
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb,
    CHECK ((status = 'cleared') = (cleared_at IS NOT NULL)),
    CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL))
);
-- At most one alert per (device, type) that is not cleared: a repeat updates it.
CREATE UNIQUE INDEX alerts_one_active_key ON alerts (device_id, type) WHERE status <> 'cleared';
CREATE INDEX alerts_device_idx ON alerts (device_id, id);
CREATE INDEX alerts_type_idx ON alerts (type, id);
CREATE INDEX alerts_status_idx ON alerts (status, id) WHERE status <> 'cleared';

-- The outbox: one row per state change (opened, acknowledged, cleared), with a snapshot of the
-- alert as it was then. MQTT sends each one; webhooks get them grouped into notifications.
CREATE TABLE alert_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      bigint NOT NULL REFERENCES alerts (id),
    device_id     text NOT NULL,
    type          text NOT NULL,
    transition    text NOT NULL CHECK (transition IN ('opened', 'acknowledged', 'cleared')),
    at            timestamptz NOT NULL,
    snapshot      jsonb NOT NULL,
    mqtt_sent_at  timestamptz,
    mqtt_attempts integer NOT NULL DEFAULT 0,
    mqtt_next_at  timestamptz NOT NULL DEFAULT now(),
    mqtt_error    text,
    grouped_at    timestamptz
);
CREATE INDEX alert_events_mqtt_pending_idx ON alert_events (mqtt_next_at, id)
    WHERE mqtt_sent_at IS NULL;
CREATE INDEX alert_events_ungrouped_idx ON alert_events (type, transition, at)
    WHERE grouped_at IS NULL;

-- When each (type, transition) group last produced a notification (group interval).
CREATE TABLE alert_groups (
    type         text NOT NULL,
    transition   text NOT NULL,
    last_sent_at timestamptz NOT NULL,
    PRIMARY KEY (type, transition)
);

-- One grouped notification to one webhook. Claimed with a lease (`lease_until`) so that no
-- transaction stays open while a webhook is slow, and a crashed sender's claim expires.
CREATE TABLE alert_notifications (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook         text NOT NULL,
    type            text NOT NULL,
    transition      text NOT NULL,
    event_ids       bigint[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    last_error      text,
    delivered_at    timestamptz
);
CREATE INDEX alert_notifications_due_idx ON alert_notifications (webhook, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX alert_notifications_status_idx ON alert_notifications (status, id);

-- Settings the silence deadlines were computed with: a change recomputes them all once.
CREATE TABLE alert_engine_state (
    key   text PRIMARY KEY,
    value text NOT NULL
);
