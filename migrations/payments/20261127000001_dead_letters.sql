-- Dead letters: an outcome event that Orders never acks (for an order it does not know,
-- say) used to be sent again every REDELIVER_AFTER, forever. Each send now counts in
-- delivery_attempts (in the statements that claim or resume events, see
-- payments/src/store.rs); once MAX_DELIVERY_ATTEMPTS sends went unacked, the event is
-- dead-lettered (dead_at) and sent no more until an operator retries it
-- (POST /admin/events/{event_id}/retry, which resets both columns).
--
-- Both columns have a constant default (or none), so the ALTER only changes the
-- catalog: no table rewrite, no scan.
ALTER TABLE payment_events
    ADD COLUMN delivery_attempts int NOT NULL DEFAULT 0,
    ADD COLUMN dead_at timestamptz;

-- The delivery scans (claim, resume) and the backlog gauges read live events only: a
-- dead event leaves this index, so it is not rescanned on every pass. The index holds
-- unacked events only, so building it reads the table once under a SHARE lock (writes
-- wait); on a very large table, create it CONCURRENTLY by hand before migrating.
DROP INDEX payment_events_unacked;
CREATE INDEX payment_events_unacked ON payment_events (event_id)
    WHERE acked_at IS NULL AND dead_at IS NULL;

-- Dead letters waiting for an operator (GET /admin/dead-letters and the
-- payments_dead_letter_events gauge). A dead event that Orders acks late leaves it.
CREATE INDEX payment_events_dead ON payment_events (event_id)
    WHERE dead_at IS NOT NULL AND acked_at IS NULL;
