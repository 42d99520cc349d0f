-- One NOTIFY per transaction instead of one per event: PostgreSQL delivers a
-- notification once per (channel, payload) per transaction, so a constant payload folds
-- every event a transaction inserts into one wake-up of the delivery listeners. Nothing
-- reads the payload (delivery claims whatever is due), so the event id it used to carry
-- only multiplied the notifications, and the claims they trigger, by the batch size.
CREATE OR REPLACE FUNCTION notify_payment_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('payment_events', '');
    RETURN NEW;
END;
$$;
