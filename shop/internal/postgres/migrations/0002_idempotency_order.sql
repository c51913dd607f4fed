-- An idempotency key remembers the order it placed, not the HTTP response: orders never change once
-- placed, so a replay reads the order again and the server renders it as it did the first time.
--
-- The key is claimed first thing in the order transaction with the id the order is about to get
-- (so that a concurrent request with the same key waits on the primary key, as before); the order
-- row follows later in the same transaction, hence the foreign key checked at commit.

-- Every committed row already has its order_id (it was set in the transaction that inserted the
-- row); take it from the stored body should one lack it, and drop a row that names no order, which
-- could only be replayed as an error.
UPDATE idempotency_keys k SET order_id = o.id
    FROM orders o
    WHERE k.order_id IS NULL AND k.response_body IS NOT NULL
      AND o.id = (convert_from(k.response_body, 'UTF8')::jsonb->>'id')::uuid;
DELETE FROM idempotency_keys WHERE order_id IS NULL;

ALTER TABLE idempotency_keys
    ALTER COLUMN order_id SET NOT NULL,
    ALTER CONSTRAINT idempotency_keys_order_id_fkey DEFERRABLE INITIALLY DEFERRED,
    DROP COLUMN status_code,
    DROP COLUMN response_body;
