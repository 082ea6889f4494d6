-- 002_types_timestamptz.sql: column types that lose or corrupt data in the seed.
--
-- * The database's default time zone becomes UTC (sessions that set none read UTC).
-- * Every TIMESTAMP (without time zone) of the 13 seed tables becomes TIMESTAMPTZ. The seed stored wall-clock
--   values of whatever session wrote them; they are read as UTC (`USING col AT TIME ZONE 'UTC'`), which is what
--   the platform wrote (its servers and the seed's "2 AM UTC" jobs run in UTC).
-- * Amounts: DECIMAL(30,18) overflowed above 10^12 tokens (one spam transfer aborted a whole batch) and
--   DECIMAL(20,2) rounded every token amount to the cent. Token amounts and cached balances become unconstrained
--   NUMERIC (exact, any scale). Gas becomes NUMERIC(78,0), an integer in the chain's smallest unit (uint256 fits).
--   Money-like USD figures with two decimals (prices, fees, ROI percentages) are left as designed.
-- * Counters that grow without bound become BIGINT.

-- The seed's audit_trail CHECK (created_at = CURRENT_TIMESTAMP) is false for every existing row, so the table
-- rewrite below would fail on it. It is dropped here; 005 makes audit_trail append-only with a trigger instead.
ALTER TABLE audit_trail DROP CONSTRAINT IF EXISTS immutable_timestamp;

DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'UTC');
END
$$;
SET LOCAL TimeZone = 'UTC';

-- One ALTER TABLE per table (a single rewrite each), covering every timestamp column of the seed's tables.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.table_name,
               string_agg(format('ALTER COLUMN %1$I TYPE timestamptz USING %1$I AT TIME ZONE %2$L',
                                 c.column_name, 'UTC'), ', ' ORDER BY c.ordinal_position) AS clauses
          FROM information_schema.columns c
         WHERE c.table_schema = current_schema()
           AND c.data_type = 'timestamp without time zone'
           AND c.table_name IN ('users', 'wallets', 'transactions', 'strategies', 'strategy_decisions',
                                'entity_logs', 'guardian_checks', 'tst_stakes', 'p2p_agreements', 'api_keys',
                                'performance_metrics', 'audit_trail', 'feature_flags')
         GROUP BY c.table_name
    LOOP
        EXECUTE format('ALTER TABLE %I %s', t.table_name, t.clauses);
    END LOOP;
END
$$;

-- now() is CURRENT_TIMESTAMP; written as such so the defaults read as timestamptz.
ALTER TABLE users
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN tst_airdrop_amount TYPE NUMERIC;

ALTER TABLE wallets
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN balance_usd TYPE NUMERIC,
    ALTER COLUMN balance_native TYPE NUMERIC,
    ALTER COLUMN balance_usdt TYPE NUMERIC,
    ALTER COLUMN balance_usdc TYPE NUMERIC,
    ALTER COLUMN balance_tst TYPE NUMERIC;

-- gas_price DECIMAL(20,2) stored 3 gwei as 0.00: existing values are already truncated and are rounded to integers.
ALTER TABLE transactions
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN amount TYPE NUMERIC,
    ALTER COLUMN value_usd TYPE NUMERIC,
    ALTER COLUMN gas_used TYPE NUMERIC(78, 0),
    ALTER COLUMN gas_price TYPE NUMERIC(78, 0),
    ALTER COLUMN confirmations TYPE BIGINT;

ALTER TABLE strategies
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN total_trades TYPE BIGINT,
    ALTER COLUMN wins TYPE BIGINT,
    ALTER COLUMN losses TYPE BIGINT;

ALTER TABLE strategy_decisions
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN amount TYPE NUMERIC,
    ALTER COLUMN executed_amount TYPE NUMERIC;

ALTER TABLE entity_logs
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN cycle_number TYPE BIGINT;

ALTER TABLE guardian_checks
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now();

ALTER TABLE tst_stakes
    ALTER COLUMN staked_at SET DEFAULT now(),
    ALTER COLUMN amount TYPE NUMERIC,
    ALTER COLUMN total_rewards_earned TYPE NUMERIC;

ALTER TABLE p2p_agreements
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN principal_amount TYPE NUMERIC,
    ALTER COLUMN repayment_amount TYPE NUMERIC;

ALTER TABLE api_keys
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN rate_limit_per_day TYPE BIGINT,
    ALTER COLUMN total_requests TYPE BIGINT,
    ALTER COLUMN requests_today TYPE BIGINT;

ALTER TABLE performance_metrics
    ALTER COLUMN trades_executed TYPE BIGINT,
    ALTER COLUMN winning_trades TYPE BIGINT,
    ALTER COLUMN losing_trades TYPE BIGINT;

ALTER TABLE audit_trail
    ALTER COLUMN created_at SET DEFAULT now();

COMMENT ON COLUMN transactions.amount IS
    'Token units, exact: amount_raw / 10^token_decimals computed without rounding (unconstrained NUMERIC).';
COMMENT ON COLUMN transactions.gas_used IS
    'Gas used (EVM) or energy used (Tron), integer.';
COMMENT ON COLUMN transactions.gas_price IS
    'Gas price in wei (EVM) or fee in sun (Tron), integer in the chain''s smallest unit.';
COMMENT ON COLUMN transactions.confirmations IS 'head - block_number + 1, refreshed while the row is pending.';
COMMENT ON COLUMN wallets.balance_native IS 'Cached native balance in coin units (BNB, POL, TRX), exact.';
