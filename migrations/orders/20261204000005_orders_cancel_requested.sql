-- no-transaction
-- Open orders whose cancel Payments has not confirmed: the walks' second range
-- (store/open.rs). Few rows: a cancel is confirmed within a round trip.
CREATE INDEX CONCURRENTLY orders_cancel_requested ON orders (created_at, id)
    WHERE cancel_requested_at IS NOT NULL
      AND status IN ('pending_payment', 'awaiting_payment') AND parked_at IS NULL;
