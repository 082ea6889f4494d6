-- 006_users_keys_flags_p2p.sql: users' email, API key lookup, feature flags, P2P agreements.

-- Rows the new unique constraints would reject stop the migration here, naming them (nothing of this file is
-- applied). Merging two accounts or two flags is a human decision.
DO $$
DECLARE
    conflicts text;
BEGIN
    SELECT string_agg(format('%s (user ids %s)', email, ids), '; ') INTO conflicts
      FROM (SELECT lower(email) AS email, string_agg(id::text, ', ' ORDER BY id) AS ids
              FROM users GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 50) dup;
    IF conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'users: email addresses that differ only in case: %', conflicts
            USING HINT = 'Merge or rename these accounts, then run the migrations again.';
    END IF;

    SELECT string_agg(format('%s (feature_flags ids %s)', flag_name, ids), '; ') INTO conflicts
      FROM (SELECT flag_name, string_agg(id::text, ', ' ORDER BY id) AS ids
              FROM feature_flags WHERE user_id IS NULL GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 50) dup;
    IF conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'feature_flags: global flags (user_id NULL) defined more than once: %', conflicts
            USING HINT = 'Delete all but one row of each flag, then run the migrations again.';
    END IF;
END
$$;

-- users.email --------------------------------------------------------------------------------------------------
-- The seed's pattern rejected valid addresses (o'brien@example.ie, IDN TLDs) and accepted a..b@x.com and
-- a@example..com. The local part is dot-separated atoms (no leading, trailing or double dot) of any printable
-- character but the RFC 5322 specials; the domain is dot-separated labels (Unicode allowed, no leading or trailing
-- hyphen) ending in a TLD of 2+ letters or an xn-- label. Delivery is what really validates an address.
ALTER TABLE users DROP CONSTRAINT IF EXISTS valid_email;
ALTER TABLE users ADD CONSTRAINT users_email_format CHECK (
    length(email) <= 254
    AND email ~ '^[^[:space:][:cntrl:]@"(),:;<>\[\]\\.]+(\.[^[:space:][:cntrl:]@"(),:;<>\[\]\\.]+)*@([^[:space:][:cntrl:][:punct:]]([^[:space:][:cntrl:]@.]*[^[:space:][:cntrl:][:punct:]])?\.)+([^[:space:][:cntrl:][:punct:][:digit:]]{2,}|xn--[a-z0-9-]+)$'
    AND length(split_part(email, '@', 1)) <= 64
) NOT VALID;

DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(id::text, ', ' ORDER BY id) INTO bad
      FROM (SELECT u.id FROM users u
             WHERE NOT (length(u.email) <= 254
                        AND u.email ~ '^[^[:space:][:cntrl:]@"(),:;<>\[\]\\.]+(\.[^[:space:][:cntrl:]@"(),:;<>\[\]\\.]+)*@([^[:space:][:cntrl:][:punct:]]([^[:space:][:cntrl:]@.]*[^[:space:][:cntrl:][:punct:]])?\.)+([^[:space:][:cntrl:][:punct:][:digit:]]{2,}|xn--[a-z0-9-]+)$'
                        AND length(split_part(u.email, '@', 1)) <= 64)
             ORDER BY u.id LIMIT 50) b;
    IF bad IS NULL THEN
        ALTER TABLE users VALIDATE CONSTRAINT users_email_format;
    ELSE
        RAISE WARNING 'users_email_format left NOT VALID: malformed email in user ids %', bad;
    END IF;
END
$$;

-- Case-insensitive uniqueness: Alice@Example.com and alice@example.com are one mailbox in practice.
-- Look users up with WHERE lower(email) = lower($1) to use it.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_email_key;
DROP INDEX IF EXISTS idx_users_email;
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
COMMENT ON INDEX users_email_lower_key IS 'Emails are unique case-insensitively; query with lower(email) = lower($1).';

-- api_keys -------------------------------------------------------------------------------------------------------
-- bcrypt is salted: the same key hashes differently every time, so UNIQUE (key_hash) admitted duplicates and no
-- request could find its key without bcrypt-comparing every key. key_lookup_hash is a deterministic keyed hash
-- (hex HMAC-SHA256 of the full key under a server-side secret, "pepper"), unique and indexed: a request computes it
-- and finds its row in one index probe. key_prefix (the key's public leading characters, e.g. "ctd_live_ab12")
-- lets users and support tell keys apart. key_hash (bcrypt) stays as designed, without UNIQUE, for services that
-- verify against it. Keys created before this migration have no lookup hash: they cannot be found and must be
-- reissued.
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_key_hash_key;
ALTER TABLE api_keys
    ADD COLUMN key_prefix VARCHAR(16),
    ADD COLUMN key_lookup_hash VARCHAR(64),
    ADD CONSTRAINT api_keys_key_lookup_hash_key UNIQUE (key_lookup_hash),
    ADD CONSTRAINT api_keys_key_lookup_hash_format CHECK (key_lookup_hash ~ '^[0-9a-f]{64}$');
COMMENT ON COLUMN api_keys.key_hash IS 'bcrypt of the key (salted, so not unique and not searchable).';
COMMENT ON COLUMN api_keys.key_lookup_hash IS
    'Hex HMAC-SHA256(server secret, full key): deterministic, unique; the lookup of a presented key. '
    'NULL for keys issued before migration 006 (reissue them).';
COMMENT ON COLUMN api_keys.key_prefix IS 'Public leading characters of the key, shown to tell keys apart.';

-- feature_flags --------------------------------------------------------------------------------------------------
-- UNIQUE (user_id, flag_name) treated NULLs as distinct: a global flag (user_id NULL) could be defined twice.
ALTER TABLE feature_flags DROP CONSTRAINT IF EXISTS feature_flags_user_id_flag_name_key;
ALTER TABLE feature_flags
    ADD CONSTRAINT feature_flags_user_flag_key UNIQUE NULLS NOT DISTINCT (user_id, flag_name);
COMMENT ON CONSTRAINT feature_flags_user_flag_key ON feature_flags IS
    'One row per flag per user, and one global row (user_id NULL) per flag.';

-- p2p_agreements -------------------------------------------------------------------------------------------------
ALTER TABLE p2p_agreements
    ADD COLUMN chain VARCHAR(20),
    ADD COLUMN token_address VARCHAR(120),
    ADD CONSTRAINT p2p_agreements_chain_check CHECK (chain IN ('bsc', 'polygon', 'tron'));
COMMENT ON COLUMN p2p_agreements.chain IS 'Chain of the escrow and of the lent token.';
COMMENT ON COLUMN p2p_agreements.token_address IS
    'Contract of the lent token, normalised (lowercase on EVM); NULL for the native coin. token is a display symbol.';

-- A user cannot lend to themselves. NOT VALID so that a legacy self-loan cannot block the deployment; validated
-- right away when there is none.
ALTER TABLE p2p_agreements
    ADD CONSTRAINT p2p_agreements_distinct_parties CHECK (lender_id <> borrower_id) NOT VALID;
DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(id::text, ', ' ORDER BY id) INTO bad
      FROM (SELECT id FROM p2p_agreements WHERE lender_id = borrower_id ORDER BY id LIMIT 50) b;
    IF bad IS NULL THEN
        ALTER TABLE p2p_agreements VALIDATE CONSTRAINT p2p_agreements_distinct_parties;
    ELSE
        RAISE WARNING 'p2p_agreements_distinct_parties left NOT VALID: self-lending in agreement ids %', bad;
    END IF;
END
$$;
