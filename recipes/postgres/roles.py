"""Roles and databases: SQL sent on psql's stdin, with SCRAM-SHA-256 verifiers computed here.

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
from dataclasses import dataclass, field

from .inputs import PostgresInputs

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


@dataclass
class CurrentState:
    """What the server has now for the recipe's roles and databases (read through psql)."""

    roles: dict[str, tuple[bool, bool, str | None]] = field(default_factory=dict)  # name -> (login, createdb, verifier)
    databases: dict[str, str] = field(default_factory=dict)  # name -> owner


def query_current_sql(inputs: PostgresInputs) -> str:
    """SQL printing one tab-separated line per existing role (``role``) and database (``db``) of the recipe."""
    roles = ", ".join(sql_literal(u.name) for u in inputs.users) or "NULL"
    dbs = ", ".join(sql_literal(d.name) for d in inputs.databases) or "NULL"
    return (SESSION_PREAMBLE
            + "SELECT concat_ws(E'\\t', 'role', rolname, rolcanlogin::text, rolcreatedb::text, coalesce(rolpassword, '')) "
            f"FROM pg_authid WHERE rolname IN ({roles});\n"
            + "SELECT concat_ws(E'\\t', 'db', datname, pg_get_userbyid(datdba)) "
            f"FROM pg_database WHERE datname IN ({dbs});\n")


def parse_current(stdout: str) -> CurrentState:
    state = CurrentState()
    for line in stdout.splitlines():
        parts = line.split("\t")
        if parts[0] == "role" and len(parts) == 5:
            state.roles[parts[1]] = (parts[2] == "true", parts[3] == "true", parts[4] or None)
        elif parts[0] == "db" and len(parts) == 3:
            state.databases[parts[1]] = parts[2]
    return state


def roles_sql(inputs: PostgresInputs, current: CurrentState | None, *,
              plaintext: bool = False) -> tuple[str, list[str]]:
    """(SQL for psql's stdin, what it changes); ("", []) when nothing needs changing.

    ``current``: what the server has (None: unknown — every statement is emitted, each one idempotent).
    ``plaintext``: send the password itself (the server hashes it with scram-sha-256) instead of a
    verifier — used where the SQL is declared ahead of time (Pulumi)."""
    lines: list[str] = []
    changes: list[str] = []
    for u in inputs.users:
        assert u.password is not None, f"user {u.name} has no password (generate one first)"
        pw = u.password.get_secret_value()
        opts = "LOGIN" + (" CREATEDB" if u.createdb else " NOCREATEDB")
        have = current.roles.get(u.name) if current is not None else None
        if current is None or have is None:
            # Guarded, so a role created meanwhile is not an error.
            lines.append(f"SELECT format('CREATE ROLE %I {opts}', {sql_literal(u.name)}) "
                         f"WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {sql_literal(u.name)})\\gexec\n")
            if have is None and current is not None:
                changes.append(f"created role {u.name}")
        if current is None or (have is not None and have[:2] != (True, u.createdb)):
            lines.append(f"ALTER ROLE {sql_ident(u.name)} {opts};\n")
            if current is not None:
                changes.append(f"set {opts} on {u.name}")
        if current is None or not scram_matches(have[2] if have else None, pw):
            secret = pw if plaintext else scram_verifier(pw)
            lines.append(f"ALTER ROLE {sql_ident(u.name)} PASSWORD {sql_literal(secret)};\n")
            if current is not None:
                changes.append(f"set password of {u.name}")
    for d in inputs.databases:
        owner = inputs.owner_of(d)
        have_owner = current.databases.get(d.name) if current is not None else None
        if current is None or have_owner is None:
            lines.append(f"SELECT format('CREATE DATABASE %I OWNER %I', {sql_literal(d.name)}, {sql_literal(owner)}) "
                         f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {sql_literal(d.name)})\\gexec\n")
            if current is not None:
                changes.append(f"created database {d.name}")
        if current is None or (have_owner is not None and have_owner != owner):
            lines.append(f"SELECT format('ALTER DATABASE %I OWNER TO %I', {sql_literal(d.name)}, {sql_literal(owner)}) "
                         f"FROM pg_database WHERE datname = {sql_literal(d.name)} "
                         f"AND pg_get_userbyid(datdba) <> {sql_literal(owner)}\\gexec\n")
            if current is not None:
                changes.append(f"made {owner} owner of database {d.name}")
    if not lines:
        return "", []
    return SESSION_PREAMBLE + "".join(lines), changes
