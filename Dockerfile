# citadel-indexer image: `docker compose build` (docker-compose.yml) or `docker build -t citadel-indexer .`
# The same image runs `migrate` (one-shot) and `run` (the daemon); the command picks which.
#
# Two stages on one base image. `build` installs the locked dependencies into a virtual environment
# (requirements.lock: every package pinned, every file checked against its hash, wheels only) and adds the
# citadel-indexer wheel, built with the locked build tools (requirements-build.lock). The runtime stage receives
# that environment and nothing else: no build tools, no pip, no tests, no development tools (citadel_devtools/ is
# not even in the build context, see .dockerignore). `make lock` regenerates both lock files.
#
# The base image's tag names the exact Python and Debian releases; move it deliberately (both stages follow).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first: this layer is rebuilt only when a lock file changes. Every dependency ships wheels
# (asyncpg, orjson, pydantic-core, aiohttp, cytoolz, pycryptodome), so no compiler is needed, and --only-binary
# makes sure none is attempted.
COPY requirements.lock requirements-build.lock ./
RUN pip install --require-hashes --no-deps --only-binary=:all: -r requirements-build.lock \
 && python -m venv --without-pip /opt/citadel \
 && pip --python /opt/citadel/bin/python install --require-hashes --no-deps --only-binary=:all: -r requirements.lock

# The package: the production code and its SQL migrations (package data), built with the tools just installed.
# `pip check` fails the build when the lock lacks something the package or a locked package requires.
COPY pyproject.toml README.md ./
COPY indexer ./indexer
COPY chains ./chains
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && pip --python /opt/citadel/bin/python install --no-deps /wheels/citadel_indexer-*.whl \
 && pip --python /opt/citadel/bin/python check


FROM ${PYTHON_IMAGE}

ENV PATH=/opt/citadel/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CITADEL_METRICS_HOST=0.0.0.0 \
    CITADEL_METRICS_PORT=9108 \
    CITADEL_LOG_FORMAT=json

COPY --from=build /opt/citadel /opt/citadel

# The daemon needs neither pip nor setuptools: the base image's copies go, and the process runs unprivileged.
RUN /usr/local/bin/python -m pip uninstall --yes --quiet pip setuptools wheel \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin citadel
USER citadel

EXPOSE 9108
ENTRYPOINT ["citadel-indexer"]
CMD ["run"]
