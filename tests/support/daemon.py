"""The daemon as an operator runs it, for end-to-end tests: ``python -m indexer run`` as a subprocess with a given
environment, killed with SIGKILL or stopped with SIGTERM, its log kept in a file; and the busy BSC history those
tests index. The ``daemons`` fixture (tests/fixtures/processes.py) kills whatever a test left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

from citadel_devtools.anvil import Anvil
from tests.support import evm
from tests.support.sync import KnownWallet, add_wallet

REPO = Path(__file__).resolve().parents[2]


class Daemon:
    """``python -m indexer run`` with a given environment; stderr kept in a file for the assertions."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "indexer", "run", *self.args], env=self.env, stdout=log,
                                     stderr=log, cwd=REPO)
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def daemon_env(db_url: str, anvil: Anvil, tokens: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITADEL_")}
    env.update({
        "CITADEL_DATABASE_URL": db_url,
        "CITADEL_BSC__ENABLED": "true",
        "CITADEL_BSC__START_BLOCK": "0",  # these tests index a history from genesis
        "CITADEL_BSC__RPC_URLS": json.dumps([anvil.url + "/?apikey=SECRETKEY42"]),
        "CITADEL_BSC__CHAIN_ID": str(anvil.chain_id),
        "CITADEL_BSC__TOKENS": json.dumps(tokens),
        "CITADEL_BSC__POLL_INTERVAL_S": "0.1",
        "CITADEL_BSC__CONFIRMATIONS": "5",
        "CITADEL_METRICS_PORT": "0",
        "CITADEL_LOG_FORMAT": "json",
    })
    env.update(extra)
    return env


async def cursor(pool: asyncpg.Pool) -> int:
    value = await pool.fetchval("SELECT block_number FROM sync_cursors WHERE chain = 'bsc' AND stream = 'realtime'")
    return -1 if value is None else int(value)


def busy_history(anvil: Anvil, wallets: list[KnownWallet], token: str, blocks: int) -> None:
    """A transfer touching a known wallet in almost every block."""
    accounts = evm.accounts(anvil)
    for i in range(blocks):
        sender = accounts[8] if i % 3 else wallets[i % len(wallets)].address
        to = wallets[(i + 1) % len(wallets)].address if i % 3 else accounts[9]
        evm.token_transfer(anvil, token, sender, to, i + 1)


async def busy_bsc(anvil: Anvil, pool: asyncpg.Pool, known: int, blocks: int) -> tuple[str, list[KnownWallet]]:
    """A USDT token, ``known`` registered wallets (accounts 1..known), funds for them and for an outside sender,
    then ``busy_history`` over ``blocks`` blocks. Returns the token and the wallets."""
    accounts = evm.accounts(anvil)
    token = evm.deploy_token(anvil, 18, "USDT")
    wallets = [await add_wallet(pool, "bsc", evm.to_checksum(a)) for a in accounts[1 : 1 + known]]
    for a in [*accounts[1 : 1 + known], accounts[8]]:
        evm.token_mint(anvil, token, accounts[0], a, 10**24)
    busy_history(anvil, wallets, token, blocks)
    return token, wallets




def http_get(port: int, path: str) -> tuple[int, str]:
    """GET ``http://127.0.0.1:<port><path>``: (status, body), an HTTP error status included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def health(port: int) -> dict[str, Any]:
    status, body = http_get(port, "/healthz")
    result: dict[str, Any] = json.loads(body)
    return result
