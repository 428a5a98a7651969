"""GCP-specific behaviour (the contract suite covers the rest): pure mapping, settings, offline plans."""

from __future__ import annotations

import pytest
import yaml

from polyvm.backends.gcp import GcpBackend
from polyvm.backends.gcp import mapping as m
from polyvm.errors import SpecError, UnsupportedFeatureError
from polyvm.plan import plan
from polyvm.spec import parse_spec
from polyvm.testing import the_one as one, unsecret, contract_public_key

BACKEND = GcpBackend()
SETTINGS = {"project": "my-project-1", "zone": "europe-west1-c"}


def spec(**patch):
    data = {"name": "db1", "size": {"cpus": 2, "memory_gb": 4}, "image": {"family": "ubuntu", "version": "22.04"},
            "ssh": {"public_key": contract_public_key()},
            "data_disks": [{"name": "data", "size_gb": 50}, {"name": "wal", "size_gb": 10}],
            "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]},
                        {"port": "8000-8100", "cidrs": ["10.0.0.0/8", "192.168.0.0/16"]},
                        {"protocol": "icmp", "cidrs": ["10.0.0.0/8"]}],
            "tags": {"env": "prod"}}
    data.update(patch)
    return parse_spec(data)




# --- sizes, images, labels ------------------------------------------------------------------------------
@pytest.mark.parametrize(("cpus", "mem", "want"), [
    (1, 0.5, "e2-micro"), (2, 4, "e2-medium"), (2, 8, "e2-standard-2"), (4, 16, "e2-standard-4"),
    (16, 64, "e2-standard-16"), (48, 100, "n2-standard-48"), (64, 400, "n2-highmem-64"),
])
def test_machine_type_table(cpus, mem, want):
    assert m.machine_type(spec(size={"cpus": cpus, "memory_gb": mem})) == want


def test_machine_type_override_and_too_big():
    assert m.machine_type(spec(size={"cpus": 2, "memory_gb": 4, "instance_type": {"gcp": "c3-standard-4"}})) \
        == "c3-standard-4"
    with pytest.raises(SpecError, match="size.instance_type.gcp"):
        m.machine_type(spec(size={"cpus": 300, "memory_gb": 4}))


def test_machine_type_table_is_cheapest_first():
    for i, (name, cpus, mem) in enumerate(m.MACHINE_TYPES):
        earlier = [n for n, c, g in m.MACHINE_TYPES[:i] if c >= cpus and g >= mem]
        assert not earlier, f"{name} is shadowed by {earlier}"


def test_image_families():
    assert m.image(spec()) == "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts"
    assert m.image(spec(image={"family": "ubuntu", "version": "24.04"})).startswith("projects/ubuntu-os-cloud/")
    assert m.image(spec(image={"family": "ubuntu", "version": "22.04", "image_id": {"gcp": "projects/p/global/images/x"}})) \
        == "projects/p/global/images/x"


@pytest.mark.parametrize("family,version", [("debian", "12"), ("rhel", "9"), ("amazon-linux", "2023")])
def test_images_without_cloud_init_are_rejected(family, version):
    with pytest.raises(UnsupportedFeatureError, match=f"backend 'gcp' cannot honour image.family '{family}'"):
        BACKEND.check(spec(image={"family": family, "version": version}))


def test_labels_and_bad_tags():
    assert m.labels(spec()) == {"name": "db1", "managed-by": "polyvm", "env": "prod"}
    with pytest.raises(UnsupportedFeatureError) as info:
        BACKEND.check(spec(tags={"Owner": "x", "team": "Data Team"}))
    assert "tags.Owner" in str(info.value) and "tags.team" in str(info.value)


def test_device_name_must_not_end_with_a_hyphen():
    with pytest.raises(UnsupportedFeatureError, match=r"data_disks\[0\].name 'data-'"):
        BACKEND.check(spec(data_disks=[{"name": "data-", "size_gb": 5}]))


def test_long_names_fit_gce_limits():
    long = "a" + "b" * 62
    base = m.base_name(long)
    assert len(base) <= 40 and m.base_name(long) == base and m.base_name("db1") == "db1"
    assert len(m.network_tag(spec(name=long))) <= 63


# --- placement and settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("patch", "settings", "want"), [
    ({}, {"zone": "europe-west1-c"}, ("europe-west1", "europe-west1-c")),
    ({}, {"region": "us-east1"}, ("us-east1", "us-east1-b")),
    ({"region": "us-east1"}, {"zone": "europe-west1-c"}, ("us-east1", "us-east1-b")),
    ({"zone": "asia-east1-a"}, {"zone": "europe-west1-c"}, ("asia-east1", "asia-east1-a")),
    ({"region": "europe-west1"}, {"zone": "europe-west1-d"}, ("europe-west1", "europe-west1-d")),
])
def test_placement(patch, settings, want):
    assert m.placement(spec(**patch), settings.get("region"), settings.get("zone")) == want


def test_placement_problems():
    with pytest.raises(SpecError, match="no GCE zone"):
        plan(BACKEND, [spec()], {"project": "my-project-1"})
    with pytest.raises(SpecError, match="zone 'us-east1-b' is not in region 'europe-west1'"):
        plan(BACKEND, [spec(region="europe-west1", zone="us-east1-b")], SETTINGS)
    with pytest.raises(UnsupportedFeatureError, match="zone '2'"):
        BACKEND.check(spec(zone="2"))


@pytest.mark.parametrize(("settings", "text"), [
    ({}, "polyvm:gcp.project: is required"),
    ({"project": "My Project"}, "polyvm:gcp.project: 'My Project' is not a GCP project id"),
    ({"project": "my-project-1", "zone": "europe-west1"}, "polyvm:gcp.zone: 'europe-west1' is not a GCE zone"),
    ({"project": "my-project-1", "region": "eu-west-1"}, "polyvm:gcp.region: 'eu-west-1' is not a GCE region"),
    ({"project": "my-project-1", "network": "default"}, "default-allow-ssh"),
    ({"project": "my-project-1", "subnet_cidr": "fd00::/64"}, "must be an IPv4 CIDR"),
])
def test_settings_validation_messages(settings, text):
    with pytest.raises(SpecError) as info:
        BACKEND.parse_settings(settings)
    assert text in str(info.value)


# --- the planned resources -----------------------------------------------------------------------------------
def test_firewalls_target_the_instance_tag_with_source_ranges():
    p = plan(BACKEND, [spec()], SETTINGS)
    inst = one(p, "gcp:compute/instance:Instance")
    assert inst.inputs["tags"] == ["polyvm-db1"]
    fws = p.by_type("gcp:compute/firewall:Firewall")
    assert len(fws) == 4  # one per spec rule + the explicit egress
    assert all(f.inputs["targetTags"] == inst.inputs["tags"] for f in fws)
    net = one(p, "gcp:compute/network:Network")
    assert net.inputs["autoCreateSubnetworks"] is False
    assert all(f.inputs["network"] == "projects/mock/networks/db1-net" for f in fws)
    ingress = sorted((f.inputs["allows"][0]["protocol"], tuple(f.inputs["allows"][0].get("ports", ())),
                      tuple(f.inputs["sourceRanges"])) for f in fws if f.inputs["direction"] == "INGRESS")
    assert ingress == [("icmp", (), ("10.0.0.0/8",)), ("tcp", ("22",), ("203.0.113.0/24",)),
                       ("tcp", ("8000-8100",), ("10.0.0.0/8", "192.168.0.0/16"))]
    (egress,) = [f for f in fws if f.inputs["direction"] == "EGRESS"]
    assert egress.inputs["destinationRanges"] == ["0.0.0.0/0"] and egress.inputs["allows"] == [{"protocol": "all"}]


def test_no_ingress_means_no_ingress_firewall():
    p = plan(BACKEND, [spec(ingress=[])], SETTINGS)
    assert [f.inputs["direction"] for f in p.by_type("gcp:compute/firewall:Firewall")] == ["EGRESS"]


def test_static_address_disks_and_instance():
    p = plan(BACKEND, [spec()], SETTINGS)
    addr = one(p, "gcp:compute/address:Address")
    assert addr.inputs["addressType"] == "EXTERNAL" and addr.inputs["region"] == "europe-west1"
    inst = one(p, "gcp:compute/instance:Instance")
    assert inst.inputs["networkInterfaces"][0]["accessConfigs"] == [{"natIp": "34.90.0.10", "networkTier": "PREMIUM"}]
    assert inst.inputs["machineType"] == "e2-medium" and inst.inputs["zone"] == "europe-west1-c"
    assert inst.inputs["project"] == "my-project-1" and inst.inputs["name"] == "db1"
    assert inst.inputs["bootDisk"]["initializeParams"]["size"] == 20
    disks = {d.name: d for d in p.by_type("gcp:compute/disk:Disk")}
    assert {n: (d.inputs["size"], d.inputs["zone"]) for n, d in disks.items()} == {
        "db1-data": (50, "europe-west1-c"), "db1-wal": (10, "europe-west1-c")}
    assert inst.inputs["attachedDisks"] == [
        {"source": "projects/mock/disks/db1-data", "deviceName": "data", "mode": "READ_WRITE"},
        {"source": "projects/mock/disks/db1-wal", "deviceName": "wal", "mode": "READ_WRITE"}]
    outs = p.outputs["db1"]
    assert outs["data_disk_devices"] == {"data": "/dev/disk/by-id/google-data", "wal": "/dev/disk/by-id/google-wal"}
    assert outs["public_ip"] == "34.90.0.10" and outs["private_ip"] == "10.20.0.2"


def test_metadata_ssh_keys_and_secret_user_data_with_host_key():
    p = plan(BACKEND, [spec()], SETTINGS)
    md = unsecret(one(p, "gcp:compute/instance:Instance").inputs["metadata"])
    assert md["ssh-keys"] == f"polyvm:{contract_public_key()}"
    assert md["block-project-ssh-keys"] == "true" and md["enable-oslogin"] == "FALSE"
    ud = md["user-data"]
    if isinstance(ud, dict):
        ud = unsecret(ud)
    cfg = yaml.safe_load(ud)
    assert ud.startswith("#cloud-config\n")
    assert cfg["ssh_keys"]["ed25519_public"] == p.outputs["db1"]["host_key"]
    assert "PRIVATE KEY" in cfg["ssh_keys"]["ed25519_private"]
    assert m.GUEST_AGENT_CONFIG in cfg["write_files"]


def test_existing_network_is_used_as_is():
    p = plan(BACKEND, [spec()], {**SETTINGS, "network": "prod-vpc", "subnetwork": "prod-db"})
    assert not p.by_type("gcp:compute/network:Network") and not p.by_type("gcp:compute/subnetwork:Subnetwork")
    assert {f.inputs["network"] for f in p.by_type("gcp:compute/firewall:Firewall")} == {"prod-vpc"}
    nic = one(p, "gcp:compute/instance:Instance").inputs["networkInterfaces"][0]
    assert nic["network"] == "prod-vpc" and nic["subnetwork"] == "prod-db"
    with pytest.raises(SpecError, match="subnetwork needs polyvm:gcp.network"):
        plan(BACKEND, [spec()], {**SETTINGS, "subnetwork": "prod-db"})


def test_private_vm_has_no_address_but_cloud_nat():
    p = plan(BACKEND, [spec(public_ip=False)], SETTINGS)
    assert not p.by_type("gcp:compute/address:Address")
    router = one(p, "gcp:compute/router:Router")
    assert router.inputs["network"] == "projects/mock/networks/db1-net" and router.inputs["region"] == "europe-west1"
    nat = one(p, "gcp:compute/routerNat:RouterNat")
    assert nat.inputs["router"] == "db1-router" and nat.inputs["natIpAllocateOption"] == "AUTO_ONLY"
    assert not plan(BACKEND, [spec()], SETTINGS).by_type("gcp:compute/routerNat:RouterNat")
    assert "accessConfigs" not in one(p, "gcp:compute/instance:Instance").inputs["networkInterfaces"][0]
    assert p.outputs["db1"]["public_ip"] is None


def test_auto_named_children_fit_63_characters_with_pulumi_suffix():
    long = "a" + "b" * 62
    p = plan(BACKEND, [spec(name=long, data_disks=[{"name": "d" + "x" * 30, "size_gb": 10}])], SETTINGS)
    for r in p.resources:
        if r.custom and r.type.startswith("gcp:") and "name" not in r.inputs:  # auto-named: + "-" and 7 characters
            assert len(r.name) + m.AUTONAME_SUFFIX <= 63, r.name


def test_network_without_subnetwork_is_refused():
    with pytest.raises(SpecError, match="polyvm:gcp.network needs polyvm:gcp.subnetwork"):
        plan(BACKEND, [spec()], {**SETTINGS, "network": "prod-vpc"})


def test_guest_agent_setting_is_appended_not_clobbering_the_image_file():
    assert m.GUEST_AGENT_CONFIG["append"] is True
    assert m.GUEST_AGENT_CONFIG["content"].startswith("\n")


@pytest.mark.parametrize("patch, text", [
    ({"data_disks": [{"name": "tiny", "size_gb": 5}]}, "data_disks[0].size_gb 5"),
    ({"root_disk_gb": 8}, "root_disk_gb 8"),
])
def test_gce_disk_limits(patch, text):
    with pytest.raises(UnsupportedFeatureError) as info:
        BACKEND.check(spec(**patch))
    assert text in str(info.value)
