"""``citadel-indexer demo`` end to end, as a newcomer runs it: ``python -m indexer demo --seconds 25``.

The demo starts its own PostgreSQL 16 (``CITADEL_DATABASE_URL`` is removed from its environment; starting one
takes about a second). To run it against an existing server instead, set ``CITADEL_DEMO_TEST_DATABASE_URL`` to a
server URL whose role has CREATEDB: the demo then creates a throwaway ``citadel_demo_*`` database there and drops it.

Checked: exit code 0, rows indexed on all three chains in the final summary, the bsc reorg and the Tron fork
reported by the daemon, no traceback, and nothing the demo started (anvil, postgres) still running afterwards.
About 35 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
DEMO_SECONDS = 25
SERVER_URL_ENV = "CITADEL_DEMO_TEST_DATABASE_URL"

SUMMARY_ROW = re.compile(
    r"^(?P<chain>bsc|polygon|tron)\s+(?P<status>\S+)\s+(?P<head>\d+)\s+(?P<cursor>\d+)\s+(?P<final>-|\d+)"
    r"\s+(?P<rows>\d+)\s+(?P<confirmed>\d+)\s+(?P<pending>\d+)\s+(?P<failed>\d+)\s+(?P<reorgs>\d+)$",
    re.MULTILINE,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def test_demo_runs_indexes_all_chains_and_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CITADEL_DATABASE_URL"}
    server = os.environ.get(SERVER_URL_ENV, "").strip()
    if server:
        env["CITADEL_DATABASE_URL"] = server
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "indexer", "demo", "--seconds", str(DEMO_SECONDS)],
            cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True,
        )
        try:
            code = proc.wait(timeout=DEMO_SECONDS + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"the demo did not stop on its own; stdout:\n{out_path.read_text()}")
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    context = f"\n--- stdout\n{stdout}\n--- stderr\n{stderr}"

    assert code == 0, context
    assert "Traceback" not in stdout + stderr, context
    assert "citadel demo: everything stopped" in stdout, context

    final = stdout.rsplit("· final ·", 1)
    assert len(final) == 2, "no final summary" + context
    rows = {m["chain"]: m for m in SUMMARY_ROW.finditer(final[1])}
    assert set(rows) == {"bsc", "polygon", "tron"}, context
    for chain, row in rows.items():
        assert int(row["rows"]) > 0, f"no rows indexed on {chain}" + context
        assert int(row["cursor"]) > 0, context
    assert int(rows["bsc"]["confirmed"]) > 0, context  # anvil's finalized tag moves within the run
    assert re.search(r"WARNING\s+citadel\.watcher: reorg chain=bsc", stderr), context
    assert re.search(r"WARNING\s+citadel\.watcher: reorg chain=tron", stderr), context

    pids = [int(p) for p in re.findall(r"^\s+(?:anvil \w+|PostgreSQL \S+)\s.*?\bpid (\d+)", stdout, re.MULTILINE)]
    assert len(pids) == (2 if server else 3), context
    assert not [p for p in pids if _alive(p)], f"still running: {pids}" + context
    data_dir = re.search(r"\bdata (\S+) \(throwaway\)", stdout)
    if not server:
        assert data_dir is not None, context
        assert not Path(data_dir[1]).exists(), context
        leftovers = subprocess.run(["pgrep", "-f", data_dir[1]], capture_output=True, text=True, check=False)
        assert leftovers.stdout.strip() == "", f"postgres still running: {leftovers.stdout}" + context
