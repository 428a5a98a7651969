"""The guest baseline, pure: which steps a Host gets, the lock-out check, and the scripts' shell syntax."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from polyvm.errors import SpecError
from polyvm.host import Facts, Host, HostDisk
from polyvm.provisioners.baseline import baseline_steps, lockout_problems
from polyvm.provisioners.steps import Script
from polyvm.spec import IngressRule

SSH = IngressRule(port=22, cidrs=["203.0.113.0/24"])
WEB = IngressRule(port=443, cidrs=["0.0.0.0/0"])


def test_a_cloud_firewall_host_without_disks_needs_nothing():
    assert baseline_steps(Host(address="198.51.100.7", user="root")) == []


def test_guest_firewall_and_mounted_disks_only():
    h = Host(address="198.51.100.7", user="root", firewall=(SSH, WEB),
             disks=(HostDisk("data", "/dev/sdb", "/srv/data"), HostDisk("raw", "/dev/sdc", None)))
    steps = baseline_steps(h, Facts("rhel", "9"))
    assert [s.name for s in steps] == ["guest firewall rules", "guest firewall", "data disk data"]
    rules = steps[0].files[0]
    assert rules.mode == 0o600 and "tcp dport 443 accept" in rules.content and "tcp dport 22 accept" in rules.content
    assert "fs=xfs" in steps[2].content.decode() and "dev=/dev/sdb" in steps[2].content.decode()
    assert "fs=ext4" in baseline_steps(h, Facts("debian", "12"))[2].content.decode()
    sh = shutil.which("dash") or "sh"
    for s in steps:
        if isinstance(s, Script):
            assert subprocess.run([sh, "-n"], input=s.content, capture_output=True).returncode == 0, s.name


def test_a_rule_set_that_would_lock_the_provisioner_out_is_refused():
    assert lockout_problems([SSH]) == []
    assert "no TCP rule for SSH" in lockout_problems([WEB])[0]
    assert "from 192.0.2.9" in lockout_problems([SSH], source="192.0.2.9")[0]
    assert lockout_problems([SSH], source="203.0.113.9") == []
    assert "(2222)" in lockout_problems([SSH], ssh_port=2222)[0]
    with pytest.raises(SpecError, match="lock the provisioner out"):
        baseline_steps(Host(address="198.51.100.7", user="root", firewall=(WEB,)))


def test_firewall_script_installs_nftables_when_missing(tmp_path):
    """With no nft on PATH the script installs nftables with the package manager, then loads the rules."""
    step = baseline_steps(Host(address="198.51.100.7", user="root", firewall=(SSH,)))[1]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    for name, body in {
        "apt-get": f'echo "apt-get $*" >> {log}; printf \'#!/bin/sh\\necho "nft $*" >> {log}\\nexit 1\\n\' > {bindir}/nft; chmod +x {bindir}/nft',
        "sha256sum": "echo abc -", "cut": "echo abc",
    }.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    rules = tmp_path / "rules.nft"
    rules.write_text("table inet polyvm {}\n")
    script = step.content.decode().replace("/etc/polyvm/firewall.nft", str(rules)).replace(
        "/var/lib/polyvm", str(tmp_path / "state"))
    r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                       env={"PATH": f"{bindir}:/usr/bin:/bin"})
    calls = log.read_text().splitlines()
    assert calls[0].startswith("apt-get install -y -q nftables")
    assert "installed nftables" in r.stdout
    assert any(c.startswith("nft -c -f") for c in calls)  # then checks and loads the rules with it
