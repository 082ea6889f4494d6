"""Settings: env over TOML over defaults; every bad value is one clear line naming the setting, exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from indexer.config import ConfigError, load_settings

KEYED_URL = "https://bsc.example.org/v2/sekrit-api-key-123?apikey=sekrit-456"


def test_defaults_are_mainnet() -> None:
    s = load_settings(environ={})
    assert (s.bsc.chain_id, s.polygon.chain_id) == (56, 137)
    assert s.bsc.tokens["USDT"] == "0x55d398326f99059fF775485246999027B3197955"
    assert s.tron.tokens["USDT"] == "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
    assert s.metrics_port == 9108 and s.log_format == "text"
    assert s.enabled_chains() == []


def test_environment_wins_over_the_file_and_the_file_over_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('metrics_port = 9200\n[bsc]\nenabled = true\nrpc_urls = ["http://a:1"]\nconfirmations = 12\n')
    s = load_settings(toml, environ={"CITADEL_BSC__CONFIRMATIONS": "7", "CITADEL_POLYGON__ENABLED": "true",
                                     "CITADEL_POLYGON__RPC_URLS": '["http://b:2", "http://c:3"]'})
    assert s.metrics_port == 9200
    assert s.bsc.confirmations == 7 and s.bsc.rpc_urls == ["http://a:1"] and s.bsc.chain_id == 56
    assert s.polygon.rpc_urls == ["http://b:2", "http://c:3"]
    assert s.polygon.tokens["USDT"].startswith("0xc2132D05")  # partial section keeps the chain's defaults


def test_catch_up_settings_reach_the_watcher() -> None:
    from indexer.app import watcher_config

    s = load_settings(environ={"CITADEL_BSC__CATCHUP_BATCH_BLOCKS": "123", "CITADEL_BSC__NATIVE_TRANSFERS": "false"})
    cfg = watcher_config(s.bsc)
    assert (cfg.catchup_range, cfg.native_transfers) == (123, False)
    default = watcher_config(s.polygon)
    assert (default.catchup_range, default.native_transfers) == (500, True)


def test_config_file_from_citadel_config(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('log_format = "json"\n')
    assert load_settings(environ={"CITADEL_CONFIG": str(toml)}).log_format == "json"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CITADEL_BSC__CONFIRMATIONS": "-1"}, "CITADEL_BSC__CONFIRMATIONS:"),
        ({"CITADEL_SOLANA__ENABLED": "true"}, "CITADEL_SOLANA__ENABLED: unknown chain 'solana'"),
        ({"CITADEL_POLYGON__RPC_URLS": '["ftp://x"]'}, "CITADEL_POLYGON__RPC_URLS: malformed URL"),
        ({"CITADEL_BSC__RPC_URLS": '["not a url"]'}, "CITADEL_BSC__RPC_URLS: malformed URL"),
        ({"CITADEL_BSC__TOKENS": '{"USDT": "0x55d398326f99059fF775485246999027B3197956"}'},
         "CITADEL_BSC__TOKENS__USDT: EVM address fails its EIP-55 checksum"),
        ({"CITADEL_BSC__TOKENS": '{"USDT": "0x1234"}'}, "CITADEL_BSC__TOKENS__USDT: malformed EVM address"),
        ({"CITADEL_TRON__TOKENS": '{"USDT": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u"}'},
         "CITADEL_TRON__TOKENS__USDT: Tron address fails its base58check checksum"),
        ({"CITADEL_TRON__ESCROW_CONTRACT": "0x55d398326f99059fF775485246999027B3197955"},
         "CITADEL_TRON__ESCROW_CONTRACT: malformed Tron address"),
        ({"CITADEL_BSC__ENABLED": "true"}, "CITADEL_BSC__RPC_URLS: the chain is enabled but has no RPC URL"),
        ({"CITADEL_METRICS_PORT": "70000"}, "CITADEL_METRICS_PORT:"),
        ({"CITADEL_LOG_FORMAT": "xml"}, "CITADEL_LOG_FORMAT:"),
        ({"CITADEL_BSC__BOGUS": "1"}, "CITADEL_BSC__BOGUS: unknown setting"),
        ({"CITADEL_BSC__RPC_URLS": '["https://x/k"'}, "CITADEL_BSC: a value is not valid JSON"),
        ({"CITADEL_BSC__CATCHUP_BATCH_BLOCKS": "0"}, "CITADEL_BSC__CATCHUP_BATCH_BLOCKS:"),
        ({"CITADEL_POLYGON__NATIVE_TRANSFERS": "sometimes"}, "CITADEL_POLYGON__NATIVE_TRANSFERS:"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env)
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_value_never_echoes_a_secret() -> None:
    env = {"CITADEL_BSC__RPC_URLS": f'["{KEYED_URL}", "gopher://sekrit-789@x"]', "CITADEL_BSC__ENABLED": "true"}
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env)
    assert "sekrit" not in str(err.value)


def test_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CITADEL_POLYGON__CONFIRMATIONS": "-5"}
    proc = subprocess.run([sys.executable, "-m", "indexer", "run"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CITADEL_POLYGON__CONFIRMATIONS" in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_guardian_rules_from_the_environment_and_their_checks() -> None:
    s = load_settings(environ={"CITADEL_GUARDIAN__MAX_AGE_S": "600", "CITADEL_GUARDIAN__RULES": (
        '[{"rule": "large_amount", "risk_score": 80, "chains": ["tron"], "wallet_types": ["hot_wallet"], '
        '"threshold_usd": "2500.50"}]')})
    assert s.guardian.max_age_s == 600 and len(s.guardian.rules) == 1
    rule = s.guardian.rules[0]
    assert (rule.rule, str(rule.threshold_usd), [c.value for c in rule.chains]) == ("large_amount", "2500.50", ["tron"])
    assert len(load_settings(environ={}).guardian.rules) == 5  # the defaults
    for bad, expected in (
        ('[{"rule": "large_amount", "risk_score": 50}]', "needs threshold_usd"),
        ('[{"rule": "new_address", "risk_score": 50, "window_minutes": 3}]', "takes no window_minutes"),
        ('[{"rule": "phishing", "risk_score": 50}]', "CITADEL_GUARDIAN__RULES"),
        ('[{"rule": "new_address", "risk_score": 150}]', "less than or equal to 100"),
    ):
        with pytest.raises(ConfigError, match=expected):
            load_settings(environ={"CITADEL_GUARDIAN__RULES": bad})
