-- 018_escrow_and_guardian.sql: the escrow contract's events and the Guardian's alerts, as the indexer writes them.

-- Every Locked / Released event of a chain's escrow contract, with what it did (docs/data-model.md, "Escrow").
-- effect: 'lock' | 'repay' | 'disburse' when it changed its agreement, NULL when it was rejected (reason says why).
-- Rolled back with its block like transactions; an agreement's chain-derived columns are the fold of its events
-- whose effect is not NULL.
CREATE TABLE escrow_events (
    chain           VARCHAR(20) NOT NULL CHECK (chain IN ('bsc', 'polygon', 'tron')),
    tx_hash         VARCHAR(150) NOT NULL,
    log_index       INTEGER NOT NULL CHECK (log_index >= 0),
    kind            VARCHAR(10) NOT NULL CHECK (kind IN ('locked', 'released')),
    agreement_id    NUMERIC(78, 0) NOT NULL,
    agreement_ref   BIGINT REFERENCES p2p_agreements (id) ON DELETE SET NULL,
    contract        VARCHAR(120) NOT NULL,
    party           VARCHAR(120) NOT NULL,
    counterparty    VARCHAR(120),
    token           VARCHAR(120) NOT NULL,
    amount_raw      NUMERIC(78, 0) NOT NULL CHECK (amount_raw >= 0),
    block_number    BIGINT NOT NULL CHECK (block_number >= 0),
    block_hash      VARCHAR(66) NOT NULL,
    block_timestamp TIMESTAMPTZ NOT NULL,
    tx_index        INTEGER,
    effect          VARCHAR(10) CHECK (effect IN ('lock', 'repay', 'disburse')),
    reason          TEXT NOT NULL,
    wallet_id       BIGINT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, tx_hash, log_index)
);
CREATE INDEX idx_escrow_events_chain_block ON escrow_events (chain, block_number);
CREATE INDEX idx_escrow_events_agreement ON escrow_events (agreement_ref) WHERE agreement_ref IS NOT NULL;
COMMENT ON TABLE escrow_events IS
    'Locked/Released events of the escrow contract per chain, each with its effect on its agreement (NULL: rejected, '
    'reason says why). p2p_agreements'' chain-derived columns are the fold of the applied events in chain order.';
COMMENT ON COLUMN escrow_events.agreement_id IS 'The event''s agreementId (uint256) as emitted.';
COMMENT ON COLUMN escrow_events.agreement_ref IS 'The p2p_agreements row it names, when one exists.';

-- Guardian alerts raised by the indexer: which rule, on which transfer side, so that each is raised at most once per
-- (rule, transaction, wallet) and expired when a reorg orphans its transfer.
ALTER TABLE guardian_checks
    ADD COLUMN rule         VARCHAR(50),
    ADD COLUMN chain        VARCHAR(20) CHECK (chain IN ('bsc', 'polygon', 'tron')),
    ADD COLUMN tx_hash      VARCHAR(150),
    ADD COLUMN log_index    INTEGER,
    ADD COLUMN wallet_id    BIGINT,
    ADD COLUMN block_number BIGINT;
CREATE UNIQUE INDEX guardian_checks_rule_transfer_key
    ON guardian_checks (rule, chain, tx_hash, log_index, wallet_id) WHERE rule IS NOT NULL;
CREATE INDEX idx_guardian_checks_chain_block
    ON guardian_checks (chain, block_number) WHERE rule IS NOT NULL AND status = 'pending';
COMMENT ON COLUMN guardian_checks.rule IS
    'The indexer''s rule that raised it (large_amount, new_address, rapid_transactions, address_poisoning, '
    'unexpected_outgoing); NULL for checks other services record.';
COMMENT ON COLUMN guardian_checks.wallet_id IS
    'The wallet side of the transfer it is about (no foreign key: an alert outlives a deleted wallet).';

-- what the daemon (citadel_indexer) now writes
GRANT SELECT, INSERT, UPDATE, DELETE ON escrow_events TO citadel_indexer;
GRANT INSERT, UPDATE (status, context_data, block_number, detected_at) ON guardian_checks TO citadel_indexer;
GRANT USAGE ON SEQUENCE guardian_checks_id_seq TO citadel_indexer;
GRANT UPDATE (status, funded_at, maturity_date, escrow_address, escrow_tx_hash, settled_at, repayment_amount,
              repay_tx_hash) ON p2p_agreements TO citadel_indexer;
