"""``citadel-indexer`` (also ``python -m indexer``).

    citadel-indexer [--config PATH] migrate [--status] [--lock-timeout-s N]
    citadel-indexer [--config PATH] run
    citadel-indexer [--config PATH] backfill --chain CHAIN --from-block N --to-block M
    citadel-indexer demo                       the embedded local stack (PostgreSQL, anvil, Tron simulator);
                                               a development tool: an editable install of a checkout only

Exit codes: 0 done, 1 runtime failure, 2 bad configuration or usage (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
from pydantic import SecretStr

from chains.base import Chain, ChainError
from indexer.config import ConfigError, Settings, load_settings
from indexer.logs import setup_logging

if TYPE_CHECKING:
    from indexer.sync.backfill import Progress

log = logging.getLogger("citadel.cli")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _chain_list(value: str) -> list[Chain]:
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    known = {c.value for c in Chain}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown chain {', '.join(bad) or '(none)'} (known: bsc, polygon, tron)")
    return [Chain(n) for n in names]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citadel-indexer", description="Citadel chain indexer")
    parser.add_argument("--config", metavar="PATH", help="TOML settings file (else $CITADEL_CONFIG); env wins")
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("--status", action="store_true", help="list migrations and whether they are applied")
    migrate.add_argument("--lock-timeout-s", type=_lock_timeout, default=None, metavar="N",
                         help="give up a migration that waits more than N s for a table lock, so it never queues "
                              "live traffic behind it (default 5; 0 waits as long as it takes)")
    run = sub.add_parser("run", help="run the indexer daemon")
    run.add_argument("--chains", type=_chain_list, default=None, metavar="CHAIN,...",
                     help="follow only these of the enabled chains (e.g. bsc,tron)")
    status = sub.add_parser("status", help="each chain's writer, head, cursor, lag, rows and backfills")
    status.add_argument("--json", action="store_true", help="JSON with stable keys instead of a table")
    backfill = sub.add_parser("backfill", help="re-index a range of final blocks for every active wallet")
    backfill.add_argument("--chain", required=True, choices=[c.value for c in Chain])
    backfill.add_argument("--from-block", type=int, required=True)
    backfill.add_argument("--to-block", type=int, required=True)
    backfill.add_argument("--wallet", action="append", default=None, metavar="ADDRESS",
                          help="only this wallet's history (repeat for several); default: every active wallet")
    demo = sub.add_parser("demo", help="start an embedded local stack and index it live")
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    return parser


def _lock_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds") from None
    if not 0 <= seconds <= 86_400:
        raise argparse.ArgumentTypeError("expected 0 to 86400 seconds")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args.seconds)
        settings = load_settings(args.config)
        setup_logging(settings.log_format, settings.log_level)
        return asyncio.run(_dispatch(args, settings))
    except ConfigError as exc:
        print(f"citadel-indexer: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _demo(seconds: float | None) -> int:
    """The demo is a development tool (citadel_devtools/): only an editable install of a checkout has it."""
    try:
        from citadel_devtools.demo import run_demo
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in ("citadel_devtools", "eth_abi"):
            raise
        print("citadel-indexer: demo: the development tools are not installed (they are not part of a release): "
              "in a checkout of citadel-indexer, run `make install` or `pip install -e '.[demo]'`", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging("text", "INFO")
    return asyncio.run(run_demo(seconds))


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from indexer.app import StartupError, database_url

    try:
        if args.command == "migrate":
            return await _migrate(database_url(settings), args.status, args.lock_timeout_s,
                                  settings.indexer_db_password)
        if args.command == "run":
            from indexer.app import Daemon

            if args.chains:
                not_enabled = [c for c in args.chains if not settings.chain(c).enabled]
                if not_enabled:
                    names = ", ".join(f"CITADEL_{c.name}__ENABLED" for c in not_enabled)
                    print(f"citadel-indexer: --chains names a chain that is not enabled ({names} is false)",
                          file=sys.stderr)
                    return EXIT_CONFIG
                for chain in Chain:
                    if chain not in args.chains:
                        settings.chain(chain).enabled = False
            return await Daemon(settings).run()
        if args.command == "status":
            return await _status(settings, args.json)
        if args.command == "backfill":
            return await _backfill(settings, Chain(args.chain), args.from_block, args.to_block, args.wallet)
    except StartupError as exc:
        print(f"citadel-indexer: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ChainError as exc:
        print(f"citadel-indexer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    raise AssertionError(args.command)


async def _migrate(dsn: str, status_only: bool, lock_timeout_s: float | None, password: SecretStr | None) -> int:
    from indexer.logs import register_secret
    from indexer.store.migrate import (
        DEFAULT_LOCK_TIMEOUT_S,
        MigrationError,
        apply_migrations,
        migration_status,
    )

    indexer_password = password.get_secret_value() if password is not None else None
    if indexer_password is not None and not indexer_password:
        print("citadel-indexer: configuration error: CITADEL_INDEXER_DB_PASSWORD: empty (unset it to leave "
              "the citadel_indexer role as it is)", file=sys.stderr)
        return EXIT_CONFIG
    register_secret(indexer_password)
    try:
        if status_only:
            for s in await migration_status(dsn):
                state = "pending" if s.applied_at is None else f"applied {s.applied_at:%Y-%m-%d %H:%M:%S%z}"
                flag = "" if s.checksum_ok else "  EDITED SINCE APPLIED"
                print(f"{s.version}  {s.name:<40} {state}{flag}")
            return EXIT_OK
        await apply_migrations(
            dsn,
            lock_timeout_s=DEFAULT_LOCK_TIMEOUT_S if lock_timeout_s is None else lock_timeout_s,
            indexer_password=indexer_password,
        )
    except MigrationError as exc:
        print(f"citadel-indexer: migrate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        from indexer.store.db import describe_dsn

        print(f"citadel-indexer: cannot connect to {describe_dsn(dsn)}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def progress_printer() -> Callable[[Progress], None]:
    """A progress bar on a terminal (tqdm), the same lines otherwise (a log file, a CI job)."""
    if not sys.stderr.isatty():
        return lambda p: print(p.line(), file=sys.stderr, flush=True)
    try:
        tqdm = importlib.import_module("tqdm").tqdm
    except ImportError:
        return lambda p: print(p.line(), file=sys.stderr, flush=True)
    bar: Any = None

    def show(p: Progress) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=p.blocks_total, unit="block", desc=p.stream, file=sys.stderr)
        bar.n = max(p.blocks_done, 0)
        bar.refresh()
        if p.blocks_done >= p.blocks_total:
            bar.close()

    return show


async def _status(settings: Settings, as_json: bool) -> int:
    from indexer.app import database_url
    from indexer.status import collect, exit_code, render

    chains = settings.enabled_chains() or list(Chain)
    try:
        report = await collect(settings, database_url(settings), chains)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"citadel-indexer: status: cannot read the database ({type(exc).__name__})", file=sys.stderr)
        return EXIT_FAILURE
    print(render(report, as_json))
    return exit_code(report)


async def _backfill(settings: Settings, chain: Chain, first: int, last: int, wallets: list[str] | None = None) -> int:
    from indexer.app import run_backfill
    from indexer.sync.backfill import BackfillError

    if not settings.chain(chain).rpc_urls:
        print(f"citadel-indexer: CITADEL_{chain.name}__RPC_URLS: not set", file=sys.stderr)
        return EXIT_CONFIG
    try:
        done = await run_backfill(settings, chain, first, last, progress_printer(),
                                  lambda m: print(m, file=sys.stderr, flush=True), wallets=wallets)
    except BackfillError as exc:
        print(f"citadel-indexer: backfill: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"backfill done: {done.line()}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
