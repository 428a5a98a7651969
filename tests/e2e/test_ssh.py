"""The SSH layer against real sshd processes (network-namespace test hosts from tests/conftest.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from polyvm.errors import AuthenticationError, CommandError, FanoutError, HostKeyError
from polyvm.provisioners import (
    Connection,
    CopyDir,
    CopyFile,
    HostKeyPolicy,
    RunCommand,
    Script,
    fanout,
    run_steps,
)

pytestmark = pytest.mark.e2e


def conn_for(host, tmp_path: Path, **kw) -> Connection:
    kw.setdefault("host_key", host.host_key)
    kw.setdefault("known_hosts", tmp_path / "known_hosts")
    return Connection(host.address, host.user, private_key_path=host.private_key_path, **kw)


def test_copy_and_run_on_ten_hosts_in_parallel(testhosts, tmp_path):
    hosts = testhosts.up(10)
    steps = [
        CopyFile("alpha\n", "/etc/polyvm-test/a.conf"),
        CopyFile(b"\x00\x01binary", "/etc/polyvm-test/b.bin", mode=0o600),
        CopyFile("#!/bin/sh\necho from-c\n", "/usr/local/bin/polyvm-c", mode=0o755),
        Script("set -e\ncat /etc/polyvm-test/a.conf\n/usr/local/bin/polyvm-c\nhostname > /tmp/seen\n", name="check"),
    ]
    result = fanout([conn_for(h, tmp_path) for h in hosts], steps, parallel=10, progress=False)
    assert result.ok and len(result.hosts) == 10
    for hr in result.hosts.values():
        assert [r.changed for r in hr.results] == [True, True, True, True]
        assert hr.connection.stats.handshakes == 1  # one SSH connection per host for all four steps
    for h in hosts:
        assert testhosts.exec(h, "cat /etc/polyvm-test/a.conf; stat -c %a /etc/polyvm-test/b.bin "
                                 "/usr/local/bin/polyvm-c; cat /tmp/seen").stdout.split() == \
            ["alpha", "600", "755", h.name]


def test_fanout_failure_on_one_host_does_not_stop_others(testhosts, tmp_path):
    hosts = testhosts.up(3)
    bad = hosts[1].address

    def steps(conn):
        cmd = "echo broken >&2; exit 4" if conn.host == bad else "touch /tmp/done"
        return [RunCommand(cmd, name="maybe-fail"), RunCommand("touch /tmp/after")]

    with pytest.raises(FanoutError) as ei:
        fanout([conn_for(h, tmp_path) for h in hosts], steps, parallel=2, progress=False)
    assert list(ei.value.failed) == [f"root@{bad}"]
    assert "broken" in str(ei.value) and "exit code 4" in str(ei.value)
    res = ei.value.result
    assert [len(h.results) for h in res.hosts.values()] == [2, 0, 2]
    for h in (hosts[0], hosts[2]):
        testhosts.exec(h, "test -e /tmp/done && test -e /tmp/after")
    assert testhosts.exec(hosts[1], "test -e /tmp/after", check=False).returncode != 0


def test_nonzero_exit_raises_with_stderr_tail_and_masks_secrets(testhosts, tmp_path):
    [h] = testhosts.up(1)
    with conn_for(h, tmp_path) as c:
        lines = "; ".join(f"echo line{i} >&2" for i in range(30))
        with pytest.raises(CommandError) as ei:
            c.run(f"{lines}; echo password=hunter2 >&2; exit 7", secrets=["hunter2"])
        e = ei.value
        assert e.exit_status == 7 and e.host == h.address
        assert "line29" in e.stderr_tail and "line0\n" not in e.stderr_tail
        assert "hunter2" not in str(e) and "hunter2" not in e.command and "password=********" in e.stderr_tail
        assert "exit code 7" in str(e)

        with pytest.raises(CommandError) as ei:
            c.run("psql --password=s3cr3t-value; exit 3", name="create role", secrets=["s3cr3t-value"])
        assert ei.value.command == "create role" and "s3cr3t-value" not in str(ei.value)

        r = c.run("exit 5", check=False)
        assert r.exit_status == 5


def test_stdin_env_timeout_and_get_text(testhosts, tmp_path):
    [h] = testhosts.up(1)
    with conn_for(h, tmp_path) as c:
        assert c.run("cat", stdin="through stdin").stdout == "through stdin"
        env = {"PGPASSWORD": "it's a\nsecret", "PLAIN": "x y"}
        r = c.run('printf "%s|%s" "$PGPASSWORD" "$PLAIN"; cat', env=env, stdin="+in")
        assert r.stdout == "********|x y+in"  # env values named like secrets are masked in results
        # the value never appears in a remote argv: look for it while a command runs
        r = c.run('for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline; echo; done | grep -c "zq9-secre[t]" || true',
                  env={"TOKEN": "zq9-secret"})
        assert r.stdout.strip() == "0"
        with pytest.raises(CommandError, match="timed out after 1s"):
            c.run("sleep 20", timeout=1)
        assert c.run("echo still-usable").stdout == "still-usable\n"
        # large input to commands that do not read it all: no hang, no spurious error
        assert c.run("true", stdin=b"x" * 3_000_000).exit_status == 0
        assert c.run("head -c 3", stdin=b"y" * 3_000_000).stdout == "yyy"
        assert c.run("wc -c", stdin=b"z" * 3_000_000).stdout.strip() == "3000000"
        assert c.get_text("/etc/hostname") == f"{h.name}\n"
        assert c.get_text("/nonexistent/file") is None
        assert c.stats.handshakes == 1


def test_pinned_host_key_accepted(testhosts, tmp_path):
    [h] = testhosts.up(1)
    kh = tmp_path / "known_hosts"
    with conn_for(h, tmp_path, host_key=h.host_key, known_hosts=kh) as c:
        c.run("true")
        assert c.host_key_status == "pinned"
    assert not kh.exists()  # a pinned key needs no known_hosts entry


def test_wrong_pinned_host_key_refused_at_once(testhosts, tmp_path):
    a, b = testhosts.up(2)
    c = conn_for(a, tmp_path, host_key=b.host_key, deadline=60)
    with pytest.raises(HostKeyError, match="MISMATCH") as ei:
        c.connect()
    assert c.stats.connect_attempts == 1 and c.stats.retries == 0
    assert a.host_key.split()[1] not in str(ei.value)  # fingerprints, not raw keys


def test_first_use_recorded_then_changed_key_refused(testhosts, tmp_path):
    a, b = testhosts.up(2)
    kh = tmp_path / "kh" / "known_hosts"
    with conn_for(a, tmp_path, host_key=None, known_hosts=kh) as c:
        c.run("true")
        assert c.host_key_status == "recorded"
    assert kh.read_text() == f"{a.address} {a.host_key.split()[0]} {a.host_key.split()[1]}\n"
    assert oct(kh.stat().st_mode & 0o777) == "0o600"
    with conn_for(a, tmp_path, host_key=None, known_hosts=kh) as c:
        c.run("true")
        assert c.host_key_status == "known"
    assert len(kh.read_text().splitlines()) == 1
    # The host "was replaced": the recorded key now belongs to another machine.
    kh.write_text(f"{b.address} {a.host_key}\n")
    c = conn_for(b, tmp_path, host_key=None, known_hosts=kh)
    with pytest.raises(HostKeyError, match="CHANGED"):
        c.connect()
    assert c.stats.connect_attempts == 1
    # KNOWN_ONLY never records
    c = conn_for(a, tmp_path, host_key=None, known_hosts=tmp_path / "empty", host_key_policy=HostKeyPolicy.KNOWN_ONLY)
    with pytest.raises(HostKeyError, match="not in"):
        c.connect()


def test_insecure_accept_any_is_explicit(testhosts, tmp_path, caplog):
    [h] = testhosts.up(1)
    kh = tmp_path / "known_hosts"
    with conn_for(h, tmp_path, host_key=None, known_hosts=kh,
                  host_key_policy=HostKeyPolicy.INSECURE_ACCEPT_ANY) as c:
        c.run("true")
        assert c.host_key_status == "accepted-insecurely"
    assert not kh.exists()
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_waits_for_sshd_that_listens_late(testhosts, tmp_path):
    [h] = testhosts.up(1, sshd_delay=10)
    c = conn_for(h, tmp_path, deadline=90, connect_timeout=5)
    with c:
        assert c.run("echo up").stdout == "up\n"
    # Refused attempts are retried about once a second (not 1, 2, 4, 8, 16 s), so the host is found soon
    # after sshd listens: about 11 attempts over the 10 s (the old backoff made at most 6, and often
    # reached the host 5 s late). Counted, not timed: a loaded machine stretches time, not the schedule.
    assert c.stats.connect_attempts >= 7, c.stats
    assert c.stats.retries >= 1 and c.stats.handshakes == 1
    assert all(cause for cause in c.stats.last_connect_causes)


def test_wrong_private_key_fails_without_retry(testhosts, tmp_path):
    from polyvm.backends.local import engine as local_engine

    [h] = testhosts.up(1)
    private, _ = local_engine.generate_host_key("wrong")
    c = Connection(h.address, private_key=private.decode(), host_key=h.host_key, deadline=120)
    with pytest.raises(AuthenticationError) as ei:
        c.connect()
    assert c.stats.connect_attempts == 1 and c.stats.retries == 0
    assert "PRIVATE KEY" not in str(ei.value) and "refused the private key" in str(ei.value)


def test_connection_dropped_mid_command(testhosts, tmp_path):
    [h] = testhosts.up(1)
    c = conn_for(h, tmp_path, keepalive=2)
    c.open()
    started = threading.Event()

    def kill_later():
        started.wait(30)
        time.sleep(1.0)
        testhosts.down(h)

    th = threading.Thread(target=kill_later)
    th.start()
    try:
        started.set()
        with pytest.raises(CommandError, match="connection lost while running 'long job'"):
            c.run("echo working >&2; sleep 60", name="long job", timeout=50)
    finally:
        th.join()
        c.close()


def test_second_identical_copy_transfers_nothing(testhosts, tmp_path):
    [h] = testhosts.up(1)
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a" * 5000)
    (src / "run.sh").write_text("#!/bin/sh\necho run\n")
    (src / "run.sh").chmod(0o755)
    (src / "sub" / "b.txt").write_text("b")
    steps = [CopyDir(src, "/opt/tree"), CopyFile("config\n", "/etc/polyvm.conf", mode=0o640)]
    c = conn_for(h, tmp_path)
    first = run_steps(c, steps)
    assert [r.changed for r in first] == [True, True]
    sent = c.stats.bytes_uploaded
    assert sent == 5000 + len("#!/bin/sh\necho run\n") + 1 + len("config\n")
    second = run_steps(c, steps)
    assert [r.changed for r in second] == [False, False]
    assert c.stats.bytes_uploaded == sent and c.stats.files_uploaded == 4 and c.stats.files_skipped == 4
    assert testhosts.exec(h, "stat -c %a /opt/tree/run.sh /etc/polyvm.conf").stdout.split() == ["755", "640"]
    # a mode-only difference is fixed without sending content
    testhosts.exec(h, "chmod 600 /etc/polyvm.conf")
    assert run_steps(c, steps[1:])[0].changed
    assert c.stats.bytes_uploaded == sent
    assert testhosts.exec(h, "stat -c %a /etc/polyvm.conf").stdout.strip() == "640"
    # changed content is replaced atomically (no temporary files left behind)
    (src / "sub" / "b.txt").write_text("bb")
    assert run_steps(c, steps)[0].detail == "1 of 3 file(s) updated"
    assert testhosts.exec(h, "cat /opt/tree/sub/b.txt; echo; ls -A /opt/tree/sub").stdout.split() == ["bb", "b.txt"]


def test_non_root_user_with_sudo(testhosts, tmp_path):
    [h] = testhosts.up(1, user="admin")
    assert h.user == "admin"
    with conn_for(h, tmp_path) as c:
        assert c.sudo is True
        assert c.run("id -un").stdout.strip() == "root"
        assert c.run("id -un", sudo=False).stdout.strip() == "admin"
        assert c.run('echo "$X"', env={"X": "through sudo"}).stdout == "through sudo\n"
        assert c.put("secret-ish\n", "/etc/polyvm/owned.conf", mode=0o640, owner="root", group="admin")
        assert not c.put("secret-ish\n", "/etc/polyvm/owned.conf", mode=0o640, owner="root", group="admin")
        assert c.get_text("/etc/polyvm/owned.conf") == "secret-ish\n"
        r = run_steps(c, [Script("id -un; echo CHANGED", changed_marker="CHANGED", name="as root")])
        assert r[0].changed and "CHANGED" in r[0].detail
    out = testhosts.exec(h, "stat -c '%a %U %G' /etc/polyvm/owned.conf").stdout.strip()
    assert out == "640 root admin"
    # sudo that needs a password fails with a clear hint, not a hang
    testhosts.exec(h, "echo 'admin ALL=(ALL) ALL' > /etc/sudoers.d/90-polyvm-admin")
    with conn_for(h, tmp_path) as c:
        with pytest.raises(CommandError, match="needs password-less sudo"):
            c.run("true")


def test_jump_host_to_sshd_on_loopback(testhosts, tmp_path):
    [a] = testhosts.up(1, bastion=True)
    # A second sshd inside A that listens only on A's loopback: reachable only through A.
    testhosts.exec(a, "rm -f /tmp/hk2 /tmp/hk2.pub; ssh-keygen -q -t ed25519 -N '' -f /tmp/hk2 && "
                      "/usr/sbin/sshd -o ListenAddress=127.0.0.1:2222 -o HostKey=/tmp/hk2 -o UsePAM=no "
                      "-o PidFile=/tmp/sshd2.pid -o PermitRootLogin=prohibit-password")
    inner_key = testhosts.exec(a, "cat /tmp/hk2.pub").stdout.strip()
    bastion = conn_for(a, tmp_path)
    inner = Connection("127.0.0.1", port=2222, private_key_path=a.private_key_path, host_key=inner_key,
                       bastion=bastion, known_hosts=tmp_path / "kh", deadline=30)
    with inner:
        r = inner.run("echo $SSH_CONNECTION")
        assert r.stdout.split()[0] == "127.0.0.1" and r.stdout.split()[3] == "2222"
        assert inner.put("via jump\n", "/tmp/jumped")
    assert not bastion.connected  # released with the last connection that used it
    assert bastion.stats.handshakes == 1 and inner.stats.handshakes == 1
    assert testhosts.exec(a, "cat /tmp/jumped").stdout == "via jump\n"
    # a wrong pinned key behind the jump host is refused just the same
    bad = Connection("127.0.0.1", port=2222, private_key_path=a.private_key_path, host_key=a.host_key,
                     bastion=conn_for(a, tmp_path))
    with pytest.raises(HostKeyError):
        bad.connect()


def test_pinned_key_type_is_negotiated_when_server_has_several(testhosts, tmp_path):
    [a] = testhosts.up(1, bastion=True)
    # An sshd (on A's loopback, reached through A) with an rsa AND an ed25519 host key; pin only the rsa one.
    testhosts.exec(a, "rm -f /tmp/hr /tmp/he; ssh-keygen -q -t rsa -b 2048 -N '' -f /tmp/hr && "
                      "ssh-keygen -q -t ed25519 -N '' -f /tmp/he && "
                      "/usr/sbin/sshd -o ListenAddress=127.0.0.1:2223 -o HostKey=/tmp/he -o HostKey=/tmp/hr "
                      "-o UsePAM=no -o PidFile=/tmp/sshd3.pid -o PermitRootLogin=prohibit-password")
    rsa_key = testhosts.exec(a, "cat /tmp/hr.pub").stdout.strip()
    ed_key = testhosts.exec(a, "cat /tmp/he.pub").stdout.strip()
    for pinned in (rsa_key, ed_key):
        c = Connection("127.0.0.1", port=2223, private_key_path=a.private_key_path, host_key=pinned,
                       bastion=conn_for(a, tmp_path), known_hosts=tmp_path / "kh", deadline=30)
        with c:
            assert c.run("echo ok").stdout == "ok\n"
            assert c.host_key_status == "pinned"
            assert c._transport.host_key_type in (["rsa-sha2-512", "rsa-sha2-256"] if pinned == rsa_key
                                                  else ["ssh-ed25519"])


def test_copies_and_the_following_command_share_one_channel(testhosts, tmp_path):
    [h] = testhosts.up(1, user="admin")
    c = conn_for(h, tmp_path)
    steps = [CopyFile("one\n", "/etc/polyvm/one"), CopyFile("two\n", "/etc/polyvm/two", mode=0o600),
             Script("cat /etc/polyvm/one /etc/polyvm/two; id -un; echo \"$GREETING\"", name="read back",
                    env={"GREETING": "hello"})]
    with c:
        r = run_steps(c, steps)
        assert c.stats.channels == 1  # two copies and a script: one SSH session
        assert [x.changed for x in r] == [True, True, True]
        assert r[2].output.stdout == "one\ntwo\nroot\nhello\n"
        r = run_steps(c, steps)
        assert [x.changed for x in r] == [False, False, True] and c.stats.channels == 2
    assert testhosts.exec(h, "ls -A /tmp | grep -c polyvm || true").stdout.strip() == "0"  # script removed

    # the command fails after the copies: reported for the command, copies done and reported
    with c:
        with pytest.raises(CommandError) as ei:
            run_steps(c, [CopyFile("three\n", "/etc/polyvm/three"),
                          RunCommand("echo oops >&2; exit 6", name="after copy")])
    e = ei.value
    assert e.step == "after copy" and e.exit_status == 6 and "oops" in e.stderr_tail
    assert [x.changed for x in e.results] == [True]
    assert testhosts.exec(h, "cat /etc/polyvm/three").stdout == "three\n"

    # the copy fails: the command never runs
    with c:
        with pytest.raises(CommandError) as ei:
            run_steps(c, [CopyFile("x", "/etc/hostname/below-a-file", name="bad copy"),
                          RunCommand("touch /tmp/ran", name="never")])
    assert ei.value.step == "bad copy" and ei.value.results == []
    assert testhosts.exec(h, "test -e /tmp/ran", check=False).returncode == 1
