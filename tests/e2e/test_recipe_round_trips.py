"""Exec channels per host for a whole recipe run (issue 19), counted, never timed: a first run is the stamp check
(which returns the OS facts), one program up to the catalog read, and one program with the role changes, the
login check and the new stamp; an unchanged re-run is the stamp check alone."""

from __future__ import annotations

from polyvm.host import Host
from polyvm.provisioners import Connection
from polyvm.provisioners.fanout import run_recipe
from polyvm.recipes.postgres import PostgresRecipe, parse_inputs

PASSWORD = "round-trips-test-pw-7c1e"


def test_postgres_recipe_first_run_and_rerun_channels(testhosts):
    (host,) = testhosts.up(fresh=True)
    inputs = parse_inputs({"allowed_cidrs": [f"{host.record.host_ip}/32"],
                           "users": [{"name": "app", "password": PASSWORD}], "databases": [{"name": "app"}],
                           "memory_mb": 256})
    vm = Host(address=host.address, user=host.user, host_key=host.host_key, name=host.name)

    def run(**kw) -> tuple[Connection, list]:
        conn = Connection(host.address, host.user, private_key_path=host.private_key_path,
                          host_key=host.host_key, deadline=60)
        res = run_recipe([vm], PostgresRecipe(), inputs, connections=[conn], progress=False, **kw)
        return conn, next(iter(res.hosts.values())).results

    conn, first = run()
    assert any(r.changed for r in first)
    # stamp check (+ facts); install … server + catalog read; role changes + verify + stamp (was 8, then 5)
    assert conn.stats.handshakes == 1 and conn.stats.channels == 3, conn.stats
    conn, again = run()
    assert not any(r.changed for r in again)
    assert [r.name for r in again] == [r.name for r in first]
    assert all("stamp" in r.detail for r in again)
    assert conn.stats.handshakes == 1 and conn.stats.channels == 1, conn.stats  # was 7, then 4

    # Without the stamp: every step runs (and changes nothing): check, one program to the catalog read, one after.
    conn, full = run(stamp=False)
    assert not any(r.changed for r in full) and [r.name for r in full] == [r.name for r in first if r.name != "stamp"]
    assert conn.stats.channels == 3, conn.stats  # the facts instead of the stamp check; no stamp written
