-- no-transaction
-- The link's walks over unanswered requests read pending orders through this index, a
-- range from their cursor up to the orders created RESEND_AFTER ago (store/open.rs):
-- a sweep no longer reads every open order to find the stale ones (issue 18). Built
-- concurrently: the table takes reads and writes meanwhile. orders_open, which the
-- previous release's walks use, is dropped by a later release.
CREATE INDEX CONCURRENTLY orders_pending ON orders (created_at, id)
    WHERE status = 'pending_payment' AND parked_at IS NULL;
