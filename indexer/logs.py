"""Logging set-up: a constant message plus fields (``chain=``, ``block=``), as text or one JSON object per line.

Fields are passed with ``extra={"fields": {...}}``. A last line of defence scrubs URLs from every rendered record,
so a library error quoting an RPC URL with its API key cannot leak through.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from chains.redact import scrub, scrub_urls

_SECRETS: list[str] = []


def register_secret(secret: str | None) -> None:
    """Text that must never appear in a log line (an API key, a full RPC URL)."""
    if secret and secret not in _SECRETS:
        _SECRETS.append(secret)


def _clean(text: str) -> str:
    return scrub_urls(scrub(text, _SECRETS))


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            fields["error"] = f"{type(exc).__name__}: {exc}"
            if record.levelno >= logging.ERROR and not self.as_json:
                fields["trace"] = self.formatException(record.exc_info)
        if self.as_json:
            payload = {
                "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": message,
                **fields,
            }
            return _clean(json.dumps(payload, default=str))
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if k != "trace")
        line = f"{stamp} {record.levelname:<7} {record.name}: {message}" + (f" {extra}" if extra else "")
        if "trace" in fields:
            line += "\n" + str(fields["trace"])
        return _clean(line)


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "httpx", "httpcore", "web3", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
