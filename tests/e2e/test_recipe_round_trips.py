"""Exec channels per host for a whole recipe run (issue 19): the steps between the OS detection and the
step that needs the client's answer (roles) share one channel. Counts channels, never time."""

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

    def run() -> tuple[Connection, list]:
        conn = Connection(host.address, host.user, private_key_path=host.private_key_path,
                          host_key=host.host_key, deadline=60)
        res = run_recipe([vm], PostgresRecipe(), inputs, connections=[conn], progress=False)
        return conn, next(iter(res.hosts.values())).results

    conn, first = run()
    assert any(r.changed for r in first)
    # detect; install + cluster + configuration + server in one program; read roles; create them; verify
    # (was 8 channels before pipelining)
    assert conn.stats.handshakes == 1 and conn.stats.channels <= 5
    conn, again = run()
    assert not any(r.changed for r in again)
    assert [r.name for r in again] == [r.name for r in first]
    assert conn.stats.handshakes == 1 and conn.stats.channels <= 4  # was 7
