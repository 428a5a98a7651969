"""Run stamps on real hosts (provisioners/stamp.py): an unchanged re-run is one command, and anything that changed
since the last successful run — on the host or in the inputs — makes the run apply every step again and repair it.
Counts exec channels, never time."""

from __future__ import annotations

import psycopg
import pytest

from polyvm.errors import FanoutError
from polyvm.host import Host, HostDisk
from polyvm.provisioners import Connection
from polyvm.provisioners.fanout import run_recipe
from polyvm.provisioners.stamp import STAMP_DIR
from polyvm.recipes.postgres import PostgresRecipe, parse_inputs

pytestmark = pytest.mark.e2e

PASSWORD = "stamp-test-pw-41d9c0"
DROPIN = "/etc/postgresql/15/main/conf.d/50-polyvm.conf"


def inputs_for(host, **overrides):
    data = {"allowed_cidrs": [f"{host.record.host_ip}/32"], "users": [{"name": "app", "password": PASSWORD}],
            "databases": [{"name": "app"}], "memory_mb": 256, "mount_point": "/srv/postgresql"}
    data.update(overrides)
    return parse_inputs(data)


class Runner:
    def __init__(self, host) -> None:
        self.host = host
        self.vm = Host(address=host.address, user=host.user, host_key=host.host_key, name=host.name,
                       disks=(HostDisk("pgdata", host.disk, "/srv/postgresql"),))
        self.channels = 0

    def __call__(self, inputs, **kw) -> dict[str, object]:
        conn = Connection(self.host.address, self.host.user, private_key_path=self.host.private_key_path,
                          host_key=self.host.host_key, deadline=60)
        try:
            res = run_recipe([self.vm], PostgresRecipe(), inputs, connections=[conn], progress=False, **kw)
        finally:
            self.channels = conn.stats.channels
        return {r.name: r for r in next(iter(res.hosts.values())).results}


def changed(results) -> list[str]:
    return sorted(n for n, r in results.items() if r.changed)


def sh(testhosts, host, command: str, **kw) -> str:
    return testhosts.exec(host, ["sh", "-c", command], **kw).stdout.strip()


def login_ok(host, password=PASSWORD) -> bool:
    with psycopg.connect(host=host.address, port=5432, user="app", password=password, dbname="app",
                         sslmode="require", connect_timeout=10) as c:
        return c.execute("SELECT 1").fetchone()[0] == 1


def test_stamp_skips_an_unchanged_run_and_any_change_runs_every_step_again(testhosts):
    (host,) = testhosts.up(fresh=True, disk_mb=64)
    run = Runner(host)
    inputs = inputs_for(host)

    first = run(inputs)
    assert "roles and databases" in changed(first) and run.channels == 3
    # The stamp is root's alone and holds no secret (the digest is an HMAC keyed from the secrets).
    assert sh(testhosts, host, f"stat -c '%a %U' {STAMP_DIR}") == "700 root"
    kept = sh(testhosts, host, f"cat {STAMP_DIR}/*")
    assert PASSWORD not in kept and "SCRAM-SHA-256$" not in kept
    assert run(inputs) and run.channels == 1

    # A file a step copies, edited on the host: the configuration is put back.
    sh(testhosts, host, f"echo 'work_mem = 1MB' >> {DROPIN}")
    again = run(inputs)
    assert "configuration" in changed(again) and run.channels > 1
    assert "work_mem = 1MB" not in sh(testhosts, host, f"cat {DROPIN}")
    assert not changed(run(inputs)) and run.channels == 1

    # A role changed in the server (nothing in any file): the roles step sets the password back.
    sh(testhosts, host, "runuser -u postgres -- psql -XAtq -c \"ALTER ROLE app PASSWORD 'someone-else'\"")
    again = run(inputs)
    assert changed(again) == ["roles and databases"] and login_ok(host)
    assert not changed(run(inputs)) and run.channels == 1

    # The server stopped: started again.
    sh(testhosts, host, "pg_ctlcluster 15 main stop")
    again = run(inputs)
    assert "server" in changed(again)
    assert sh(testhosts, host, "pg_lsclusters --no-header 15 main").split()[3] == "online"
    assert not changed(run(inputs)) and run.channels == 1

    # The guest firewall is not this host's (cloud firewall), but the data disk is: unmounted, mounted again.
    sh(testhosts, host, "pg_ctlcluster 15 main stop && umount /srv/postgresql")
    again = run(inputs)
    assert "data disk pgdata" in changed(again) and "server" in changed(again)
    assert not changed(run(inputs)) and run.channels == 1

    # Other inputs: a new setting.
    more = inputs_for(host, settings={"work_mem": "8MB"})
    assert "configuration" in changed(run(more)) and "work_mem = '8MB'" in sh(testhosts, host, f"cat {DROPIN}")
    assert not changed(run(more)) and run.channels == 1

    # Another password in the inputs (same everything else): the digest differs, the role is changed.
    other = inputs_for(host, settings={"work_mem": "8MB"}, users=[{"name": "app", "password": PASSWORD + "-2"}])
    assert changed(run(other)) == ["roles and databases"] and login_ok(host, PASSWORD + "-2")
    assert not changed(run(other)) and run.channels == 1

    # --full-run: every step runs (the stamp is neither read nor written).
    run(other, stamp=False)
    assert run.channels == 3


def test_a_failed_run_leaves_no_stamp(testhosts):
    (host,) = testhosts.up(fresh=True, disk_mb=64)
    run = Runner(host)
    good = inputs_for(host)
    run(good)
    assert sh(testhosts, host, f"ls {STAMP_DIR}") == "postgres\npostgres.state"
    bad = inputs_for(host, settings={"shared_preload_libraries": "polyvm_no_such_library"})
    with pytest.raises(FanoutError, match="rolled back"):
        run(bad)
    assert sh(testhosts, host, f"ls {STAMP_DIR}") == "postgres.state"  # the stamp itself went first
    # Back to the good inputs: a full run (nothing to change: the failed one was rolled back), stamped again.
    again = run(good)
    assert run.channels == 3 and not changed(again)
    assert sh(testhosts, host, f"ls {STAMP_DIR}") == "postgres\npostgres.state"
    assert run(good) and run.channels == 1
