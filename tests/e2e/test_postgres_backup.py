"""Backups and point-in-time restore with pgBackRest, on real SSH test hosts (docs/postgres-ha.md).

Host A runs PostgreSQL with WAL archiving to a repository on its second data disk. After rows, a backup,
more rows, a noted moment and more rows, A stops (its VM is "lost") and the repository's disk is attached to
host B, which restores to that moment: exactly the rows written before it are there.
"""

from __future__ import annotations

import time

import pytest

from polyvm.errors import RecipeError
from polyvm.host import Host, HostDisk
from polyvm.recipes.postgres import apply_postgres, parse_inputs

from pg_e2e import APP_PASSWORD, connect, psql

pytestmark = pytest.mark.e2e

CIPHER = "test-cipher-passphrase-0123456789"
REPO = "/srv/pgbackrest"


def backup_inputs(host, **backup):
    return parse_inputs({
        "allowed_cidrs": [f"{host.record.host_ip}/32"],
        "users": [{"name": "app", "password": APP_PASSWORD}],
        "databases": [{"name": "app"}],
        "memory_mb": 512,
        "mount_point": "/srv/postgresql",
        "backup": {"cipher_pass": CIPHER, "repo": {"path": REPO}, **backup},
    })


def host_with(host, data_disk: str, repo_disk: str) -> Host:
    return Host(address=host.address, user=host.user, host_key=host.host_key,
                disks=(HostDisk("pgdata", data_disk, "/srv/postgresql"), HostDisk("pgbackrest", repo_disk, REPO)))


def pgbackrest(testhosts, host, *args: str) -> str:
    return testhosts.exec(host, ["runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=main", *args],
                          timeout=600).stdout


def test_backup_to_second_disk_and_point_in_time_restore_on_another_host(testhosts):
    (a,) = testhosts.up(fresh=True, disks_mb=[256, 256])
    (b,) = testhosts.up(fresh=True, disk_mb=256)
    with connect(a) as conn:
        first = apply_postgres(conn, backup_inputs(a), host=host_with(a, a.disks[0], a.disks[1]))
    details = {s.name: s.detail for s in first.steps if s.changed}
    assert "first full backup taken" in details["backups"]
    # Archiving is on, through pgBackRest, and the repository is encrypted on its own disk.
    assert psql(testhosts, a, "SHOW archive_mode;") == "on"
    assert "pgbackrest" in psql(testhosts, a, "SHOW archive_command;")
    conf = testhosts.exec(a, "stat -c '%U %a' /etc/pgbackrest/pgbackrest.conf").stdout.split()
    assert conf == ["postgres", "600"]
    assert testhosts.exec(a, ["findmnt", "-n", "-o", "SOURCE", REPO]).stdout.strip() == a.disks[1]
    info = pgbackrest(testhosts, a, "--output=json", "info")
    assert '"cipher":"aes-256-cbc"' in info
    # The cipher passphrase is in no log and no process list.
    logs = testhosts.exec(a, "cat /var/log/postgresql/*.log /var/log/pgbackrest/*.log 2>/dev/null || true").stdout
    assert CIPHER not in logs
    # A second run changes nothing (no second backup, no restart).
    with connect(a) as conn:
        again = apply_postgres(conn, backup_inputs(a), host=host_with(a, a.disks[0], a.disks[1]))
    assert not again.changed, again.summary()

    psql(testhosts, a, "CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());"
                       "INSERT INTO t (id) SELECT generate_series(1, 100);")
    pgbackrest(testhosts, a, "--type=diff", "backup")
    psql(testhosts, a, "INSERT INTO t (id) SELECT generate_series(101, 200);")
    time.sleep(1.5)
    target = psql(testhosts, a, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"');")
    time.sleep(1.5)
    psql(testhosts, a, "INSERT INTO t (id) SELECT generate_series(201, 300);")
    pgbackrest(testhosts, a, "check")  # switches WAL and waits until it is archived

    # A restore never lands on a running server's data: refused, nothing changed on A.
    with connect(a) as conn, pytest.raises(RecipeError, match="refusing to restore: a PostgreSQL server is running"):
        apply_postgres(conn, backup_inputs(a, restore={"target_time": target}),
                       host=host_with(a, a.disks[0], a.disks[1]))
    assert psql(testhosts, a, "SELECT count(*) FROM t;") == "300"

    # A is lost; its repository disk moves to B, which restores to the noted moment.
    testhosts.exec(a, f"pg_ctlcluster 15 main stop -m immediate; umount {REPO}")
    restore = backup_inputs(b, restore={"target_time": target})
    with connect(b) as conn:
        res = apply_postgres(conn, restore, host=host_with(b, b.disks[0], a.disks[1]))
    details = {s.name: s.detail for s in res.steps if s.changed}
    assert "restored stanza main" in details["restore"]
    assert psql(testhosts, b, "SELECT count(*), min(id), max(id) FROM t;") == "200|1|200"
    assert psql(testhosts, b, "SELECT pg_is_in_recovery();") == "f"
    # The restored server archives again (a new timeline in the same repository) and takes backups.
    pgbackrest(testhosts, b, "check")
    # Running the same inputs again is a no-op; a different restore over the running server is refused.
    with connect(b) as conn:
        assert not apply_postgres(conn, restore, host=host_with(b, b.disks[0], a.disks[1])).changed
    with connect(b) as conn, pytest.raises(RecipeError, match="refusing to restore"):
        apply_postgres(conn, backup_inputs(b, restore={}), host=host_with(b, b.disks[0], a.disks[1]))
    assert psql(testhosts, b, "SELECT count(*) FROM t;") == "200"


@pytest.mark.skipif(not __import__("os").environ.get("POLYVM_PG_BENCH"),
                    reason="a measurement (about 1 GB of data, minutes); set POLYVM_PG_BENCH=1 to run it")
def test_measure_backup_and_restore_of_1gb(testhosts, capsys):
    """Prints backup and restore times of a pgbench -s 70 database (about 1 GB); asserts only correctness."""
    (a,) = testhosts.up(fresh=True, disks_mb=[3072, 3072])
    (b,) = testhosts.up(fresh=True, disk_mb=3072)
    inputs = backup_inputs(a)
    with connect(a) as conn:
        apply_postgres(conn, inputs, host=host_with(a, a.disks[0], a.disks[1]))
    testhosts.exec(a, "cd / && runuser -u postgres -- pgbench -q -i -s 70 app", timeout=1800)
    size = psql(testhosts, a, "SELECT pg_database_size('app');")
    t0 = time.monotonic()
    pgbackrest(testhosts, a, "--type=full", "backup")
    backup_s = time.monotonic() - t0
    pgbackrest(testhosts, a, "check")
    testhosts.exec(a, f"pg_ctlcluster 15 main stop -m fast; umount {REPO}")
    t0 = time.monotonic()
    with connect(b) as conn:
        apply_postgres(conn, backup_inputs(b, restore={}), host=host_with(b, b.disks[0], a.disks[1]))
    restore_s = time.monotonic() - t0
    assert psql(testhosts, b, "SELECT count(*) FROM pgbench_accounts;") == "7000000"
    with capsys.disabled():
        print(f"\n[pgbackrest] database {int(size) / 2**20:.0f} MiB: full backup {backup_s:.1f}s, "
              f"restore onto a new host (whole recipe run, lz4, process-max 2) {restore_s:.1f}s")


def test_cli_status_fails_loudly_when_archiving_stops_and_restore_refuses(testhosts, tmp_path):
    import json

    import yaml
    from click.testing import CliRunner

    from polyvm.cli import build_cli

    (a,) = testhosts.up(fresh=True, disks_mb=[256, 256])
    inputs = backup_inputs(a)
    with connect(a) as conn:
        apply_postgres(conn, inputs, host=host_with(a, a.disks[0], a.disks[1]))
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump({
        "allowed_cidrs": [f"{a.record.host_ip}/32"], "users": [{"name": "app", "password": APP_PASSWORD}],
        "databases": [{"name": "app"}], "mount_point": "/srv/postgresql",
        "backup": {"cipher_pass": CIPHER, "repo": {"path": REPO}}}))
    target = ["-H", f"{a.user}@{a.address}", "-k", str(a.private_key_path), "--host-key", a.host_key,
              "--inputs", str(path), "--password-file", str(tmp_path / "pw.json")]
    cli = build_cli()
    r = CliRunner().invoke(cli, ["postgres", "status", *target, "--json"])
    assert r.exit_code == 0, r.output
    (st,) = json.loads(r.output)
    assert st["role"] == "primary" and st["last_backup"]["type"] == "full" and st["problems"] == []
    assert st["archiver"]["archived_count"] >= 1

    # A restore over the running server is refused; --force needs every host confirmed (exit 2).
    r = CliRunner().invoke(cli, ["postgres", "restore", *target])
    assert r.exit_code != 0 and "refusing to restore: a PostgreSQL server is running" in r.output
    r = CliRunner().invoke(cli, ["postgres", "restore", *target, "--force"])
    assert r.exit_code == 2 and "--confirm" in r.output
    assert psql(testhosts, a, "SELECT pg_is_in_recovery();") == "f"
    # With --force and the host confirmed, it stops the server and restores over its data (latest).
    psql(testhosts, a, "CREATE TABLE kept (i int); INSERT INTO kept VALUES (7);")
    pgbackrest(testhosts, a, "check")
    r = CliRunner().invoke(cli, ["postgres", "restore", *target, "--force", "--confirm", f"{a.user}@{a.address}"])
    assert r.exit_code == 0, r.output
    assert "stopped the running server (forced restore)" in r.output and "restored stanza main" in r.output
    assert psql(testhosts, a, "SELECT pg_is_in_recovery(), (SELECT i FROM kept);") == "f|7"

    # Archiving breaks (the repository becomes unwritable): status says so and exits non-zero.
    testhosts.exec(a, f"chmod 000 {REPO}/archive")
    psql(testhosts, a, "CREATE TABLE x (i int); INSERT INTO x VALUES (1); SELECT pg_switch_wal();")
    deadline = time.monotonic() + 120
    while psql(testhosts, a, "SELECT failed_count FROM pg_stat_archiver;") == "0":
        assert time.monotonic() < deadline, "archiving never failed"
        time.sleep(0.5)
    r = CliRunner().invoke(cli, ["postgres", "status", *target])
    assert r.exit_code == 1, r.output
    assert "WAL archiving has stopped" in r.output
    assert CIPHER not in r.output
