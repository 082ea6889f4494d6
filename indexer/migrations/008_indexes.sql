-- 008_indexes.sql: the indexes the seed promised (partial, composite, BRIN) and the ones the indexer needs;
-- indexes on foreign keys; redundant indexes dropped.
-- Plain CREATE INDEX (in the migration's transaction): fine at today's sizes. On a large live table, build the
-- index CONCURRENTLY by hand first; IF NOT EXISTS then makes this file skip it.

-- Redundant: duplicates of a UNIQUE constraint or a prefix of a wider index.
DROP INDEX IF EXISTS idx_users_email;                      -- users_email_lower_key (006)
DROP INDEX IF EXISTS idx_wallets_public_address;           -- wallets_chain_address_key (003)
DROP INDEX IF EXISTS idx_transactions_tx_hash;             -- idx_transactions_chain_tx_hash below
DROP INDEX IF EXISTS idx_feature_flags_user_id;            -- prefix of feature_flags_user_flag_key
DROP INDEX IF EXISTS idx_performance_metrics_strategy_id;  -- prefix of UNIQUE (strategy_id, period_date, period_type)
DROP INDEX IF EXISTS idx_transactions_status;              -- only 'pending' is selective: idx_transactions_pending
DROP INDEX IF EXISTS idx_p2p_agreements_lender_id;         -- idx_p2p_agreements_lender_created
DROP INDEX IF EXISTS idx_audit_trail_user_id;              -- idx_audit_trail_user_created

-- Foreign keys without an index (each ON DELETE of the parent scanned the child table).
CREATE INDEX IF NOT EXISTS idx_transactions_wallet_id ON transactions (wallet_id);
CREATE INDEX IF NOT EXISTS idx_transactions_strategy_id ON transactions (strategy_id) WHERE strategy_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_transactions_agreement_id ON transactions (agreement_id) WHERE agreement_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_tst_stakes_wallet_id ON tst_stakes (wallet_id);

-- Indexer.
-- platform rows are matched by hash; lookups of a transaction's rows
CREATE INDEX IF NOT EXISTS idx_transactions_chain_tx_hash ON transactions (chain, tx_hash);
-- reorg rollback: DELETE/UPDATE ... WHERE chain = $1 AND block_number > $2
CREATE INDEX IF NOT EXISTS idx_transactions_chain_block ON transactions (chain, block_number);
-- confirmation refresh touches only pending rows
CREATE INDEX IF NOT EXISTS idx_transactions_pending ON transactions (chain, block_number) WHERE status = 'pending';
-- the daemon loads the active wallets of its chain
CREATE INDEX IF NOT EXISTS idx_wallets_chain_active ON wallets (chain, address_normalized) WHERE is_active;
-- blocks older than the reorg window are pruned by number
-- (chain_blocks' primary key (chain, number) serves it)

-- BRIN on large, append-mostly timestamp columns (rows arrive in time order: tiny, cheap to maintain). They
-- replace B-trees whose only use was range scans over time.
DROP INDEX IF EXISTS idx_transactions_created_at;
CREATE INDEX IF NOT EXISTS brin_transactions_created_at ON transactions USING brin (created_at);
CREATE INDEX IF NOT EXISTS brin_transactions_block_timestamp ON transactions USING brin (block_timestamp);
DROP INDEX IF EXISTS idx_entity_logs_created_at;
CREATE INDEX IF NOT EXISTS brin_entity_logs_created_at ON entity_logs USING brin (created_at);
DROP INDEX IF EXISTS idx_audit_trail_created_at;
CREATE INDEX IF NOT EXISTS brin_audit_trail_created_at ON audit_trail USING brin (created_at);
DROP INDEX IF EXISTS idx_strategy_decisions_created_at;
CREATE INDEX IF NOT EXISTS brin_strategy_decisions_created_at ON strategy_decisions USING brin (created_at);

-- The seed's six sample queries, each served by an index:
-- 1. balances: wallets WHERE user_id = $1 AND is_active
CREATE INDEX IF NOT EXISTS idx_wallets_user_active ON wallets (user_id) WHERE is_active;
-- 2. performance (30 days): performance_metrics WHERE strategy_id = $1 AND period_date >= ... ORDER BY period_date DESC
--    served by performance_metrics_strategy_id_period_date_period_type_key
-- 3. pending guardian checks: WHERE user_id = $1 AND status = 'pending' ORDER BY risk_score DESC
CREATE INDEX IF NOT EXISTS idx_guardian_checks_user_pending
    ON guardian_checks (user_id, risk_score DESC) WHERE status = 'pending';
-- 4. total staked: tst_stakes WHERE user_id = $1 AND is_active (index-only with the summed columns included)
CREATE INDEX IF NOT EXISTS idx_tst_stakes_user_active
    ON tst_stakes (user_id) INCLUDE (amount, total_rewards_earned) WHERE is_active;
-- 5. agreements as lender: WHERE lender_id = $1 ORDER BY created_at DESC
CREATE INDEX IF NOT EXISTS idx_p2p_agreements_lender_created ON p2p_agreements (lender_id, created_at DESC);
-- 6. audit (7 days): WHERE user_id = $1 AND created_at >= ... ORDER BY created_at DESC
CREATE INDEX IF NOT EXISTS idx_audit_trail_user_created ON audit_trail (user_id, created_at DESC);

-- P2P escrow: funding and repayment are matched by escrow address.
CREATE INDEX IF NOT EXISTS idx_p2p_agreements_escrow_address
    ON p2p_agreements (chain, escrow_address) WHERE escrow_address IS NOT NULL;
