-- 003_wallets_addresses.sql: chain-aware wallet addresses (docs/data-model.md, "Addresses").
--
-- The seed's UNIQUE (public_address) rejected the same EVM address on bsc and polygon (an HD wallet shares it across
-- EVM chains) and accepted a lowercase copy of a checksummed address as a second wallet. The normalised address is
-- a stored generated column: lowercase for EVM chains, unchanged for Tron (base58 is case-sensitive).
--
-- The seed's UNIQUE (user_id, chain, wallet_type) allowed a single escrow (or risk vault, ...) wallet per user and
-- chain, while a user needs one escrow wallet per agreement or strategy. What must be unique is the wallet the
-- platform treats as "the" wallet of a user on a chain: at most one is_primary wallet per (user, chain), a partial
-- unique index.

-- Existing rows that the new unique constraints would reject stop the migration here, naming them; nothing of this
-- file is applied (it runs in one transaction). Resolve them by hand: which wallet is the real one is a human call.
DO $$
DECLARE
    conflicts text;
BEGIN
    SELECT string_agg(format('%s %s (wallet ids %s)', chain, norm, ids), '; ')
      INTO conflicts
      FROM (SELECT chain,
                   CASE WHEN chain IN ('bsc', 'polygon') THEN lower(public_address) ELSE public_address END AS norm,
                   string_agg(id::text, ', ' ORDER BY id) AS ids
              FROM wallets
             GROUP BY 1, 2
            HAVING count(*) > 1
             ORDER BY 1, 2
             LIMIT 50) dup;
    IF conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'wallets: the same address is registered more than once on a chain (case variants of an EVM address are the same address): %', conflicts
            USING HINT = 'Deactivate and delete the duplicate wallet rows, then run the migrations again.';
    END IF;

    SELECT string_agg(format('user %s on %s (wallet ids %s)', user_id, chain, ids), '; ')
      INTO conflicts
      FROM (SELECT user_id, chain, string_agg(id::text, ', ' ORDER BY id) AS ids
              FROM wallets
             WHERE is_primary
             GROUP BY 1, 2
            HAVING count(*) > 1
             ORDER BY 1, 2
             LIMIT 50) dup;
    IF conflicts IS NOT NULL THEN
        RAISE EXCEPTION 'wallets: more than one primary wallet per user and chain: %', conflicts
            USING HINT = 'Set is_primary = false on all but one of them, then run the migrations again.';
    END IF;
END
$$;

ALTER TABLE wallets
    ADD COLUMN address_normalized VARCHAR(120) GENERATED ALWAYS AS (
        CASE WHEN chain IN ('bsc', 'polygon') THEN lower(public_address) ELSE public_address END
    ) STORED;

ALTER TABLE wallets DROP CONSTRAINT IF EXISTS wallets_public_address_key;
DROP INDEX IF EXISTS idx_wallets_public_address;
ALTER TABLE wallets DROP CONSTRAINT IF EXISTS wallets_user_id_chain_wallet_type_key;

ALTER TABLE wallets ADD CONSTRAINT wallets_chain_address_key UNIQUE (chain, address_normalized);
CREATE UNIQUE INDEX wallets_one_primary_per_user_chain ON wallets (user_id, chain) WHERE is_primary;
-- Target of transactions' composite foreign key (wallet_id, user_id): a transaction's user owns its wallet.
ALTER TABLE wallets ADD CONSTRAINT wallets_id_user_id_key UNIQUE (id, user_id);

-- Format per chain. Added NOT VALID so legacy rows cannot block the migration; validated right away when every
-- existing row passes (the indexer reports and skips an invalid wallet either way). Checksums (EIP-55, base58check)
-- are the indexer's job.
ALTER TABLE wallets ADD CONSTRAINT wallets_address_format CHECK (
    CASE chain
        WHEN 'tron' THEN public_address ~ '^T[1-9A-HJ-NP-Za-km-z]{33}$'
        ELSE public_address ~ '^0x[0-9a-fA-F]{40}$'
    END
) NOT VALID;

DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(id::text, ', ' ORDER BY id) INTO bad
      FROM (SELECT id FROM wallets
             WHERE NOT CASE chain
                           WHEN 'tron' THEN public_address ~ '^T[1-9A-HJ-NP-Za-km-z]{33}$'
                           ELSE public_address ~ '^0x[0-9a-fA-F]{40}$'
                       END
             ORDER BY id LIMIT 50) b;
    IF bad IS NULL THEN
        ALTER TABLE wallets VALIDATE CONSTRAINT wallets_address_format;
    ELSE
        RAISE WARNING 'wallets_address_format left NOT VALID: malformed addresses in wallet ids %', bad;
    END IF;
END
$$;

COMMENT ON COLUMN wallets.public_address IS 'The address as the platform inserted it (EVM may be EIP-55 mixed case).';
COMMENT ON COLUMN wallets.address_normalized IS
    'Generated: lower(public_address) on bsc/polygon, public_address unchanged on tron (base58 is case-sensitive). '
    'Unique per chain (wallets_chain_address_key); the indexer matches chain data against it.';
COMMENT ON CONSTRAINT wallets_chain_address_key ON wallets IS
    'One wallet per (chain, normalised address): the same EVM address may exist on bsc and on polygon.';
COMMENT ON INDEX wallets_one_primary_per_user_chain IS
    'At most one primary wallet per user and chain; any number of escrow/vault/pool wallets (replaces the seed''s '
    'UNIQUE (user_id, chain, wallet_type), which allowed only one escrow wallet per user and chain).';
