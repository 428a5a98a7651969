"""The local host engine against real hosts: SSH with a pinned key, disks, users, clean tear-down."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from polyvm.backends.local import engine as local_engine
from polyvm.errors import SandboxError


def ssh(host, command: str, *, user: str | None = None) -> tuple[int, str]:
    """Run ``command`` over real SSH, rejecting any host key but the recorded one."""
    client = paramiko.SSHClient()
    key_type, key_b64 = host.host_key.split()[:2]
    client.get_host_keys().add(host.address, key_type, paramiko.Ed25519Key(data=base64.b64decode(key_b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, username=user or host.user, key_filename=str(host.private_key_path),
                   look_for_keys=False, allow_agent=False, timeout=10)
    try:
        _, out, _ = client.exec_command(command, timeout=30)
        text = out.read().decode()
        return out.channel.recv_exit_status(), text
    finally:
        client.close()


def leftovers(host) -> list[str]:
    return local_engine.leftovers(host.record)


def wait_gone(host, timeout: float = 60.0) -> list[str]:
    # Loop devices are released when the host's mount namespace is torn down, just after its last process.
    end = time.monotonic() + timeout
    while (left := leftovers(host)) and time.monotonic() < end:
        time.sleep(0.05)
    return left


@pytest.mark.e2e
def test_ssh_login_with_pinned_host_key(testhosts):
    (host,) = testhosts.up()
    assert host.address.startswith("198.19.")
    status, out = ssh(host, "hostname; id -u")
    assert status == 0
    assert out.split() == [host.name, "0"]
    # The key sshd presents is the recorded one: the file inside matches, and the pinned login above worked.
    inside = testhosts.exec(host, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()[:2]
    assert inside == host.host_key.split()[:2]
    assert host.known_hosts_line == f"{host.address} {host.host_key}"


@pytest.mark.e2e
def test_wrong_pinned_key_is_rejected(testhosts):
    a, b = testhosts.up(2)
    assert a.address != b.address and a.host_key != b.host_key
    a.host_key = b.host_key  # pin the other host's key
    with pytest.raises(paramiko.SSHException):
        ssh(a, "true")


@pytest.mark.e2e
def test_data_disks_are_block_devices_of_the_asked_size(testhosts):
    (host,) = testhosts.up(disk_mb=64, disks_mb=[32])
    assert host.disk == host.disks[0]
    sizes = testhosts.exec(host, f"blockdev --getsize64 {host.disks[0]} {host.disks[1]}").stdout.split()
    assert sizes == [str(64 << 20), str(32 << 20)]
    testhosts.exec(host, f"mkfs.ext4 -q {host.disk} && mkdir -p /data && mount {host.disk} /data "
                         "&& echo hi > /data/f")
    assert testhosts.exec(host, "cat /data/f").stdout == "hi\n"


@pytest.mark.e2e
def test_sudo_user_and_fresh_postgres(testhosts):
    (host,) = testhosts.up(user="admin", fresh=True)
    assert host.user == "admin"
    status, out = ssh(host, "id -un; sudo -n id -u; ls -A /etc/postgresql/15 /var/lib/postgresql/15 | grep -v : ")
    assert status in (0, 1)  # grep exits 1 when nothing is left, which is the point
    assert out.split()[:2] == ["admin", "0"]
    assert out.split()[2:] == []
    # Root login with the same key also works, as on a cloud image's root with authorized keys.
    assert ssh(host, "id -un", user="root") == (0, "root\n")
    # This machine's clusters are untouched.
    assert any(Path("/etc/postgresql").glob("*/*"))


@pytest.mark.e2e
def test_writes_inside_do_not_reach_this_machine(testhosts, tmp_path):
    (host,) = testhosts.up()
    marker = f"/etc/polyvm-engine-test-{os.getpid()}"
    testhosts.exec(host, f"echo inside > {marker} && rm -f /etc/hostname.does-not-exist")
    assert testhosts.exec(host, ["cat", marker]).stdout == "inside\n"
    assert not Path(marker).exists()
    # This machine's secrets are not in plain view inside: root's SSH keys, password hashes, the state dir.
    assert testhosts.exec(host, "ls -A /root/.ssh").stdout.split() == ["authorized_keys"]
    hashes = {line.split(":")[1] for line in testhosts.exec(host, "cat /etc/shadow").stdout.splitlines()}
    assert hashes <= {"*"}
    listing = testhosts.exec(host, ["ls", "-A", str(host.record.state_dir)], check=False).stdout
    assert host.record.id not in listing


@pytest.mark.e2e
def test_root_has_a_fresh_vms_shell_startup_files(testhosts):
    """Not this machine's own ~/.bashrc (which may run slow tools on every SSH session)."""
    [host] = testhosts.up()
    stock = Path("/usr/share/base-files/dot.bashrc").read_text()
    assert testhosts.exec(host, "cat /root/.bashrc").stdout == stock


@pytest.mark.e2e
def test_sshd_delay_is_honoured(testhosts):
    (host,) = testhosts.up(sshd_delay=3)
    eng = testhosts.engine
    assert eng.is_running(host.record)
    # Not listening before the delay has passed (counted from when the host was ready, not from when this
    # loaded machine got round to checking).
    listening = eng.sshd_listening(host.record)
    since_ready = time.time() - (host.record.dir / "ready").stat().st_mtime
    assert not listening or since_ready >= 3
    end = time.monotonic() + 60
    while not eng.sshd_listening(host.record) and time.monotonic() < end:
        time.sleep(0.05)
    assert ssh(host, "echo ok") == (0, "ok\n")


@pytest.mark.e2e
def test_down_removes_everything_even_with_open_sessions(testhosts):
    (host,) = testhosts.up(disk_mb=16)
    testhosts.exec(host, f"mkfs.ext4 -q {host.disk} && mkdir -p /data && mount {host.disk} /data")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(host.address, username="root", key_filename=str(host.private_key_path),
                   look_for_keys=False, allow_agent=False, timeout=10)
    _, out, _ = client.exec_command("sleep 600")
    assert len(leftovers(host)) == 6  # netns, veth, loop, 2 processes, dir
    testhosts.down(host)
    end = time.monotonic() + 60
    while not (out.channel.closed or out.channel.exit_status_ready()) and time.monotonic() < end:
        time.sleep(0.05)
    assert out.channel.closed or out.channel.recv_exit_status() != 0  # the session died with the host
    client.close()
    assert wait_gone(host) == []
    testhosts.down(host)  # idempotent


@pytest.mark.e2e
def test_down_from_another_process_and_after_a_crash(testhosts, client_key):
    (host,) = testhosts.up(disk_mb=8)
    eng = testhosts.engine
    # Simulate a crash mid-way: the host's processes die, its record, netns and loop device stay.
    os.kill(host.record.pid, 9)
    end = time.monotonic() + 30  # PID 1 inside dies with its parent, asynchronously
    while eng.is_running(host.record) and time.monotonic() < end:
        time.sleep(0.05)
    assert not eng.is_running(host.record)
    code = ("import sys; from polyvm.backends.local.engine import Engine; "
            "e = Engine(sys.argv[1]); print([h.id for h in e.list()]); e.down(sys.argv[2])")
    out = subprocess.run([sys.executable, "-c", code, str(eng.state_dir), host.record.id],
                         capture_output=True, text=True, check=True).stdout
    assert host.record.id in out
    assert wait_gone(host) == []


@pytest.mark.e2e
def test_record_is_json_in_a_private_state_dir(testhosts):
    (host,) = testhosts.up()
    state = Path(host.record.state_dir)
    assert state.stat().st_mode & 0o777 == 0o700
    data = json.loads((state / host.record.id / "host.json").read_text())
    assert data["guest_ip"] == host.address and data["host_key"] == host.host_key
    assert (state / host.record.id / "host_key").stat().st_mode & 0o777 == 0o600


@pytest.mark.e2e
def test_concurrent_processes_get_distinct_hosts(testhosts, client_key, tmp_path):
    """Hosts made at the same time by several processes, all alive at once: no two share an address.
    (An address may be reused once its host is down; that is allowed, so every host is kept up until all
    have been compared.)"""
    code = ("import sys, json; from polyvm.backends.local.engine import Engine; e = Engine(sys.argv[1]); "
            "hs = [e.up(authorized_keys=sys.argv[2]) for _ in range(3)]; "
            "print(json.dumps([[h.id, h.guest_ip] for h in hs]), flush=True); sys.stdin.readline(); "
            "[e.down(h) for h in hs]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"s{i}"), client_key.public_key],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(3)]
    try:
        mine = testhosts.up(2)
        reported = [json.loads(p.stdout.readline() or "null") for p in procs]  # each waits with its hosts up
        assert all(r is not None for r in reported), "a host-making process failed"
        live = [(local_engine.Engine(tmp_path / f"s{i}").get(hid), ip) for i, r in enumerate(reported)
                for hid, ip in r]
        live += [(h.record, h.address) for h in mine]
        # Every one of them is running now, at the same time ...
        assert all(rec is not None and testhosts.engine.is_running(rec) for rec, _ in live)
        # ... and none shares an address with another.
        addrs = [ip for _, ip in live]
        assert len(addrs) == 11 and len(set(addrs)) == 11, addrs
    finally:
        for i, p in enumerate(procs):
            p.communicate("\n", timeout=120)
            local_engine.Engine(tmp_path / f"s{i}").down_all()  # what a process that failed left running
    assert all(p.returncode == 0 for p in procs)


def test_missing_prerequisites_say_what_to_run_and_change_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(local_engine, "which", lambda tool: None if tool == "sshd" else f"/usr/bin/{tool}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    eng = local_engine.Engine(tmp_path / "state")
    with pytest.raises(SandboxError) as err:
        eng.up(authorized_keys="ssh-ed25519 AAAA test")
    assert "apt-get install -y openssh-server nftables iproute2 sudo" in str(err.value)
    assert "sshd" in str(err.value)
    assert not (tmp_path / "state").exists()


def test_not_root_is_reported(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    problems = local_engine.missing_prerequisites()
    assert any("root" in p for p in problems)


def test_addresses_are_in_the_benchmark_range():
    assert local_engine.addresses(1) == ("198.19.0.5", "198.19.0.6")
    host, guest = local_engine.addresses(local_engine.MAX_INDEX)
    assert guest == "198.19.255.254"
    with pytest.raises(ValueError):
        local_engine.addresses(0)
