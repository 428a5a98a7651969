"""`polyvm sandbox` end to end on this machine: up -> database login over TCP, firewall, up twice, down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from polyvm.backends.local import engine as local_engine
from polyvm.backends.local.sandbox import Sandbox


def polyvm(state_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, POLYVM_LOCAL_STATE_DIR=str(state_dir))
    proc = subprocess.run([sys.executable, "-m", "polyvm.cli", "sandbox", *args], capture_output=True, text=True,
                          env=env, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"polyvm sandbox {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def tcp_open(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1.0):
            return True
    except OSError:
        return False


def leftovers(hosts: list[local_engine.Host]) -> list[str]:
    return [item for h in hosts for item in local_engine.leftovers(h)]


def wait_gone(hosts, timeout: float = 60.0) -> list[str]:
    # Loop devices are released when a host's mount namespace is torn down, after its last process: soon,
    # but later on a loaded machine.
    end = time.monotonic() + timeout
    while (left := leftovers(hosts)) and time.monotonic() < end:
        time.sleep(0.05)
    return left


@pytest.fixture
def sandbox_dir(_local_engine, tmp_path):
    """A private state dir for `polyvm sandbox`; everything in it is removed after the test."""
    pytest.importorskip("psycopg", reason="the sandbox login test needs psycopg (pip install 'polyvm[test]')")
    state = tmp_path / "sandbox-state"
    yield state
    if state.exists():
        Sandbox(state).down()


@pytest.mark.e2e
def test_up_login_firewall_up_again_down(sandbox_dir):
    import psycopg

    out = json.loads(polyvm(sandbox_dir, "up", "--json").stdout)
    (vm,) = out["vms"]
    assert vm["created"] and vm["name"] == "sandbox" and vm["address"].startswith("198.19.")
    assert vm["login_seconds"] is not None
    # The password is in a 0600 file and not in the output.
    pw_file = Path(out["passwords_file"])
    assert pw_file.stat().st_mode & 0o777 == 0o600
    password = json.loads(pw_file.read_text())["app"]
    assert password not in json.dumps(out)
    assert (sandbox_dir.stat().st_mode & 0o777) == 0o700

    # A login over TCP from this machine works (TLS + SCRAM); a wrong password does not.
    with psycopg.connect(host=vm["address"], port=5432, user="app", dbname="app", password=password,
                         sslmode="require", connect_timeout=5) as conn:
        assert conn.execute("select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()"
                            ).fetchone() == ("app", True)
        conn.execute("create table kept (x int)")
        conn.execute("insert into kept values (42)")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=vm["address"], user="app", dbname="app", password=password + "x",
                        sslmode="require", connect_timeout=5)

    # A port the spec does not open is dropped by the host's nftables, though something listens on it.
    sb = Sandbox(sandbox_dir)
    (host,) = sb.hosts()
    subprocess.Popen(sb.engine.nsenter_argv(host) + [
        "python3", "-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',8080)); s.listen(); time.sleep(300)"])
    sb.engine.exec(host, "for i in $(seq 600); do ss -ltn | grep -q ':8080 ' && exit 0; sleep 0.1; done; exit 1")
    assert tcp_open(vm["address"], 5432)
    assert not tcp_open(vm["address"], 8080)

    # `sandbox ssh` reaches the host with the pinned key.
    ssh = polyvm(sandbox_dir, "ssh", "sandbox", "hostname")
    assert ssh.stdout.strip() == "sandbox"

    # Up again: the same host, nothing changed by the recipe, data kept, no duplicate.
    again = json.loads(polyvm(sandbox_dir, "up", "--json").stdout)
    (vm2,) = again["vms"]
    assert not vm2["created"] and vm2["address"] == vm["address"] and vm2["recipe_changes"] == []
    assert [h.id for h in sb.hosts()] == [host.id]
    with psycopg.connect(host=vm["address"], user="app", dbname="app", password=password, sslmode="require",
                         connect_timeout=5) as conn:
        assert conn.execute("select x from kept").fetchone() == (42,)
    status = json.loads(polyvm(sandbox_dir, "status", "--json").stdout)
    assert [(s["name"], s["running"], s["sshd"], s["recipe"], s["service"]) for s in status] == [
        ("sandbox", True, True, "postgres", True)]

    # Down: nothing left behind.
    down = polyvm(sandbox_dir, "down")
    assert "removed 1 sandbox VM(s): sandbox" in down.stdout
    assert wait_gone([host]) == []
    assert not sandbox_dir.exists()


@pytest.mark.e2e
def test_up_recipe_nginx_gives_a_page_to_curl_and_the_baseline_filters(sandbox_dir):
    import shutil

    out = json.loads(polyvm(sandbox_dir, "up", "--recipe", "nginx", "--json").stdout)
    (vm,) = out["vms"]
    assert vm["recipe"] == "nginx" and vm["url"] == f"https://{vm['address']}/" and vm["login_seconds"] is not None
    assert vm["checked"] == f"HTTPS GET {vm['url']}"
    # curl from this machine, verifying the generated certificate (read from the host, pinned).
    sb = Sandbox(sandbox_dir)
    (host,) = sb.hosts()
    cert = sandbox_dir / "server.crt"
    cert.write_text(sb.engine.exec(host, ["cat", "/etc/polyvm/nginx/server.crt"]).stdout)
    curl = shutil.which("curl")
    if curl:
        page = subprocess.run([curl, "-sS", "--cacert", str(cert), vm["url"]], capture_output=True, text=True,
                              timeout=30)
        assert page.returncode == 0 and "polyvm nginx on sandbox" in page.stdout, page.stderr
    else:  # the same request without curl
        from polyvm.recipes.nginx.recipe import https_get

        assert "polyvm nginx on sandbox" in https_get(vm["url"], cafile=str(cert))[1]
    # The guest baseline loaded the spec's rules: 22, 80 and 443 only; the data disk is mounted.
    ruleset = sb.engine.exec(host, ["nft", "list", "table", "inet", "polyvm"]).stdout
    assert "tcp dport 443 accept" in ruleset and "tcp dport 80 accept" in ruleset and "5432" not in ruleset
    assert sb.engine.exec(host, ["findmnt", "-n", "-o", "TARGET", "/srv/data"]).stdout.strip() == "/srv/data"
    again = json.loads(polyvm(sandbox_dir, "up", "--recipe", "nginx", "--json").stdout)
    assert again["vms"][0]["recipe_changes"] == [] and not again["vms"][0]["created"]
    status = json.loads(polyvm(sandbox_dir, "status", "--json").stdout)
    assert [(s["recipe"], s["service"]) for s in status] == [("nginx", True)]
    polyvm(sandbox_dir, "down")
    assert wait_gone([host]) == []


@pytest.mark.e2e
def test_down_cleans_up_crashed_and_interrupted_runs(sandbox_dir, client_key):
    sb = Sandbox(sandbox_dir)
    pub = sb.public_key()
    # Two hosts as an interrupted `up` leaves them: one whose processes were killed (crash), one
    # half-made (record still "creating", sshd never started).
    crashed = sb.engine.up(authorized_keys=pub, disks_mb=[8], labels={"polyvm-sandbox": "crashed"})
    os.kill(crashed.pid, signal.SIGKILL)
    end = time.monotonic() + 60  # PID 1 inside dies with its parent, asynchronously
    while sb.engine.is_running(crashed) and time.monotonic() < end:
        time.sleep(0.05)
    half = sb.engine.up(authorized_keys=pub, disks_mb=[8], sshd_delay=600, labels={"polyvm-sandbox": "half"})
    half.status = "creating"
    sb.engine._save(half)
    # A host of someone else in the same state dir (e.g. Pulumi-managed) is not the sandbox's to remove.
    other = sb.engine.up(authorized_keys=client_key.public_key)
    try:
        status = json.loads(polyvm(sandbox_dir, "status", "--json").stdout)
        assert sorted(s["name"] for s in status) == ["crashed", "half"]
        assert not any(s["running"] for s in status if s["name"] == "crashed")
        down = polyvm(sandbox_dir, "down")
        assert "removed 2 sandbox VM(s)" in down.stdout
        assert wait_gone([crashed, half]) == []
        assert sb.engine.is_running(sb.engine.get(other.id))
        assert not sb.dir.exists()  # key, passwords, known_hosts gone with the last sandbox VM
    finally:
        sb.engine.down(other)


@pytest.mark.e2e
def test_count_and_custom_spec_without_database_port(sandbox_dir, tmp_path):
    import yaml

    from polyvm.backends.local import HOST_FAMILY, HOST_VERSION

    spec = {"name": "db", "size": "nano", "image": {"family": HOST_FAMILY, "version": HOST_VERSION},
            "ingress": [{"port": 22, "cidrs": ["198.18.0.0/15"]}],
            "ssh": {"user": "admin", "public_key": Sandbox(sandbox_dir).public_key()}}
    path = tmp_path / "vm.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = polyvm(sandbox_dir, "up", "--spec", str(path), "--count", "2")
    assert "db-1: 198.19." in proc.stdout and "db-2: 198.19." in proc.stdout
    # The spec does not open 5432 to this machine: the CLI says so instead of failing the login.
    assert "does not open 5432" in proc.stdout
    hosts = Sandbox(sandbox_dir).hosts()
    assert sorted(h.labels["polyvm-sandbox"] for h in hosts) == ["db-1", "db-2"]
    assert all(not tcp_open(h.guest_ip, 5432) for h in hosts)
    assert all(h.user == "admin" for h in hosts)
    polyvm(sandbox_dir, "down", "db-1")
    assert [h.labels["polyvm-sandbox"] for h in Sandbox(sandbox_dir).hosts()] == ["db-2"]
    polyvm(sandbox_dir, "down")
    assert wait_gone(hosts) == []


# --- without root / sshd: exact message, non-zero exit, nothing changed ------------------------------------
def _run_cli(args, monkeypatch, state_dir):
    from polyvm.cli import build_cli

    monkeypatch.setenv("POLYVM_LOCAL_STATE_DIR", str(state_dir))
    return CliRunner().invoke(build_cli(), ["sandbox", *args])


def _forbid_changes(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("a host was being created")
    monkeypatch.setattr(local_engine.Engine, "_allocate", refuse)


def test_up_without_root_says_what_to_do_and_changes_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    _forbid_changes(monkeypatch)
    result = _run_cli(["up"], monkeypatch, tmp_path / "state")
    assert result.exit_code == 1
    assert "must run as root" in result.output and "run polyvm as root (e.g. with sudo)" in result.output
    assert not (tmp_path / "state").exists()


def test_up_without_sshd_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(local_engine, "which", lambda tool: None if tool == "sshd" else f"/usr/bin/{tool}")
    _forbid_changes(monkeypatch)
    result = _run_cli(["up"], monkeypatch, tmp_path / "state")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("polyvm: error: ")
    assert "missing sshd" in result.output and "openssh-server" in result.output
    assert not (tmp_path / "state").exists()


def test_status_and_down_with_nothing_there(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "no sandbox VMs" in _run_cli(["status"], monkeypatch, tmp_path / "none").output
    result = _run_cli(["down"], monkeypatch, tmp_path / "none")
    assert result.exit_code == 0 and "removed 0 sandbox VM(s)" in result.output
    result = _run_cli(["ssh", "nope"], monkeypatch, tmp_path / "none")
    assert result.exit_code == 2 and "no sandbox VM named 'nope'" in result.output
