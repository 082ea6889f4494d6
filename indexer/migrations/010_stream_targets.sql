-- Wallet backfill streams: a wallet that joins while the daemon runs is backfilled from START_BLOCK to the block that
-- was final when it joined. The stream record keeps that target next to its progress, so a restart resumes it.
ALTER TABLE sync_cursors ADD COLUMN target_block BIGINT;
COMMENT ON COLUMN sync_cursors.target_block IS
    'For backfill streams: the last block to index. NULL for the realtime stream, which follows the head.';

-- A stream that starts at block 0 has done nothing yet at block_number -1.
ALTER TABLE sync_cursors DROP CONSTRAINT IF EXISTS sync_cursors_block_number_check;
ALTER TABLE sync_cursors ADD CONSTRAINT sync_cursors_block_number_check CHECK (block_number >= -1);
ALTER TABLE sync_cursors ADD CONSTRAINT sync_cursors_target_check CHECK (target_block IS NULL OR target_block >= -1);
