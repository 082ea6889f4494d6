-- 013_writer_fencing.sql: one writer per chain that a vanished lock session cannot defeat; every wallet change that
-- matters reaches the daemon; platform transactions that never get mined end as 'dropped'.

-- Writer leases. A replica becomes a chain's writer by taking the chain's session advisory lock on a dedicated
-- connection and then bumping the chain's epoch here, on that same connection (backend_pid is that session). Every
-- write transaction of the daemon first reads this row FOR SHARE and commits only when the epoch is still its own
-- and backend_pid still holds the advisory lock. So a replica whose lock session died silently (a failover, a
-- dropped NAT entry: its socket never hears of it) cannot commit once another replica took over: the new writer's
-- epoch bump waits for the old writer's in-flight commit, and every later commit of the old writer is refused.
CREATE TABLE writer_leases (
    chain        VARCHAR(20) PRIMARY KEY CHECK (chain IN ('bsc', 'polygon', 'tron')),
    epoch        BIGINT NOT NULL CHECK (epoch > 0),
    holder       TEXT NOT NULL,
    backend_pid  INTEGER NOT NULL,
    acquired_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
COMMENT ON TABLE writer_leases IS
    'The current writer of each chain (fencing token): its epoch, replica id and lock session. Write transactions '
    'check it inside the transaction; a replica whose epoch is not the current one can never commit.';
COMMENT ON COLUMN writer_leases.epoch IS 'Incremented each time a replica takes the chain''s writer lock.';
COMMENT ON COLUMN writer_leases.holder IS 'Replica id of the writer (CITADEL_REPLICA_ID, default host:pid).';
COMMENT ON COLUMN writer_leases.backend_pid IS 'pg_backend_pid() of the session holding the chain''s advisory lock.';

-- A platform transaction (source 'platform') broadcast but never mined is given up after a configured age.
ALTER TABLE transactions DROP CONSTRAINT IF EXISTS transactions_status_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_status_check
    CHECK (status IN ('pending', 'confirmed', 'failed', 'cancelled', 'dropped'));
COMMENT ON COLUMN transactions.status IS
    'pending (not final yet), confirmed (its block is final), failed (reverted), cancelled (by the platform), '
    'dropped (a platform transaction never seen mined within the configured age; matched again if it ever is).';

-- The daemon keeps each wallet's owner and type in memory: a change of user_id or wallet_type must reach it as a
-- change of address or activity does (the seed's support tools re-assign wallets while the daemon runs).
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
           AND NEW.is_active IS NOT DISTINCT FROM OLD.is_active
           AND NEW.user_id IS NOT DISTINCT FROM OLD.user_id
           AND NEW.wallet_type IS NOT DISTINCT FROM OLD.wallet_type THEN
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
    'NOTIFY citadel_wallets {"op","id","chain"} when a wallet is inserted, deleted, or its address, chain, activity, '
    'owner or type changes.';

DROP TRIGGER IF EXISTS wallets_notify_change ON wallets;
CREATE TRIGGER wallets_notify_change
    AFTER INSERT OR DELETE OR UPDATE OF public_address, chain, is_active, user_id, wallet_type ON wallets
    FOR EACH ROW EXECUTE FUNCTION notify_wallet_change();
