"""SCRAM-SHA-256 verifiers computed client-side, and the roles SQL sent on psql's stdin."""

from __future__ import annotations

import base64
import hashlib
import hmac

from polyvm.recipes.postgres import parse_inputs
from polyvm.recipes.postgres.roles import (
    CurrentState,
    _keys,
    parse_current,
    roles_sql,
    scram_matches,
    scram_verifier,
)


def test_keys_match_rfc7677_test_vector():
    # RFC 7677 section 3: user "user", password "pencil"; the server signature proves ServerKey.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    stored, server = _keys("pencil", salt, 4096)
    auth = ("n=user,r=rOprNGfwEbeRWgbNEkqO,"
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    sig = hmac.new(server, auth.encode(), hashlib.sha256).digest()
    assert base64.b64encode(sig).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    client_sig = hmac.new(stored, auth.encode(), hashlib.sha256).digest()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, client_sig))
    assert hashlib.sha256(client_key).digest() == stored


def test_verifier_round_trip_and_random_salt():
    v = scram_verifier("a-long-password-1")
    assert v.startswith("SCRAM-SHA-256$4096:")
    assert scram_matches(v, "a-long-password-1")
    assert not scram_matches(v, "a-long-password-2")
    assert not scram_matches(None, "x") and not scram_matches("md5abc", "x") and not scram_matches("SCRAM-SHA-256$x", "x")
    assert scram_verifier("a-long-password-1") != v  # fresh salt each time


def _inputs(password="app-password-123"):
    return parse_inputs({"allowed_cidrs": ["10.0.0.0/8"], "users": [{"name": "app", "password": password}],
                         "databases": [{"name": "appdb"}]})


def test_roles_sql_sends_verifiers_not_passwords_and_only_what_is_missing():
    sql, changes = roles_sql(_inputs(), CurrentState())
    assert "app-password-123" not in sql
    assert "ALTER ROLE \"app\" PASSWORD 'SCRAM-SHA-256$4096:" in sql
    assert "SET log_min_error_statement = 'panic'" in sql and "SET log_statement = 'none'" in sql
    assert "CREATE DATABASE %I OWNER %I', 'appdb', 'app'" in sql
    assert changes == ["created role app", "set password of app", "created database appdb"]
    done = CurrentState(roles={"app": (True, False, scram_verifier("app-password-123"))}, databases={"appdb": "app"})
    assert roles_sql(_inputs(), done) == ("", [])
    moved = CurrentState(roles={"app": (True, True, scram_verifier("other-password-1"))}, databases={"appdb": "bob"})
    sql3, changes3 = roles_sql(_inputs(), moved)
    assert changes3 == ["set LOGIN NOCREATEDB on app", "set password of app", "made app owner of database appdb"]
    assert "CREATE ROLE" not in sql3 and "ALTER DATABASE %I OWNER TO %I" in sql3


def test_current_state_is_parsed_from_psql_lines():
    out = "SET\nSET\nrole\tapp\ttrue\tfalse\tSCRAM-SHA-256$4096:abc\nrole\tro\ttrue\ttrue\t\ndb\tappdb\tapp\n"
    state = parse_current(out)
    assert state.roles == {"app": (True, False, "SCRAM-SHA-256$4096:abc"), "ro": (True, True, None)}
    assert state.databases == {"appdb": "app"}


def test_quotes_in_passwords_are_escaped_in_plaintext_form():
    sql, _ = roles_sql(_inputs("it's-a-password"), current=None, plaintext=True)
    assert "PASSWORD 'it''s-a-password'" in sql
    assert "CREATE ROLE %I LOGIN NOCREATEDB" in sql and "CREATE DATABASE %I OWNER %I" in sql
