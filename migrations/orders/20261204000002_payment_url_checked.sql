-- The payment page URL Orders stores and hands to the customer is an http(s) URL of at
-- most 2,048 characters (issue 18): Orders checks it before it stores it
-- (domain::check_payment_url), and the table holds to it too.
--
-- Added NOT VALID: no scan of the rows already there under the table's exclusive lock
-- (the next migration validates them under a lock that lets traffic through).
ALTER TABLE orders ADD CONSTRAINT orders_payment_url_checked
    CHECK (char_length(payment_url) <= 2048 AND payment_url ~ '^https?://[^/?#[:space:]]+')
    NOT VALID;
