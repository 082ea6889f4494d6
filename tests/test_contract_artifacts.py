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
    assert {"TestToken", "OddToken", "Reverter"} <= sources <= artifacts
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
