-- Confirmation keys are kept by girder-http's Idempotency-Key layer, in the server's
-- girder_idempotency table. A key confirmed before this upgrade and retried after it
-- runs the confirmation again; the reservation's confirmation key and the provider's
-- per-key ledger give back the same outcome and never charge twice.
DROP TABLE IF EXISTS tm_idempotency;
