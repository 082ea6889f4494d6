"""Removing secrets from RPC endpoints before they reach a log line, a metric label or an exception.

RPC URLs routinely embed API keys: in the path (``https://bsc.example/v2/<key>``), in the query
(``?apikey=<key>``) or as user info (``https://user:pass@host``). The only thing shown of an endpoint is its
scheme, host and port, plus a short stable fingerprint so that two endpoints on one host can be told apart.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """``https://host:port/…#ab12`` — never the path, query or credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        scheme = parts.scheme or "?"
    except ValueError:
        return "<unparseable url>"
    tail = "/…" if (parts.path not in ("", "/") or parts.query or parts.username) else ""
    digest = hashlib.sha256(url.encode()).hexdigest()[:4]
    return f"{scheme}://{host}{port}{tail}#{digest}"


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret (full URL, its path and query, an API key) in free text."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if len(secret) < 4:
            continue
        text = text.replace(secret, "<redacted>")
    return text


_URL_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


def scrub_urls(text: str) -> str:
    """Redact every URL found in free text (error messages from HTTP libraries quote the full URL)."""
    return _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
