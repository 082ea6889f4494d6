"""Removing secrets from RPC endpoints before they reach a log line, a metric label or an exception.

RPC URLs routinely embed API keys: in the path (``https://bsc.example/v2/<key>``), in the query
(``?apikey=<key>``) or as user info (``https://user:pass@host``); Tron adds a key header. The only thing shown of an
endpoint is its scheme, host and port, plus a short stable fingerprint so that two endpoints on one host can be told
apart (:func:`redact_url`). Free text that may quote a URL or a key (an aiohttp error, an HTML error page that
echoes the requested URL) goes through :func:`scrub` with the endpoint's :func:`secrets_of` and :func:`scrub_urls`;
a response body shown in a message goes through :func:`shown_body`, which does both.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

_MIN_SECRET_LEN = 4


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


def secrets_of(url: str) -> list[str]:
    """What of ``url`` must never be shown: all of it when it has a path, query or credentials (a bare
    ``scheme://host:port`` is what its label shows anyway), those parts on their own, every long path segment and
    query value, each also percent-encoded and decoded (an error page may echo either form)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        username = parts.username
    except ValueError:
        return [url]
    if parts.path in ("", "/") and not parts.query and not username and not password:
        return []
    secrets = [url, url.rstrip("/"), parts.query, parts.netloc if username else "", username or "", password or ""]
    if parts.path not in ("", "/"):
        secrets.append(parts.path)
        secrets += [seg for seg in parts.path.split("/") if len(seg) >= 8]
    secrets += [kv.partition("=")[2] for kv in parts.query.split("&") if len(kv.partition("=")[2]) >= 4]
    variants = set()
    for secret in secrets:
        if secret:
            variants.update({secret, unquote(secret), quote(secret, safe=""), quote(secret, safe="/")})
    return sorted(variants, key=len, reverse=True)


def _pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    usable = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
    if not usable:
        return None
    return re.compile("|".join(re.escape(s) for s in usable), re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret (full URL, its path and query, an API key) in free text, whatever
    its letter case (an echo may change it). Secrets shorter than 4 characters are not looked for."""
    pattern = _pattern(secrets)
    return text if pattern is None else pattern.sub("<redacted>", text)


_URL_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


def scrub_urls(text: str) -> str:
    """Redact every URL found in free text (error messages from HTTP libraries quote the full URL)."""
    return _URL_RE.sub(lambda m: redact_url(m.group(0)), text)


def clean(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every URL redacted and every secret removed."""
    return scrub(scrub_urls(text), secrets)


_TAG_RE = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE_RE = re.compile(r"\s+")
_BODY_WINDOW = 64 * 1024


def shown_body(raw: bytes, secrets: Iterable[str], limit: int = 200) -> str:
    """At most ``limit`` characters of a response body, fit for a message: HTML tags (and whatever they hold, a link
    or a script) removed and entities decoded, so an error page reads as its text (``403 Forbidden ...``), then
    every URL and secret removed, then runs of whitespace.

    Only the first 64 KiB are looked at; when the body is longer, the window's last characters (as many as the
    longest secret) are dropped too, so a secret cut in two by the window cannot show half of itself."""
    secrets = list(secrets)
    text = raw[:_BODY_WINDOW].decode("utf-8", "replace")
    if len(raw) > _BODY_WINDOW:
        text = text[: -max((len(s) for s in secrets), default=0) or None]
    text = html.unescape(_TAG_RE.sub(" ", text))  # what is in a tag (a link, a script) goes with it
    text = _SPACE_RE.sub(" ", clean(text, secrets)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
