-- 015_wallet_delete_counterparts.sql: a deleted wallet takes its rows with it (ON DELETE CASCADE) and no longer
-- makes the other side of a transfer a p2p_transfer.
--
-- A transfer between two platform wallets is a 'p2p_transfer' on both sides' rows; a wallet added later turns the
-- other side's existing deposit/withdrawal into p2p_transfer (the indexer rewrites it when it backfills the new
-- wallet). Deleting a wallet is the reverse: the remaining side's row becomes the deposit or withdrawal it is once
-- only one side belongs to the platform. So `transactions` always says what the current set of wallets implies, and
-- a sum of deposits per user never depends on the order in which wallets came and went.
--
-- BEFORE DELETE, so the deleted wallet's own rows (removed by the cascade right after) still tell which rows are
-- their counterparts: the same (chain, tx_hash, log_index), found through transactions_transfer_key.

CREATE OR REPLACE FUNCTION wallet_deleted_counterparts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE transactions t
       SET tx_type = CASE WHEN mine.from_address = OLD.address_normalized THEN 'deposit' ELSE 'withdrawal' END
      FROM transactions mine
     WHERE mine.wallet_id = OLD.id AND mine.tx_type = 'p2p_transfer' AND mine.log_index IS NOT NULL
       AND t.chain = mine.chain AND t.tx_hash = mine.tx_hash AND t.log_index = mine.log_index
       AND t.wallet_id <> OLD.id AND t.tx_type = 'p2p_transfer' AND t.source = 'indexer';
    RETURN OLD;
END
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION wallet_deleted_counterparts() SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
END
$$;
COMMENT ON FUNCTION wallet_deleted_counterparts() IS
    'BEFORE DELETE on wallets: the other side of the deleted wallet''s p2p_transfer rows becomes deposit/withdrawal.';

DROP TRIGGER IF EXISTS wallets_deleted_counterparts ON wallets;
CREATE TRIGGER wallets_deleted_counterparts
    BEFORE DELETE ON wallets
    FOR EACH ROW EXECUTE FUNCTION wallet_deleted_counterparts();
