"""polyvm exec on failure: each host's stdout and stderr tails, and the remote exit status with one host."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.e2e


def polyvm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyvm.cli", *args], capture_output=True, text=True, timeout=300)


def test_exec_failure_shows_output_and_keeps_the_exit_status(testhosts, tmp_path):
    hosts = testhosts.up(2)
    h = hosts[0]
    one = ["exec", "-q", "-H", h.address, "-k", str(h.private_key_path), "--host-key", h.host_key]
    r = polyvm(*one, "echo first; seq 1 50; echo 'why it failed' >&2; exit 3")
    assert r.returncode == 3, r.stderr
    assert "50" in r.stdout and "first" not in r.stdout  # the tail of stdout, not all of it
    assert "why it failed" in r.stderr
    assert "exited with status 3" in r.stderr and "Traceback" not in r.stderr
    r = polyvm(*one, "echo fine")
    assert r.returncode == 0 and r.stdout == "fine\n" and r.stderr == ""

    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump({
        "defaults": {"private_key_path": str(h.private_key_path), "known_hosts": str(tmp_path / "kh")},
        "hosts": {f"n{i}": {"host": x.address, "host_key": x.host_key} for i, x in enumerate(hosts)},
    }))
    r = polyvm("exec", "-q", "-i", str(inv), "echo out-$(hostname); echo err-$(hostname) >&2; exit 4")
    assert r.returncode == 1
    for i, x in enumerate(hosts):
        assert f"n{i} | out-{x.name}" in r.stdout
        assert f"n{i} ! err-{x.name}" in r.stderr
        assert f"n{i}: " in r.stderr and "exited with status 4" in r.stderr
