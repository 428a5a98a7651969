"""The Host hand-over: built from a spec and a backend's outputs, consumed by the SSH layer."""

from __future__ import annotations

import pytest

from polyvm.errors import RecipeError
from polyvm.host import Host, parse_facts, parse_os_release
from polyvm.spec import parse_spec

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT x"
SPEC = parse_spec({"name": "db1", "size": {"cpus": 2, "memory_gb": 4}, "image": {"family": "ubuntu", "version": "24.04"},
                   "data_disks": [{"name": "data", "size_gb": 5, "mount_point": "/srv/data"}, {"name": "raw", "size_gb": 1}],
                   "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]}], "ssh": {"user": "admin", "public_key": PUB}})


def test_from_spec_carries_disks_firewall_facts_and_connection_settings():
    h = Host.from_spec(SPEC, address="198.51.100.7", host_key="ssh-ed25519 AAAA",
                       data_disk_devices={"data": "/dev/nvme1n1", "raw": "/dev/nvme2n1"}, guest_firewall=True)
    assert h.user == "admin" and h.label == "db1" and h.data_disk_devices == {"data": "/dev/nvme1n1", "raw": "/dev/nvme2n1"}
    assert [d.mount_point for d in h.disks] == ["/srv/data", None]
    assert h.firewall == tuple(SPEC.ingress) and h.needs_baseline
    assert (h.facts.family, h.facts.version, h.facts.memory_mb) == ("ubuntu", "24.04", 4096)
    assert h.connection_settings() == {"host": "198.51.100.7", "user": "admin", "port": 22,
                                       "host_key": "ssh-ed25519 AAAA", "name": "db1"}
    cloud = Host.from_spec(SPEC, address="198.51.100.7", data_disk_devices={"data": "/dev/a", "raw": "/dev/b"})
    assert cloud.firewall is None and cloud.ingress == tuple(SPEC.ingress)


def test_a_disk_without_a_device_is_an_error_not_a_silent_skip():
    with pytest.raises(RecipeError, match="no device for data disk"):
        Host.from_spec(SPEC, address="198.51.100.7", data_disk_devices={"data": "/dev/nvme1n1"})


def test_facts_from_os_release_and_meminfo():
    f = parse_facts('ID=rocky\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\nPRETTY_NAME="Rocky 9.3"\n@@polyvm@@\n2048000\n')
    assert (f.family, f.version, f.memory_mb) == ("rhel", "9", 2000)
    with pytest.raises(RecipeError, match="unsupported operating system"):
        parse_os_release("ID=plan9\n")


def test_guest_firewall_of_a_component_without_a_backend_is_an_error():
    from polyvm.errors import ConfigError
    from polyvm.host import guest_firewall_of

    with pytest.raises(ConfigError, match="not a polyvm VirtualMachine"):
        guest_firewall_of(object())
