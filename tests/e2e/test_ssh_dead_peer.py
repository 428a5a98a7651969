"""A host that goes silent (its firewall starts dropping every packet) is detected within the keepalive bound.

Before: paramiko's ``set_keepalive`` never waited for a reply and the socket had no TCP keepalive, so a
command ran 960 s before "connection lost". Now a keepalive watchdog closes the connection after
``keepalive × keepalive_count_max`` seconds (15 s by default) without a reply. The asserted upper bound
(60 s) is four times that, for a loaded machine; there is no lower-bound timing assert.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from polyvm.errors import CommandError, ProvisionError
from polyvm.provisioners import Connection, ConnectionArgs, Upload

pytestmark = pytest.mark.e2e

BOUND = ConnectionArgs(host="x").dead_peer_timeout  # the documented default: 5 s × 3
UPPER = 60.0
#: Every packet in and out of the host dropped (priority before any other filter of the host).
DROP_ALL = ("add table inet polyvm_test_silence\n"
            "add chain inet polyvm_test_silence in { type filter hook input priority -300; policy drop; }\n"
            "add chain inet polyvm_test_silence out { type filter hook output priority -300; policy drop; }\n")


def conn_for(host, tmp_path: Path, **kw) -> Connection:
    return Connection(host.address, host.user, private_key_path=host.private_key_path, host_key=host.host_key,
                      known_hosts=tmp_path / "known_hosts", **kw)


def run_bounded(fn, limit: float) -> tuple[BaseException | None, float]:
    """Run ``fn`` in a thread; (its exception, seconds taken). Fails the test if it is still running at ``limit``."""
    box: list[BaseException] = []
    start = time.monotonic()

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(limit)
    assert not th.is_alive(), f"still running after {limit:g}s: a silent peer is not detected"
    return (box[0] if box else None), time.monotonic() - start


def test_a_quiet_but_live_host_answers_keepalives_and_is_not_dropped(testhosts, tmp_path):
    [h] = testhosts.up(1)
    # bound 5 s (room for a loaded machine's late replies); the command is silent for 8 s: only keepalive
    # replies keep the connection up
    with conn_for(h, tmp_path, keepalive=0.5, keepalive_count_max=10) as c:
        assert c.run("sleep 8; echo done").stdout == "done\n"
        assert c.stats.keepalive_replies >= 3 and c.stats.handshakes == 1


def test_silent_peer_during_a_command_fails_within_the_keepalive_bound(testhosts, tmp_path):
    assert BOUND == 15
    [h] = testhosts.up(1)
    c = conn_for(h, tmp_path)
    c.open()
    try:
        c.run("true")  # connected, keepalives flowing
        silenced: list[float] = []

        def silence_when_started() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if testhosts.exec(h, "test -e /tmp/started", check=False).returncode == 0:
                    testhosts.exec(h, ["nft", "-f", "-"], input=DROP_ALL)
                    silenced.append(time.monotonic())
                    return
                time.sleep(0.2)

        killer = threading.Thread(target=silence_when_started, daemon=True)
        killer.start()
        exc, _ = run_bounded(lambda: c.run("touch /tmp/started; sleep 120; echo done", name="long sleep"),
                             UPPER + 60)
        killer.join(5)
        assert silenced, "the host was never silenced"
        took = time.monotonic() - silenced[0]
        assert isinstance(exc, CommandError), exc
        msg = str(exc)
        assert h.address in msg and "connection lost while running 'long sleep'" in msg
        assert "stopped answering" in msg and "15s" in msg, msg
        assert exc.exit_status is None and exc.host == h.address
        assert took < UPPER, f"dead peer detected only after {took:.0f}s"
    finally:
        c.close()


def test_silent_peer_during_a_copy_fails_within_the_keepalive_bound(testhosts, tmp_path):
    [h] = testhosts.up(1)
    # Drop everything once the SSH connection has carried 4 MB (conntrack counts both directions): the
    # host goes silent in the middle of the tar stream, however fast or slow this machine is.
    testhosts.exec(h, ["nft", "-f", "-"], input=(
        "add table inet polyvm_test_silence\n"
        "add chain inet polyvm_test_silence in { type filter hook input priority -300; }\n"
        "add chain inet polyvm_test_silence out { type filter hook output priority -300; }\n"
        "add rule inet polyvm_test_silence in tcp dport 22 ct bytes > 4000000 drop\n"
        "add rule inet polyvm_test_silence out tcp sport 22 ct bytes > 4000000 drop\n"))
    c = conn_for(h, tmp_path)
    data = bytes(range(256)) * (64 * 1024 * 4)  # 64 MiB
    exc, took = run_bounded(lambda: c.put_files([Upload(data, "/root/big.bin")]), UPPER + 60)
    c.close()
    assert isinstance(exc, ProvisionError), exc
    msg = str(exc)
    assert h.address in msg and "stopped answering" in msg, msg
    assert took < UPPER, f"dead peer detected only after {took:.0f}s"
    # nothing half-copied was renamed into place
    assert testhosts.exec(h, "test -e /root/big.bin", check=False).returncode != 0
