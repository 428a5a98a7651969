"""Streaming replication on real SSH test hosts: a primary and two standbys on a private bridge
(backends/local/links.py), synchronous and asynchronous, promote with re-pointing (docs/postgres-ha.md)."""

from __future__ import annotations

import threading
import time

import pytest

from polyvm.backends.local.links import HostNetwork
from polyvm.host import Host, HostDisk
from polyvm.recipes.postgres import apply_postgres, parse_inputs

from pg_e2e import APP_PASSWORD, connect, psql

psycopg = pytest.importorskip("psycopg", reason="psycopg is needed for client-side writes")

pytestmark = pytest.mark.e2e

REPL_PASSWORD = "replication-password-0123"


def login(host):
    return psycopg.connect(host=host.address, port=5432, user="app", password=APP_PASSWORD, dbname="app",
                           sslmode="require", connect_timeout=10, autocommit=True)


def group_inputs(hosts, members, primary: str, synchronous: int):
    return parse_inputs({
        "allowed_cidrs": [f"{h.record.host_ip}/32" for h in hosts],
        "users": [{"name": "app", "password": APP_PASSWORD}],
        "databases": [{"name": "app"}],
        "memory_mb": 512,
        "mount_point": "/srv/postgresql",
        "replication": {"members": members, "primary": primary, "synchronous": synchronous,
                        "password": REPL_PASSWORD},
    })


def apply(host, inputs):
    vm = Host(address=host.address, user=host.user, host_key=host.host_key,
              disks=(HostDisk("pgdata", host.disk, "/srv/postgresql"),))
    with connect(host) as conn:
        return apply_postgres(conn, inputs, host=vm)


def wait_for(what: str, check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.3)


@pytest.fixture
def group(testhosts):
    hosts = [testhosts.up(fresh=True, disk_mb=256)[0] for _ in range(3)]
    net = HostNetwork.up([h.record for h in hosts])
    try:
        members = [{"name": f"pg{k}", "address": net.addresses[h.record.id]} for k, h in enumerate(hosts)]
        yield hosts, members
    finally:
        net.down()


def kill_postmaster(testhosts, host) -> None:
    testhosts.exec(host, "kill -9 $(head -n 1 /srv/postgresql/15/main/postmaster.pid)")


def write_until_killed(testhosts, primary, kill_after: int) -> list[int]:
    """Insert one row per transaction; kill -9 the postmaster after ``kill_after`` acknowledged rows while
    writes go on; return the ids whose commit was acknowledged."""
    acked: list[int] = []
    killed = threading.Event()

    def killer() -> None:
        wait_for("rows to kill the primary after", lambda: len(acked) >= kill_after, 300)
        kill_postmaster(testhosts, primary)
        killed.set()

    t = threading.Thread(target=killer)
    t.start()
    try:
        with login(primary) as c:
            i = 0
            while True:
                i += 1
                try:
                    c.execute("INSERT INTO t (id) VALUES (%s)", (i,))
                except psycopg.Error:
                    break
                acked.append(i)
                if i > 10 * kill_after + 100000:
                    raise AssertionError("the primary was never killed")
    finally:
        t.join(timeout=60)
    assert killed.is_set()
    return acked


def test_synchronous_replication_loses_no_acknowledged_row_and_promote_repoints(testhosts, group):
    hosts, members = group
    inputs = group_inputs(hosts, members, "pg0", synchronous=1)
    first = apply(hosts[0], inputs)
    assert any("replication slot pg1" in s.detail for s in first.steps if s.name == "replication")
    t0 = time.monotonic()
    for h in hosts[1:]:
        res = apply(h, inputs)
        assert "cloned" in next(s.detail for s in res.steps if s.name == "replica")
    catch_up = time.monotonic() - t0
    p = hosts[0]
    # Replication over TLS from the members' addresses, with the slots; pg1 is the synchronous standby.
    want = "pg1|t|sync\npg2|t|potential"
    rows = wait_for("both standbys streaming", lambda: psql(
        testhosts, p, "SELECT application_name, ssl, sync_state FROM pg_stat_replication r "
                      "JOIN pg_stat_ssl s USING (pid) WHERE state = 'streaming' ORDER BY 1;", db="postgres") == want)
    assert rows
    assert psql(testhosts, p, "SELECT string_agg(slot_name || ':' || active, ',' ORDER BY slot_name) "
                              "FROM pg_replication_slots;", db="postgres") == "pg1:true,pg2:true"
    hba = psql(testhosts, p, "SELECT type || ' ' || database[1] || ' ' || address || ' ' || auth_method FROM "
                             "pg_hba_file_rules WHERE 'replication' = ANY (database) ORDER BY line_number;")
    assert hba.splitlines() == [f"hostssl replication {m['address']} scram-sha-256" for m in members]
    # A second run changes nothing anywhere.
    for h in hosts:
        assert not apply(h, inputs).changed

    psql(testhosts, p, "CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app;")
    acked = write_until_killed(testhosts, p, kill_after=300)
    promoted = group_inputs(hosts, members, "pg1", synchronous=1)
    res = apply(hosts[1], promoted)
    assert "promoted pg1 to primary" in next(s.detail for s in res.steps if s.name == "replication")
    have = {int(x) for x in psql(testhosts, hosts[1], "SELECT id FROM t;").split()}
    lost = sorted(set(acked) - have)
    assert not lost, f"{len(lost)} acknowledged rows lost: {lost[:10]}"
    # pg2 is re-pointed to pg1, follows the new timeline and gets rows written after the promotion.
    res = apply(hosts[2], promoted)
    assert "pg2 follows pg1" in next(s.detail for s in res.steps if s.name == "replication")
    with login(hosts[1]) as c:
        c.execute("SET synchronous_commit = local")
        c.execute("INSERT INTO t (id) VALUES (-1)")
    wait_for("pg2 to replay a row written on pg1",
             lambda: psql(testhosts, hosts[2], "SELECT count(*) FROM t WHERE id = -1;") == "1")
    assert psql(testhosts, hosts[1], "SELECT application_name FROM pg_stat_replication;", db="postgres") == "pg2"
    # The old primary, if it came back, would be refused as a standby of pg1 (it diverged).
    print(f"\n[replication] sync: {len(acked)} rows acknowledged, 0 lost; 2 standbys cloned and streaming in "
          f"{catch_up:.1f}s")


def test_asynchronous_replication_reports_lag_and_counts_rows_lost_at_failover(testhosts, group, capsys, tmp_path):
    from polyvm.recipes.postgres.status import host_status

    hosts, members = group
    inputs = group_inputs(hosts, members, "pg0", synchronous=0)
    for h in hosts:
        apply(h, inputs)
    p = hosts[0]
    psql(testhosts, p, "CREATE TABLE t (id int PRIMARY KEY); GRANT ALL ON t TO app;")
    # A standby's apply returns once its server runs; it connects to the primary and reports its first
    # position a moment later (on a loaded machine, after the status below would have been read).
    wait_for("both standbys streaming and reporting their position", lambda: psql(
        testhosts, p, "SELECT string_agg(application_name, ',' ORDER BY application_name) FROM "
                      "pg_stat_replication WHERE state = 'streaming' AND replay_lsn IS NOT NULL;",
        db="postgres") == "pg1,pg2")
    with connect(p) as conn:
        st = host_status(conn, inputs, "pg0")
    assert st.role == "primary"
    assert sorted(r["name"] for r in st.replicas) == ["pg1", "pg2"]
    assert all(r["sync_state"] == "async" and r["lag_bytes"] is not None for r in st.replicas)
    with connect(hosts[1]) as conn:
        sb = host_status(conn, inputs, "pg1")
    assert sb.role == "standby" and sb.lag is not None and "bytes" in sb.lag and "seconds" in sb.lag
    acked = write_until_killed(testhosts, p, kill_after=300)
    # polyvm postgres promote: pg1 (the first -H) is promoted, pg2 (the next) re-pointed to it.
    import yaml
    from click.testing import CliRunner

    from polyvm.cli import build_cli

    data = group_inputs(hosts, members, "pg0", synchronous=0).model_dump(mode="json", exclude_none=True)
    data["users"] = [{"name": "app", "password": APP_PASSWORD}]
    data["replication"]["password"] = REPL_PASSWORD
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump(data))
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(h.known_hosts_line + "\n" for h in hosts))
    r = CliRunner().invoke(build_cli(), [
        "postgres", "promote", "pg1", "-H", f"{hosts[1].user}@{hosts[1].address}",
        "-H", f"{hosts[2].user}@{hosts[2].address}", "-k", str(hosts[1].private_key_path),
        "--known-hosts", str(kh), "--inputs", str(path), "--password-file", str(tmp_path / "pw.json"), "-q"])
    assert r.exit_code == 0, r.output
    assert "pg1 is the primary now" in r.output
    assert psql(testhosts, hosts[1], "SELECT pg_is_in_recovery();") == "f"
    wait_for("pg2 to stream from pg1", lambda: psql(
        testhosts, hosts[1], "SELECT application_name FROM pg_stat_replication;", db="postgres") == "pg2")
    have = {int(x) for x in psql(testhosts, hosts[1], "SELECT id FROM t;").split()}
    lost = len(set(acked) - have)
    with capsys.disabled():
        print(f"\n[replication] async: {len(acked)} rows acknowledged, {lost} lost at failover; "
              f"standby lag before: {sb.lag}")


@pytest.mark.skipif(not __import__("os").environ.get("POLYVM_PG_BENCH"),
                    reason="a measurement (about 1 GB of data, minutes); set POLYVM_PG_BENCH=1 to run it")
def test_measure_replica_catch_up(testhosts, capsys):
    """Prints how long a standby of a ~1 GB primary takes to clone, and to catch up after being stopped
    while the primary wrote; asserts only that it caught up."""
    hosts = [testhosts.up(fresh=True, disk_mb=4096)[0] for _ in range(2)]
    net = HostNetwork.up([h.record for h in hosts])
    try:
        members = [{"name": f"pg{k}", "address": net.addresses[h.record.id]} for k, h in enumerate(hosts)]
        inputs = group_inputs(hosts, members, "pg0", synchronous=0)
        p, s = hosts
        apply(p, inputs)
        testhosts.exec(p, "cd / && runuser -u postgres -- pgbench -q -i -s 70 app", timeout=1800)
        t0 = time.monotonic()
        apply(s, inputs)
        clone_s = time.monotonic() - t0
        testhosts.exec(s, "pg_ctlcluster 15 main stop -m fast")
        testhosts.exec(p, "cd / && runuser -u postgres -- pgbench -n -T 20 -c 2 app", timeout=600)
        behind = psql(testhosts, p, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) "
                                    "FROM pg_replication_slots WHERE slot_name = 'pg1';", db="postgres")
        t0 = time.monotonic()
        testhosts.exec(s, "runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl start -w -s "
                          "-D /etc/postgresql/15/main -l /var/log/postgresql/postgresql-15-main.log")
        wait_for("the standby to catch up", lambda: psql(
            testhosts, p, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pg1' "
                          "AND replay_lsn = pg_current_wal_lsn();", db="postgres") == "1", timeout=900)
        catch_s = time.monotonic() - t0
        with capsys.disabled():
            print(f"\n[replication] ~1 GB primary: standby cloned (whole recipe run) in {clone_s:.1f}s; "
                  f"{int(behind) / 2**20:.0f} MiB of WAL behind, caught up in {catch_s:.1f}s")
    finally:
        net.down()


def test_backups_with_replicas_run_on_the_primary_only_and_follow_a_promotion(testhosts):
    hosts = [testhosts.up(fresh=True, disks_mb=[256, 256])[0] for _ in range(2)]
    net = HostNetwork.up([h.record for h in hosts])
    try:
        members = [{"name": f"pg{k}", "address": net.addresses[h.record.id]} for k, h in enumerate(hosts)]

        def inputs(primary: str):
            data = group_inputs(hosts, members, primary, 0).model_dump(mode="json", exclude_none=True)
            data["users"] = [{"name": "app", "password": APP_PASSWORD}]
            data["replication"]["password"] = REPL_PASSWORD
            data["backup"] = {"cipher_pass": "test-cipher-passphrase-0123456789", "repo": {"path": "/srv/pgbackrest"}}
            return parse_inputs(data)

        def run(h, i):
            vm = Host(address=h.address, user=h.user, host_key=h.host_key,
                      disks=(HostDisk("pgdata", h.disks[0], "/srv/postgresql"),
                             HostDisk("pgbackrest", h.disks[1], "/srv/pgbackrest")))
            with connect(h) as conn:
                return {s.name: s.detail for s in apply_postgres(conn, i, host=vm).steps if s.changed}

        assert "first full backup taken" in run(hosts[0], inputs("pg0"))["backups"]
        standby = run(hosts[1], inputs("pg0"))
        assert "cloned pg1" in standby["replica"] and "backups" not in standby
        assert psql(testhosts, hosts[1], "SELECT pg_is_in_recovery();") == "t"
        # Promoted, pg1 archives to its own repository: the stanza is made and a first full backup taken.
        promoted = run(hosts[1], inputs("pg1"))
        assert "promoted pg1" in promoted["replication"] and "first full backup taken" in promoted["backups"]
        testhosts.exec(hosts[1], "runuser -u postgres -- pgbackrest --stanza=main check", timeout=300)
    finally:
        net.down()
