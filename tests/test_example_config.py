"""citadel.example.toml is what operators copy: it must load, match the built-in defaults and name every setting."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from chains.base import Chain
from indexer.config import ChainSettings, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "citadel.example.toml"


def test_example_loads_with_mainnet_values() -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value().startswith("postgresql://")
    assert (settings.metrics_host, settings.metrics_port) == ("127.0.0.1", 9108)
    assert (settings.log_format, settings.log_level) == ("text", "INFO")
    assert settings.enabled_chains() == []  # copying the file never starts hitting mainnet by surprise
    assert (settings.bsc.chain_id, settings.bsc.confirmations) == (56, 30)
    assert (settings.polygon.chain_id, settings.polygon.confirmations) == (137, 200)
    assert settings.tron.confirmations == 19
    assert settings.bsc.tokens["USDT"] == "0x55d398326f99059fF775485246999027B3197955"
    assert settings.polygon.tokens["USDC"] == "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359"
    assert settings.tron.tokens == {"USDT": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"}
    assert settings.polygon.stablecoin_usd_price == Decimal("1.00")
    assert settings.tron.api_key is None


def test_example_chain_tables_equal_the_built_in_defaults() -> None:
    """The file documents the defaults: if a default changes, the example must change with it."""
    from_file = load_settings(EXAMPLE, environ={})
    built_in = load_settings(None, environ={})
    for chain in Chain:
        assert from_file.chain(chain) == built_in.chain(chain), chain
    assert from_file.model_dump(exclude={"database_url", *[c.value for c in Chain]}) == built_in.model_dump(
        exclude={"database_url", *[c.value for c in Chain]}
    )


def test_environment_overrides_the_example_file() -> None:
    settings = load_settings(
        EXAMPLE,
        environ={
            "CITADEL_BSC__CONFIRMATIONS": "40",
            "CITADEL_POLYGON__ENABLED": "true",
            "CITADEL_POLYGON__RPC_URLS": '["https://polygon.example/v2/KEY"]',
            "CITADEL_METRICS_PORT": "9200",
        },
    )
    assert settings.bsc.confirmations == 40
    assert settings.bsc.chain_id == 56  # the rest of the file's [bsc] table still applies
    assert settings.bsc.tokens["USDC"] == "0x8AC76a51cc950d9822D68b83fE1Ad97B32Cd580d"
    assert settings.enabled_chains() == [Chain.POLYGON]
    assert settings.metrics_port == 9200


def _assigned_keys(text: str) -> dict[str, set[str]]:
    """Keys assigned per table, commented-out assignments (``# api_key = ...``) included."""
    keys: dict[str, set[str]] = {"": set()}
    table = ""
    for line in text.splitlines():
        header = re.match(r"^\[\[?([a-z_.]+)\]\]?", line)  # [table] or [[array of tables]]
        if header:
            table = header.group(1)
            keys.setdefault(table, set())
            continue
        assignment = re.match(r"^([A-Za-z_]+)\s*=", line) or re.match(r"^# ([a-z_]+) = ", line)
        if assignment:
            keys[table].add(assignment.group(1))
    return keys


def test_example_names_every_setting() -> None:
    """A new setting must be documented in the example (optional ones may be commented out)."""
    text = EXAMPLE.read_text()
    keys = _assigned_keys(text)
    chain_names = {c.value for c in Chain}
    assert keys[""] == set(Settings.model_fields) - chain_names - {"guardian"}
    from indexer.config import GuardianSettings

    assert keys["guardian"] | {"rules"} == set(GuardianSettings.model_fields)
    assert {"rule", "risk_score", "threshold_usd", "wallet_types"} <= keys["guardian.rules"]
    assert len(re.findall(r"^\[\[guardian.rules\]\]", text, re.M)) == len(GuardianSettings().rules)
    for chain in chain_names:
        missing = set(ChainSettings.model_fields) - keys[chain] - {"tokens"}
        if chain != "tron":
            missing.discard("api_key")  # Tron-only
        assert not missing, f"[{chain}] does not mention {sorted(missing)}"
        assert keys.get(f"{chain}.tokens"), f"[{chain}.tokens] missing"
