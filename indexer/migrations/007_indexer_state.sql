-- 007_indexer_state.sql: the indexer's own state (docs/data-model.md, "Indexer state").

CREATE TABLE sync_cursors (
    chain        VARCHAR(20) NOT NULL CHECK (chain IN ('bsc', 'polygon', 'tron')),
    stream       VARCHAR(64) NOT NULL,
    block_number BIGINT NOT NULL CHECK (block_number >= 0),
    block_hash   VARCHAR(66),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, stream)
);
COMMENT ON TABLE sync_cursors IS
    'Last block whose data is committed, per chain and stream (''realtime'', one per backfill job). Written in the '
    'same transaction as the data it covers.';
COMMENT ON COLUMN sync_cursors.stream IS '''realtime'' or the name of a backfill job.';
COMMENT ON COLUMN sync_cursors.block_number IS 'Highest block fully processed by this stream.';
COMMENT ON COLUMN sync_cursors.block_hash IS 'Hash of that block, to detect a reorg below the cursor on restart.';

CREATE TABLE chain_blocks (
    chain           VARCHAR(20) NOT NULL CHECK (chain IN ('bsc', 'polygon', 'tron')),
    number          BIGINT NOT NULL CHECK (number >= 0),
    hash            VARCHAR(66) NOT NULL,
    parent_hash     VARCHAR(66) NOT NULL,
    block_timestamp TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (chain, number),
    CONSTRAINT chain_blocks_chain_hash_key UNIQUE (chain, hash)
);
COMMENT ON TABLE chain_blocks IS
    'Recent, not yet final blocks per chain (the reorg window): a new block whose parent_hash differs from the '
    'stored hash of its parent reveals a reorg; rollback walks back to the common ancestor.';
COMMENT ON COLUMN chain_blocks.hash IS 'Block hash, lowercase hex (0x-prefixed on EVM).';
COMMENT ON COLUMN chain_blocks.parent_hash IS 'Hash of block number - 1 as seen by this block.';

CREATE TABLE tokens (
    chain            VARCHAR(20) NOT NULL CHECK (chain IN ('bsc', 'polygon', 'tron')),
    contract_address VARCHAR(120) NOT NULL,
    symbol           VARCHAR(32),
    decimals         SMALLINT NOT NULL CHECK (decimals BETWEEN 0 AND 255),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, contract_address)
);
COMMENT ON TABLE tokens IS
    'Token registry: a token is identified by (chain, contract_address), never by its symbol (symbols can be faked).';
COMMENT ON COLUMN tokens.contract_address IS 'Normalised contract address (lowercase on EVM, base58 on Tron).';
COMMENT ON COLUMN tokens.symbol IS 'Symbol read on-chain, for display only.';
COMMENT ON COLUMN tokens.decimals IS 'decimals() read on-chain.';
