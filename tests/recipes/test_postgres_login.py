"""check_login's waits are bounded: every attempt (connect and query) stops by the caller's deadline, and
the error says what it waited for."""

from __future__ import annotations

import socket
import sys
import threading

import pytest

from polyvm.errors import RecipeError
from polyvm.recipes.postgres import login


def _run_bounded(fn, *, limit: float = 120.0):
    """Run ``fn`` in a thread; fail (not hang) if it has not returned within ``limit`` seconds."""
    out: dict = {}

    def body():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"check_login still waiting after {limit:g}s (an unbounded wait)"
    return out


def test_psql_that_never_answers_is_given_up_on(tmp_path, monkeypatch):
    fake = tmp_path / "psql"
    fake.write_text("#!/bin/sh\nexec sleep 300\n")  # exec: the killed process is the one holding the pipes
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # the psql path
    out = _run_bounded(lambda: login.check_login("198.18.0.9", 5432, "app", "app", "s3cr3t-pass", timeout=3))
    err = out.get("error")
    assert isinstance(err, RecipeError), out
    assert "within 3s" in str(err) and "psql got no answer" in str(err), str(err)
    assert "s3cr3t-pass" not in str(err)


def test_psycopg_attempts_carry_connect_and_query_bounds(monkeypatch):
    psycopg = pytest.importorskip("psycopg")
    seen: list[dict] = []

    def fake_connect(**kw):
        seen.append(kw)
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(psycopg, "connect", fake_connect)
    out = _run_bounded(lambda: login.check_login("198.18.0.9", 5432, "app", "app", "pw", timeout=1))
    assert isinstance(out.get("error"), RecipeError) and "within 1s" in str(out["error"])
    assert seen, "no attempt made"
    for kw in seen:
        assert 2 <= kw["connect_timeout"] <= login.ATTEMPT_S, kw  # libpq's floor is 2 s
        assert "statement_timeout=" in kw["options"], kw
        ms = int(kw["options"].split("statement_timeout=")[1])
        assert 0 < ms <= 1000, kw  # never past the caller's deadline
        assert 0 < kw["tcp_user_timeout"] <= 1000, kw


def test_a_server_that_accepts_and_stays_silent_is_given_up_on():
    pytest.importorskip("psycopg")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        out = _run_bounded(lambda: login.check_login("127.0.0.1", port, "app", "app", "pw", timeout=2))
    err = out.get("error")
    assert isinstance(err, RecipeError), out
    assert f"127.0.0.1:{port}" in str(err) and "within 2s" in str(err), str(err)
