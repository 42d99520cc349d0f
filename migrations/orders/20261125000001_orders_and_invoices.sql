-- Orders and their invoices. States are text with CHECK constraints; transitions are
-- conditional UPDATEs in the service (see orders/src/store.rs).

CREATE TABLE orders (
    id                  uuid PRIMARY KEY,
    amount              bigint NOT NULL CHECK (amount > 0 AND amount <= 100000000),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description         text CHECK (char_length(description) <= 500),
    status              text NOT NULL DEFAULT 'pending_payment'
                        CHECK (status IN ('pending_payment', 'awaiting_payment', 'fulfilled', 'cancelled')),
    payment_method      text CHECK (char_length(payment_method) BETWEEN 1 AND 200),
    payment_id          uuid,
    payment_url         text,
    payment_expires_at  timestamptz,
    cancel_reason       text CHECK (cancel_reason IN ('customer', 'expired', 'orders_cancelled')),
    -- set by POST /orders/{id}/cancel; the order stays open until Payments confirms
    cancel_requested_at timestamptz,
    idempotency_key     text UNIQUE CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (status <> 'awaiting_payment' OR payment_url IS NOT NULL),
    CHECK (status = 'cancelled' OR cancel_reason IS NULL)
);

-- GET /orders lists newest first, optionally by status, with a keyset cursor.
CREATE INDEX orders_newest ON orders (created_at DESC, id DESC);
CREATE INDEX orders_by_status_newest ON orders (status, created_at DESC, id DESC);
-- The link re-sends requests for open orders on every connect and from its sweeper.
CREATE INDEX orders_open ON orders (updated_at)
    WHERE status IN ('pending_payment', 'awaiting_payment');

CREATE SEQUENCE invoice_numbers AS bigint;

CREATE TABLE invoices (
    number    bigint PRIMARY KEY DEFAULT nextval('invoice_numbers'),
    order_id  uuid NOT NULL UNIQUE REFERENCES orders (id),
    amount    bigint NOT NULL CHECK (amount > 0),
    currency  text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    issued_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

ALTER SEQUENCE invoice_numbers OWNED BY invoices.number;
