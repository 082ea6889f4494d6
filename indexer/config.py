"""Settings: environment (prefix ``CITADEL_``, nested delimiter ``__``) over an optional TOML file.

The names are the product's interface; operators and tests rely on them::

    CITADEL_DATABASE_URL
    CITADEL_<CHAIN>__ENABLED / RPC_URLS / CHAIN_ID / CONFIRMATIONS / START_BLOCK / POLL_INTERVAL_S / TOKENS /
                     ESCROW_CONTRACT / API_KEY (Tron)                   CHAIN is BSC, POLYGON or TRON
    CITADEL_METRICS_HOST, CITADEL_METRICS_PORT, CITADEL_LOG_FORMAT
    CITADEL_CONFIG (path of the TOML file; ``--config PATH`` on the command line wins)

Precedence: environment > TOML file > defaults (mainnet chain ids and the mainnet USDT/USDC
contract addresses of each chain, see :data:`CHAIN_DEFAULTS`). :func:`load_settings` turns every invalid value into :class:`ConfigError`, whose
message names the setting as an operator would write it and never echoes the value (it may hold a key).
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from chains.base import Chain

ENV_PREFIX = "CITADEL_"
CONFIG_FILE_ENV = "CITADEL_CONFIG"

_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class ConfigError(Exception):
    """A bad setting. ``str()`` is the one line printed to the operator."""


def _valid_url(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ValueError("malformed URL") from exc
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError("malformed URL: expected http(s):// or ws(s):// with a host")
    return url


def _valid_evm_address(address: str) -> str:
    if not _EVM_ADDRESS.match(address):
        raise ValueError("malformed EVM address: expected 0x followed by 40 hex digits")
    from eth_utils.address import is_checksum_address

    if address != address.lower() and address != "0x" + address[2:].upper() and not is_checksum_address(address):
        raise ValueError("EVM address fails its EIP-55 checksum")
    return address


def _valid_tron_address(address: str) -> str:
    from chains.tron.address import decode_base58

    if not address.startswith("T") or len(address) != 34:
        raise ValueError("malformed Tron address: expected 34 base58 characters starting with T")
    try:
        decode_base58(address)
    except ValueError as exc:
        if "checksum" in str(exc):
            raise ValueError("Tron address fails its base58check checksum") from None
        raise ValueError(f"malformed Tron address: {exc}") from None
    return address


class ChainSettings(BaseModel):
    """One chain's watcher. Defaults are filled per chain by :data:`CHAIN_DEFAULTS`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    rpc_urls: list[str] = Field(default_factory=list)
    chain_id: Annotated[int, Field(ge=0)] = 0
    confirmations: Annotated[int, Field(ge=1, le=10_000)] = 1
    # the first block indexed on an empty database: a number, or "final" (the chain's final block at the first
    # start, recorded so a restart never skips); genesis (0) only when asked for
    start_block: Annotated[int, Field(ge=0)] | Literal["final"] = "final"
    # where a wallet that joins later gets its history from: a block number, "start" (START_BLOCK), or "none"
    wallet_history_from: Annotated[int, Field(ge=0)] | Literal["start", "none"] = "start"
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    tokens: dict[str, str] = Field(default_factory=dict)
    escrow_contract: str | None = None
    # beyond the names (additions, never renames):
    api_key: SecretStr | None = None  # Tron: TRON-PRO-API-KEY, sent to whatever host is configured
    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # a larger answer is an endpoint fault (failover), so a misbehaving endpoint cannot exhaust memory
    max_response_mb: Annotated[int, Field(ge=1, le=4096)] = 64
    max_block_range: Annotated[int, Field(ge=1, le=1_000_000)] = 2000
    # blocks per catch-up commit; the next batch is fetched while one commits, so smaller batches keep the node
    # and the database busy at the same time (eth_getLogs pieces are still sized by max_block_range)
    catchup_batch_blocks: Annotated[int, Field(ge=1, le=1_000_000)] = 500
    # false: only the configured tokens are indexed; on EVM chains this skips reading every block in full
    native_transfers: bool = True
    address_filter_limit: Annotated[int, Field(ge=1, le=100_000)] = 500
    stablecoin_usd_price: Decimal = Decimal("1.00")
    stablecoins: list[str] = Field(default_factory=lambda: ["USDT", "USDC"])
    finality_stall_s: Annotated[float, Field(gt=0)] = 300.0
    # /readyz: the chain is ready while its realtime cursor is at most this many blocks behind the head
    ready_lag_blocks: Annotated[int, Field(ge=0)] = 100
    # failing this long, the chain reports itself degraded (metric, /healthz) while it keeps retrying
    degraded_after_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    # a transaction another service recorded as pending is given up ('dropped') when not mined after this long
    platform_tx_max_age_s: Annotated[float, Field(gt=0)] = 6 * 3600.0

    @field_validator("rpc_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        return [_valid_url(u) for u in urls]


GuardianRule = Literal["large_amount", "new_address", "rapid_transactions", "address_poisoning", "unexpected_outgoing"]
WalletType = Literal["personal", "escrow", "risk_vault", "liquidity_pool", "hot_wallet"]
_RULE_PARAMS: dict[str, tuple[str, ...]] = {
    "large_amount": ("threshold_usd",),
    "new_address": (),
    "rapid_transactions": ("max_transfers", "window_minutes"),
    "address_poisoning": ("dust_usd", "match_chars"),
    "unexpected_outgoing": (),
}


class GuardianRuleSettings(BaseModel):
    """One Guardian rule for a scope (``chains`` / ``wallet_types``, empty = all); the first entry of a rule whose
    scope matches a transfer applies to it, so a narrower entry goes before a broader one."""

    model_config = ConfigDict(extra="forbid")

    rule: GuardianRule
    risk_score: Annotated[Decimal, Field(ge=0, le=100)]
    chains: list[Chain] = Field(default_factory=list)
    wallet_types: list[WalletType] = Field(default_factory=list)
    threshold_usd: Annotated[Decimal, Field(gt=0)] | None = None
    max_transfers: Annotated[int, Field(ge=1, le=100_000)] | None = None
    window_minutes: Annotated[int, Field(ge=1, le=10_080)] | None = None
    dust_usd: Annotated[Decimal, Field(ge=0)] | None = None
    match_chars: Annotated[int, Field(ge=2, le=16)] | None = None
    requires_approval: bool = True

    @model_validator(mode="after")
    def _params(self) -> GuardianRuleSettings:
        needed = _RULE_PARAMS[self.rule]
        missing = [p for p in needed if getattr(self, p) is None]
        if missing:
            raise ValueError(f"rule {self.rule} needs {', '.join(missing)}")
        extra = [p for p in ("threshold_usd", "max_transfers", "window_minutes", "dust_usd", "match_chars")
                 if p not in needed and getattr(self, p) is not None]
        if extra:
            raise ValueError(f"rule {self.rule} takes no {', '.join(extra)}")
        return self


def _default_guardian_rules() -> list[GuardianRuleSettings]:
    return [
        GuardianRuleSettings(rule="large_amount", risk_score=Decimal(60), threshold_usd=Decimal(10_000)),
        GuardianRuleSettings(rule="new_address", risk_score=Decimal(40), wallet_types=["personal"]),
        GuardianRuleSettings(rule="rapid_transactions", risk_score=Decimal(55), max_transfers=5, window_minutes=10),
        GuardianRuleSettings(rule="address_poisoning", risk_score=Decimal(75), dust_usd=Decimal(1), match_chars=4),
        GuardianRuleSettings(rule="unexpected_outgoing", risk_score=Decimal(95),
                             wallet_types=["escrow", "hot_wallet"]),
    ]


class GuardianSettings(BaseModel):
    """The Guardian's risk checks on indexed transfers (README, "Guardian alerts")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # transfers whose block is older than this raise no alert (a history backfill reaching years back)
    max_age_s: Annotated[float, Field(gt=0)] = 86_400.0
    rules: list[GuardianRuleSettings] = Field(default_factory=_default_guardian_rules)


CHAIN_DEFAULTS: dict[Chain, dict[str, Any]] = {
    # Depths where the node serves no finality signal: peers' defaults (reference/chains.md).
    Chain.BSC: {
        "chain_id": 56,
        "confirmations": 30,
        "poll_interval_s": 1.0,
        "tokens": {
            "USDT": "0x55d398326f99059fF775485246999027B3197955",
            "USDC": "0x8AC76a51cc950d9822D68b83fE1Ad97B32Cd580d",
        },
    },
    Chain.POLYGON: {
        "chain_id": 137,
        "confirmations": 200,
        "poll_interval_s": 2.0,
        "tokens": {
            "USDT": "0xc2132D05D31c914a87C6611C10748AEb04B58e8F",
            "USDC": "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359",
        },
    },
    Chain.TRON: {
        "chain_id": 0,
        "confirmations": 19,
        "poll_interval_s": 3.0,
        "tokens": {"USDT": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"},
    },
}


def _chain_field(chain: Chain) -> Any:
    return Field(default_factory=lambda: ChainSettings(**CHAIN_DEFAULTS[chain]))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    database_url: SecretStr | None = None
    bsc: ChainSettings = _chain_field(Chain.BSC)
    polygon: ChainSettings = _chain_field(Chain.POLYGON)
    tron: ChainSettings = _chain_field(Chain.TRON)
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9108
    log_format: Literal["json", "text"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # ``migrate`` gives the daemon's least-privilege role (citadel_indexer) this login password when set
    indexer_db_password: SecretStr | None = None
    guardian: GuardianSettings = Field(default_factory=GuardianSettings)
    # this replica's name in writer_leases, /healthz and logs (default: host:pid)
    replica_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    # the writer lease's session is checked this often and must answer within the timeout, else the replica stops
    # writing at once and stands by; a standby replica tries to take the lease this often
    writer_heartbeat_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    writer_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0

    # the TOML path is passed through this class attribute by load_settings (pydantic-settings reads it in
    # settings_customise_sources, which has no other channel)
    _toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _merge_chain_defaults(cls, data: Any) -> Any:
        """A partial chain section (only ``enabled`` and ``rpc_urls``, say) keeps the chain's other defaults."""
        if isinstance(data, dict):
            for chain in Chain:
                section = data.get(chain.value)
                if isinstance(section, dict):
                    data[chain.value] = {**CHAIN_DEFAULTS[chain], **section}
        return data

    @model_validator(mode="after")
    def _check_chains(self) -> Settings:
        for chain in Chain:
            cfg: ChainSettings = getattr(self, chain.value)
            checker = _valid_tron_address if chain is Chain.TRON else _valid_evm_address
            for symbol, address in cfg.tokens.items():
                try:
                    checker(address)
                except ValueError as exc:
                    raise ValueError(f"{chain.value}.tokens.{symbol}: {exc}") from None
            if cfg.escrow_contract is not None:
                try:
                    checker(cfg.escrow_contract)
                except ValueError as exc:
                    raise ValueError(f"{chain.value}.escrow_contract: {exc}") from None
            if cfg.enabled and not cfg.rpc_urls:
                raise ValueError(f"{chain.value}.rpc_urls: the chain is enabled but has no RPC URL")
        return self

    def chain(self, chain: Chain) -> ChainSettings:
        result: ChainSettings = getattr(self, chain.value)
        return result

    def enabled_chains(self) -> list[Chain]:
        return [c for c in Chain if self.chain(c).enabled]


def env_name(loc: tuple[str | int, ...]) -> str:
    """``('bsc', 'confirmations')`` → ``CITADEL_BSC__CONFIRMATIONS``."""
    parts = [str(p) for p in loc if not str(p).isdigit()]
    return ENV_PREFIX + "__".join(p.upper() for p in parts)


def _unknown_sections(environ: dict[str, str]) -> list[str]:
    """Nested variables naming a section that does not exist (``CITADEL_SOLANA__ENABLED``)."""
    known = {c.value.upper() for c in Chain} | {"GUARDIAN"}
    bad = []
    for key in environ:
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and "__" in upper[len(ENV_PREFIX) :]:
            section = upper[len(ENV_PREFIX) :].split("__", 1)[0]
            if section not in known:
                bad.append(key)
    return sorted(bad)


def load_settings(config_path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read and validate the settings, or raise :class:`ConfigError` with one line naming the bad setting."""
    env = dict(os.environ if environ is None else environ)
    for key in _unknown_sections(env):
        section = key[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        raise ConfigError(f"{key}: unknown chain {section!r} (known: bsc, polygon, tron)")
    path = config_path or env.get(CONFIG_FILE_ENV)
    toml_path: Path | None = None
    if path:
        toml_path = Path(path)
        if not toml_path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV} / --config: no such file: {toml_path}")
    Settings._toml_path = toml_path
    saved = dict(os.environ)
    try:
        if environ is not None:
            os.environ.clear()
            os.environ.update(environ)
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:  # a complex value (JSON list/object) that does not parse
        match = re.search(r'field "(\w+)"', str(exc))
        field = (ENV_PREFIX + match.group(1).upper()) if match else "a CITADEL_ setting"
        raise ConfigError(f"{field}: a value is not valid JSON (lists and objects are given as JSON)") from None
    except (ValueError, OSError) as exc:  # TOML syntax errors, unreadable files
        raise ConfigError(f"configuration file {toml_path}: {type(exc).__name__}: {exc}") from None
    finally:
        if environ is not None:
            os.environ.clear()
            os.environ.update(saved)
        Settings._toml_path = None


def _describe(exc: ValidationError) -> str:
    """One line per the first error: the setting's name and what is wrong, never the offending value."""
    err = exc.errors(include_input=False, include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    message = str(err.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if err.get("type") == "extra_forbidden" and loc:
        if len(loc) == 1:
            return f"{env_name(loc)}: unknown setting"
        return f"{env_name(loc)}: unknown setting for chain {loc[0]!s}"
    if not loc and ": " in message:
        # model-level checks say "bsc.tokens.USDT: reason"
        where, _, reason = message.partition(": ")
        return f"{env_name(tuple(where.split('.')))}: {reason}"
    return f"{env_name(loc)}: {message}"
