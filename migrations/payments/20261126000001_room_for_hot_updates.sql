-- Room on every page for HOT updates (no index writes): most updates change only
-- columns no index holds (last_connection on every message about an order,
-- dispatched_at on every delivery claim), and such an update is HOT only when the new
-- row version fits on the same page. Applies to pages written from now on.
--
-- What was checked (EXPLAIN (ANALYZE, BUFFERS) after ANALYZE on 100,000 sessions,
-- custom and generic plans): the single-row UPDATEs of payment_sessions by payment_id
-- use payment_sessions_pkey, those by order_id use payment_sessions_order_id_key, not
-- the partial payment_sessions_open_by_expiry; updated_at is in no index. State
-- changes cannot be HOT (state is in that partial index's predicate, which keeps the
-- expiry scan small), nor can acks (acked_at is in payment_events_unacked's).
ALTER TABLE payment_sessions SET (fillfactor = 80);
ALTER TABLE payment_events SET (fillfactor = 80);
