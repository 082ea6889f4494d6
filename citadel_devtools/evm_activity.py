"""Minimal async EVM helpers for the local demo: deploy ``contracts/artifacts/TestToken.json`` and send transfers.

Raw JSON-RPC over aiohttp and eth_abi for encoding, no web3 provider. Transactions go through
``eth_sendTransaction`` from anvil's unlocked default accounts, so no key handling is needed. With interval mining
(``--block-time``) a sent transaction waits in the pool until the next block: :meth:`EvmNode.wait_receipt` polls.

Only the few calls the demo needs; the test suite has its own richer (synchronous) helpers in ``tests/support``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
from eth_abi.abi import encode
from eth_utils.crypto import keccak

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS_DIR = REPO_ROOT / "contracts" / "artifacts"

Json = dict[str, Any]


class EvmRpcError(RuntimeError):
    """The node answered a JSON-RPC error (message includes the method)."""


@cache
def load_artifact(name: str) -> Json:
    """``contracts/artifacts/<name>.json``: ``abi`` and ``bytecode`` (0x hex)."""
    data: Json = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return data


def calldata(signature: str, *args: Any) -> bytes:
    """ABI call data for ``signature`` (``"transfer(address,uint256)"``) applied to ``args`` (no tuple types)."""
    inner = signature.partition("(")[2].rstrip(")")
    types = [t for t in inner.split(",") if t]
    return keccak(text=signature)[:4] + encode(types, list(args))


class EvmNode:
    """One node's JSON-RPC endpoint. Use as ``async with EvmNode(url) as node``."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._id = 0

    async def __aenter__(self) -> EvmNode:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        if self._session is None:
            raise RuntimeError("EvmNode used outside `async with`")
        self._id += 1
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}
        async with self._session.post(self.url, json=body) as resp:
            reply = await resp.json(content_type=None)
        if "error" in reply:
            raise EvmRpcError(f"{method}: {reply['error']}")
        return reply["result"]

    async def accounts(self) -> list[str]:
        """The node's unlocked accounts, lower-case."""
        return [str(a).lower() for a in await self.rpc("eth_accounts")]

    async def block_number(self) -> int:
        return int(str(await self.rpc("eth_blockNumber")), 16)

    async def send(self, sender: str, to: str | None, data: bytes = b"", value: int = 0,
                   gas: int | None = None) -> str:
        """``eth_sendTransaction`` from an unlocked account; returns the tx hash. ``to=None`` creates a contract."""
        tx: Json = {"from": sender, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            tx["to"] = to
        if gas is not None:
            tx["gas"] = hex(gas)
        return str(await self.rpc("eth_sendTransaction", [tx]))

    async def wait_receipt(self, tx_hash: str, timeout_s: float = 15.0) -> Json:
        deadline = time.monotonic() + timeout_s
        while True:
            receipt = await self.rpc("eth_getTransactionReceipt", [tx_hash])
            if isinstance(receipt, dict):
                return receipt
            if time.monotonic() > deadline:
                raise TimeoutError(f"no receipt for {tx_hash} after {timeout_s} s")
            await asyncio.sleep(0.1)

    async def send_deploy(self, sender: str, artifact: str, args: Sequence[Any] = ()) -> str:
        """Send the creation transaction of ``artifact`` with constructor ``args``; returns the tx hash."""
        art = load_artifact(artifact)
        ctor = next((e for e in art["abi"] if e["type"] == "constructor"), None)
        types = [i["type"] for i in ctor["inputs"]] if ctor else []
        code = bytes.fromhex(art["bytecode"][2:]) + encode(types, list(args))
        return await self.send(sender, None, code)

    async def deployed_address(self, tx_hash: str) -> str:
        """Wait for a creation transaction and return the contract address (lower-case)."""
        receipt = await self.wait_receipt(tx_hash)
        if int(str(receipt["status"]), 16) != 1:
            raise EvmRpcError(f"deployment {tx_hash} failed")
        return str(receipt["contractAddress"]).lower()

    # --- TestToken ----------------------------------------------------------------------------------------------

    async def mint(self, token: str, sender: str, to: str, amount: int) -> str:
        return await self.send(sender, token, calldata("mint(address,uint256)", to, amount))

    async def transfer(self, token: str, sender: str, to: str, amount: int) -> str:
        return await self.send(sender, token, calldata("transfer(address,uint256)", to, amount))

    async def batch_transfer(self, token: str, sender: str, recipients: Sequence[str],
                             amounts: Sequence[int]) -> str:
        """One transaction, one ``Transfer`` log per recipient."""
        data = calldata("batchTransfer(address[],uint256[])", list(recipients), list(amounts))
        return await self.send(sender, token, data)

    async def native_transfer(self, sender: str, to: str, value: int) -> str:
        return await self.send(sender, to, value=value)

    async def reorg(self, depth: int) -> None:
        """``anvil_reorg``: replace the last ``depth`` blocks with empty ones (their transactions are dropped)."""
        await self.rpc("anvil_reorg", [depth, []])
