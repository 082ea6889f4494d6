-- 005_audit_trail_append_only.sql: an audit trail that is append-only and survives backup/restore.
--
-- The seed's CHECK (created_at = CURRENT_TIMESTAMP) (dropped in 002) lost every audit row in a pg_dump restore,
-- broke deleting a user (the FK's ON DELETE SET NULL is an UPDATE), and did not stop UPDATE ... SET created_at = now()
-- nor DELETE. Instead:
-- * a row trigger rejects UPDATE and DELETE, with a single exception: the FK's ON DELETE SET NULL, i.e. an UPDATE
--   that changes nothing but user_id, to NULL, after that user row is gone;
-- * a statement trigger rejects TRUNCATE;
-- * UPDATE, DELETE and TRUNCATE are revoked from PUBLIC (grant only INSERT/SELECT to application roles);
-- * nothing rewrites created_at on insert: it defaults to now(), and a restore (COPY) keeps the original times.
-- A superuser can still bypass triggers (session_replication_role = replica), e.g. for a retention purge; that is
-- deliberate and shows up in the server log, not in this table.

CREATE OR REPLACE FUNCTION audit_trail_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.user_id IS NOT NULL
       AND NEW.user_id IS NULL
       AND to_jsonb(NEW) - 'user_id' = to_jsonb(OLD) - 'user_id'
       AND NOT EXISTS (SELECT 1 FROM users WHERE id = OLD.user_id)
    THEN
        RETURN NEW;  -- audit_trail_user_id_fkey ON DELETE SET NULL
    END IF;
    RAISE EXCEPTION 'audit_trail is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit rows are never changed or removed; insert a new row to record a correction.';
END
$$;

CREATE TRIGGER audit_trail_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_trail
    FOR EACH ROW EXECUTE FUNCTION audit_trail_append_only();

CREATE TRIGGER audit_trail_no_truncate
    BEFORE TRUNCATE ON audit_trail
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_trail FROM PUBLIC;

COMMENT ON TABLE audit_trail IS
    'Immutable compliance log: append-only (triggers audit_trail_no_update_delete, audit_trail_no_truncate; UPDATE, '
    'DELETE, TRUNCATE revoked). Deleting a user only nulls user_id (FK ON DELETE SET NULL).';
COMMENT ON COLUMN audit_trail.created_at IS
    'When the action happened: defaults to now() on insert and is never rewritten, so restores keep history.';
COMMENT ON FUNCTION audit_trail_append_only() IS
    'Rejects UPDATE/DELETE/TRUNCATE on audit_trail except the FK''s ON DELETE SET NULL of user_id.';
