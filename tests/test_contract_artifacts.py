"""The committed contract artifacts must match their sources: a source edited without a rebuild is caught here.

Each build loads and runs solc-js (~2-3 s), so the two builds this module needs run once, side by side, in a module
fixture: ``--check`` of the real tree, and ``--check`` of a damaged copy in a temporary directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = REPO_ROOT / "contracts"
SCRIPT = REPO_ROOT / "scripts" / "build-contracts.js"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (REPO_ROOT / "node_modules" / "solc").exists(),
    reason="node and npm's solc are needed: run `npm ci`",
)

Runs = dict[str, subprocess.CompletedProcess[str]]

EXPECTED = ("CitadelEscrow", "FeeToken", "OddToken", "QuirkToken", "ReentrantToken", "Reverter", "TestToken")

# Opcodes the escrow must not contain so that one source runs on BSC, Polygon and Tron's TVM: those after paris
# (PUSH0, TLOAD, TSTORE, MCOPY, BLOBHASH, BLOBBASEFEE), and those TVM lacks or gives another meaning (BASEFEE: the
# energy price; DIFFICULTY/PREVRANDAO and GASLIMIT: 0; CHAINID and SELFBALANCE: missing on older TVM versions;
# TIMESTAMP; CREATE/CREATE2: other addresses; SELFDESTRUCT).
TVM_UNSAFE = {0x5F: "PUSH0", 0x5C: "TLOAD", 0x5D: "TSTORE", 0x5E: "MCOPY", 0x49: "BLOBHASH", 0x4A: "BLOBBASEFEE",
              0x48: "BASEFEE", 0x44: "PREVRANDAO", 0x45: "GASLIMIT", 0x46: "CHAINID", 0x47: "SELFBALANCE",
              0x42: "TIMESTAMP", 0xF0: "CREATE", 0xF5: "CREATE2", 0xFF: "SELFDESTRUCT"}


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(SCRIPT), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    # A copy of contracts/ elsewhere, damaged four ways; Reverter is left alone and must still match, which shows
    # the artifacts do not depend on the directory they are built in.
    copy = tmp_path_factory.mktemp("elsewhere") / "contracts"
    shutil.copytree(CONTRACTS, copy)
    token = copy / "TestToken.sol"
    token.write_text(token.read_text().replace("++i", "i++"))  # code edit
    with (copy / "OddToken.sol").open("a") as f:
        f.write("// a comment changes the source hash and the metadata hash\n")
    (copy / "Extra.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.30;\ncontract Extra { uint256 public x; }\n"
    )
    (copy / "artifacts" / "Gone.json").write_text("{}\n")

    with ThreadPoolExecutor(2) as pool:
        real = pool.submit(build, "--check")
        damaged = pool.submit(build, "--check", "--contracts-dir", str(copy))
        return {"real": real.result(), "damaged": damaged.result()}


def test_committed_artifacts_match_sources(runs: Runs) -> None:
    assert runs["real"].returncode == 0, runs["real"].stderr


def test_every_source_has_its_artifact() -> None:
    sources = {p.stem for p in CONTRACTS.glob("*.sol")}
    artifacts = {p.stem for p in (CONTRACTS / "artifacts").glob("*.json")}
    assert set(EXPECTED) <= sources <= artifacts
    for name in artifacts:
        artifact = json.loads((CONTRACTS / "artifacts" / f"{name}.json").read_text())
        assert sorted(artifact) == ["abi", "bytecode", "compiler", "contractName", "sourceSha256"]
        assert artifact["contractName"] == name
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
        assert artifact["compiler"]["evmVersion"] == "paris"


def test_edited_sources_and_artifacts_are_detected(runs: Runs) -> None:
    result = runs["damaged"]
    assert result.returncode == 1, result.stderr
    assert "stale: TestToken.json" in result.stderr  # code edit
    assert "stale: OddToken.json" in result.stderr  # comment-only edit
    assert "missing: Extra.json" in result.stderr  # new source, never built
    assert "orphaned: Gone.json" in result.stderr  # artifact without a source
    assert "Reverter" not in result.stderr  # untouched, built in another directory: identical bytes


def opcodes(bytecode: str) -> list[int]:
    """The instructions of solc's creation code (constructor, then runtime), by a linear sweep that steps over PUSH
    data; the CBOR metadata at the end (its length in the last two bytes) is data, not code."""
    code = bytes.fromhex(bytecode.removeprefix("0x"))
    end = len(code) - 2 - int.from_bytes(code[-2:], "big")
    assert code[end:end + 2] == bytes.fromhex("a264"), "no CBOR metadata where its length says"
    ops, i = [], 0
    while i < end:
        op = code[i]
        ops.append(op)
        i += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)
    assert i == end, "PUSH data runs into the metadata: not a linear solc layout"
    return ops


def test_the_escrow_uses_no_opcode_tvm_lacks() -> None:
    ops = opcodes(json.loads((CONTRACTS / "artifacts" / "CitadelEscrow.json").read_text())["bytecode"])
    assert {0xF1, 0xFA, 0xA3, 0xA4} <= set(ops)  # the sweep sees real code: CALL, STATICCALL, LOG3, LOG4
    assert sorted(TVM_UNSAFE[op] for op in set(ops) & TVM_UNSAFE.keys()) == []


def test_the_opcode_sweep_finds_push0_and_steps_over_push_data() -> None:
    # PUSH1 0x5f (data, not PUSH0), PUSH0, STOP; then metadata "a264" + 2 bytes of padding, length 4
    assert opcodes("0x605f5f00" + "a264" + "0000" + "0004") == [0x60, 0x5F, 0x00]
