"""The bounded wait for cloud-init (polyvm.cloudinit.wait_script) on real hosts.

A local host is the case that hung `polyvm postgres` for 10 minutes: cloud-init is installed (scripts/setup)
but never ran, so `cloud-init status --wait` loops on "not run" forever.
"""

from __future__ import annotations

import time

from polyvm.cloudinit import wait_script

FAKE_RUNNING = "#!/bin/sh\n[ \"$1\" = status ] && echo 'status: running'\nexit 0\n"


def test_installed_but_not_run_counts_as_finished(testhosts):
    [h] = testhosts.up(1)
    st = testhosts.exec(h, "cloud-init status", check=False)
    assert "not run" in st.stdout, st  # the case: installed, never ran
    # What the recipe used to run never returns here (cut off after 5 s to show it):
    hung = testhosts.exec(h, "timeout 5 cloud-init status --wait", check=False, timeout=60)
    assert hung.returncode == 124
    t0 = time.monotonic()
    r = testhosts.exec(h, "set -eu\n" + wait_script(600) + "\necho waited", check=False, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("waited"), r
    assert time.monotonic() - t0 < 60  # generous: it does not wait at all


def test_running_forever_gives_up_at_the_bound_and_says_why(testhosts):
    [h] = testhosts.up(1)
    testhosts.exec(h, "install -m 755 /dev/stdin /usr/local/bin/cloud-init", input=FAKE_RUNNING)
    assert testhosts.exec(h, "command -v cloud-init").stdout.strip() == "/usr/local/bin/cloud-init"
    t0 = time.monotonic()
    r = testhosts.exec(h, "set -eu\n" + wait_script(3, poll=0.5) + "\necho not reached", check=False,
                       timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 75, r
    assert "not reached" not in r.stdout
    assert "gave up waiting for cloud-init after 3s" in r.stderr and "still says 'running'" in r.stderr, r.stderr
    assert "POLYVM_BOOT_WAIT" in r.stderr
    assert 2 <= took < 90, took


def test_bound_comes_from_polyvm_boot_wait(monkeypatch):
    import pytest

    from polyvm.cloudinit import boot_wait_seconds
    from polyvm.errors import ConfigError

    monkeypatch.delenv("POLYVM_BOOT_WAIT", raising=False)
    assert boot_wait_seconds() == 600 and "after 600s" in wait_script()
    monkeypatch.setenv("POLYVM_BOOT_WAIT", "42")
    assert "after 42s" in wait_script()
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv("POLYVM_BOOT_WAIT", bad)
        with pytest.raises(ConfigError, match="POLYVM_BOOT_WAIT"):
            wait_script()


def test_a_command_that_never_ends_is_bounded_by_command_timeout(testhosts):
    import pytest

    from polyvm.errors import CommandError
    from polyvm.provisioners import Connection

    [h] = testhosts.up(1)
    c = Connection(h.address, h.user, private_key_path=h.private_key_path, host_key=h.host_key, deadline=60,
                   command_timeout=2)
    t0 = time.monotonic()
    with c, pytest.raises(CommandError, match="timed out after 2s"):
        c.run("sleep 600", name="a command that never ends")
    assert time.monotonic() - t0 < 60
    assert Connection(h.address).args.command_timeout == 3600  # the default bound: an hour
