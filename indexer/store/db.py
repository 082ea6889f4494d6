"""Connections to PostgreSQL. Every session runs in UTC; the DSN never reaches a log line or an exception."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import asyncpg

log = logging.getLogger("citadel.db")

SERVER_SETTINGS = {"timezone": "UTC", "application_name": "citadel-indexer"}


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` without user or password, for messages."""
    try:
        parts = urlsplit(dsn)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
    except ValueError:
        return "<unparseable database URL>"


def is_pooled_endpoint(dsn: str) -> bool:
    """PgBouncer in transaction mode (Neon's ``-pooler`` hosts) cannot carry LISTEN or session advisory locks."""
    host = urlsplit(dsn).hostname or ""
    return "-pooler" in host or "pgbouncer" in host


async def connect(dsn: str) -> Any:
    """A single connection (LISTEN, advisory locks)."""
    return await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS)
