-- Invoice numbers without gaps, in commit order (issue 18).
--
-- They came from a sequence: a batch that failed after its INSERT burnt its numbers, a
-- crash skipped the sequence's cache, and with two Orders instances numbers were not
-- in commit order. Many jurisdictions require invoices numbered without gaps. The last
-- number is now a row, updated inside the transaction that inserts the invoices: a
-- transaction that does not commit gives its numbers back, and the row's lock hands
-- out numbers in the order transactions commit.
CREATE TABLE invoice_counter (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last     bigint NOT NULL CHECK (last >= 0)
);

-- The next number, for an INSERT that names none. It is the default of
-- invoices.number, so that instances of the previous release (which insert through the
-- default) take their numbers from the same counter while both releases run; this
-- release takes a whole batch's numbers with one UPDATE.
CREATE FUNCTION next_invoice_number() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    UPDATE invoice_counter SET last = last + 1 RETURNING last
$$;

-- No invoice may be inserted between reading the highest number and switching the
-- default: the table's lock first (the service's MIGRATION_LOCK_TIMEOUT bounds the
-- wait for it; it is held for this transaction's milliseconds).
LOCK TABLE invoices IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO invoice_counter (last) SELECT coalesce(max(number), 0) FROM invoices;
ALTER TABLE invoices ALTER COLUMN number SET DEFAULT next_invoice_number();
DROP SEQUENCE invoice_numbers;
