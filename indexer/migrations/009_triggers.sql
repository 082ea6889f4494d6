-- 009_triggers.sql: updated_at maintained by the database; NOTIFY when the set of watched wallets changes.

-- updated_at never changed in the seed (no triggers). It now moves on every UPDATE that changes the row
-- (a no-op UPDATE, e.g. a confirmation refresh writing the same values, leaves it alone).
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION set_updated_at() IS 'BEFORE UPDATE trigger: updated_at := now() when the row changes.';

-- Every table of this schema with an updated_at column (users, wallets, transactions, strategies,
-- strategy_decisions, guardian_checks, api_keys, sync_cursors, tokens).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.table_name
          FROM information_schema.columns c
          JOIN information_schema.tables tb
            ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name AND tb.table_type = 'BASE TABLE'
         WHERE c.table_schema = current_schema() AND c.column_name = 'updated_at'
         ORDER BY c.table_name
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION set_updated_at()',
                       t.table_name || '_set_updated_at', t.table_name);
    END LOOP;
END
$$;

-- The daemon LISTENs on citadel_wallets and reloads a wallet when it is added, deleted, deactivated/reactivated or
-- changes address or chain, without a restart. Payload: {"op": "INSERT"|"UPDATE"|"DELETE", "id": <wallet id>,
-- "chain": <chain>}; a wallet moved to another chain notifies both chains. NOTIFY is delivered at commit and only
-- over a direct connection (not through a transaction-mode pooler): the daemon keeps a polling fallback.
CREATE OR REPLACE FUNCTION notify_wallet_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('citadel_wallets', json_build_object('op', TG_OP, 'id', OLD.id, 'chain', OLD.chain)::text);
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.public_address IS NOT DISTINCT FROM OLD.public_address
           AND NEW.chain IS NOT DISTINCT FROM OLD.chain
           AND NEW.is_active IS NOT DISTINCT FROM OLD.is_active THEN
            RETURN NEW;
        END IF;
        IF NEW.chain IS DISTINCT FROM OLD.chain THEN
            PERFORM pg_notify('citadel_wallets', json_build_object('op', TG_OP, 'id', OLD.id, 'chain', OLD.chain)::text);
        END IF;
    END IF;
    PERFORM pg_notify('citadel_wallets', json_build_object('op', TG_OP, 'id', NEW.id, 'chain', NEW.chain)::text);
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION notify_wallet_change() IS
    'NOTIFY citadel_wallets {"op","id","chain"} when a wallet is inserted, deleted, or its address/chain/is_active changes.';

CREATE TRIGGER wallets_notify_change
    AFTER INSERT OR DELETE OR UPDATE OF public_address, chain, is_active ON wallets
    FOR EACH ROW EXECUTE FUNCTION notify_wallet_change();
