-- The link walks open orders oldest first in keyset pages of (created_at, id), on every
-- connect and from its sweeper. `updated_at` changes on every UPDATE, so indexing it made
-- no update of an order HOT; `created_at` and `id` never change.
DROP INDEX orders_open;
CREATE INDEX orders_open ON orders (created_at, id)
    WHERE status IN ('pending_payment', 'awaiting_payment');
