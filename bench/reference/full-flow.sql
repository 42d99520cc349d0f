-- One complete flow, as the services run it today: the statements of
-- orders/src/store.rs and payments/src/store.rs, in the order one order goes through
-- them, with the same transaction boundaries (a statement outside BEGIN/COMMIT is its
-- own transaction, as it is on the services' pool): 9 write commits and 3 reads.
--
-- Run against ONE database holding both schemas (migrations/orders and
-- migrations/payments; no name is shared), with prepared statements like sqlx:
--   pgbench -n -M prepared -c 32 -j 2 -T 30 -f bench/reference/full-flow.sql <db>
-- `loadgen pgbench` and `loadgen reference` create that database and drop it after.
--
-- What the services do that this script does not: HTTP, JSON, the WebSocket, the
-- ping sqlx sends on each pool checkout (test_before_acquire), the
-- trigger's NOTIFY reaching a listener (the trigger fires here too), and the
-- loadgen watcher's reads.

-- 1. Orders, POST /orders: Store::insert_order (commit 1).
INSERT INTO orders (id, amount, currency, description, idempotency_key)
VALUES (gen_random_uuid(), 1999, 'EUR', 'pgbench', NULL)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id AS order_id, amount, currency, description, status, payment_method,
    payment_url, cancel_reason, created_at, updated_at
\gset o_

-- 2. Payments, initiate_payment: Store::initiate, the upsert (commit 2)...
INSERT INTO payment_sessions (payment_id, order_id, amount, currency, expires_at, last_connection)
VALUES (gen_random_uuid(), :o_order_id, 1999, 'EUR',
    clock_timestamp() + make_interval(secs => 900), '00000000-0000-4000-8000-000000000001')
ON CONFLICT (order_id) DO UPDATE SET last_connection = EXCLUDED.last_connection;

-- ...and its read-back: Store::session_by_order (read 1).
SELECT payment_id, order_id, amount, currency, state, method, cancel_reason, expires_at
FROM payment_sessions WHERE order_id = :o_order_id;

-- 3. Orders, payment_methods: Store::choose_method (commit 3).
UPDATE orders SET payment_method = CASE
        WHEN payment_method IS NOT NULL AND payment_method = ANY('{credit_card,paypal,bank_transfer}'::text[])
        THEN payment_method ELSE 'credit_card' END,
    updated_at = clock_timestamp()
WHERE id = :o_order_id AND status = 'pending_payment'
RETURNING payment_method;

-- 4. Payments, select_payment_method: Store::select_method (commit 4).
UPDATE payment_sessions SET state = 'method_selected', method = 'credit_card',
    last_connection = '00000000-0000-4000-8000-000000000001', updated_at = clock_timestamp()
WHERE order_id = :o_order_id AND state = 'initiated'
RETURNING payment_id, order_id, amount, currency, state, method, cancel_reason, expires_at
\gset s_

-- 5. Orders, payment_page: Store::record_page (commit 5).
UPDATE orders SET status = 'awaiting_payment', payment_id = :s_payment_id,
    payment_url = 'http://127.0.0.1:8081/pay/' || :s_payment_id,
    payment_expires_at = :s_expires_at, updated_at = clock_timestamp()
WHERE id = :o_order_id AND status IN ('pending_payment', 'awaiting_payment')
  AND payment_url IS DISTINCT FROM 'http://127.0.0.1:8081/pay/' || :s_payment_id;

-- 6. Payments, POST /pay/{id}/complete: Store::finish, one transaction (commit 6).
BEGIN;
UPDATE payment_sessions SET state = 'fulfilled', updated_at = clock_timestamp()
WHERE payment_id = :s_payment_id AND state = 'method_selected' AND expires_at > clock_timestamp()
RETURNING order_id;
INSERT INTO payment_events (payment_id, order_id, state, reason, dispatched_at)
VALUES (:s_payment_id, :o_order_id, 'FULFILL', NULL, CASE WHEN false THEN clock_timestamp() END)
RETURNING event_id
\gset e_
COMMIT;

-- 7. Payments, delivery on the NOTIFY: Store::undelivered (read 2)...
SELECT e.event_id, e.order_id, e.payment_id, e.state, e.reason, s.last_connection
FROM payment_events e JOIN payment_sessions s USING (payment_id)
WHERE e.acked_at IS NULL AND (e.dispatched_at IS NULL
    OR e.dispatched_at < clock_timestamp() - make_interval(secs => 30))
ORDER BY e.event_id;

-- ...and Store::claim (commit 7).
UPDATE payment_events SET dispatched_at = clock_timestamp()
WHERE event_id = :e_event_id AND acked_at IS NULL AND (dispatched_at IS NULL
    OR dispatched_at < clock_timestamp() - make_interval(secs => 30));

-- 8. Orders, payment_state: Store::apply_outcome, one transaction (commit 8).
BEGIN;
UPDATE orders SET status = 'fulfilled', cancel_reason = NULL,
    payment_id = coalesce(payment_id, :s_payment_id), updated_at = clock_timestamp()
WHERE id = :o_order_id AND status IN ('pending_payment', 'awaiting_payment')
RETURNING amount, currency;
-- The invoice's number from the counter row, held until the commit (gapless numbers):
-- one UPDATE per batch in the service, per flow here.
WITH taken AS (UPDATE invoice_counter SET last = last + 1 RETURNING last)
INSERT INTO invoices (number, order_id, amount, currency)
SELECT last, :o_order_id, 1999, 'EUR' FROM taken
RETURNING number;
COMMIT;

-- 9. Payments, ack: Store::ack (commit 9).
UPDATE payment_events SET acked_at = clock_timestamp()
WHERE event_id = :e_event_id AND acked_at IS NULL;

-- 10. Orders, GET /orders/{id}/invoice, the flow's last step: Store::invoice (read 3).
SELECT number, order_id, amount, currency, issued_at FROM invoices WHERE order_id = :o_order_id;
