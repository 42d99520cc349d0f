-- Selecting a payment method (initiated -> method_selected) becomes a HOT update.
--
-- PostgreSQL can update a row in place on its page (HOT: no new entry in any index) only
-- when no column that an index refers to changes value, and a partial index's predicate
-- counts. payment_sessions_open_by_expiry was `WHERE state IN ('initiated',
-- 'method_selected')`, so every change of `state`, even one between two open states, wrote
-- a new entry into all three indexes of the table (and made the old ones work for vacuum
-- and bottom-up deletion). The index now refers to `is_open`, a stored generated column
-- that stays true from initiated to method_selected, and `state` is in no index: the
-- method selection of every order (one per flow) touches no index. Paying or cancelling
-- flips `is_open` and is still a non-HOT update, as it must be to leave the index.
--
-- Adding a stored generated column rewrites the table under an ACCESS EXCLUSIVE lock:
-- on a very large table, plan the migration for a quiet moment.
ALTER TABLE payment_sessions
    ADD COLUMN is_open boolean NOT NULL
    GENERATED ALWAYS AS (state IN ('initiated', 'method_selected')) STORED;

DROP INDEX payment_sessions_open_by_expiry;
CREATE INDEX payment_sessions_open_by_expiry ON payment_sessions (expires_at) WHERE is_open;
