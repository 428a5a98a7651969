"""SCRAM-SHA-256 verifiers computed here, and SQL quoting (the statements themselves: :mod:`.catalog`).

A password never reaches the server in clear: the recipe computes the SCRAM verifier locally (as
PostgreSQL would) and sends ``ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'`` through stdin. A role's
password is set again only when its stored verifier does not match the wanted password, so a re-run
changes nothing. Statements are never logged (``log_statement``/``log_min_error_statement`` off for the
session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata

SCRAM_ITERATIONS = 4096


def _saslprep(password: str) -> str:
    # PostgreSQL applies SASLprep (RFC 4013) and falls back to the raw bytes when it fails. For ASCII
    # (every generated password) it is the identity; NFKC covers the common non-ASCII cases.
    if password.isascii():
        return password
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in password
                     if c not in "\u00ad\u200b\u2060\ufeff\u034f\u180b\u180c\u180d\ufe00")
    return unicodedata.normalize("NFKC", mapped)


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return stored_key, server_key


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``, the form pg_authid.rolpassword holds."""
    salt = salt if salt is not None else os.urandom(16)
    stored, server = _keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def scram_matches(verifier: str | None, password: str) -> bool:
    """True when ``verifier`` (from pg_authid) is a SCRAM verifier of ``password``."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        _, params, keys = verifier.split("$")
        iterations_s, salt_b64 = params.split(":")
        stored_b64, server_b64 = keys.split(":")
        salt = base64.b64decode(salt_b64)
        stored, server = _keys(password, salt, int(iterations_s))
    except (ValueError, TypeError):
        return False
    return (hmac.compare_digest(stored, base64.b64decode(stored_b64))
            and hmac.compare_digest(server, base64.b64decode(server_b64)))


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


SESSION_PREAMBLE = (
    "SET log_statement = 'none';\n"
    "SET log_min_error_statement = 'panic';\n"
    "SET log_min_duration_statement = -1;\n"
    "SET password_encryption = 'scram-sha-256';\n"
)
