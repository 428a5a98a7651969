"""A PostgreSQL login from this machine over TCP with TLS and SCRAM (the recipe's ``check``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from polyvm.errors import RecipeError

#: One attempt's bound, in seconds: connecting (libpq connect_timeout, which counts whole seconds, at
#: least 2), and the query (server-side statement_timeout; psql also gets killed after it).
ATTEMPT_S = 5
_MIN_CONNECT_S = 2  # libpq treats a connect_timeout below 2 as 2


def check_login(address: str, port: int, user: str, database: str, password: str, *, timeout: float = 10) -> None:
    """Log in over TCP with TLS and SCRAM (psycopg, or psql with a 0600 passfile); raise RecipeError if not.
    Retries until ``timeout`` seconds have passed; no attempt runs past that deadline by more than libpq's
    2-second connect minimum."""
    deadline = time.monotonic() + timeout
    last = "no attempt finished"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            _login_once(address, port, user, database, password, bound=min(ATTEMPT_S, left))
            return
        except RecipeError as exc:
            last = str(exc)
        if deadline - time.monotonic() > 0.2:
            time.sleep(0.2)
    raise RecipeError(f"cannot log in to PostgreSQL at {address}:{port} as {user} within {timeout:g}s: {last}")


def _login_once(address: str, port: int, user: str, database: str, password: str, *, bound: float) -> None:
    connect_s = max(_MIN_CONNECT_S, int(bound + 0.999))
    statement_ms = max(1, int(bound * 1000))
    try:
        import psycopg
    except ImportError:
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None:
        try:
            with psycopg.connect(host=address, port=port, user=user, dbname=database, password=password,
                                 sslmode="require", connect_timeout=connect_s,
                                 options=f"-c statement_timeout={statement_ms}",
                                 # a peer that vanishes mid-query: the kernel gives up on unacknowledged data
                                 tcp_user_timeout=statement_ms, keepalives=1, keepalives_idle=1,
                                 keepalives_interval=1, keepalives_count=max(1, int(bound))) as conn:
                conn.execute("select 1").fetchone()
            return
        except psycopg.Error as exc:
            raise RecipeError(str(exc).replace(password, "********").strip().splitlines()[0]) from None
    psql = shutil.which("psql")
    if psql is None:
        raise RecipeError("neither psycopg nor psql is available to check the login "
                           "(pip install 'psycopg[binary]' or apt-get install -y postgresql-client)")
    with tempfile.NamedTemporaryFile("w", prefix="polyvm-pgpass-") as f:
        os.chmod(f.name, 0o600)
        esc = password.replace("\\", "\\\\").replace(":", "\\:")
        f.write(f"{address}:{port}:{database}:{user}:{esc}\n")
        f.flush()
        env = {"PATH": os.environ.get("PATH", ""), "PGPASSFILE": f.name, "PGSSLMODE": "require",
               "PGCONNECT_TIMEOUT": str(connect_s), "PGOPTIONS": f"-c statement_timeout={statement_ms}"}
        try:
            proc = subprocess.run([psql, "-h", address, "-p", str(port), "-U", user, "-d", database, "-w",
                                   "-tAc", "select 1"], env=env, capture_output=True, text=True,
                                  timeout=max(bound, _MIN_CONNECT_S))
        except subprocess.TimeoutExpired:
            raise RecipeError(f"psql got no answer from {address}:{port} within "
                              f"{max(bound, _MIN_CONNECT_S):g}s") from None
    if proc.returncode != 0 or proc.stdout.strip() != "1":
        raise RecipeError((proc.stderr.strip() or "login failed").splitlines()[0])
