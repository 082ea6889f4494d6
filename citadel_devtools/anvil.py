"""anvil (Foundry's local EVM node), installed from npm by ``package.json``, started on a free port.

The npm package ``@foundry-rs/anvil`` puts a Node wrapper in ``node_modules/.bin/anvil`` and the real binary in
``node_modules/@foundry-rs/anvil-<platform>/bin/anvil``; the binary is started directly so that its PID is ours to stop.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from citadel_devtools.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


class AnvilNotInstalled(RuntimeError):
    pass


def anvil_binary() -> Path:
    override = os.environ.get("CITADEL_ANVIL_BIN")
    if override:
        return Path(override)
    machine = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    system = platform.system().lower()
    path = REPO_ROOT / "node_modules" / "@foundry-rs" / f"anvil-{system}-{machine}" / "bin" / "anvil"
    if not path.exists():
        raise AnvilNotInstalled(f"anvil not found at {path}: run `npm ci` in {REPO_ROOT}")
    return path


@dataclass
class Anvil:
    """A running anvil. ``url`` is its HTTP JSON-RPC endpoint."""

    chain_id: int
    port: int
    process: subprocess.Popen[bytes]
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def rpc(self, method: str, params: list[object] | None = None) -> object:
        """A synchronous JSON-RPC call, for test set-up."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            reply = json.loads(resp.read())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None and not self.process.stderr.closed:
            self.process.stderr.close()


def _die_with_parent() -> None:
    """Linux: the node gets SIGTERM when the process that started it dies, even by SIGKILL (no orphaned nodes)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_anvil(chain_id: int, *, block_time_s: float | None = None, extra_args: list[str] | None = None) -> Anvil:
    """Start anvil with ``chain_id`` on a free port and wait until it answers ``eth_chainId``."""
    binary = anvil_binary()
    for _attempt in range(3):
        port = free_port()
        args = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(chain_id), "--silent"]
        if block_time_s is not None:
            args += ["--block-time", str(block_time_s)]
        args += extra_args or []
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=_die_with_parent if platform.system() == "Linux" else None)
        node = Anvil(chain_id=chain_id, port=port, process=proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break  # port taken between free_port() and bind: try another
            try:
                if int(str(node.rpc("eth_chainId")), 16) == chain_id:
                    return node
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        node.stop()
    raise RuntimeError(f"anvil did not start (chain id {chain_id})")
