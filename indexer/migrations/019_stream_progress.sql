-- 019_stream_progress.sql: when and where each stream began, so `citadel-indexer status` can tell how fast a backfill
-- moves and when it will be done.
ALTER TABLE sync_cursors
    ADD COLUMN created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN first_block BIGINT;
COMMENT ON COLUMN sync_cursors.created_at IS 'When the stream was recorded (a backfill job: when it was asked for).';
COMMENT ON COLUMN sync_cursors.first_block IS
    'Where a backfill stream began (its block_number when recorded); progress = block_number - first_block.';
