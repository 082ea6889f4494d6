-- The indexer's write path, measured (bench/catchup.py, EXPLAIN ANALYZE of the upsert of 10k rows):
-- 1. The two hash-format checks spent ~18 us per row each in the regex engine's {64} repetition. The same strings are
--    accepted by a length test plus an unbounded character class, which costs a tenth.
-- 2. transactions_user_id_fkey and transactions_wallet_id_fkey duplicate transactions_wallet_owner_fkey
--    ((wallet_id, user_id) -> wallets (id, user_id), ON DELETE CASCADE) together with wallets.user_id -> users
--    (ON DELETE CASCADE): both columns are NOT NULL, so every row the two single-column keys accept or cascade is
--    accepted or cascaded by the composite one. Each cost ~9 us per inserted row.
-- 3. idx_transactions_chain_tx_hash is a prefix of the unique transactions_transfer_key index.

ALTER TABLE transactions DROP CONSTRAINT transactions_user_id_fkey;
ALTER TABLE transactions DROP CONSTRAINT transactions_wallet_id_fkey;
DROP INDEX IF EXISTS idx_transactions_chain_tx_hash;

ALTER TABLE transactions DROP CONSTRAINT transactions_block_hash_format;
ALTER TABLE transactions ADD CONSTRAINT transactions_block_hash_format CHECK (
    block_hash IS NULL OR CASE chain
        WHEN 'tron' THEN length(block_hash) = 64 AND block_hash ~ '^[0-9a-f]+$'
        ELSE length(block_hash) = 66 AND block_hash ~ '^0x[0-9a-f]+$'
    END
);

-- Legacy platform rows may hold hashes of another form (see 004): keep the check NOT VALID where they do.
ALTER TABLE transactions DROP CONSTRAINT transactions_tx_hash_format;
ALTER TABLE transactions ADD CONSTRAINT transactions_tx_hash_format CHECK (
    CASE chain
        WHEN 'tron' THEN length(tx_hash) = 64 AND tx_hash ~ '^[0-9a-f]+$'
        ELSE length(tx_hash) = 66 AND tx_hash ~ '^0x[0-9a-f]+$'
    END
) NOT VALID;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM transactions
         WHERE NOT CASE chain
                       WHEN 'tron' THEN length(tx_hash) = 64 AND tx_hash ~ '^[0-9a-f]+$'
                       ELSE length(tx_hash) = 66 AND tx_hash ~ '^0x[0-9a-f]+$'
                   END
    ) THEN
        ALTER TABLE transactions VALIDATE CONSTRAINT transactions_tx_hash_format;
    END IF;
END
$$;
