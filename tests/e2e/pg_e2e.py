"""Helpers shared by the PostgreSQL e2e tests (not a test module)."""

from __future__ import annotations

from polyvm.provisioners.connection import Connection

APP_PASSWORD = "correct-horse-battery-staple"


def connect(host) -> Connection:
    return Connection(host.address, host.user, private_key_path=host.private_key_path, host_key=host.host_key,
                      deadline=60)


def psql(testhosts, host, sql: str, db: str = "app") -> str:
    """Run ``sql`` as postgres inside the host (psql on stdin, stop on the first error); its output."""
    r = testhosts.exec(host, ["runuser", "-u", "postgres", "--", "psql", "-XAt", "-v", "ON_ERROR_STOP=1",
                              "-d", db, "-f", "-"], input=sql)
    return r.stdout.strip()
