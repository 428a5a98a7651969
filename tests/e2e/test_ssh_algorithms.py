"""Weak SSH algorithms are refused by default, against real sshd processes that offer nothing else.

Each server is an extra sshd inside a test host (its own port and ``-o`` options, the host's own host
key); the host and so these servers are removed with the host. ``allow_legacy_algorithms`` (CLI
``--allow-legacy-algorithms``) accepts them again, with a warning naming what was negotiated.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from polyvm.cli import build_cli
from polyvm.errors import ProvisionError
from polyvm.provisioners import Connection

pytestmark = pytest.mark.e2e

#: port -> (sshd -o options, what the refusal names)
WEAK_SERVERS = {
    2201: ({"Ciphers": "3des-cbc", "MACs": "hmac-md5"}, "ciphers 3des-cbc"),
    2202: ({"Ciphers": "aes128-cbc"}, "ciphers aes128-cbc"),
    2203: ({"Ciphers": "aes128-ctr", "MACs": "hmac-md5,hmac-sha1-96"}, "macs hmac-md5, hmac-sha1-96"),
}


@pytest.fixture
def weak_host(testhosts):
    """One test host running an extra sshd per entry of WEAK_SERVERS."""
    [h] = testhosts.up(1)
    for port, (opts, _) in WEAK_SERVERS.items():
        extra = " ".join(f"-o {k}={v}" for k, v in opts.items())
        testhosts.exec(h, f"/usr/sbin/sshd -o ListenAddress={h.address}:{port} -o UsePAM=no "
                          f"-o HostKey=/etc/ssh/ssh_host_ed25519_key -o PermitRootLogin=prohibit-password "
                          f"-o PasswordAuthentication=no -o PidFile=/run/sshd-weak-{port}.pid {extra}")
    deadline = time.monotonic() + 30
    while True:
        listening = testhosts.exec(h, "ss -Hltn", check=False).stdout
        if all(f":{p} " in listening for p in WEAK_SERVERS):
            return h
        assert time.monotonic() < deadline, f"weak sshd did not start: {listening}"
        time.sleep(0.2)


def conn(h, tmp_path: Path, port: int, **kw) -> Connection:
    return Connection(h.address, h.user, port=port, private_key_path=h.private_key_path, host_key=h.host_key,
                      known_hosts=tmp_path / "kh", deadline=20, **kw)


@pytest.mark.parametrize("port", list(WEAK_SERVERS))
def test_weak_only_server_is_refused_by_default_and_accepted_when_allowed(weak_host, tmp_path, port, caplog):
    _, named = WEAK_SERVERS[port]
    c = conn(weak_host, tmp_path, port)
    with pytest.raises(ProvisionError) as ei:
        c.connect()
    msg = str(ei.value)
    assert f"{weak_host.address}:{port}" in msg and "no common SSH algorithms" in msg
    assert named in msg and "--allow-legacy-algorithms" in msg, msg
    assert c.stats.connect_attempts == 1  # not retried: it would never work
    with caplog.at_level(logging.WARNING, logger="polyvm.provisioners.connection"):
        with conn(weak_host, tmp_path, port, allow_legacy_algorithms=True) as legacy:
            assert legacy.run("echo ok").stdout == "ok\n"
    warned = [r.getMessage() for r in caplog.records if "legacy SSH algorithms" in r.getMessage()]
    assert warned and named.split()[1].rstrip(",") in warned[0], warned


def test_the_normal_server_is_unaffected(weak_host, tmp_path, caplog):
    with caplog.at_level(logging.WARNING), conn(weak_host, tmp_path, 22) as c:
        assert c.run("echo ok").stdout == "ok\n"
    assert not [r for r in caplog.records if "legacy" in r.getMessage()]


def test_cli_refuses_then_allows_with_the_flag(weak_host, tmp_path):
    h = weak_host
    base = ["exec", "-q", "-H", f"{h.address}:2201", "-k", str(h.private_key_path), "--host-key", h.host_key,
            "--known-hosts", str(tmp_path / "kh"), "--deadline", "20"]
    r = CliRunner().invoke(build_cli(), [*base, "echo", "hi"])
    assert r.exit_code == 1 and "--allow-legacy-algorithms" in r.output and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(build_cli(), [*base, "--allow-legacy-algorithms", "echo", "hi"])
    assert r.exit_code == 0 and r.output.endswith("hi\n"), r.output
