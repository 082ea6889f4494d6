# citadel-indexer image: `docker compose build` (docker-compose.yml) or `docker build -t citadel-indexer .`
# The same image runs `migrate` (one-shot) and `run` (the daemon); the command picks which.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs (no .venv, node_modules or tests from the build context). The dependencies ship
# manylinux wheels (asyncpg, coincurve, orjson, aiohttp), so no compiler is needed.
COPY pyproject.toml README.md /src/
COPY indexer /src/indexer
COPY chains /src/chains
RUN pip install /src && rm -rf /src

WORKDIR /app

# the SQL migrations are package data (indexer/migrations): `migrate` finds them in the installed package
ENV CITADEL_METRICS_HOST=0.0.0.0 \
    CITADEL_METRICS_PORT=9108 \
    CITADEL_LOG_FORMAT=json

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin citadel
USER citadel

EXPOSE 9108
ENTRYPOINT ["citadel-indexer"]
CMD ["run"]
