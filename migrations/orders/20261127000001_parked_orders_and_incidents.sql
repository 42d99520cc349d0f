-- Poison and contradictions (issue 9): never loop forever, never hide.
--
-- An order Payments refuses (an `error` about it, other than `internal`) counts an
-- attempt and keeps the error; after MAX_PAYMENT_ATTEMPTS it is parked: the link stops
-- re-sending it until an operator retries it (POST /orders/{id}/retry). Its status does
-- not change (it is still open: nothing was paid or cancelled).
-- Constant defaults: the ALTER rewrites nothing.
ALTER TABLE orders
    ADD COLUMN payment_attempts   integer NOT NULL DEFAULT 0 CHECK (payment_attempts >= 0),
    ADD COLUMN last_payment_error text CHECK (char_length(last_payment_error) <= 1000),
    ADD COLUMN parked_at          timestamptz,
    -- incidents recorded for this order (order_incidents): it needs a person
    ADD COLUMN incidents          integer NOT NULL DEFAULT 0 CHECK (incidents >= 0);

-- What Payments reported that the order could not take: an outcome contradicting its
-- final state, or an outcome for another payment than the order's. The order is left
-- as it was and the event acked (redelivering it would change nothing); this row is
-- what a person looks at. One row per event and kind, however often it is redelivered.
CREATE TABLE order_incidents (
    id         bigserial PRIMARY KEY,
    order_id   uuid NOT NULL REFERENCES orders (id),
    kind       text NOT NULL CHECK (kind IN ('contradicting_outcome', 'payment_id_mismatch')),
    event_id   bigint NOT NULL,
    detail     text NOT NULL CHECK (char_length(detail) <= 1000),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (order_id, kind, event_id)
);

-- The link's walk over open orders skips parked ones, through its index: parked orders
-- never cost a resume or a sweep anything.
CREATE INDEX orders_open_unparked ON orders (created_at, id)
    WHERE status IN ('pending_payment', 'awaiting_payment') AND parked_at IS NULL;
DROP INDEX orders_open;
ALTER INDEX orders_open_unparked RENAME TO orders_open;
