-- Checks the rows stored before orders_payment_url_checked existed, under a SHARE
-- UPDATE EXCLUSIVE lock: reads and writes go on meanwhile. A row that fails it (a URL
-- no version of Payments sends) stops the start-up, naming the constraint.
ALTER TABLE orders VALIDATE CONSTRAINT orders_payment_url_checked;
