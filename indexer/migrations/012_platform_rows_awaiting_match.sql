-- Rows another service inserted that no on-chain transfer has matched yet (source 'platform', log_index NULL).
-- The indexer asks "are there any?" before every batch, and takes a cheaper write path when there are none.
CREATE INDEX idx_transactions_platform_unmatched ON transactions (chain, tx_hash, wallet_id)
    WHERE source = 'platform' AND log_index IS NULL;
