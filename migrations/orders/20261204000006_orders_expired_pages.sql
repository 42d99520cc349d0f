-- no-transaction
-- Orders awaiting payment by when their page expires: the sweep reads the ones that
-- expired RESEND_AFTER ago (their outcome may have been lost) as a range of this index,
-- instead of filtering every order awaiting its customer (store/open.rs).
CREATE INDEX CONCURRENTLY orders_expired_pages ON orders (payment_expires_at, id)
    WHERE status = 'awaiting_payment' AND parked_at IS NULL;
