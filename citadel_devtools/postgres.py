"""A throwaway PostgreSQL server in a temporary directory, for tests and the local demo.

Two sources of binaries:

* ``"16"``: PostgreSQL 16.2 bundled in the ``pgserver`` wheel (``pgserver/pginstall/bin``). Its Python wrapper is
  not used (it changes directory modes and creates its own user); its ``initdb`` and ``pg_ctl`` are driven directly.
* ``"15"``: the machine's Debian PostgreSQL 15 in ``/usr/lib/postgresql/15/bin``.

``initdb`` refuses to run as root, so when this process is root the server binaries run as an unprivileged
system user ``citadelpg`` (created if missing) through ``runuser``. Only binaries run as that user, never Python:
the pyenv interpreter under /root is not readable by other users.

The server listens on 127.0.0.1 on a free port with trust authentication and ``fsync=off``, its data directory in
/dev/shm when available (``CITADEL_PG_TMPDIR`` overrides): never for real data.
Every server started here is stopped at interpreter exit (``atexit``) even if the caller forgets.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from citadel_devtools.ports import free_port

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
RUN_AS_USER = "citadelpg"
SUPERUSER = "postgres"
DATABASE_URL_ENV = "CITADEL_DATABASE_URL"
TMPDIR_ENV = "CITADEL_PG_TMPDIR"

_running: list[LocalPostgres] = []
_lock = threading.Lock()


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL binaries were found, or the server did not start."""


def database_url_from_env() -> str | None:
    """The database URL from ``CITADEL_DATABASE_URL``, or None when unset or empty."""
    value = os.environ.get(DATABASE_URL_ENV, "").strip()
    return value or None


def pgserver_bin_dir() -> Path | None:
    """``pginstall/bin`` of the installed ``pgserver`` wheel (PostgreSQL 16), located without importing it."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


def bin_dir_for(version: Literal["16", "15"]) -> Path | None:
    if version == "16":
        return pgserver_bin_dir()
    if (PG15_BIN / "initdb").exists() and (PG15_BIN / "pg_ctl").exists():
        return PG15_BIN
    return None


@dataclass
class LocalPostgres:
    """A running throwaway server. ``dsn`` connects as the superuser ``postgres`` to database ``postgres``."""

    version: str
    bin_dir: Path
    base_dir: Path
    port: int
    run_as: str | None
    dsn: str = field(init=False)
    _stopped: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def binary(self, name: str) -> Path:
        """A client binary (``pg_dump``, ``psql``...) matching the server's version."""
        return self.bin_dir / name

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory. Safe to call twice."""
        with _lock:
            if self._stopped:
                return
            self._stopped = True
            if self in _running:
                _running.remove(self)
        try:
            _run(
                self.run_as,
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "20", "stop"],
                check=False,
            )
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def _run(run_as: str | None, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    name = Path(args[0]).name
    if run_as is not None:
        args = ["runuser", "-u", run_as, "--", *args]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd="/", check=False)
    if check and result.returncode != 0:
        raise PostgresUnavailable(f"{name} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _ensure_run_as_user() -> str | None:
    """None when not root; otherwise the unprivileged user the server runs as (created when missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS_USER)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS_USER],
            capture_output=True, text=True, check=False,
        )
        if result.returncode not in (0, 9):  # 9: created concurrently by another process
            raise PostgresUnavailable(f"cannot create system user {RUN_AS_USER}: {result.stderr.strip()}") from None
    return RUN_AS_USER


def _reachable_bin_dir(bin_dir: Path, run_as: str | None) -> Path:
    """``bin_dir``, or a copy of its install tree the unprivileged user can execute.

    The wheel's binaries live inside the venv, and a venv in a private directory (a mode-700 temporary folder, a
    home directory) cannot be traversed by ``run_as``. The install tree (~35 MB) is then copied once into a shared
    cache (``/var/tmp/citadel-pginstall/<key>``, world-readable), keyed by its source path and modification time.
    """
    if run_as is None:
        return bin_dir
    probe = _run(run_as, ["test", "-x", str(bin_dir / "initdb")], check=False)
    if probe.returncode == 0:
        return bin_dir
    install = bin_dir.parent  # .../site-packages/pgserver/pginstall
    package = install.parent  # .../site-packages/pgserver
    # auditwheel's libraries: the binaries find them at $ORIGIN/../../../pgserver.libs
    libs = package.parent / f"{package.name}.libs"
    key = hashlib.sha256(f"{install.resolve()}:{(bin_dir / 'initdb').stat().st_mtime_ns}".encode()).hexdigest()[:16]
    cache_root = Path(os.environ.get("CITADEL_PG_BIN_CACHE", "/var/tmp/citadel-pginstall"))
    target = cache_root / key
    if not (target / package.name / install.name / bin_dir.name / "initdb").exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        os.chmod(cache_root, 0o755)
        staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache_root))
        tree = staging / "tree"
        shutil.copytree(install, tree / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tree / libs.name, symlinks=True)
        os.chmod(staging, 0o755)
        try:
            tree.rename(target)
        except OSError:  # another process won the race: its copy is as good
            pass
        shutil.rmtree(staging, ignore_errors=True)
    return target / package.name / install.name / bin_dir.name


def _scratch_parent() -> str | None:
    """Where the data directory goes: ``CITADEL_PG_TMPDIR``, else /dev/shm when usable (RAM: CREATE DATABASE is
    ~25x faster than on a disk-backed /tmp, which matters for a database per test), else the system temp dir."""
    override = os.environ.get(TMPDIR_ENV, "").strip()
    if override:
        return override
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return str(shm)
    return None


def _stop_all() -> None:
    for server in list(_running):
        server.stop()


atexit.register(_stop_all)


def start_postgres(prefer: Literal["16", "15"] = "16", *, allow_fallback: bool = True) -> LocalPostgres:
    """Start a throwaway server: PostgreSQL ``prefer`` if its binaries exist, else the other one (unless
    ``allow_fallback`` is False). Raises PostgresUnavailable naming what was looked for."""
    order: list[Literal["16", "15"]] = [prefer]
    if allow_fallback:
        order.append("15" if prefer == "16" else "16")
    bin_dir: Path | None = None
    version: str = prefer
    for candidate in order:
        bin_dir = bin_dir_for(candidate)
        if bin_dir is not None:
            version = candidate
            break
    if bin_dir is None:
        raise PostgresUnavailable(
            f"no PostgreSQL {' or '.join(order)} binaries: install the `pgserver` wheel (PostgreSQL 16, "
            f"pip install pgserver) or the Debian postgresql-15 package ({PG15_BIN})"
        )

    run_as = _ensure_run_as_user()
    bin_dir = _reachable_bin_dir(bin_dir, run_as)
    base_dir = Path(tempfile.mkdtemp(prefix=f"citadel-pg{version}-", dir=_scratch_parent()))
    try:
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(base_dir, entry.pw_uid, entry.pw_gid)
        data_dir = base_dir / "data"
        _run(run_as, [
            str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        ])
        last_error = ""
        for _attempt in range(3):
            port = free_port()
            options = (
                f"-p {port} -k {base_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            result = _run(run_as, [
                str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(base_dir / "server.log"),
                "-w", "-t", "30", "-o", options, "start",
            ], check=False)
            if result.returncode == 0:
                server = LocalPostgres(version=version, bin_dir=bin_dir, base_dir=base_dir, port=port, run_as=run_as)
                with _lock:
                    _running.append(server)
                return server
            try:
                last_error = (base_dir / "server.log").read_text()[-2000:]
            except OSError:
                last_error = result.stderr
        raise PostgresUnavailable(f"PostgreSQL {version} did not start: {last_error.strip()}")
    except BaseException:
        shutil.rmtree(base_dir, ignore_errors=True)
        raise
