"""The daemon's own database role, ``citadel_indexer``, and how ``migrate`` gives it a login password.

Migration 014 creates the role NOLOGIN with exactly the privileges the daemon's SQL needs (docs/data-model.md,
"Database roles"). ``citadel-indexer migrate`` with ``CITADEL_INDEXER_DB_PASSWORD`` set gives it LOGIN and that
password. The password itself never travels in SQL text (a server can log statements, ``log_statement = ddl``):
as psql's ``\\password`` does, the SCRAM-SHA-256 verifier (RFC 5803 format, RFC 7677 keys) is computed here and
only the verifier is sent. The server stores a verifier as it is and authenticates against it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from typing import Any

INDEXER_ROLE = "citadel_indexer"
# PostgreSQL's default (scram_iterations), which psql's \password uses too
SCRAM_ITERATIONS = 4096
SCRAM_SALT_BYTES = 16

# RFC 4013 step 3, as PostgreSQL applies it (src/common/saslprep.c): unassigned code points are prohibited too
_PROHIBITED = (
    stringprep.in_table_a1,
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(password: str) -> str:
    """The password as PostgreSQL's SCRAM uses it: SASLprep (RFC 4013) when it applies, else unchanged.

    Like PostgreSQL (and every client built on libpq or asyncpg), a password that SASLprep would reject (a prohibited
    character, bad bidirectional text) or map to nothing is used as it is, not refused.
    """
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    if not mapped:
        return password
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return password
    if any(test(c) for c in normalized for test in _PROHIBITED):
        return password
    if any(stringprep.in_table_d1(c) for c in normalized):
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            return password
        if any(stringprep.in_table_d2(c) for c in normalized):
            return password
    return normalized


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    """(ClientKey, StoredKey, ServerKey) of RFC 5802 with SHA-256."""
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return client_key, hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64), what PostgreSQL stores in
    ``pg_authid.rolpassword``. A random salt unless one is given."""
    if salt is None:
        salt = secrets.token_bytes(SCRAM_SALT_BYTES)
    _client_key, stored_key, server_key = scram_keys(password, salt, iterations)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def set_login_password(conn: Any, password: str) -> None:
    """``ALTER ROLE citadel_indexer WITH LOGIN PASSWORD '<verifier>'``: the statement is built by the server's
    ``format('%L')`` over bound parameters, so no value is ever spliced into SQL text here."""
    statement = await conn.fetchval(
        "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
        INDEXER_ROLE,
        scram_verifier(password),
    )
    await conn.execute(statement)


async def role_exists(conn: Any) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", INDEXER_ROLE))
