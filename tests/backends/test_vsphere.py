"""vSphere backend: the pure mapping, settings validation, and the declared VM under mocks."""

from __future__ import annotations

import base64
import json

import pytest

from polyvm.backend import spec_ingress_rules
from polyvm.backends.vsphere import VsphereBackend
from polyvm.backends.vsphere import mapping as m
from polyvm.errors import ConfigError, SpecError, UnsupportedFeatureError
from polyvm.plan import REDACTED, plan
from polyvm.spec import parse_spec
from polyvm.testing import contract_public_key

BE = VsphereBackend()
SETTINGS = {"datacenter": "dc1", "datastore": "ds1", "cluster": "cluster1", "network": "VM Network",
            "template": "ubuntu-2404-cloudinit"}


def spec(**patch):
    data = {
        "name": "db1",
        "size": {"cpus": 2, "memory_gb": 3.1},
        "image": {"family": "ubuntu", "version": "24.04"},
        "root_disk_gb": 30,
        "ssh": {"user": "admin", "public_key": contract_public_key()},
        "ingress": [
            {"protocol": "tcp", "port": 22, "cidrs": ["203.0.113.0/24", "2001:db8::/32"]},
            {"protocol": "tcp", "port": "8000-8100", "cidrs": ["10.0.0.0/8"]},
            {"protocol": "icmp", "cidrs": ["10.0.0.0/8"]},
        ],
        "data_disks": [{"name": "pgdata", "size_gb": 50}, {"name": "wal", "size_gb": 10}],
        "tags": {"env": "prod"},
    }
    data.update(patch)
    return parse_spec(data)


# --- pure mapping -------------------------------------------------------------------------------------
def test_memory_is_mib_multiple_of_four():
    assert m.memory_mb(spec()) == 3176  # ceil(3.1 * 1024) = 3175 -> 3176
    assert m.memory_mb(spec(size={"cpus": 1, "memory_gb": 0.5})) == 512


def test_disks_by_unit_number_skip_the_controller():
    s = spec(data_disks=[{"name": f"d{i}", "size_gb": i + 1} for i in range(m.MAX_DATA_DISKS)])
    disks = m.disks(s, {"size": 30, "thin_provisioned": True, "eagerly_scrub": False})
    assert disks[0] == {"label": "disk0", "unit_number": 0, "size": 30, "thin_provisioned": True,
                        "eagerly_scrub": False}
    # unit_number is the provider's logical index (bus = n/15, unit = n%15 shifted past unit 7): 1-14
    # are SCSI 0:1-6 and 0:8-15, all on the one controller; 15 would ask for a second bus.
    units = [d["unit_number"] for d in disks[1:]]
    assert units == list(range(1, 15))
    assert [m.scsi_address(u) for u in units] == [(0, u) for u in (1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15)]
    assert m.scsi_address(15) == (1, 0)
    assert all(d["keep_on_remove"] is True for d in disks[1:])
    assert [d["label"] for d in disks[1:3]] == ["data-d0", "data-d1"]
    assert m.MAX_DATA_DISKS == BE.capabilities.max_data_disks == 14


def test_root_disk_can_grow_but_not_shrink():
    assert m.root_disk_size(spec(), 10) == 30
    assert m.root_disk_size(spec(), None) == 30
    with pytest.raises(ConfigError, match="cannot shrink"):
        m.root_disk_size(spec(root_disk_gb=8), 40)
    assert m.root_disk_size(spec(), 30, linked_clone=True) == 30
    with pytest.raises(ConfigError, match="linked clone keeps"):
        m.root_disk_size(spec(), 10, linked_clone=True)


def test_guest_device_path_from_disk_uuid():
    assert m.guest_device_path("6000C29a-bcde-f012-3456-789abcdef012") == \
        "/dev/disk/by-id/wwn-0x6000c29abcdef0123456789abcdef012"


def test_guestinfo():
    plain = m.guestinfo_plain(spec())
    meta = json.loads(base64.b64decode(plain["guestinfo.metadata"]))
    # redact: cloud-init blanks guestinfo.userdata (it holds the host's private key) once read
    assert meta == {"instance-id": "db1", "local-hostname": "db1", "redact": ["userdata"]}
    assert plain["guestinfo.userdata.encoding"] == "base64"
    assert "guestinfo.userdata" not in plain  # the secret part is separate
    assert base64.b64decode(m.guestinfo_userdata("#cloud-config\nx: 1\n")).decode() == "#cloud-config\nx: 1\n"
    assert m.firewall_rules(plain["guestinfo.polyvm.ingress"]) == spec_ingress_rules(spec())


def test_customize_and_template_override():
    c = m.customize(spec(), "example.internal", ["192.0.2.53"])
    assert c == {"linux_options": {"host_name": "db1", "domain": "example.internal"},
                 "network_interfaces": [{}], "dns_server_lists": ["192.0.2.53"]}
    assert m.template_name(spec(), "tmpl") == "tmpl"
    s = spec(image={"family": "debian", "version": "12", "image_id": {"vsphere": "debian12-tmpl"}})
    assert m.template_name(s, "tmpl") == "debian12-tmpl"


def test_tags_in_annotation_round_trip():
    s = spec(tags={"env": "prod", "cost": "a=b"})
    text = m.annotation(s)
    assert "  env=prod" in text.splitlines()
    assert m.parse_annotation_tags(text) == s.all_tags()


def test_capability_rejections_name_backend_and_option():
    with pytest.raises(UnsupportedFeatureError) as info:
        BE.check(spec(region="eu", zone="a", size={"cpus": 2, "memory_gb": 4, "instance_type": {"vsphere": "x"}},
                      data_disks=[{"name": f"d{i}", "size_gb": 1} for i in range(15)]))
    text = str(info.value)
    for part in ("region 'eu'", "zone 'a'", "size.instance_type.vsphere", "data_disks (15 asked, at most 14)"):
        assert f"backend 'vsphere' cannot honour {part}" in text


# --- settings -----------------------------------------------------------------------------------------
def test_settings_required_and_placement():
    with pytest.raises(SpecError) as info:
        BE.parse_settings({})
    text = str(info.value)
    for f in ("datacenter", "datastore", "network", "template"):
        assert f"polyvm:vsphere.{f}: is required" in text
    with pytest.raises(SpecError, match="exactly one of cluster.*got neither"):
        BE.parse_settings({k: v for k, v in SETTINGS.items() if k != "cluster"})
    with pytest.raises(SpecError, match="got both"):
        BE.parse_settings({**SETTINGS, "resource_pool": "c/Resources"})
    with pytest.raises(SpecError, match="'dns1' is not an IP address"):
        BE.parse_settings({**SETTINGS, "dns_servers": ["dns1"]})


# --- the declared VM under mocks ----------------------------------------------------------------------
def _vm(p):
    (vm,) = p.by_type("vsphere:index/virtualMachine:VirtualMachine")
    return vm


def test_lookups_and_vm_inputs():
    p = plan(BE, [spec()], {**SETTINGS, "folder": "db", "domain": "example.internal", "customize": True})
    tokens = [t for t, _a in p.calls]
    for t in ("getDatacenter", "getDatastore", "getComputeCluster", "getNetwork", "getVirtualMachine"):
        assert f"vsphere:index/{t}:{t}" in tokens
    assert ("vsphere:index/getVirtualMachine:getVirtualMachine",
            {"name": "ubuntu-2404-cloudinit", "datacenterId": "datacenter-3"}) in \
        [(t, {k: v for k, v in a.items() if k in ("name", "datacenterId")}) for t, a in p.calls]
    vm = _vm(p)
    i = vm.inputs
    assert i["name"] == "db1" and i["numCpus"] == 2 and i["memory"] == 3176
    assert i["resourcePoolId"] == "resgroup-9" and i["datastoreId"] == "datastore-14"
    assert i["folder"] == "db" and i["enableDiskUuid"] is True
    assert i["guestId"] == "ubuntu64Guest" and i["scsiType"] == "pvscsi" and i["firmware"] == "efi"
    assert i["networkInterfaces"] == [{"networkId": "network-15", "adapterType": "vmxnet3"}]
    assert i["clone"]["templateUuid"] == "4217a5c4-1f4e-4a2f-9bde-6b1d2c3e4f50"
    assert i["clone"]["customize"]["linuxOptions"] == {"hostName": "db1", "domain": "example.internal"}
    assert [(d["label"], d["unitNumber"], d["size"]) for d in i["disks"]] == \
        [("disk0", 0, 30), ("data-pgdata", 1, 50), ("data-wal", 2, 10)]
    assert vm.to_dict()["inputs"]["extraConfig"] == REDACTED
    # exactly two resources under the component: the generated host key and the VM (no firewall)
    assert sorted(r.type for r in p.resources if r.custom) == ["tls:index/privateKey:PrivateKey",
                                                               "vsphere:index/virtualMachine:VirtualMachine"]


def test_resource_pool_instead_of_cluster_and_no_customize():
    settings = {**{k: v for k, v in SETTINGS.items() if k != "cluster"}, "resource_pool": "cluster1/Resources/db",
                "customize": False}
    p = plan(BE, [spec()], settings)
    tokens = [t for t, _a in p.calls]
    assert "vsphere:index/getResourcePool:getResourcePool" in tokens
    assert "vsphere:index/getComputeCluster:getComputeCluster" not in tokens
    i = _vm(p).inputs
    assert i["resourcePoolId"] == "resgroup-42" and "customize" not in i["clone"]


def test_user_data_in_guestinfo_carries_host_key():
    from polyvm.testing import unsecret

    p = plan(BE, [spec()], SETTINGS)
    ud = base64.b64decode(unsecret(_vm(p).inputs["extraConfig"])["guestinfo.userdata"]).decode()
    assert ud.startswith("#cloud-config") and "ed25519_private" in ud
    assert p.outputs["db1"]["host_key"].split()[:2] == ud.split("ed25519_public: ")[1].split()[:2]


def test_outputs():
    p = plan(BE, [spec()], SETTINGS)
    out = p.outputs["db1"]
    assert out["public_ip"] == out["private_ip"] == "192.0.2.50"
    devs = out["data_disk_devices"]
    assert sorted(devs) == ["pgdata", "wal"]
    assert all(d.startswith("/dev/disk/by-id/wwn-0x6000c29") for d in devs.values())
    assert plan(BE, [spec(public_ip=False)], SETTINGS).outputs["db1"]["public_ip"] is None


def test_planned_ingress_is_the_spec_and_firewall_is_guest():
    p = plan(BE, [spec()], SETTINGS)
    assert BE.planned_ingress(p) == spec_ingress_rules(spec())
    assert BE.capabilities.firewall == "guest"


def test_example_stack_config_plans():
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "postgres-vm" /
                          "Pulumi.vsphere.yaml").read_text())["config"]
    assert cfg["polyvm:backend"] == "vsphere"
    s = parse_spec(cfg["polyvm:vm"])
    p = plan(BE, [s], cfg["polyvm:vsphere"])
    assert sorted(p.outputs[s.name]["data_disk_devices"]) == ["pgdata"]


def test_vm_with_data_disks_is_protected_and_clone_changes_ignored():
    from polyvm.testing import the_one as one

    vm = one(plan(BE, [spec()], SETTINGS), "vsphere:index/virtualMachine:VirtualMachine")
    assert vm.options["protect"] and vm.options["retain_on_delete"]
    assert "clone" in vm.options["ignore_changes"]
    assert vm.inputs["extraConfigRebootRequired"] is False
    assert "customize" not in vm.inputs["clone"]  # cloud-init does hostname and network
    vm = one(plan(BE, [spec()], {**SETTINGS, "reclone": True}), "vsphere:index/virtualMachine:VirtualMachine")
    assert "clone" not in vm.options["ignore_changes"]


def test_a_republished_template_replaces_the_vm_only_with_reclone_and_is_flagged():
    from polyvm.plan import diff

    for reclone, lost in ((False, False), (True, True)):
        settings = {**SETTINGS, "reclone": reclone}
        old = plan(BE, [spec()], settings)
        new = plan(BE, [spec()], settings, calls=BE.newer_image_calls)
        changes = [c for c in diff(BE, old, new) if c.type == "vsphere:index/virtualMachine:VirtualMachine"]
        assert any(c.data_loss for c in changes) is lost, changes
        if not reclone:  # the plan says the new template is not applied
            assert [(c.action, c.inputs) for c in changes] == [("no change (ignored)", ["clone"])]
