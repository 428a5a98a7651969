"""Host-key rotation on real hosts: the key injected at boot (user data) stops mattering after first contact."""

from __future__ import annotations

import os
import stat

import pytest

from polyvm.backends.local import engine as local_engine
from polyvm.cloudinit import render_user_data
from polyvm.errors import HostKeyError
from polyvm.provisioners import Connection, HostKeyPolicy, KnownHosts
from polyvm.spec import VmSpec


def _conn(h, **kw):
    kw.setdefault("deadline", 60)
    return Connection(h.address, h.user, private_key_path=h.private_key_path, **kw)


def _host_keys_inside(testhosts, h) -> list[str]:
    return sorted(testhosts.exec(h, "cd /etc/ssh && ls ssh_host_*").stdout.split())


def test_rotation_through_cloud_init_refuses_the_user_data_key_afterwards(testhosts, client_key):
    spec = VmSpec.model_validate({"name": "rot", "size": "small", "image": {"family": "debian", "version": "12"},
                                  "ssh": {"user": "deploy", "public_key": client_key.public_key}})
    if local_engine.which("cloud-init") is None:
        pytest.skip("cloud-init is not installed (scripts/setup installs it)")
    [h] = testhosts.up(1, user="deploy", boot="cloud-init",
                       user_data=lambda private, public: render_user_data(spec, private, public))
    injected = h.host_key
    assert injected.split()[1] in testhosts.exec(h, "cat /var/lib/cloud/seed/nocloud/user-data").stdout
    with _conn(h, host_key=injected) as c:
        rot = c.rotate_host_key()
        assert rot.changed and rot.previous.split()[1] == injected.split()[1]
        assert rot.host_key != injected and c.host_key == rot.host_key
        assert c.run("echo still here", sudo=False).stdout == "still here\n"  # the session survived the reload
    # Only the key generated on the host is left, and it is what sshd serves:
    assert _host_keys_inside(testhosts, h) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert testhosts.exec(h, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2] == rot.host_key.split()
    with pytest.raises(HostKeyError, match="MISMATCH"):
        _conn(h, host_key=injected).connect()  # the key in user data (metadata) no longer identifies the host
    with _conn(h, host_key=rot.host_key) as c:
        assert c.run("true").exit_status == 0 and c.host_key_status == "pinned"
        again = c.rotate_host_key()  # idempotent: a second run with the new pin does nothing
        assert not again.changed and again.host_key == rot.host_key
    with _conn(h, host_key=rot.host_key) as c:
        assert c.run("true").exit_status == 0


def test_rotation_replaces_the_known_hosts_line_atomically(testhosts, tmp_path):
    [h, other] = testhosts.up(2)
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{other.address} {other.host_key}\n{h.address} {h.host_key}\n# a comment\n")
    os.chmod(kh, 0o600)
    with _conn(h, known_hosts=kh) as c:
        assert c.host_key_status == "known"
        rot = c.rotate_host_key()
    assert rot.changed
    lines = kh.read_text().splitlines()
    assert f"{other.address} {other.host_key}" in lines and "# a comment" in lines
    assert f"{h.address} {h.host_key}" not in lines and f"{h.address} {rot.host_key}" in lines
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    assert KnownHosts(kh).lookup(h.address) == {"ssh-ed25519": rot.host_key.split()[1]}
    with _conn(h, known_hosts=kh, host_key_policy=HostKeyPolicy.KNOWN_ONLY) as c:
        assert c.run("true").exit_status == 0 and c.host_key_status == "known"
    with pytest.raises(HostKeyError):
        _conn(h, host_key=h.host_key).connect()


def test_rotate_host_key_option_rotates_on_the_first_connection(testhosts):
    [h] = testhosts.up(1)
    c = _conn(h, host_key=h.host_key, rotate_host_key=True)
    with c:
        c.run("true")
        assert c.rotation is not None and c.rotation.changed
    new = c.host_key
    assert new != h.host_key
    # A reconnect of the same Connection uses the new pin.
    with c:
        assert c.run("true").exit_status == 0 and c.host_key_status == "pinned"
    with _conn(h, host_key=new, rotate_host_key=True) as again:
        again.run("true")
        assert again.rotation is not None and not again.rotation.changed and again.host_key == new


def test_rotation_is_refused_without_a_verified_host_key(testhosts):
    [h] = testhosts.up(1)
    with _conn(h, host_key_policy=HostKeyPolicy.INSECURE_ACCEPT_ANY) as c:
        with pytest.raises(HostKeyError, match="not verified"):
            c.rotate_host_key()
    with _conn(h, host_key=h.host_key) as c:  # untouched
        assert c.run("true").exit_status == 0


def test_cli_rotate_host_key_records_the_new_key_in_known_hosts(testhosts, tmp_path):
    from click.testing import CliRunner

    from polyvm.cli import build_cli

    [h] = testhosts.up(1)
    kh = tmp_path / "kh"
    kh.write_text(f"{h.known_hosts_line}\n")
    base = ["exec", "-q", "-H", h.address, "-k", str(h.private_key_path), "--known-hosts", str(kh)]
    r = CliRunner().invoke(build_cli(), [*base, "--rotate-host-key", "cat /etc/ssh/ssh_host_ed25519_key.pub"])
    assert r.exit_code == 0, r.output
    new = KnownHosts(kh).lookup(h.address)["ssh-ed25519"]
    assert new != h.host_key.split()[1] and new in r.output
    r = CliRunner().invoke(build_cli(), [*base, "true"])  # known_hosts now holds the rotated key
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(build_cli(), ["exec", "-q", "-H", h.address, "-k", str(h.private_key_path),
                                         "--host-key", h.host_key, "--rotate-host-key", "true"])
    assert r.exit_code == 2 and "--rotate-host-key records the new key in known_hosts" in r.output, r.output
