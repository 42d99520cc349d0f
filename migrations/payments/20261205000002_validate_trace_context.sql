-- Checks the rows stored before the traceparent length bounds existed (all NULL: the
-- columns are new), under a SHARE UPDATE EXCLUSIVE lock: reads and writes go on
-- meanwhile.
ALTER TABLE payment_sessions VALIDATE CONSTRAINT payment_sessions_traceparent_length;
ALTER TABLE payment_events VALIDATE CONSTRAINT payment_events_traceparent_length;
