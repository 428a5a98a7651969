"""Configuration and scripts rendered for each OS family (pure; no host)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from polyvm.recipes.postgres import build_steps, layout_for, parse_inputs
from polyvm.recipes.postgres.recipe import FilesStep, RolesStep, ScriptStep
from polyvm.recipes.postgres.render import (
    CHANGED_MARKER,
    pg_string,
    render_install_script,
    render_pg_hba,
    render_postgresql_conf,
)

FAMILIES = [("debian", "12"), ("ubuntu", "22.04"), ("ubuntu", "24.04"), ("amazon-linux", "2023"), ("rhel", "9")]


def make_inputs(**extra):
    data = {"allowed_cidrs": ["10.1.0.0/16", "2001:db8::/32"], "users": [{"name": "app", "password": "p" * 16}],
            "databases": [{"name": "app"}], "mount_point": "/srv/postgresql",
            "memory_mb": 2048}
    data.update(extra)
    return parse_inputs(data)


def layout(family, version, **kw):
    return layout_for(family, version, None, data_mount="/srv/postgresql", **kw)


@pytest.mark.parametrize("family,version", FAMILIES)
def test_postgresql_conf_dropin(family, version):
    lay = layout(family, version)
    conf = render_postgresql_conf(make_inputs(settings={"work_mem": "16MB", "log_connections": True,
                                                        "search_path": "app, public"}), lay)
    lines = [l for l in conf.splitlines() if l and not l.startswith("#")]
    assert "password_encryption = 'scram-sha-256'" in lines and "ssl = on" in lines
    assert f"ssl_cert_file = '{lay.ssl_dir}/server.crt'" in lines
    assert f"ssl_key_file = '{lay.ssl_dir}/server.key'" in lines
    assert "listen_addresses = '*'" in lines and "port = 5432" in lines
    assert "shared_buffers = '512MB'" in lines and "work_mem = '16MB'" in lines
    assert "log_connections = on" in lines and "search_path = 'app, public'" in lines
    names = [l.split(" = ")[0] for l in lines]
    assert len(names) == len(set(names)), "each setting once"


def test_specific_listen_addresses_keep_loopback_for_the_login_check():
    conf = render_postgresql_conf(make_inputs(listen_addresses=["10.1.2.3"]), layout("debian", "12"))
    assert "listen_addresses = '10.1.2.3,localhost'" in conf


def test_pg_string_escapes():
    assert pg_string("it's a \\ path") == "'it''s a \\\\ path'"


@pytest.mark.parametrize("family,version", FAMILIES)
def test_pg_hba_has_no_trust_and_only_hostssl_scram_for_allowed_networks(family, version):
    hba = render_pg_hba(make_inputs(), layout(family, version))
    rules = [l.split() for l in hba.splitlines() if l.strip() and not l.startswith("#")]
    assert "trust" not in hba.replace("'trust'", "")
    assert rules[0] == ["local", "all", "postgres", "peer"]
    tcp = rules[1:]
    assert all(r[0] == "hostssl" and r[-1] == "scram-sha-256" for r in tcp)
    assert [r[3] for r in tcp] == ["127.0.0.1/32", "::1/128", "10.1.0.0/16", "2001:db8::/32"]
    no_loop = render_pg_hba(make_inputs(allow_loopback=False))
    assert "127.0.0.1" not in no_loop and "::1" not in no_loop


def test_steps_per_family_name_the_right_tools():
    deb = {s.name: s for s in build_steps(make_inputs(), layout("debian", "12"))}
    assert list(deb) == ["install PostgreSQL", "data directory", "cluster", "configuration", "server",
                         "roles and databases", "verify"]
    assert "pg_createcluster --start-conf=auto -d \"$data\"" in deb["cluster"].script
    assert "apt-get -o DPkg::Lock::Timeout=300 install" in deb["install PostgreSQL"].script
    assert "pg_ctlcluster 15 main restart" in deb["server"].script
    assert "systemctl restart postgresql@15-main" in deb["server"].script
    assert isinstance(deb["configuration"], FilesStep) and isinstance(deb["roles and databases"], RolesStep)
    files = {f.remote_path: f for f in deb["configuration"].files}
    assert set(files) == {"/etc/postgresql/15/main/conf.d/50-polyvm.conf", "/etc/postgresql/15/main/pg_hba.conf"}
    assert all(f.owner == "postgres" and f.mode == 0o640 for f in files.values())

    rh = {s.name: s for s in build_steps(make_inputs(version="16"), layout_for("rhel", "9", "16", data_mount="/srv/postgresql"))}
    assert "postgresql-setup --initdb" in rh["cluster"].script and "Environment=PGDATA=" in rh["cluster"].script
    assert "dnf -y -q module enable postgresql:16" in rh["install PostgreSQL"].script
    assert "include_dir = 'conf.d'" in rh["cluster"].script
    assert "systemctl restart postgresql" in rh["server"].script
    assert "mkfs" not in rh["data directory"].script  # the guest baseline formats and mounts
    assert "postgresql_db_t" in rh["data directory"].script

    al = {s.name: s for s in build_steps(make_inputs(), layout("amazon-linux", "2023"))}
    assert "for p in postgresql16-server openssl" in al["install PostgreSQL"].script
    assert "module" not in al["install PostgreSQL"].script


def test_no_data_disk_no_directory_step_and_never_a_firewall_or_disk_step():
    i = make_inputs(mount_point=None)
    names = [s.name for s in build_steps(i, layout_for("debian", "12"))]
    assert "data directory" not in names
    with_disk = [s.name for s in build_steps(make_inputs(), layout("debian", "12"))]
    assert with_disk.index("data directory") < with_disk.index("cluster")
    assert not [n for n in names + with_disk if "firewall" in n or "disk" in n]  # the guest baseline's


def test_secrets_only_on_stdin():
    steps = build_steps(make_inputs(), layout("debian", "12"))
    for s in steps:
        if isinstance(s, ScriptStep):
            assert "p" * 16 not in s.command()[0] and "p" * 16 not in s.script
    verify = steps[-1]
    assert verify.stdin == f"127.0.0.1:5432:app:app:{'p' * 16}\n" and verify.secrets == ["p" * 16]


def test_missing_password_is_refused_before_anything_runs():
    from polyvm.errors import RecipeError

    i = parse_inputs({"allowed_cidrs": ["10.0.0.0/8"], "users": [{"name": "app"}]})
    with pytest.raises(RecipeError, match="users without a password: app"):
        build_steps(i, layout("debian", "12"))


@pytest.mark.parametrize("family,version", FAMILIES)
def test_every_script_is_valid_posix_shell(family, version):
    sh = shutil.which("dash") or shutil.which("sh")
    steps = build_steps(make_inputs(), layout(family, version))
    for s in steps:
        if isinstance(s, ScriptStep):
            r = subprocess.run([sh, "-n"], input=s.script, text=True, capture_output=True)
            assert r.returncode == 0, f"{s.name}: {r.stderr}"


def _stub(bindir: Path, name: str, body: str) -> None:
    p = bindir / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)


@pytest.mark.parametrize("family,version,installed", [("debian", "12", True), ("debian", "12", False),
                                                      ("rhel", "9", True), ("rhel", "9", False)])
def test_install_script_skips_the_package_manager_when_nothing_is_missing(tmp_path, family, version, installed):
    """Run the real install script with stub dpkg-query/rpm/apt-get/dnf and see who was called."""
    calls = tmp_path / "calls"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    status = "install ok installed" if installed else "deinstall ok config-files"
    _stub(bindir, "dpkg-query", f"echo '{status}'")
    _stub(bindir, "rpm", "case \"$*\" in *--qf*) echo 13.14;; *) " + ("exit 0" if installed else "exit 1") + ";; esac")
    for tool in ("apt-get", "dnf", "cloud-init"):
        _stub(bindir, tool, f'echo "{tool} $*" >> {calls}')
    script = render_install_script(layout_for(family, version))
    script = script.replace("mkdir -p /etc/postgresql-common/createcluster.d", f"mkdir -p {tmp_path}/cc")
    script = script.replace(">/etc/postgresql-common/createcluster.d/", f">{tmp_path}/cc/")
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    r = subprocess.run(["sh", "-c", script], text=True, capture_output=True, env=env)
    assert r.returncode == 0, r.stderr
    if installed:
        assert not calls.exists() and CHANGED_MARKER not in r.stdout
    else:
        made = calls.read_text()
        assert ("apt-get -o DPkg::Lock::Timeout=300 install -y" in made) if family == "debian" \
            else ("dnf -y -q install" in made)
        assert "cloud-init status --wait" in made  # a booting VM may hold the package lock
        assert CHANGED_MARKER in r.stdout.splitlines()
        if family == "debian":
            assert (tmp_path / "cc" / "50-polyvm.conf").read_text() == "create_main_cluster = false\n"
