"""Azure-specific behaviour (the contract suite covers the rest): pure mapping, settings, offline plans."""

from __future__ import annotations

import base64

import pytest

from polyvm.backends.azure import AzureBackend
from polyvm.backends.azure import mapping as m
from polyvm.errors import SpecError, UnsupportedFeatureError
from polyvm.plan import plan
from polyvm.spec import parse_spec
from polyvm.testing import the_one as one, unsecret, contract_public_key

BACKEND = AzureBackend()
SETTINGS = {"location": "westeurope"}


def spec(**patch):
    data = {"name": "db1", "size": {"cpus": 2, "memory_gb": 4}, "image": {"family": "ubuntu", "version": "22.04"},
            "ssh": {"public_key": contract_public_key()},
            "data_disks": [{"name": "data", "size_gb": 50}, {"name": "wal", "size_gb": 10}],
            "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]},
                        {"port": 5432, "cidrs": ["10.0.0.0/8", "192.168.0.0/16"]},
                        {"protocol": "icmp", "cidrs": ["10.0.0.0/8"]}]}
    data.update(patch)
    return parse_spec(data)




# --- sizes and images ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cpus", "mem", "want"), [
    (1, 0.5, "Standard_B1ls"), (1, 2, "Standard_B1ms"), (2, 4, "Standard_B2s"), (2, 8, "Standard_B2ms"),
    (4, 16, "Standard_B4ms"), (16, 64, "Standard_D16s_v5"), (64, 400, "Standard_E64s_v5"),
])
def test_vm_size_table(cpus, mem, want):
    assert m.vm_size(spec(size={"cpus": cpus, "memory_gb": mem}, data_disks=[])) == want


def test_vm_size_override_and_too_big():
    assert m.vm_size(spec(size={"cpus": 2, "memory_gb": 4, "instance_type": {"azure": "Standard_F2s_v2"}})) \
        == "Standard_F2s_v2"
    with pytest.raises(SpecError, match="size.instance_type.azure"):
        m.vm_size(spec(size={"cpus": 200, "memory_gb": 4}))


def test_vm_size_table_is_cheapest_first():
    for i, (name, cpus, mem, disks) in enumerate(m.VM_SIZES):
        earlier = [n for n, c, g, d in m.VM_SIZES[:i] if c >= cpus and g >= mem and d >= disks]
        assert not earlier, f"{name} is shadowed by {earlier}"
    assert max(d for *_x, d in m.VM_SIZES) >= m.MAX_DATA_DISKS


@pytest.mark.parametrize(("ndisks", "want"), [(0, "Standard_B1ls"), (2, "Standard_B1ls"), (3, "Standard_B2s"),
                                              (5, "Standard_B4ms"), (16, "Standard_B8ms")])
def test_vm_size_has_room_for_the_data_disks(ndisks, want):
    disks = [{"name": f"d{i}", "size_gb": 1} for i in range(ndisks)]
    assert m.vm_size(spec(size={"cpus": 1, "memory_gb": 0.5}, data_disks=disks)) == want


@pytest.mark.parametrize(("family", "version", "publisher"), [
    ("ubuntu", "22.04", "Canonical"), ("ubuntu", "24.04", "Canonical"), ("debian", "12", "Debian"),
    ("rhel", "9", "RedHat"),
])
def test_marketplace_images(family, version, publisher):
    ref = m.image_reference(spec(image={"family": family, "version": version}))
    assert ref["publisher"] == publisher and ref["version"] == "latest" and ref["offer"] and ref["sku"]


def test_image_overrides():
    urn = spec(image={"family": "ubuntu", "version": "22.04", "image_id": {"azure": "Canonical:o:s:1.2.3"}})
    assert m.image_reference(urn) == {"publisher": "Canonical", "offer": "o", "sku": "s", "version": "1.2.3"}
    rid = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/images/golden"
    assert m.image_reference(spec(image={"family": "ubuntu", "version": "22.04", "image_id": {"azure": rid}})) == {"id": rid}
    bad = spec(image={"family": "ubuntu", "version": "22.04", "image_id": {"azure": "golden"}})
    with pytest.raises(UnsupportedFeatureError, match="image.image_id.azure"):
        BACKEND.check(bad)


def test_amazon_linux_is_rejected():
    with pytest.raises(UnsupportedFeatureError, match="backend 'azure' cannot honour image.family 'amazon-linux'"):
        BACKEND.check(spec(image={"family": "amazon-linux", "version": "2023"}))


# --- Azure-specific limits and settings ----------------------------------------------------------------
def test_reserved_admin_user_and_unsupported_key_type():
    ecdsa = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5Y"
             "RrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=")
    with pytest.raises(UnsupportedFeatureError) as info:
        BACKEND.check(spec(ssh={"user": "admin", "public_key": ecdsa}))
    msg = str(info.value)
    assert "ssh.user 'admin'" in msg and "ssh.public_key of type ecdsa-sha2-nistp256" in msg


def test_a_rule_description_azure_would_cut_is_refused_not_cut():
    long = "x" * 141
    with pytest.raises(UnsupportedFeatureError, match="ingress\\[1\\].description of 141 characters"):
        BACKEND.check(spec(ingress=[{"port": 22, "cidrs": ["203.0.113.0/24"]},
                                    {"port": 443, "cidrs": ["203.0.113.0/24"], "description": long}]))
    ok = "y" * 140
    ok_spec = spec(ingress=[{"port": 22, "cidrs": ["203.0.113.0/24"], "description": ok}])
    BACKEND.check(ok_spec)
    assert m.security_rules(ok_spec)[0]["description"] == ok  # the whole description, not a cut one


def test_ipv6_ingress_is_rejected_not_dropped():
    with pytest.raises(UnsupportedFeatureError, match="IPv6 2001:db8::/32"):
        BACKEND.check(spec(ingress=[{"port": 22, "cidrs": ["203.0.113.0/24", "2001:db8::/32"]}]))


def test_location_required_from_settings_or_region():
    with pytest.raises(SpecError, match="no Azure location"):
        plan(BACKEND, [spec()], {})
    p = plan(BACKEND, [spec(region="eastus2")], {})
    assert one(p, "azure-native:compute:VirtualMachine").inputs["location"] == "eastus2"
    p = plan(BACKEND, [spec(region="eastus2")], SETTINGS)  # the spec wins over the default
    assert {r.inputs.get("location") for r in p.resources if r.type.startswith("azure-native:") and
            "location" in r.inputs} == {"eastus2"}
    with pytest.raises(SpecError, match="region 'eu-west-1' is not an Azure location"):
        plan(BACKEND, [spec(region="eu-west-1")], SETTINGS)


@pytest.mark.parametrize(("settings", "text"), [
    ({"location": "West Europe"}, "polyvm:azure.location: 'West Europe' is not an Azure location"),
    ({"location": "westeurope", "subnet_id": "subnet-1"}, "polyvm:azure.subnet_id: must be a subnet resource id"),
    ({"location": "westeurope", "address_space": "10.0.0.0/33"}, "polyvm:azure.address_space: '10.0.0.0/33' is not a CIDR"),
    ({"location": "westeurope", "storage_account_type": "Ultra"}, "polyvm:azure.storage_account_type"),
    ({"location": "westeurope", "resource_group": "bad name!"}, "polyvm:azure.resource_group"),
])
def test_settings_validation_messages(settings, text):
    with pytest.raises(SpecError) as info:
        BACKEND.parse_settings(settings)
    assert text in str(info.value)


# --- network security group ------------------------------------------------------------------------------
def test_nsg_priorities_are_deterministic_and_unique():
    rules = m.security_rules(spec())
    assert m.security_rules(spec()) == rules
    prios = [r["priority"] for r in rules]
    assert len(set(prios)) == len(prios) and all(100 <= p <= 4096 for p in prios)
    inbound = [r for r in rules if r["direction"] == "Inbound" and r["access"] == "Allow"]
    assert [r["priority"] for r in inbound] == [100, 110, 120]
    assert [r["destination_port_range"] for r in inbound] == ["22", "5432", "*"]
    assert [r["protocol"] for r in inbound] == ["Tcp", "Tcp", "Icmp"]
    assert inbound[1]["source_address_prefixes"] == ["10.0.0.0/8", "192.168.0.0/16"]


def test_nsg_denies_everything_else_inbound_and_states_outbound():
    rules = m.security_rules(spec(ingress=[]))
    deny = [r for r in rules if r["access"] == "Deny"]
    assert deny == [r for r in rules if r["name"] == "polyvm-in-deny-all"]
    assert deny[0]["direction"] == "Inbound" and deny[0]["priority"] == 4096 and deny[0]["source_address_prefix"] == "*"
    out = [r for r in rules if r["direction"] == "Outbound"]
    assert len(out) == 1 and out[0]["access"] == "Allow" and out[0]["destination_address_prefixes"] == ["0.0.0.0/0"]


def test_port_range_rule():
    rules = m.security_rules(spec(ingress=[{"protocol": "udp", "port": "60000-61000", "cidrs": ["10.0.0.0/8"]}]))
    assert rules[0]["destination_port_range"] == "60000-61000" and rules[0]["protocol"] == "Udp"


def test_too_many_rules_for_the_priorities():
    many = [{"port": 1000 + i, "cidrs": ["10.0.0.0/8"]} for i in range(m.MAX_INGRESS_RULES + 1)]
    with pytest.raises(UnsupportedFeatureError, match="fit the NSG priorities"):
        BACKEND.check(spec(ingress=many))


# --- the planned resources ---------------------------------------------------------------------------------
def test_resources_and_wiring():
    p = plan(BACKEND, [spec(tags={"env": "prod"})], SETTINGS)
    types = sorted(r.type for r in p.resources if r.custom)
    assert types == sorted([
        "azure-native:resources:ResourceGroup", "azure-native:network:VirtualNetwork", "azure-native:network:Subnet",
        "azure-native:network:PublicIPAddress", "azure-native:network:NetworkSecurityGroup",
        "azure-native:network:NetworkInterface", "azure-native:compute:Disk", "azure-native:compute:Disk",
        "azure-native:compute:VirtualMachine", "tls:index/privateKey:PrivateKey"])
    vnet = one(p, "azure-native:network:VirtualNetwork")
    assert "subnets" not in vnet.inputs  # one way only: the standalone Subnet resource
    subnet = one(p, "azure-native:network:Subnet")
    assert subnet.inputs["virtualNetworkName"] and subnet.inputs["addressPrefix"] == "10.10.1.0/24"
    assert subnet.inputs["defaultOutboundAccess"] is True
    ip = one(p, "azure-native:network:PublicIPAddress")
    assert ip.inputs["sku"]["name"] == "Standard" and ip.inputs["publicIPAllocationMethod"] == "Static"
    nic = one(p, "azure-native:network:NetworkInterface")
    nsg = one(p, "azure-native:network:NetworkSecurityGroup")
    assert nic.inputs["networkSecurityGroup"]["id"] == nsg.id
    (cfg,) = nic.inputs["ipConfigurations"]
    assert cfg["publicIPAddress"]["id"] == ip.id and cfg["subnet"]["id"] == subnet.id
    vm = one(p, "azure-native:compute:VirtualMachine")
    assert vm.inputs["hardwareProfile"]["vmSize"] == "Standard_B2s"
    assert vm.inputs["networkProfile"]["networkInterfaces"][0]["id"] == nic.id
    assert vm.inputs["tags"]["env"] == "prod"
    assert p.outputs["db1"]["public_ip"] == "20.50.0.10" and p.outputs["db1"]["private_ip"] == "10.10.1.4"


def test_ssh_key_only_and_custom_data_is_secret_cloud_init_with_host_key():
    p = plan(BACKEND, [spec()], SETTINGS)
    vm = one(p, "azure-native:compute:VirtualMachine")
    osp = unsecret(vm.inputs["osProfile"])
    assert "adminPassword" not in osp
    linux = osp["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"] == [{"path": "/home/polyvm/.ssh/authorized_keys", "keyData": contract_public_key()}]
    custom = osp["customData"]
    if isinstance(custom, dict):
        custom = unsecret(custom)
    text = base64.b64decode(custom).decode()
    assert text.startswith("#cloud-config\n") and "ed25519_private" in text
    assert p.outputs["db1"]["host_key"].split()[1] in text


def test_data_disks_by_lun():
    p = plan(BACKEND, [spec()], SETTINGS)
    disks = {d.inputs["tags"]["polyvm-disk"]: d for d in p.by_type("azure-native:compute:Disk")}
    assert {n: d.inputs["diskSizeGB"] for n, d in disks.items()} == {"data": 50, "wal": 10}
    assert all(d.inputs["creationData"]["createOption"] == "Empty" for d in disks.values())
    vm = one(p, "azure-native:compute:VirtualMachine")
    attached = vm.inputs["storageProfile"]["dataDisks"]
    assert [(a["lun"], a["managedDisk"]["id"], a["createOption"]) for a in attached] == [
        (0, disks["data"].id, "Attach"), (1, disks["wal"].id, "Attach")]
    assert p.outputs["db1"]["data_disk_devices"] == {"data": "/dev/disk/azure/scsi1/lun0",
                                                     "wal": "/dev/disk/azure/scsi1/lun1"}
    # The spec's default root disk (20) is below the images' 30 GB: the image's size is used.
    assert vm.inputs["storageProfile"]["osDisk"]["diskSizeGB"] == 30


def test_existing_resource_group_and_subnet():
    sid = "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/db"
    p = plan(BACKEND, [spec()], {**SETTINGS, "resource_group": "prod-rg", "subnet_id": sid})
    assert not p.by_type("azure-native:resources:ResourceGroup")
    assert not p.by_type("azure-native:network:VirtualNetwork") and not p.by_type("azure-native:network:Subnet")
    nic = one(p, "azure-native:network:NetworkInterface")
    assert nic.inputs["ipConfigurations"][0]["subnet"]["id"] == sid
    assert {r.inputs["resourceGroupName"] for r in p.resources if "resourceGroupName" in r.inputs} == {"prod-rg"}


def test_zone_pins_vm_ip_and_disks():
    p = plan(BACKEND, [spec(zone="2")], SETTINGS)
    for typ in ("azure-native:compute:VirtualMachine", "azure-native:network:PublicIPAddress"):
        assert one(p, typ).inputs["zones"] == ["2"]
    assert all(d.inputs["zones"] == ["2"] for d in p.by_type("azure-native:compute:Disk"))


def test_private_vm_has_no_public_ip():
    p = plan(BACKEND, [spec(public_ip=False)], SETTINGS)
    assert not p.by_type("azure-native:network:PublicIPAddress")
    assert "publicIPAddress" not in one(p, "azure-native:network:NetworkInterface").inputs["ipConfigurations"][0]
    assert p.outputs["db1"]["public_ip"] is None


def test_nvme_only_sizes_are_rejected():
    with pytest.raises(UnsupportedFeatureError, match="size.instance_type.azure 'Standard_D4s_v6'"):
        BACKEND.check(spec(size={"cpus": 2, "memory_gb": 4, "instance_type": {"azure": "Standard_D4s_v6"}}))
    BACKEND.check(spec(size={"cpus": 2, "memory_gb": 4, "instance_type": {"azure": "Standard_D4s_v5"}}))


def test_long_names_fit_azure_limits():
    long = "a" + "b" * 62
    p = plan(BACKEND, [spec(name=long)], SETTINGS)
    vm = one(p, "azure-native:compute:VirtualMachine")
    assert vm.inputs["vmName"] == long and len(long) <= 64
    for r in p.resources:
        if r.type.startswith("azure-native:"):
            assert len(r.name) + 8 <= (64 if r.type.endswith("VirtualNetwork") else 80), r.name
    assert p.outputs[long]["ssh_user"] == "polyvm"


def test_explicit_root_disk_below_the_image_is_refused():
    with pytest.raises(UnsupportedFeatureError, match=r"root_disk_gb 20 \(the ubuntu 22.04 image's disk is 30 GB"):
        BACKEND.check(spec(root_disk_gb=20))
    BACKEND.check(spec(root_disk_gb=30))


def test_no_host_caching_on_disks_of_4_tib_and_more():
    p = plan(BACKEND, [spec(data_disks=[{"name": "small", "size_gb": 4094}, {"name": "big", "size_gb": 4095}])],
             SETTINGS)
    attached = one(p, "azure-native:compute:VirtualMachine").inputs["storageProfile"]["dataDisks"]
    assert [a["caching"] for a in attached] == ["ReadOnly", "None"]


def test_nic_survives_a_vm_replacement():
    vm = one(plan(BACKEND, [spec()], SETTINGS), "azure-native:compute:VirtualMachine")
    assert [n["deleteOption"] for n in vm.inputs["networkProfile"]["networkInterfaces"]] == ["Detach"]


def test_disk_size_limit():
    with pytest.raises(UnsupportedFeatureError, match=r"data_disks\[0\].size_gb 32768"):
        BACKEND.check(spec(data_disks=[{"name": "huge", "size_gb": 32768}]))
