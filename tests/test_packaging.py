"""A real install: the lock files, and the wheel installed the way the Docker image installs it.

Fast checks (no network): requirements.lock pins every runtime dependency of pyproject.toml, and everything they
need, exactly and with hashes, and nothing else; requirements-build.lock pins the build system; the migrations live
where the package ships them.

``test_wheel_installed_from_the_lock_migrates_and_indexes`` (slow) does what the Dockerfile's build stage does, in
fresh virtual environments: the build tools from requirements-build.lock build the wheel from the Docker build
context's sources alone, the runtime dependencies come from requirements.lock (hashes required, wheels only, no
resolution), the wheel goes on top and ``pip check`` must find nothing missing. Then that environment's
``citadel-indexer`` migrates a fresh database and its daemon indexes an anvil chain. The wheels are fetched once
into build/wheelhouse (from the package index, without the machine's pip configuration, as a Docker build would);
later runs install from there offline.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from indexer.app import close_pool
from indexer.store.migrate import load_migrations
from tests.support import evm
from tests.support.daemon import Daemon, busy_bsc, cursor, daemon_env
from tests.support.sync import actual_rows, eventually, expected_evm_rows, open_pool

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK = REPO / "requirements.lock"
BUILD_LOCK = REPO / "requirements-build.lock"
MIGRATIONS = REPO / "indexer" / "migrations"
WHEELHOUSE = REPO / "build" / "wheelhouse"
# what the Dockerfile copies into its build stage: the image is built from these and nothing else
BUILD_SOURCES = ("pyproject.toml", "README.md", "indexer", "chains")
# imported by tests and development tools only: never a runtime dependency
DEV_ONLY = ("web3", "tronpy", "coincurve", "eth-abi", "pgserver", "pytest", "hypothesis", "pip-tools")

DbFactory = Callable[[str], Awaitable[str]]


# ------------------------------------------------------------------------------------------------------ lock files


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: frozenset[str]


def read_lock(path: Path) -> dict[str, Pin]:
    """``name==version --hash=sha256:...`` entries of a pip-compile file, by canonical name. Any other kind of
    line (a range, an URL, an entry without a hash) fails: pip would not install it with --require-hashes."""
    pins: dict[str, Pin] = {}
    joined = re.sub(r"\\\n\s*", " ", path.read_text())
    for raw in joined.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert match, f"{path.name}: not an exact pin with hashes: {line[:120]}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = Pin(Version(match[2]), frozenset(re.findall(r"sha256:([0-9a-f]{64})", match[3])))
    return pins


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**default_environment(), "extra": extra}) for extra in (extras or {""}))


def test_lock_pins_every_runtime_dependency_exactly() -> None:
    pins = read_lock(LOCK)
    for text in PYPROJECT["project"]["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock lacks {req.name}: run `make lock`"
        assert req.specifier.contains(pins[name].version, prereleases=True), \
            f"requirements.lock pins {name}=={pins[name].version}, outside {req}: run `make lock`"
    leaked = sorted(set(pins) & {canonicalize_name(n) for n in DEV_ONLY})
    assert not leaked, f"development-only packages in requirements.lock: {leaked}"


def test_lock_is_exactly_the_runtime_dependency_closure() -> None:
    """Walks the requirements from pyproject's dependencies through each locked package's own metadata (installed
    here at the locked version: `make install` constrains the dev environment to the lock): everything reached is
    locked at an allowed version, and the lock holds nothing unreached (a dependency dropped from pyproject leaves
    no stale pin behind)."""
    pins = read_lock(LOCK)
    reached: set[str] = set()
    todo = [(Requirement(text), "pyproject.toml") for text in PYPROJECT["project"]["dependencies"]]
    while todo:
        req, parent = todo.pop()
        if not _applies(req, set()):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{parent} requires {req}, which requirements.lock lacks: run `make lock`"
        assert req.specifier.contains(pins[name].version, prereleases=True), \
            f"{parent} requires {req}; requirements.lock pins {pins[name].version}: run `make lock`"
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in reached:
            continue
        reached.add(key)
        installed = importlib.metadata.version(name)
        assert Version(installed) == pins[name].version, \
            f"{name} {installed} is installed here, the lock pins {pins[name].version}: run `make install`"
        for text in importlib.metadata.requires(name) or []:
            sub = Requirement(text)
            if _applies(sub, set(req.extras)):
                todo.append((Requirement(str(sub).split(";")[0]), f"{name} {installed}"))
    names = {key.split("[")[0] for key in reached}
    assert sorted(set(pins) - names) == [], "requirements.lock pins packages nothing requires: run `make lock`"


def test_build_lock_pins_the_build_system() -> None:
    pins = read_lock(BUILD_LOCK)
    for text in PYPROJECT["build-system"]["requires"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name].version), \
            f"requirements-build.lock does not satisfy {req}: run `make lock`"


def test_migrations_live_in_the_package_only() -> None:
    """`migrate` reads indexer/migrations (package data); a file left in a top-level migrations/ would never run."""
    stray = sorted(p.name for p in (REPO / "migrations").glob("*.sql"))
    assert not stray, f"migrations/ holds {stray}: migrations belong in indexer/migrations"
    assert len(load_migrations(MIGRATIONS)) >= 18


def test_the_editable_checkout_has_the_development_tools(tmp_path: Path) -> None:
    """`make install` (an editable install) makes `citadel-indexer demo` and the test tools importable from
    anywhere, not only from the checkout's directory; a wheel never has them (the slow test below)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([sys.executable, "-c", "import citadel_devtools.demo, indexer; print(indexer.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(REPO / "indexer" / "__init__.py")


# ------------------------------------------------------------------------------------------------------ a real install


def _pip_env() -> dict[str, str]:
    """The environment of the pip runs: no machine-local wheel directories or extra indexes from pip
    configuration (a Docker build has none), no CITADEL_ settings, no PYTHONPATH."""
    drop = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT", "PIP_REQUIRE_VIRTUALENV",
            "PYTHONPATH", "PIP_CONFIG_FILE")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CITADEL_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env if env is not None else _pip_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{' '.join(result.args)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result.stdout


def _pip(*args: str, cwd: Path) -> str:
    """The development environment's pip, acting on another interpreter with --python where given."""
    return _ok(_run([sys.executable, "-m", "pip", *args], cwd=cwd))


def _wheelhouse_complete() -> bool:
    have = {(canonicalize_name(p.name.split("-")[0]), Version(p.name.split("-")[1])) for p in WHEELHOUSE.glob("*.whl")}
    return all((name, pin.version) in have for lock in (LOCK, BUILD_LOCK) for name, pin in read_lock(lock).items())


def _fill_wheelhouse(tmp: Path) -> None:
    """The locked wheels for this interpreter and platform, checked against the lock's hashes, into build/wheelhouse
    (files moved in only once complete, so a run interrupted half-way leaves nothing half-written)."""
    if _wheelhouse_complete():
        return
    staging = tmp / "download"
    _pip("download", "--quiet", "--require-hashes", "--no-deps", "--only-binary=:all:", "--dest", str(staging),
         "-r", str(LOCK), "-r", str(BUILD_LOCK), cwd=tmp)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    for wheel in staging.glob("*.whl"):
        os.replace(wheel, WHEELHOUSE / wheel.name)
    assert _wheelhouse_complete()


def _offline(*args: str) -> list[str]:
    return ["--no-index", "--find-links", str(WHEELHOUSE), *args]


class InstalledDaemon(Daemon):
    """The installed environment's own ``citadel-indexer run``, started outside the checkout."""

    def __init__(self, executable: Path, env: dict[str, str], log_path: Path, cwd: Path) -> None:
        super().__init__(env, log_path)
        self.executable, self.cwd = executable, cwd

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([str(self.executable), "run"], env=self.env, stdout=log, stderr=log,
                                         cwd=self.cwd)


@pytest.mark.slow
async def test_wheel_installed_from_the_lock_migrates_and_indexes(
    tmp_path: Path, pg_server_dsn: str, fresh_db_factory: DbFactory, anvil_factory: Any, daemons: list[Daemon]
) -> None:
    await asyncio.to_thread(_fill_wheelhouse, tmp_path)

    # the wheel, built from the Docker build context's sources only, with the locked build tools
    src = tmp_path / "src"
    for name in BUILD_SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(origin, src / name)
    builder, venv, dist = tmp_path / "builder", tmp_path / "venv", tmp_path / "dist"
    for env_dir in (builder, venv):
        _ok(_run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=tmp_path))

    def build_and_install() -> None:
        _pip("--python", str(builder / "bin" / "python"), "install", "--quiet", "--no-compile", "--require-hashes", "--no-deps",
             *_offline("-r", str(BUILD_LOCK)), cwd=tmp_path)
        _pip("--python", str(builder / "bin" / "python"), "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(dist), str(src), cwd=tmp_path)
        _pip("--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-compile", "--require-hashes", "--no-deps",
             "--only-binary=:all:", *_offline("-r", str(LOCK)), cwd=tmp_path)
        (wheel,) = dist.glob("citadel_indexer-*.whl")
        _pip("--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-compile", "--no-deps", *_offline(str(wheel)),
             cwd=tmp_path)

    await asyncio.to_thread(build_and_install)
    (wheel,) = dist.glob("citadel_indexer-*.whl")
    # nothing is missing: every requirement of the package and of every locked package is installed
    assert "No broken requirements found" in await asyncio.to_thread(
        _pip, "--python", str(venv / "bin" / "python"), "check", cwd=tmp_path)

    # the wheel holds the production packages and the migrations, byte for byte (the checksums migrate records)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert {n.split("/")[0] for n in names} == {"indexer", "chains", wheel.name.split("-py3")[0] + ".dist-info"}
        shipped = {n.rsplit("/", 1)[1]: archive.read(n) for n in names if n.startswith("indexer/migrations/")}
    assert shipped == {p.name: p.read_bytes() for p in MIGRATIONS.glob("*.sql")}

    # the environment holds exactly the lock and the package: no test or development tool came along
    listed = _pip("--python", str(venv / "bin" / "python"), "list", "--format=freeze", cwd=tmp_path)
    installed = {canonicalize_name(line.split("==")[0]) for line in listed.split()}
    assert installed == set(read_lock(LOCK)) | {"citadel-indexer"}

    run_env = _pip_env()
    cli = venv / "bin" / "citadel-indexer"
    where = _ok(_run([str(venv / "bin" / "python"), "-c", "import indexer; print(indexer.__file__)"], cwd=tmp_path,
                     env=run_env))
    assert where.startswith(str(venv)), where  # the installed package, not the checkout
    demo = _run([str(cli), "demo"], cwd=tmp_path, env=run_env)
    assert demo.returncode == 2 and demo.stdout == ""
    (line,) = demo.stderr.strip().splitlines()  # one line, no traceback
    assert "development tools are not installed" in line and "pip install -e '.[demo]'" in line

    # migrate: a fresh database gets every migration of the checkout, none flagged as edited
    url = await fresh_db_factory(pg_server_dsn)
    db_env = {**run_env, "CITADEL_DATABASE_URL": url}
    first = await asyncio.to_thread(_run, [str(cli), "migrate"], cwd=tmp_path, env=db_env)
    assert first.returncode == 0, first.stderr
    versions = [m.version for m in load_migrations(MIGRATIONS)]
    status = await asyncio.to_thread(_run, [str(cli), "migrate", "--status"], cwd=tmp_path, env=db_env)
    assert status.returncode == 0, status.stderr
    rows = status.stdout.strip().splitlines()
    assert [r.split()[0] for r in rows] == versions
    assert all(" applied " in r and "EDITED" not in r for r in rows), status.stdout

    # run: the installed daemon indexes an anvil chain's token history to its head, then stops cleanly on SIGTERM
    pool = await open_pool(url)
    try:
        anvil = anvil_factory(56)
        token, wallets = await busy_bsc(anvil, pool, known=2, blocks=12)
        env = daemon_env(url, anvil, {"USDT": token})
        env.pop("PYTHONPATH", None)
        daemon = InstalledDaemon(cli, env, tmp_path / "daemon.log", tmp_path)
        daemons.append(daemon)
        daemon.start()
        head = evm.block_number(anvil)

        async def indexed_to_head() -> bool:
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log_text()
            return await cursor(pool) >= head

        await eventually(indexed_to_head, timeout_s=60)
        assert daemon.stop() == 0, daemon.log_text()  # SIGTERM, as an operator stops it
        done = await cursor(pool)
        expected = expected_evm_rows(anvil, wallets, [token], 0, done)
        assert len(expected) >= 12
        assert await actual_rows(pool, "bsc") == expected
        assert "SECRETKEY42" not in daemon.log_text()  # the RPC URL's key stays out of the log
    finally:
        await close_pool(pool)
