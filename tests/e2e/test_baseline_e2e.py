"""The guest baseline against real SSH hosts: a VM whose backend filters in the guest (vSphere) is filtered
exactly as its spec says with no recipe at all, and its data disk is formatted (only when blank) and mounted
by UUID. The hosts start with no firewall of their own (like a vSphere VM from a template)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from polyvm.errors import FanoutError, SpecError
from polyvm.host import Host, HostDisk
from polyvm.provisioners.fanout import run_recipe
from polyvm.spec import IngressRule, parse_spec

pytestmark = pytest.mark.e2e


def tcp_open(address: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def listen(testhosts, host, *ports: int) -> None:
    """Something listening on each port inside the host (so only the firewall can refuse a connection)."""
    code = ("import socket,time\nss=[]\nfor p in %r:\n    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
            "socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0',p)); s.listen(); ss.append(s)\n"
            "while True:\n    for s in ss:\n        s.setblocking(False)\n        try: s.accept()[0].close()\n"
            "        except OSError: pass\n    time.sleep(0.05)\n" % (list(ports),))
    subprocess.Popen(testhosts.engine.nsenter_argv(host.record) + ["python3", "-c", code],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    want = " ".join(f"':{p} '" for p in ports)
    testhosts.exec(host, f"for i in $(seq 100); do ok=1; for p in {want}; do ss -ltn | grep -q \"$p\" || ok=0; "
                         "done; [ $ok = 1 ] && exit 0; sleep 0.1; done; exit 1")


def spec_for(host, *, web_cidr: str):
    return parse_spec({
        "name": "web1", "size": "small", "image": {"family": "debian", "version": "12"},
        "data_disks": [{"name": "data", "size_gb": 1, "mount_point": "/srv/data"}],
        "ingress": [{"port": 22, "cidrs": [f"{host.record.host_ip}/32"]},
                    {"port": 8080, "cidrs": [web_cidr]}],
        "ssh": {"user": "polyvm", "public_key": host.host_key}})


def test_vsphere_like_vm_without_a_recipe_is_filtered_exactly_as_its_spec_says(testhosts):
    from polyvm.plugins import get_backend

    (host,) = testhosts.up(disk_mb=64)
    listen(testhosts, host, 8080, 9090)
    assert tcp_open(host.address, 8080) and tcp_open(host.address, 9090)  # nothing filters yet

    spec = spec_for(host, web_cidr=f"{host.record.host_ip}/32")
    guest = get_backend("vsphere").capabilities.firewall == "guest"
    vm = Host.from_spec(spec, address=host.address, host_key=host.host_key,
                        data_disk_devices={"data": host.disk}, guest_firewall=guest, user=host.user)
    assert vm.firewall is not None  # vSphere filters in the guest: the baseline must
    first = run_recipe([vm], None, credentials={"private_key_path": str(host.private_key_path)}, progress=False)
    (hr,) = first.hosts.values()
    assert [r.name for r in hr.results] == ["guest firewall rules", "guest firewall", "data disk data"]
    assert all(r.changed for r in hr.results)

    assert tcp_open(host.address, 22) and tcp_open(host.address, 8080)
    assert not tcp_open(host.address, 9090, timeout=1.0)  # listening, but not in the spec
    ruleset = testhosts.exec(host, ["nft", "list", "table", "inet", "polyvm"]).stdout
    assert "policy drop" in ruleset and "tcp dport 8080 accept" in ruleset and "9090" not in ruleset

    fstab = testhosts.exec(host, ["cat", "/etc/fstab"]).stdout
    assert any(line.startswith("UUID=") and " /srv/data " in line for line in fstab.splitlines())
    src = testhosts.exec(host, ["findmnt", "-n", "-o", "SOURCE", "--mountpoint", "/srv/data"]).stdout.strip()
    assert src == host.disk

    # Unchanged re-run: nothing changes. A narrowed spec: 8080 is closed too, without a recipe.
    again = run_recipe([vm], None, credentials={"private_key_path": str(host.private_key_path)}, progress=False)
    assert not any(r.changed for r in again.hosts[vm.label].results)
    narrowed = Host.from_spec(spec_for(host, web_cidr="192.0.2.0/24"), address=host.address,
                              host_key=host.host_key, data_disk_devices={"data": host.disk}, guest_firewall=True,
                              user=host.user)
    run_recipe([narrowed], None, credentials={"private_key_path": str(host.private_key_path)}, progress=False)
    assert tcp_open(host.address, 22) and not tcp_open(host.address, 8080, timeout=1.0)


def test_a_rule_set_that_would_lock_the_provisioner_out_is_refused_before_anything_is_sent(testhosts):
    (host,) = testhosts.up()
    elsewhere = (IngressRule(port=22, cidrs=["192.0.2.0/24"]), IngressRule(port=443, cidrs=["0.0.0.0/0"]))
    vm = Host(address=host.address, user=host.user, host_key=host.host_key, ingress=elsewhere, firewall=elsewhere)
    with pytest.raises(FanoutError) as ei:
        run_recipe([vm], None, credentials={"private_key_path": str(host.private_key_path)}, progress=False,
                   source=host.record.host_ip)
    (err,) = ei.value.failed.values()
    assert isinstance(err, SpecError) and "lock it out" in str(err)
    no_ssh = (IngressRule(port=443, cidrs=["0.0.0.0/0"]),)
    with pytest.raises(FanoutError, match="no TCP rule for SSH"):
        run_recipe([Host(address=host.address, user=host.user, host_key=host.host_key, firewall=no_ssh)], None,
                   credentials={"private_key_path": str(host.private_key_path)}, progress=False)
    assert testhosts.exec(host, "nft list table inet polyvm", check=False).returncode != 0  # nothing loaded
    assert tcp_open(host.address, 22)


def test_a_disk_with_a_filesystem_is_never_formatted_and_files_are_never_hidden(testhosts):
    (host,) = testhosts.up(disk_mb=64)
    testhosts.exec(host, f"mkfs.ext4 -q -L old {host.disk} && mkdir -p /mnt/old && mount {host.disk} /mnt/old "
                         "&& echo precious > /mnt/old/keep.txt && umount /mnt/old")
    uuid = testhosts.exec(host, ["blkid", "-p", "-s", "UUID", "-o", "value", host.disk]).stdout.strip()
    vm = Host(address=host.address, user=host.user, host_key=host.host_key,
              disks=(HostDisk("data", host.disk, "/srv/data"),))
    r = run_recipe([vm], None, credentials={"private_key_path": str(host.private_key_path)}, progress=False)
    (hr,) = r.hosts.values()
    assert "created" not in hr.results[0].detail
    assert testhosts.exec(host, "cat /srv/data/keep.txt").stdout.strip() == "precious"
    assert testhosts.exec(host, ["blkid", "-p", "-s", "UUID", "-o", "value", host.disk]).stdout.strip() == uuid

    # A second disk whose mount point already holds files is refused (the files stay visible).
    (other,) = testhosts.up(disk_mb=64)
    testhosts.exec(other, "mkdir -p /srv/data && echo mine > /srv/data/file")
    vm2 = Host(address=other.address, user=other.user, host_key=other.host_key,
               disks=(HostDisk("data", other.disk, "/srv/data"),))
    with pytest.raises(FanoutError, match="already holds files"):
        run_recipe([vm2], None, credentials={"private_key_path": str(other.private_key_path)}, progress=False)
    assert testhosts.exec(other, "cat /srv/data/file").stdout.strip() == "mine"


def test_polyvm_apply_without_a_recipe_applies_the_specs_guest_firewall_and_disk(testhosts, tmp_path):
    import json

    import yaml
    from click.testing import CliRunner

    from polyvm.cli import build_cli

    (host,) = testhosts.up(disk_mb=64)
    listen(testhosts, host, 8080, 9090)
    spec = {"name": "web1", "size": "small", "image": {"family": "debian", "version": "12"},
            "data_disks": [{"name": "data", "size_gb": 1, "mount_point": "/srv/data"}],
            "ingress": [{"port": 22, "cidrs": [f"{host.record.host_ip}/32"]},
                        {"port": 8080, "cidrs": [f"{host.record.host_ip}/32"]}],
            "ssh": {"user": "polyvm", "public_key": host.host_key}}
    path = tmp_path / "vm.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = ["apply", "-H", f"{host.user}@{host.address}", "-k", str(host.private_key_path), "--host-key",
            host.host_key, "--spec", str(path), "--guest-firewall", "--disk", f"data={host.disk}", "--json"]
    r = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (out,) = json.loads(r.output)["hosts"].values()
    assert out["ok"] and out["changed"]
    assert tcp_open(host.address, 8080) and not tcp_open(host.address, 9090, timeout=1.0)
    assert testhosts.exec(host, ["findmnt", "-n", "-o", "SOURCE", "--mountpoint", "/srv/data"]).stdout.strip() == host.disk
    bad = CliRunner().invoke(build_cli(), [a if a != f"data={host.disk}" else "nope=/dev/sdz" for a in args])
    assert bad.exit_code == 2 and "not a data disk" in bad.output
