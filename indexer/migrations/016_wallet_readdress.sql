-- 016_wallet_readdress.sql: a wallet whose address (or chain) changes is, for its transfer rows, a wallet deleted
-- and a wallet added: its rows of the old address go (with the p2p_transfer counterparts turned back into
-- deposits/withdrawals, as for a deleted wallet), and the indexer backfills the new address's history. So the rows
-- always say what the current wallets imply (docs/data-model.md). Platform rows (source 'platform') are the
-- platform's own records and stay.
--
-- A batch the daemon read for the old address must then never commit after the change: every change of a wallet's
-- address or chain bumps wallet_set_version, and the daemon's write transaction that carries rows reads it FOR SHARE
-- and refuses the batch (re-reading the wallets) when it is not the version the batch was built with. The bump is a
-- BEFORE ... FOR EACH STATEMENT trigger, so a support session takes the version row before any wallet row, the same
-- order as the daemon (version, then the wallet rows its foreign keys check): the two can never deadlock.

CREATE TABLE wallet_set_version (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    version   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO wallet_set_version DEFAULT VALUES;
COMMENT ON TABLE wallet_set_version IS
    'Bumped whenever a wallet''s address or chain changes; the daemon refuses a batch built for an older version.';

CREATE OR REPLACE FUNCTION bump_wallet_set_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE wallet_set_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION wallet_readdressed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.address_normalized IS NOT DISTINCT FROM OLD.address_normalized AND NEW.chain = OLD.chain THEN
        RETURN NEW;
    END IF;
    UPDATE transactions t
       SET tx_type = CASE WHEN mine.from_address = OLD.address_normalized THEN 'deposit' ELSE 'withdrawal' END
      FROM transactions mine
     WHERE mine.wallet_id = OLD.id AND mine.tx_type = 'p2p_transfer' AND mine.log_index IS NOT NULL
       AND t.chain = mine.chain AND t.tx_hash = mine.tx_hash AND t.log_index = mine.log_index
       AND t.wallet_id <> OLD.id AND t.tx_type = 'p2p_transfer' AND t.source = 'indexer';
    DELETE FROM transactions WHERE wallet_id = OLD.id AND source = 'indexer';
    RETURN NEW;
END
$$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION bump_wallet_set_version() SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION wallet_readdressed() SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
END
$$;

CREATE TRIGGER wallets_bump_version
    BEFORE UPDATE OF public_address, chain ON wallets
    FOR EACH STATEMENT EXECUTE FUNCTION bump_wallet_set_version();

-- AFTER: address_normalized is a generated column, computed after the BEFORE row triggers
CREATE TRIGGER wallets_readdressed
    AFTER UPDATE OF public_address, chain ON wallets
    FOR EACH ROW EXECUTE FUNCTION wallet_readdressed();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citadel_indexer') THEN
        GRANT SELECT ON wallet_set_version TO citadel_indexer;
    END IF;
END
$$;
