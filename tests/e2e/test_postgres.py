"""The PostgreSQL recipe against real SSH test hosts (network namespaces with their own sshd).

Hosts start with PostgreSQL 15 installed but no cluster (fresh=True), like a new Debian VM, and a
loop-device data disk. The client side of each test is this machine (psycopg over the host's link).
"""

from __future__ import annotations

import time

import pytest

from polyvm.errors import RecipeError
from polyvm.host import Host, HostDisk
from polyvm.spec import IngressRule
from polyvm.recipes.postgres import apply_postgres, parse_inputs

from pg_e2e import connect

psycopg = pytest.importorskip("psycopg", reason="psycopg is needed for client-side logins")

pytestmark = pytest.mark.e2e

APP_PASSWORD = "correct-horse-battery-staple"


def inputs_for(host, *, disk=True, **overrides):
    data = {
        "allowed_cidrs": [f"{host.record.host_ip}/32"],
        "users": [{"name": "app", "password": APP_PASSWORD}],
        "databases": [{"name": "app"}],
        "memory_mb": 512,
    }
    if disk and host.disk:
        data["mount_point"] = "/srv/postgresql"
    data.update(overrides)
    return parse_inputs(data)


def vm_of(host, inputs, firewall=None) -> Host:
    """The Host hand-over for a test host: its data disk (when the inputs use one) and a guest firewall."""
    disks = (HostDisk("pgdata", host.disk, inputs.mount_point),) if inputs.mount_point and host.disk else ()
    return Host(address=host.address, user=host.user, host_key=host.host_key, disks=disks,
                firewall=tuple(firewall) if firewall is not None else None)


def apply(conn, host, inputs, firewall=None):
    """The guest baseline (data disk, firewall), then the recipe: what run_recipe does for one host."""
    return apply_postgres(conn, inputs, host=vm_of(host, inputs, firewall))


def login(host, *, password=APP_PASSWORD, sslmode="require", dbname="app"):
    return psycopg.connect(host=host.address, port=5432, user="app", password=password, dbname=dbname,
                           sslmode=sslmode, connect_timeout=10)


def psql(testhosts, host, sql: str) -> str:
    r = testhosts.exec(host, ["runuser", "-u", "postgres", "--", "psql", "-XAt", "-d", "app", "-f", "-"],
                       input=sql)
    return r.stdout.strip()


def start_time(testhosts, host) -> str:
    return psql(testhosts, host, "SELECT pg_postmaster_start_time();")


def test_fresh_host_full_run_locked_down_idempotent_and_data_survives(testhosts, capsys):
    (host,) = testhosts.up(fresh=True, disk_mb=256)

    t0 = time.monotonic()
    with connect(host) as conn:
        first = apply(conn, host, inputs_for(host))
    first_s = time.monotonic() - t0
    assert first.changed
    names = {s.name for s in first.steps if s.changed}
    assert {"data disk pgdata", "data directory", "cluster", "configuration", "server", "roles and databases"} <= names
    assert "created ext4 filesystem" in next(s.detail for s in first.steps if s.name == "data disk pgdata")

    # TLS + SCRAM login as the application user from an allowed address works.
    with login(host) as c:
        row = c.execute("SELECT current_user, ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row[0] == "app" and row[1] is True
        assert c.execute("SHOW password_encryption").fetchone()[0] == "scram-sha-256"
    # The same login without TLS finds no pg_hba entry.
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry|no encryption"):
        login(host, sslmode="disable")
    # A wrong password fails.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(host, password="wrong-password-123")
    # A client outside the allowed CIDRs (the host itself, via its own address) is rejected.
    r = testhosts.exec(host, ["psql", "-XAt", "-w",
                              f"host={host.address} user=app dbname=app sslmode=require connect_timeout=5",
                              "-c", "SELECT 1"], check=False)
    assert r.returncode != 0 and "no pg_hba.conf entry" in r.stderr

    # No trust anywhere; TCP only as hostssl + scram-sha-256 from the allowed (and loopback) networks.
    rules = psql(testhosts, host, "SELECT type || ' ' || coalesce(address, '') || ' ' || auth_method "
                                  "FROM pg_hba_file_rules ORDER BY line_number;").splitlines()
    assert not any("trust" in r for r in rules)
    assert rules[0] == "local  peer"
    assert set(rules[1:]) == {"hostssl 127.0.0.1 scram-sha-256", "hostssl ::1 scram-sha-256",
                              f"hostssl {host.record.host_ip} scram-sha-256"}
    assert psql(testhosts, host, "SELECT rolpassword FROM pg_authid WHERE rolname = 'app';").startswith(
        "SCRAM-SHA-256$4096:")
    # Config files belong to postgres and are not world-readable.
    perms = testhosts.exec(host, "stat -c '%U %a %n' /etc/postgresql/15/main/postgresql.conf "
                                 "/etc/postgresql/15/main/pg_hba.conf /etc/postgresql/15/main/conf.d/50-polyvm.conf "
                                 "/etc/postgresql/15/main/server.key").stdout.splitlines()
    for line in perms:
        owner, mode, _path = line.split()
        assert owner == "postgres" and mode[-1] == "0", line
    # The password was never logged.
    logs = testhosts.exec(host, "cat /var/log/postgresql/*.log 2>/dev/null || true").stdout
    assert APP_PASSWORD not in logs

    # The data directory is on the data disk, mounted by UUID through fstab.
    data_dir = psql(testhosts, host, "SHOW data_directory;")
    assert data_dir == "/srv/postgresql/15/main"
    src = testhosts.exec(host, ["findmnt", "-n", "-o", "SOURCE", "--target", data_dir]).stdout.strip()
    assert src == host.disk
    fstab = testhosts.exec(host, ["cat", "/etc/fstab"]).stdout
    assert any(l.startswith("UUID=") and " /srv/postgresql " in l for l in fstab.splitlines())

    # A second run with the same inputs changes nothing and does not restart the server.
    before = start_time(testhosts, host)
    t0 = time.monotonic()
    with connect(host) as conn:
        second = apply(conn, host, inputs_for(host))
    second_s = time.monotonic() - t0
    assert not second.changed, second.summary()
    assert start_time(testhosts, host) == before

    # Rows written now survive re-runs with changed settings: a reload (work_mem) ...
    with login(host) as c:
        c.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        c.execute("INSERT INTO kept SELECT g, 'row ' || g FROM generate_series(1, 100) g")
    with connect(host) as conn:
        third = apply(conn, host, inputs_for(host, settings={"work_mem": "8MB"}))
    assert third.changed and not third.restarted
    assert "reloaded" in next(s.detail for s in third.steps if s.name == "server")
    assert start_time(testhosts, host) == before
    with login(host) as c:
        assert c.execute("SHOW work_mem").fetchone()[0] == "8MB"
    # ... and a restart, only because shared_buffers needs one.
    with connect(host) as conn:
        fourth = apply(conn, host, inputs_for(host, settings={"work_mem": "8MB", "shared_buffers": "64MB"}))
    assert fourth.restarted and "shared_buffers" in next(s.detail for s in fourth.steps if s.name == "server")
    assert start_time(testhosts, host) != before
    with login(host) as c:
        assert c.execute("SHOW shared_buffers").fetchone()[0] == "64MB"
        assert c.execute("SELECT count(*) FROM kept").fetchone()[0] == 100

    # An invalid value is refused before anything is applied; the server keeps running on the old files.
    restarted_at = start_time(testhosts, host)
    bad = inputs_for(host, settings={"work_mem": "8MB", "shared_buffers": "lots"})
    with connect(host) as conn, pytest.raises(RecipeError, match='invalid value for parameter "shared_buffers"'):
        apply(conn, host, bad)
    assert start_time(testhosts, host) == restarted_at
    dropin = testhosts.exec(host, ["cat", "/etc/postgresql/15/main/conf.d/50-polyvm.conf"]).stdout
    assert "shared_buffers = '64MB'" in dropin

    # Narrowing allowed_cidrs is a reload: this machine is then refused, without a restart.
    with connect(host) as conn:
        narrowed = apply(conn, host, inputs_for(host, allowed_cidrs=["192.0.2.0/24"],
                                                   settings={"work_mem": "8MB", "shared_buffers": "64MB"}))
    assert narrowed.changed and not narrowed.restarted
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        login(host)
    assert start_time(testhosts, host) == restarted_at

    with capsys.disabled():
        print(f"\n[postgres e2e] first run {first_s:.2f}s, unchanged re-run {second_s:.2f}s")


def test_sudo_login_user_without_data_disk(testhosts):
    (host,) = testhosts.up(fresh=True, user="admin")
    assert host.user == "admin"
    inputs = inputs_for(host, disk=False, settings={"log_statement": "all"})
    with connect(host) as conn:
        first = apply(conn, host, inputs)
        second = apply(conn, host, inputs)
    assert first.changed and not second.changed
    assert first.data_dir == "/var/lib/postgresql/15/main"
    with login(host) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "app"
    # Even with every statement logged, neither the password nor its verifier reaches the log.
    logs = testhosts.exec(host, "cat /var/log/postgresql/*.log").stdout
    assert "SELECT current_user" in logs
    assert APP_PASSWORD not in logs and "SCRAM-SHA-256$" not in logs


def test_existing_filesystem_on_data_disk_is_never_reformatted(testhosts):
    (host,) = testhosts.up(fresh=True, disk_mb=128)
    testhosts.exec(host, f"mkfs.ext4 -q -L old {host.disk} && mkdir -p /mnt/old && mount {host.disk} /mnt/old "
                         "&& echo precious > /mnt/old/keep.txt && umount /mnt/old")
    uuid = testhosts.exec(host, ["blkid", "-p", "-s", "UUID", "-o", "value", host.disk]).stdout.strip()
    with connect(host) as conn:
        result = apply(conn, host, inputs_for(host))
    assert "created" not in next(s.detail for s in result.steps if s.name == "data disk pgdata")
    assert testhosts.exec(host, "cat /srv/postgresql/keep.txt").stdout.strip() == "precious"
    assert testhosts.exec(host, ["blkid", "-p", "-s", "UUID", "-o", "value", host.disk]).stdout.strip() == uuid


def test_disk_with_partition_table_is_refused(testhosts):
    (host,) = testhosts.up(fresh=True, disk_mb=64)
    # An MBR with one Linux partition (what a disk partitioned elsewhere looks like), no filesystem.
    mbr = bytearray(512)
    mbr[446:462] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    with open(host.disk, "r+b") as dev:  # the loop device is visible from this machine too
        dev.write(mbr)
    with connect(host) as conn, pytest.raises(RecipeError, match="refusing to touch it"):
        apply(conn, host, inputs_for(host))
    assert "PTTYPE" in testhosts.exec(host, ["blkid", "-p", "-o", "export", host.disk], check=False).stdout


def test_guest_firewall_opens_only_postgres_and_ssh(testhosts):
    (host,) = testhosts.up(fresh=True)
    me = f"{host.record.host_ip}/32"
    inputs = inputs_for(host, disk=False)
    rules = [inputs.ingress_rule(), IngressRule(port=22, cidrs=[me])]
    with connect(host) as conn:
        first = apply(conn, host, inputs, firewall=rules)
        second = apply(conn, host, inputs, firewall=rules)
    assert any(s.name == "guest firewall" and s.changed for s in first.steps)
    assert not second.changed
    ruleset = testhosts.exec(host, ["nft", "list", "table", "inet", "polyvm"]).stdout
    assert "policy drop" in ruleset and "tcp dport 5432 accept" in ruleset and "tcp dport 22 accept" in ruleset
    with login(host) as c:  # still reachable from the allowed address
        assert c.execute("SELECT 1").fetchone()[0] == 1


def test_cli_generates_passwords_into_a_0600_file_and_reuses_them(testhosts, tmp_path):
    import json
    import stat

    from click.testing import CliRunner

    from polyvm.cli import build_cli

    (host,) = testhosts.up(fresh=True, disk_mb=128)
    pwfile = tmp_path / "pw.json"
    args = ["postgres", "-H", f"{host.user}@{host.address}", "-k", str(host.private_key_path),
            "--host-key", host.host_key, "--allow", f"{host.record.host_ip}/32", "--db-user", "app",
            "--database", "app", "--data-device", host.disk, "--memory-mb", "512", "--set", "work_mem=8MB",
            "--password-file", str(pwfile), "--json"]
    r = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["generated"] == ["app"] and out["hosts"][f"{host.user}@{host.address}"]["changed"]
    assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
    password = json.loads(pwfile.read_text())["app"]
    assert password not in r.output
    with login(host, password=password) as c:
        assert c.execute("SHOW work_mem").fetchone()[0] == "8MB"
    again = json.loads(CliRunner().invoke(build_cli(), args, catch_exceptions=False).output)
    assert again["generated"] == [] and not again["hosts"][f"{host.user}@{host.address}"]["changed"]


def test_existing_cluster_is_adopted_without_a_data_disk_and_refused_with_one(testhosts):
    (host,) = testhosts.up(fresh=False, disk_mb=64)
    with connect(host) as conn:
        with pytest.raises(RecipeError, match="already exists with its data in /var/lib/postgresql/15/main"):
            apply(conn, host, inputs_for(host))
        adopted = apply(conn, host, inputs_for(host, disk=False))
        again = apply(conn, host, inputs_for(host, disk=False))
    assert adopted.changed and not again.changed
    assert not any(s.name == "cluster" and "created" in s.detail for s in adopted.steps)
    with login(host) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "app"


SYSTEMCTL_STUB = """#!/bin/sh
# Test stand-in for systemd's systemctl: records each call; starts units through pg_ctlcluster.
echo "$*" >> /var/log/systemctl-calls
case "$1" in
  is-enabled) [ -f /var/lib/systemctl-enabled ] ;;
  enable) touch /var/lib/systemctl-enabled ;;
  start|restart|stop)
    unit=$2; v=${unit#postgresql@}; v=${v%-main}
    _SYSTEMCTL_SKIP_REDIRECT=1 exec pg_ctlcluster "$v" main "$1" ;;
  *) exit 0 ;;
esac
"""


def test_with_systemd_the_server_is_driven_through_systemctl(testhosts):
    (host,) = testhosts.up(fresh=True, disk_mb=64)
    testhosts.exec(host, "mkdir -p /run/systemd/system && cat > /usr/local/sbin/systemctl && "
                         "chmod 755 /usr/local/sbin/systemctl", input=SYSTEMCTL_STUB)
    with connect(host) as conn:
        apply(conn, host, inputs_for(host))
        apply(conn, host, inputs_for(host))
        apply(conn, host, inputs_for(host, settings={"shared_buffers": "64MB"}))
    calls = testhosts.exec(host, ["cat", "/var/log/systemctl-calls"]).stdout.splitlines()
    assert calls.count("start postgresql@15-main") == 1
    assert calls.count("restart postgresql@15-main") == 1
    assert calls.count("enable -q postgresql") == 1
    assert "daemon-reload" in calls  # after the fstab entry was added


def test_run_recipe_provisions_several_hosts_batched_and_idempotent(testhosts):
    from polyvm.provisioners.fanout import run_recipe
    from polyvm.recipes.postgres import PostgresRecipe

    hosts = testhosts.up(2, fresh=True)
    # One inputs object for both hosts: allow each host's client side (this machine) address.
    inputs = parse_inputs({"allowed_cidrs": [f"{h.record.host_ip}/32" for h in hosts],
                           "users": [{"name": "app", "password": APP_PASSWORD}], "databases": [{"name": "app"}],
                           "memory_mb": 256})
    vms = [Host(address=h.address, user=h.user, host_key=h.host_key, name=h.name) for h in hosts]
    creds = {"private_key_path": str(hosts[0].private_key_path), "deadline": 60}
    result = run_recipe(vms, PostgresRecipe(), inputs, credentials=creds, progress=False)
    assert result.ok and all(any(r.changed for r in hr.results) for hr in result.hosts.values())
    again = run_recipe(vms, PostgresRecipe(), inputs, credentials=creds, progress=False)
    assert [[r.name for r in hr.results if r.changed] for hr in again.hosts.values()] == [[], []]
    for h in hosts:
        with login(h) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "app"


def dropin(testhosts, host) -> str:
    return testhosts.exec(host, ["cat", "/etc/postgresql/15/main/conf.d/50-polyvm.conf"]).stdout


def test_a_setting_that_stops_the_server_from_starting_is_rolled_back(testhosts):
    (host,) = testhosts.up(fresh=True, disk_mb=256)
    good = {"work_mem": "8MB"}
    with connect(host) as conn:
        apply(conn, host, inputs_for(host, settings=good))
    with login(host) as c:
        c.execute("CREATE TABLE kept AS SELECT 1 AS id")

    # Passes every check, needs a restart, and the server cannot start with it: put back, started again.
    missing_lib = {**good, "shared_preload_libraries": "polyvm_no_such_library"}
    with connect(host) as conn, pytest.raises(RecipeError) as ei:
        apply(conn, host, inputs_for(host, settings=missing_lib))
    msg = str(ei.value)
    assert 'did not start with the new configuration (could not access file "polyvm_no_such_library"' in msg
    assert "rolled back to the last good configuration, and the server runs with it again" in msg
    assert "polyvm_no_such_library" not in dropin(testhosts, host)
    assert psql(testhosts, host, "SHOW shared_preload_libraries;") == ""
    with login(host) as c:
        assert c.execute("SELECT count(*) FROM kept").fetchone()[0] == 1

    # The same when the server was not running: it starts with the last good configuration.
    testhosts.exec(host, "pg_ctlcluster 15 main stop")
    with connect(host) as conn, pytest.raises(RecipeError, match="rolled back to the last good configuration"):
        apply(conn, host, inputs_for(host, settings=missing_lib))
    with login(host) as c:
        assert c.execute("SELECT count(*) FROM kept").fetchone()[0] == 1

    # What is known not to start is refused before a serving server is stopped: too much shared memory ...
    before = start_time(testhosts, host)
    mem_kb = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal:")))
    too_much = f"{2 * mem_kb // (1 << 20) + 2}GB"  # like shared_buffers=64GB on a smaller VM
    with connect(host) as conn, pytest.raises(RecipeError) as ei:
        apply(conn, host, inputs_for(host, settings={**good, "shared_buffers": too_much}))
    assert (f"not restarting PostgreSQL for shared_buffers: shared_buffers needs {int(too_much[:-2]) * 1024} MB "
            f"of shared memory, more than this host's {mem_kb // 1024} MB of RAM") in str(ei.value)
    assert "nothing changed, the server keeps running with the last good configuration" in str(ei.value)
    assert start_time(testhosts, host) == before
    assert too_much not in dropin(testhosts, host)

    # ... and a restart on a full data disk (the server stops, then cannot write postmaster.pid).
    testhosts.exec(host, "dd if=/dev/zero of=/srv/postgresql/filler bs=1M 2>/dev/null || true")
    with connect(host) as conn, pytest.raises(RecipeError, match="the data directory's filesystem has only 0 MB free"):
        apply(conn, host, inputs_for(host, settings={**good, "shared_buffers": "64MB"}))
    assert start_time(testhosts, host) == before
    with login(host) as c:
        assert c.execute("SHOW shared_buffers").fetchone()[0] != "64MB"
        assert c.execute("SELECT count(*) FROM kept").fetchone()[0] == 1
    testhosts.exec(host, "rm /srv/postgresql/filler")
    with connect(host) as conn:
        fixed = apply(conn, host, inputs_for(host, settings={**good, "shared_buffers": "64MB"}))
    assert fixed.restarted
    with login(host) as c:
        assert c.execute("SHOW shared_buffers").fetchone()[0] == "64MB"


def test_a_running_cluster_with_ssl_off_is_taken_over(testhosts):
    (host,) = testhosts.up()  # this machine's cluster 15/main, as an existing server
    testhosts.exec(host, "sed -i 's/^#\\?ssl *=.*/ssl = off/' /etc/postgresql/15/main/postgresql.conf && "
                         "grep -q '^ssl = off' /etc/postgresql/15/main/postgresql.conf && "
                         "pg_ctlcluster 15 main start")
    show_ssl = testhosts.exec(host, "runuser -u postgres -- psql -XAt -d postgres -c 'SHOW ssl'").stdout.strip()
    assert show_ssl == "off"
    with connect(host) as conn:
        taken = apply(conn, host, inputs_for(host, disk=False))
    assert taken.changed
    with login(host) as c:
        assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
        assert c.execute("SHOW ssl").fetchone()[0] == "on"
    # ssl = off from somewhere read after the recipe's drop-in (ALTER SYSTEM) is named, not a lock-out.
    psql(testhosts, host, "ALTER SYSTEM SET ssl = off;")
    with connect(host) as conn, pytest.raises(RecipeError, match="ssl is 'off' with the new configuration files"):
        apply(conn, host, inputs_for(host, disk=False, settings={"work_mem": "8MB"}))
    psql(testhosts, host, "ALTER SYSTEM RESET ssl;")
    with connect(host) as conn:
        apply(conn, host, inputs_for(host, disk=False, settings={"work_mem": "8MB"}))
    with login(host) as c:
        assert c.execute("SHOW work_mem").fetchone()[0] == "8MB"
