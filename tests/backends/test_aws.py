"""AWS-specific behaviour (the contract suite covers the rest): pure mapping and offline plans."""

from __future__ import annotations

import base64

import pytest

from polyvm.backends.aws import AwsBackend
from polyvm.backends.aws import mapping as m
from polyvm.errors import SpecError, UnsupportedFeatureError
from polyvm.plan import plan
from polyvm.spec import parse_spec
from polyvm.testing import the_one as one, unsecret, contract_public_key

BACKEND = AwsBackend()


def spec(**patch):
    data = {"name": "db1", "size": {"cpus": 2, "memory_gb": 4}, "image": {"family": "ubuntu", "version": "22.04"},
            "ssh": {"public_key": contract_public_key()},
            "data_disks": [{"name": "data", "size_gb": 50}, {"name": "wal", "size_gb": 10}],
            "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]}]}
    data.update(patch)
    return parse_spec(data)




@pytest.mark.parametrize(("cpus", "mem", "want"), [
    (1, 0.5, "t3.nano"), (2, 4, "t3.medium"), (2, 5, "t3.large"), (3, 4, "t3.xlarge"), (8, 32, "t3.2xlarge"),
    (16, 64, "m6i.4xlarge"), (64, 300, "r6i.16xlarge"), (128, 1024, "r6i.32xlarge"),
])
def test_instance_type_table(cpus, mem, want):
    assert m.instance_type(spec(size={"cpus": cpus, "memory_gb": mem})) == want


def test_instance_type_override_and_too_big():
    assert m.instance_type(spec(size={"cpus": 2, "memory_gb": 4, "instance_type": {"aws": "c7g.large"}})) == "c7g.large"
    with pytest.raises(SpecError, match="size.instance_type.aws"):
        m.instance_type(spec(size={"cpus": 256, "memory_gb": 4}))


def test_instance_type_table_is_cheapest_first():
    # Every entry must be reachable: no earlier entry already covers it.
    for i, (name, cpus, mem) in enumerate(m.INSTANCE_TYPES):
        earlier = [n for n, c, g in m.INSTANCE_TYPES[:i] if c >= cpus and g >= mem]
        assert not earlier, f"{name} is shadowed by {earlier}"


@pytest.mark.parametrize(("family", "version", "owner"), [
    ("ubuntu", "22.04", "099720109477"), ("ubuntu", "24.04", "099720109477"),  # Canonical
    ("debian", "12", "136693071363"),  # Debian
    ("amazon-linux", "2023", "137112412989"),  # Amazon
    ("rhel", "9", "309956199498"),  # Red Hat
])
def test_ami_lookup_uses_official_owners(family, version, owner):
    s = spec(image={"family": family, "version": version})
    q = m.ami_query(s)
    assert q["owners"] == [owner] and q["most_recent"] is True
    p = plan(BACKEND, [s])
    calls = [args for token, args in p.calls if token == "aws:ec2/getAmi:getAmi"]
    assert len(calls) == 1 and calls[0]["owners"] == [owner]
    assert one(p, "aws:ec2/instance:Instance").inputs["ami"] == "ami-0123456789abcdef0"


def test_image_id_override_skips_the_lookup():
    p = plan(BACKEND, [spec(image={"family": "ubuntu", "version": "22.04", "image_id": {"aws": "ami-0fedcba"}})])
    assert not [t for t, _ in p.calls if t == "aws:ec2/getAmi:getAmi"]
    assert one(p, "aws:ec2/instance:Instance").inputs["ami"] == "ami-0fedcba"


@pytest.mark.parametrize("zone", [None, "eu-west-1b"])
def test_volumes_live_in_the_instance_availability_zone(zone):
    p = plan(BACKEND, [spec(zone=zone, region="eu-west-1" if zone else None)])
    inst = one(p, "aws:ec2/instance:Instance")
    # With no zone in the spec one zone is looked up once (the mock answers us-east-1a) and pinned for
    # the instance and its volumes: a volume taking its zone from the instance would be replaced with it.
    want = zone or "us-east-1a"
    assert inst.inputs.get("availabilityZone") == want
    vols = p.by_type("aws:ebs/volume:Volume")
    assert len(vols) == 2 and {v.inputs["availabilityZone"] for v in vols} == {want}
    pinned = [] if zone else ["availabilityZone"]
    assert all(v.options["ignore_changes"] == pinned for v in vols)
    assert "ami" in inst.options["ignore_changes"]


def test_upgrade_image_unpins_the_ami():
    inst = one(plan(BACKEND, [spec()], {"upgrade_image": True}), "aws:ec2/instance:Instance")
    assert "ami" not in inst.options["ignore_changes"]


def test_attachment_stops_the_instance_before_detaching():
    for att in plan(BACKEND, [spec()]).by_type("aws:ec2/volumeAttachment:VolumeAttachment"):
        assert att.inputs["stopInstanceBeforeDetaching"] is True


@pytest.mark.parametrize("patch, text", [
    ({"ssh": {"public_key": "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= x"}},
     "ssh.public_key of type ecdsa-sha2-nistp256"),
    ({"data_disks": [{"name": "big", "size_gb": 16385}]}, "data_disks[0].size_gb 16385"),
    ({"image": {"family": "rhel", "version": "9"}, "root_disk_gb": 8}, "root_disk_gb 8"),
    ({"tags": {"aws:owner": "x"}}, "tags.aws:owner"),
])
def test_ec2_limits_are_refused(patch, text):
    with pytest.raises(UnsupportedFeatureError) as info:
        BACKEND.check(spec(**patch))
    assert text in str(info.value)


def test_default_root_disk_covers_the_image_snapshot():
    s = spec(image={"family": "rhel", "version": "9"})
    BACKEND.check(s)
    assert m.instance_args(s, subnet_id=None)["root_block_device"]["volume_size"] >= 20


def test_vpc_id_without_subnet_id_is_refused():
    with pytest.raises(SpecError, match="vpc_id needs subnet_id"):
        BACKEND.parse_settings({"vpc_id": "vpc-0123"})


def test_egress_is_explicit_all_traffic():
    sg = one(plan(BACKEND, [spec()]), "aws:ec2/securityGroup:SecurityGroup")
    (egress,) = sg.inputs["egress"]
    assert egress["protocol"] == "-1" and egress["cidrBlocks"] == ["0.0.0.0/0"] and egress["ipv6CidrBlocks"] == ["::/0"]


def test_icmp_v6_is_split_out():
    s = spec(ingress=[{"protocol": "icmp", "cidrs": ["10.0.0.0/8", "2001:db8::/32"]}])
    rules = m.security_group_args(s, None)["ingress"]
    assert {(r["protocol"], tuple(r.get("cidr_blocks", ())), tuple(r.get("ipv6_cidr_blocks", ()))) for r in rules} == {
        ("icmp", ("10.0.0.0/8",), ()), ("icmpv6", (), ("2001:db8::/32",))}


def test_nitro_device_paths():
    assert m.guest_device_path("vol-0abc123") == "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123"
    p = plan(BACKEND, [spec()])
    vols = {v.inputs["tags"]["polyvm-disk"]: v.id for v in p.by_type("aws:ebs/volume:Volume")}
    devices = p.outputs["db1"]["data_disk_devices"]
    assert devices == {n: "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + vid.replace("-", "", 1)
                       for n, vid in vols.items()}
    attach = sorted(a.inputs["deviceName"] for a in p.by_type("aws:ec2/volumeAttachment:VolumeAttachment"))
    assert attach == ["/dev/sdf", "/dev/sdg"]


def test_user_data_is_secret_and_carries_the_host_key():
    p = plan(BACKEND, [spec()])
    inst = one(p, "aws:ec2/instance:Instance")
    text = unsecret(inst.inputs["userData"])
    assert text.startswith("#cloud-config\n")
    assert "ed25519_private" in text and "PRIVATE KEY" in text
    host_key = p.outputs["db1"]["host_key"]
    assert host_key.split()[1] in text  # the key sshd will offer is the host_key output
    assert contract_public_key() in text
    assert inst.inputs["userDataReplaceOnChange"] is True


def test_region_passed_through_to_every_resource_and_lookup():
    p = plan(BACKEND, [spec(region="eu-central-1")])
    aws_resources = [r for r in p.resources if r.type.startswith("aws:")]
    assert aws_resources and all(r.inputs.get("region") == "eu-central-1" for r in aws_resources), \
        [(r.type, r.inputs.get("region")) for r in aws_resources]
    calls = [args for token, args in p.calls if token == "aws:ec2/getAmi:getAmi"]
    assert calls and all(c.get("region") == "eu-central-1" for c in calls)


def test_imdsv2_only_and_encrypted_disks():
    inst = one(plan(BACKEND, [spec()]), "aws:ec2/instance:Instance")
    assert inst.inputs["metadataOptions"]["httpTokens"] == "required"
    assert inst.inputs["rootBlockDevice"]["encrypted"] is True
    assert all(v["encrypted"] for v in m.volume_args(spec()))


def test_user_data_never_in_plan_json():
    import json

    text = json.dumps(plan(BACKEND, [spec()]).to_dict())
    assert "PRIVATE KEY" not in text and "#cloud-config" not in text
    assert base64.b64encode(b"#cloud-config").decode() not in text



def test_ipv6_ingress_gives_the_instance_an_ipv6_address():
    v6 = spec(ingress=[{"port": 443, "cidrs": ["2001:db8::/32"]}])
    assert m.instance_args(v6, subnet_id="subnet-1")["ipv6_address_count"] == 1
    v4 = spec(ingress=[{"port": 443, "cidrs": ["10.0.0.0/8"]}])
    assert "ipv6_address_count" not in m.instance_args(v4, subnet_id=None)


def test_root_volume_follows_the_looked_up_ami_snapshot():
    bdms = [{"device_name": "/dev/sda1", "ebs": {"volume_size": "12"}}, {"device_name": "/dev/sdb", "ebs": {}}]
    assert m.snapshot_gb(bdms, "/dev/sda1") == 12
    assert m.root_volume_gb(spec(), 12) == 20  # the spec's default covers it
    assert m.root_volume_gb(spec(), 30) == 30  # default grows to the snapshot
    with pytest.raises(SpecError, match="root_disk_gb 10 .the AMI's root snapshot is 12 GiB"):
        m.root_volume_gb(spec(root_disk_gb=10), 12)
    calls = {"aws:ec2/getAmi:getAmi": lambda a: {"id": "ami-0123456789abcdef0", "rootDeviceName": "/dev/sda1",
                                                 "blockDeviceMappings": [{"deviceName": "/dev/sda1",
                                                                          "ebs": {"volume_size": "40"}}]}}
    inst = one(plan(BACKEND, [spec()], calls=calls), "aws:ec2/instance:Instance")
    assert inst.inputs["rootBlockDevice"]["volumeSize"] == 40
