-- 017_indexer_locks_wallet_version.sql: citadel_indexer may lock wallet_set_version's row, which every batch with
-- rows reads FOR SHARE (016, indexer/store/chain_store.py).
--
-- 016 granted SELECT only, and a row lock (FOR SHARE) also needs UPDATE privilege on at least one column: run as
-- citadel_indexer, the daemon's first batch with rows failed with "permission denied for table wallet_set_version"
-- and its chain task stopped (found by the end-to-end test that runs the daemon as that role). The UPDATE is
-- granted on `singleton` only, a column that can only ever be true: it allows the lock, and no change that matters
-- (the daemon can never bump the version, which only a wallet's address or chain change does).
GRANT UPDATE (singleton) ON wallet_set_version TO citadel_indexer;
