-- 004_transactions_transfers.sql: the transfer model of docs/data-model.md ("Transfers").
--
-- One row per (transfer, known wallet side). The seed's UNIQUE (tx_hash) rejected the receiver's row of a transfer
-- between two known users and every Transfer log after the first of a transaction (ON CONFLICT (tx_hash) DO NOTHING
-- silently lost them). The natural key is (chain, tx_hash, log_index, wallet_id), NULLS NOT DISTINCT so platform
-- rows whose log_index is still NULL are unique per (tx_hash, wallet) too. log_index = -1 marks a top-level native
-- transfer (a transaction's value, a Tron TransferContract).

-- Rows the new constraints would reject stop the migration here, naming them (nothing of this file is applied).
DO $$
DECLARE
    conflicts text;
BEGIN
    SELECT string_agg(format('id %s: %L', id, chain), '; ') INTO conflicts
      FROM (SELECT id, chain FROM transactions
             WHERE chain IS DISTINCT FROM 'bsc' AND chain IS DISTINCT FROM 'polygon' AND chain IS DISTINCT FROM 'tron'
             ORDER BY id LIMIT 50) bad;
    IF conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'transactions: rows with a chain other than bsc, polygon, tron: %', conflicts
            USING HINT = 'Correct or delete these rows, then run the migrations again.';
    END IF;

    SELECT string_agg(format('transaction id %s (user_id %s, wallet %s owned by user %s)',
                             x.id, x.user_id, x.wallet_id, x.owner), '; ')
      INTO conflicts
      FROM (SELECT t.id, t.user_id, t.wallet_id, w.user_id AS owner
              FROM transactions t JOIN wallets w ON w.id = t.wallet_id
             WHERE w.user_id <> t.user_id ORDER BY t.id LIMIT 50) x;
    IF conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'transactions: user_id differs from the owner of the wallet: %', conflicts
            USING HINT = 'Set user_id to the wallet owner''s id on these rows, then run the migrations again.';
    END IF;

    -- tx_hash was unique until now, so this finds nothing on a seed database; kept for databases whose constraint
    -- was dropped by hand.
    SELECT string_agg(format('%s %s wallet %s (ids %s)', chain, tx_hash, wallet_id, ids), '; ') INTO conflicts
      FROM (SELECT chain, tx_hash, wallet_id, string_agg(id::text, ', ' ORDER BY id) AS ids
              FROM transactions GROUP BY 1, 2, 3 HAVING count(*) > 1 ORDER BY 1, 2, 3 LIMIT 50) dup;
    IF conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'transactions: duplicate (chain, tx_hash, wallet_id): %', conflicts;
    END IF;
END
$$;

ALTER TABLE transactions
    ADD COLUMN log_index INT,
    ADD COLUMN block_hash VARCHAR(66),
    ADD COLUMN token_address VARCHAR(120),
    ADD COLUMN token_decimals SMALLINT,
    ADD COLUMN amount_raw NUMERIC(78, 0),
    ADD COLUMN source VARCHAR(16) NOT NULL DEFAULT 'platform';

ALTER TABLE transactions DROP CONSTRAINT IF EXISTS transactions_tx_hash_key;
DROP INDEX IF EXISTS idx_transactions_tx_hash;
-- 'USDT' as a default symbol guessed the token; symbols can be faked. Tokens are identified by (chain, token_address).
ALTER TABLE transactions ALTER COLUMN token DROP DEFAULT;

ALTER TABLE transactions
    ADD CONSTRAINT transactions_transfer_key UNIQUE NULLS NOT DISTINCT (chain, tx_hash, log_index, wallet_id),
    ADD CONSTRAINT transactions_chain_check CHECK (chain IN ('bsc', 'polygon', 'tron')),
    ADD CONSTRAINT transactions_source_check CHECK (source IN ('platform', 'indexer')),
    ADD CONSTRAINT transactions_log_index_check CHECK (log_index >= -1),
    ADD CONSTRAINT transactions_amount_raw_check CHECK (amount_raw >= 0 AND amount_raw < 2::numeric ^ 256),
    ADD CONSTRAINT transactions_token_decimals_check CHECK (token_decimals BETWEEN 0 AND 255),
    ADD CONSTRAINT transactions_block_hash_format CHECK (
        block_hash IS NULL OR CASE chain
            WHEN 'tron' THEN block_hash ~ '^[0-9a-f]{64}$'
            ELSE block_hash ~ '^0x[0-9a-f]{64}$'
        END
    ),
    -- rows the indexer discovered always come from a block
    ADD CONSTRAINT transactions_indexer_row_located CHECK (
        source <> 'indexer' OR (log_index IS NOT NULL AND block_number IS NOT NULL)
    ),
    -- a transaction's user owns its wallet; ON UPDATE CASCADE follows a wallet reassigned to another user
    ADD CONSTRAINT transactions_wallet_owner_fkey FOREIGN KEY (wallet_id, user_id)
        REFERENCES wallets (id, user_id) ON UPDATE CASCADE ON DELETE CASCADE;

-- Hashes are stored lowercase (the seed accepted both cases of one hash as two transactions). NOT VALID: legacy
-- platform rows may hold uppercase or otherwise odd hashes; validated right away when none does.
ALTER TABLE transactions ADD CONSTRAINT transactions_tx_hash_format CHECK (
    CASE chain
        WHEN 'tron' THEN tx_hash ~ '^[0-9a-f]{64}$'
        ELSE tx_hash ~ '^0x[0-9a-f]{64}$'
    END
) NOT VALID;

DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(id::text, ', ' ORDER BY id) INTO bad
      FROM (SELECT id FROM transactions
             WHERE NOT CASE chain
                           WHEN 'tron' THEN tx_hash ~ '^[0-9a-f]{64}$'
                           ELSE tx_hash ~ '^0x[0-9a-f]{64}$'
                       END
             ORDER BY id LIMIT 50) b;
    IF bad IS NULL THEN
        ALTER TABLE transactions VALIDATE CONSTRAINT transactions_tx_hash_format;
    ELSE
        RAISE WARNING 'transactions_tx_hash_format left NOT VALID: hashes not lowercase hex in transaction ids %', bad;
    END IF;
END
$$;

COMMENT ON COLUMN transactions.tx_hash IS
    'Transaction hash, lowercase hex (0x-prefixed on bsc/polygon, bare on tron). Not unique alone: see transactions_transfer_key.';
COMMENT ON COLUMN transactions.log_index IS
    'Index of the transfer log within its block; -1 for a top-level native transfer (tx value, Tron TransferContract); '
    'NULL on platform rows not yet matched to chain data. Polygon native POL movements carry the LogTransfer index.';
COMMENT ON COLUMN transactions.block_hash IS 'Hash of the block holding the transfer (reorg detection and rollback).';
COMMENT ON COLUMN transactions.token_address IS
    'Token contract address, normalised (lowercase on EVM); NULL for the native coin. Described in tokens.';
COMMENT ON COLUMN transactions.token_decimals IS 'Decimals of the token when the row was written (amount = amount_raw / 10^token_decimals).';
COMMENT ON COLUMN transactions.amount_raw IS 'Exact integer amount from the chain, in the token''s smallest unit (fits uint256).';
COMMENT ON COLUMN transactions.token IS 'Display symbol only (USDT, BNB, TRX...): tokens are identified by (chain, token_address).';
COMMENT ON COLUMN transactions.source IS
    '''platform'': inserted by another service (e.g. a withdrawal it broadcast); ''indexer'': discovered on chain. '
    'On reorg indexer rows above the common ancestor are deleted, platform rows return to pending.';
COMMENT ON CONSTRAINT transactions_transfer_key ON transactions IS
    'Natural key of a transfer side: (chain, tx_hash, log_index, wallet_id), NULLS NOT DISTINCT. A transfer between '
    'two known wallets is two rows sharing tx_hash and log_index.';
