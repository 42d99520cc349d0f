-- Room on every page for HOT updates (no index writes). Recording the chosen payment
-- method changes only payment_method and updated_at, which no index holds, so it can
-- be a HOT update, but only when the new row version fits on the same page; at the
-- default fillfactor of 100 it never did, and each one wrote an entry into all five
-- indexes of orders. Applies to pages written from now on. (The page and outcome
-- updates change status, which is indexed, and cannot be HOT.)
ALTER TABLE orders SET (fillfactor = 80);
