-- demo/seed.sql: demo data (the seed design's "Phase 2 seeding"). Not a migration: load it by hand into a
-- migrated database, e.g.  psql "$CITADEL_DATABASE_URL" -v ON_ERROR_STOP=1 -f demo/seed.sql
-- Idempotent: running it again inserts nothing (ON CONFLICT DO NOTHING).
--
-- Addresses are deterministic: the EVM ones are anvil's default accounts 1..4 (mnemonic "test test test test test
-- test test test test test test junk", path m/44'/60'/0'/0/i), EIP-55 checksummed; each user has the same address
-- on bsc and polygon, as an HD wallet does. The Tron ones are the base58check Tron addresses (0x41 prefix) of the
-- same four keys, so the same private keys sign on every chain in the local stack. Never use these keys for value.

BEGIN;

INSERT INTO users (email, password_hash, username, first_name, kyc_status)
VALUES ('alice@citadel.example', '!demo-account-no-login', 'alice', 'Alice', 'approved'),
       ('bob@citadel.example',   '!demo-account-no-login', 'bob',   'Bob',   'approved'),
       ('carol@citadel.example', '!demo-account-no-login', 'carol', 'Carol', 'pending'),
       ('dave@citadel.example',  '!demo-account-no-login', 'dave',  'Dave',  'pending')
ON CONFLICT DO NOTHING;

INSERT INTO wallets (user_id, chain, public_address, derivation_path, wallet_type, label, is_primary)
SELECT u.id, w.chain, w.address, w.path, 'personal', w.label, TRUE
  FROM (VALUES
    ('alice@citadel.example', 'bsc',     '0x70997970C51812dc3A010C7d01b50e0d17dc79C8', 'm/44''/60''/0''/0/1', 'Alice BSC'),
    ('alice@citadel.example', 'polygon', '0x70997970C51812dc3A010C7d01b50e0d17dc79C8', 'm/44''/60''/0''/0/1', 'Alice Polygon'),
    ('alice@citadel.example', 'tron',    'TLEaY8XoqpBmndLsjcfThgdKLN1ssNuUcF',         'm/44''/60''/0''/0/1', 'Alice Tron'),
    ('bob@citadel.example',   'bsc',     '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC', 'm/44''/60''/0''/0/2', 'Bob BSC'),
    ('bob@citadel.example',   'polygon', '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC', 'm/44''/60''/0''/0/2', 'Bob Polygon'),
    ('bob@citadel.example',   'tron',    'TFTsyAaajS3DTEbekme2wm9fNcypguDHp4',         'm/44''/60''/0''/0/2', 'Bob Tron'),
    ('carol@citadel.example', 'bsc',     '0x90F79bf6EB2c4f870365E785982E1f101E93b906', 'm/44''/60''/0''/0/3', 'Carol BSC'),
    ('carol@citadel.example', 'polygon', '0x90F79bf6EB2c4f870365E785982E1f101E93b906', 'm/44''/60''/0''/0/3', 'Carol Polygon'),
    ('carol@citadel.example', 'tron',    'TPBivseBCFmG8AEL38DJ4hxrFMQteENxDz',         'm/44''/60''/0''/0/3', 'Carol Tron'),
    ('dave@citadel.example',  'bsc',     '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', 'm/44''/60''/0''/0/4', 'Dave BSC'),
    ('dave@citadel.example',  'polygon', '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', 'm/44''/60''/0''/0/4', 'Dave Polygon'),
    ('dave@citadel.example',  'tron',    'TBxcJtrCeCFkHp47jshFMBWGB1n7igSHm2',         'm/44''/60''/0''/0/4', 'Dave Tron')
  ) AS w(email, chain, address, path, label)
  JOIN users u ON lower(u.email) = w.email
ON CONFLICT DO NOTHING;

INSERT INTO feature_flags (user_id, flag_name, flag_value, description, enabled_at)
VALUES (NULL, 'p2p_lending', TRUE, 'P2P lending (global)', now()),
       (NULL, 'indexer_notify', TRUE, 'Wallet changes reach the indexer through NOTIFY citadel_wallets', now())
ON CONFLICT DO NOTHING;

COMMIT;
