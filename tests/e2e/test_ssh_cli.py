"""polyvm exec / polyvm copy against real test hosts."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from polyvm.cli import build_cli

pytestmark = pytest.mark.e2e


def test_exec_and_copy_with_inventory(testhosts, tmp_path):
    hosts = testhosts.up(2)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump({
        "defaults": {"private_key_path": str(hosts[0].private_key_path), "known_hosts": str(tmp_path / "kh")},
        "hosts": {f"n{i}": {"host": h.address, "host_key": h.host_key} for i, h in enumerate(hosts)},
    }))
    cli = build_cli()
    r = CliRunner().invoke(cli, ["exec", "-q", "-i", str(inv), "hostname"])
    assert r.exit_code == 0, r.output
    assert sorted(r.output.splitlines()) == sorted(f"n{i} | {h.name}" for i, h in enumerate(hosts))

    src = tmp_path / "motd"
    src.write_text("welcome\n")
    args = ["copy", "-q", "-i", str(inv), "--mode", "0640", str(src), "/etc/motd.d/"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and r.output.count("updated") == 2, r.output
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and r.output.count("already up to date") == 2, r.output
    for h in hosts:
        assert testhosts.exec(h, "cat /etc/motd.d/motd; stat -c %a /etc/motd.d/motd").stdout == "welcome\n640\n"

    r = CliRunner().invoke(cli, ["exec", "-q", "-i", str(inv), "echo failing >&2; exit 9"])
    assert r.exit_code == 1 and "2 host(s) failed: n0, n1" in r.output and "failing" in r.output
    assert "Traceback" not in r.output

    # single host on the command line, pinned key: plain output
    h = hosts[0]
    r = CliRunner().invoke(cli, ["exec", "-q", "-H", h.address, "-k", str(h.private_key_path), "--host-key",
                                 h.host_key, "echo", "one"])
    assert r.exit_code == 0 and r.output == "one\n"
    r = CliRunner().invoke(cli, ["exec", "-q", "-H", h.address, "-k", str(h.private_key_path), "--host-key",
                                 hosts[1].host_key, "true"])
    assert r.exit_code == 1 and "MISMATCH" in r.output
