-- Where a session and an event were made, as W3C `traceparent` (issue 21), so that
-- traces join across the customer's Pay and the delivery of its outcome:
--
-- - payment_sessions.traceparent: the trace of the batch of messages from Orders whose
--   initiate_payment inserted the session (the order's trace). The customer's Pay on
--   the page, a request and a trace of its own, is linked to it.
-- - payment_events.traceparent: the trace of the request that made the event (the
--   customer's Pay or Cancel on the page). The delivery of the event (payment_state)
--   is its child, and Orders' handling of the outcome and its ack follow it.
--
-- NULL when traces are off, for expired sessions' events, and for every row written
-- before this migration. Nullable without a default: adding them only changes the
-- catalog (no rewrite, no scan). The length bounds are added NOT VALID (no scan under
-- the tables' exclusive locks); the next migration validates them under a lock that
-- lets traffic through. Payments writes only values it read from a span (55
-- characters for version 00); 128 leaves room for a later version of the format.
ALTER TABLE payment_sessions
    ADD COLUMN traceparent text,
    ADD CONSTRAINT payment_sessions_traceparent_length
        CHECK (char_length(traceparent) <= 128) NOT VALID;

ALTER TABLE payment_events
    ADD COLUMN traceparent text,
    ADD CONSTRAINT payment_events_traceparent_length
        CHECK (char_length(traceparent) <= 128) NOT VALID;
