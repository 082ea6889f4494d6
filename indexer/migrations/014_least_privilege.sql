-- 014_least_privilege.sql: the daemon's own role, citadel_indexer, holding only the privileges its SQL needs; trigger
-- functions whose table names a session's temporary tables cannot capture.
--
-- The role (docs/data-model.md, "Database roles"). Running the daemon as the schema owner meant that a bug, or
-- anyone holding its DSN, could rewrite or empty any table, disable the audit trail's triggers or drop them.
-- citadel_indexer reads and writes exactly what the daemon's SQL (indexer/store) reads and writes, owns nothing and
-- runs no DDL beyond its session's own temporary staging table. It is created NOLOGIN; `citadel-indexer migrate`
-- gives it LOGIN and a password when CITADEL_INDEXER_DB_PASSWORD is set.
--
-- Roles belong to the server, privileges to a database: a database migrated after another one on the same server
-- finds the role there and grants its own privileges.
--
-- RULE: a migration that adds a table the daemon reads or writes grants it to citadel_indexer in that same
-- migration (nothing is granted by default: no ALTER DEFAULT PRIVILEGES).

DO $$
DECLARE
    r record;
    member_of text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'citadel_indexer') THEN
        BEGIN
            CREATE ROLE citadel_indexer NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
            COMMENT ON ROLE citadel_indexer IS
                'citadel-indexer daemon: least privilege (migration 014). LOGIN and a password are given by '
                '`citadel-indexer migrate` when CITADEL_INDEXER_DB_PASSWORD is set.';
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by the migration of another database on this server
        END;
    END IF;

    SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls INTO r
      FROM pg_roles WHERE rolname = 'citadel_indexer';
    IF r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls THEN
        RAISE EXCEPTION 'role citadel_indexer exists with SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS'
            USING HINT = 'ALTER ROLE citadel_indexer NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS, '
                         'then run the migrations again.';
    END IF;

    SELECT string_agg(g.rolname, ', ' ORDER BY g.rolname) INTO member_of
      FROM pg_auth_members m
      JOIN pg_roles g ON g.oid = m.roleid
      JOIN pg_roles u ON u.oid = m.member
     WHERE u.rolname = 'citadel_indexer';
    IF member_of IS NOT NULL THEN
        RAISE WARNING 'role citadel_indexer is a member of %: it may hold privileges beyond those granted here',
            member_of;
    END IF;
END
$$;

-- Exactly the set below, whatever was granted by hand before.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM citadel_indexer', current_schema());
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM citadel_indexer', current_schema());
    -- TEMPORARY: each pooled connection creates its own temporary staging table (indexer/store/chain_store.py)
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO citadel_indexer', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO citadel_indexer', current_schema());
    -- the ids of the rows it inserts
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO citadel_indexer', pg_get_serial_sequence('transactions', 'id'));
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO citadel_indexer', pg_get_serial_sequence('audit_trail', 'id'));
END
$$;

-- Transfers: upserts, reorg rollback (DELETE), settling and dropping platform rows (UPDATE).
GRANT SELECT, INSERT, UPDATE, DELETE ON transactions TO citadel_indexer;
-- The reorg window and stream cursors: written, pruned, rolled back.
GRANT SELECT, INSERT, UPDATE, DELETE ON chain_blocks, sync_cursors TO citadel_indexer;
-- Token metadata read on-chain (upsert) and the writer lease (fencing: FOR SHARE needs UPDATE).
GRANT SELECT, INSERT, UPDATE ON tokens, writer_leases TO citadel_indexer;
-- Wallets: read; only the cached balances are written (a column grant: never the address, owner, chain or state).
GRANT SELECT ON wallets TO citadel_indexer;
GRANT UPDATE (balance_native, balance_usdt, balance_usdc, balance_tst, balance_usd, last_balance_sync)
    ON wallets TO citadel_indexer;
-- The audit trail: appended to (escrow tracking records its events there), never changed.
GRANT SELECT, INSERT ON audit_trail TO citadel_indexer;
-- Read only for now. The migration that adds the daemon's writes to these tables (escrow funding and repayment,
-- guardian checks) grants those writes, in the same migration.
GRANT SELECT ON p2p_agreements, guardian_checks TO citadel_indexer;
-- The daemon checks the schema version at start-up.
GRANT SELECT ON schema_migrations TO citadel_indexer;
GRANT SELECT ON users TO citadel_indexer;

-- Trigger functions resolve table names through the search_path of the session that fires them, and pg_temp comes
-- first unless it is listed: any session could CREATE TEMP TABLE users (id bigint) and the audit trail's guard
-- ("the user row is gone") would look at that empty table and let user_id be nulled for a user who still exists.
-- Each trigger function now runs with a fixed path: the catalog, the schema its tables live in, pg_temp last.
DO $$
DECLARE
    fn text;
BEGIN
    FOREACH fn IN ARRAY ARRAY['audit_trail_append_only()', 'set_updated_at()', 'notify_wallet_change()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', fn, current_schema());
    END LOOP;
END
$$;
