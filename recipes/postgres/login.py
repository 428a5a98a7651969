"""A PostgreSQL login from this machine over TCP with TLS and SCRAM (the recipe's ``check``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from polyvm.errors import RecipeError


def check_login(address: str, port: int, user: str, database: str, password: str, *, timeout: float = 10) -> None:
    """Log in over TCP with TLS and SCRAM (psycopg, or psql with a 0600 passfile); raise RecipeError if not."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            _login_once(address, port, user, database, password)
            return
        except RecipeError as exc:
            last = str(exc)
            time.sleep(0.2)
    raise RecipeError(f"cannot log in to PostgreSQL at {address}:{port} as {user}: {last}")


def _login_once(address: str, port: int, user: str, database: str, password: str) -> None:
    try:
        import psycopg
    except ImportError:
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None:
        try:
            with psycopg.connect(host=address, port=port, user=user, dbname=database, password=password,
                                 sslmode="require", connect_timeout=5) as conn:
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
               "PGCONNECT_TIMEOUT": "5"}
        proc = subprocess.run([psql, "-h", address, "-p", str(port), "-U", user, "-d", database, "-w",
                               "-tAc", "select 1"], env=env, capture_output=True, text=True)
    if proc.returncode != 0 or proc.stdout.strip() != "1":
        raise RecipeError((proc.stderr.strip() or "login failed").splitlines()[0])
