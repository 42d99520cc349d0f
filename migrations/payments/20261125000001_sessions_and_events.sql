-- Payment sessions and the outbox of their outcome events. A state change and its
-- event are written in one transaction (see payments/src/store.rs); the trigger below
-- wakes every Payments instance (LISTEN payment_events) when an event commits.

CREATE TABLE payment_sessions (
    payment_id      uuid PRIMARY KEY,
    order_id        uuid NOT NULL UNIQUE,
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    state           text NOT NULL DEFAULT 'initiated'
                    CHECK (state IN ('initiated', 'method_selected', 'fulfilled', 'cancelled')),
    method          text CHECK (char_length(method) BETWEEN 1 AND 100),
    cancel_reason   text CHECK (cancel_reason IN ('customer', 'expired', 'orders_cancelled')),
    expires_at      timestamptz NOT NULL,
    -- the WebSocket connection (of any instance) that last sent a message about this
    -- order: where its outcome goes first
    last_connection uuid,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (state NOT IN ('method_selected', 'fulfilled') OR method IS NOT NULL),
    CHECK ((state = 'cancelled') = (cancel_reason IS NOT NULL))
);

-- Expiry scans open sessions by deadline.
CREATE INDEX payment_sessions_open_by_expiry ON payment_sessions (expires_at)
    WHERE state IN ('initiated', 'method_selected');

-- One final event per session: its id is what Orders acks.
CREATE TABLE payment_events (
    event_id      bigserial PRIMARY KEY,
    payment_id    uuid NOT NULL UNIQUE REFERENCES payment_sessions (payment_id),
    order_id      uuid NOT NULL,
    state         text NOT NULL CHECK (state IN ('FULFILL', 'CANCEL')),
    reason        text CHECK (reason IN ('customer', 'expired', 'orders_cancelled')),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- first delivery claimed by one instance (a conditional UPDATE, so exactly one)
    dispatched_at timestamptz,
    acked_at      timestamptz,
    CHECK ((state = 'CANCEL') = (reason IS NOT NULL))
);

CREATE INDEX payment_events_unacked ON payment_events (event_id) WHERE acked_at IS NULL;

-- Open WebSocket connections of every instance, kept fresh by a heartbeat, so an
-- instance can tell whether an event's connection is alive somewhere else.
CREATE TABLE ws_connections (
    connection_id uuid PRIMARY KEY,
    instance_id   uuid NOT NULL,
    opened_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    seen_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE FUNCTION notify_payment_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('payment_events', NEW.event_id::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER payment_events_notify AFTER INSERT ON payment_events
    FOR EACH ROW EXECUTE FUNCTION notify_payment_event();
