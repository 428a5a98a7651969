"""DigitalOcean backend: the pure mapping, settings validation, and the declared resources under mocks."""

from __future__ import annotations

import pytest

from polyvm.backends.digitalocean import DigitalOceanBackend, DigitalOceanSettings
from polyvm.backends.digitalocean import mapping as m
from polyvm.errors import SpecError, UnsupportedFeatureError
from polyvm.plan import REDACTED, plan
from polyvm.spec import parse_spec
from polyvm.testing import contract_public_key

BE = DigitalOceanBackend()


def spec(**patch):
    data = {
        "name": "db1",
        "size": {"cpus": 2, "memory_gb": 4},
        "image": {"family": "ubuntu", "version": "24.04"},
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


# --- sizes and images ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cpus,mem,disk,slug", [
    (1, 0.5, 10, "s-1vcpu-512mb-10gb"),
    (1, 0.5, 20, "s-1vcpu-1gb"),       # the root disk decides: 10 GB is too small
    (1, 1, 20, "s-1vcpu-1gb"),
    (2, 2, 20, "s-2vcpu-2gb"),
    (2, 4, 20, "s-2vcpu-4gb"),
    (2, 4, 100, "s-4vcpu-8gb"),
    (2, 8, 20, "s-4vcpu-8gb"),
    (8, 32, 20, "g-8vcpu-32gb"),
    (40, 160, 20, "g-40vcpu-160gb"),
])
def test_size_table(cpus, mem, disk, slug):
    assert m.droplet_size(spec(size={"cpus": cpus, "memory_gb": mem}, root_disk_gb=disk)) == slug


def test_size_table_entries_are_known_slugs():
    do = BE.require_sdk()["pulumi_digitalocean"]
    known = {s.value for s in do.DropletSlug}
    slugs = [s for s, *_ in m.DROPLET_SIZES]
    assert len(slugs) == len(set(slugs))
    assert set(slugs) <= known, set(slugs) - known


def test_size_override_and_too_big():
    assert m.droplet_size(spec(size={"cpus": 2, "memory_gb": 4,
                                     "instance_type": {"digitalocean": "c-4"}})) == "c-4"
    with pytest.raises(SpecError, match="size.instance_type.digitalocean"):
        m.droplet_size(spec(size={"cpus": 64, "memory_gb": 512}))
    with pytest.raises(SpecError, match="2000 GiB disk"):
        m.droplet_size(spec(root_disk_gb=2000))


@pytest.mark.parametrize("family,version,slug", [
    ("ubuntu", "22.04", "ubuntu-22-04-x64"),
    ("ubuntu", "24.04", "ubuntu-24-04-x64"),
    ("debian", "12", "debian-12-x64"),
    ("rhel", "9", "rockylinux-9-x64"),
])
def test_image_slugs(family, version, slug):
    assert m.image(spec(image={"family": family, "version": version})) == slug


def test_amazon_linux_rejected_unless_image_id():
    s = spec(image={"family": "amazon-linux", "version": "2023"})
    with pytest.raises(UnsupportedFeatureError) as info:
        BE.check(s)
    assert "backend 'digitalocean'" in str(info.value) and "image.family 'amazon-linux'" in str(info.value)
    s2 = spec(image={"family": "amazon-linux", "version": "2023", "image_id": {"digitalocean": "123456"}})
    BE.check(s2)
    assert m.image(s2) == "123456"


# --- firewall -----------------------------------------------------------------------------------------
def test_inbound_rules_mirror_the_spec():
    assert m.inbound_rules(spec()) == [
        {"protocol": "tcp", "port_range": "22", "source_addresses": ["203.0.113.0/24", "2001:db8::/32"]},
        {"protocol": "tcp", "port_range": "8000-8100", "source_addresses": ["10.0.0.0/8"]},
        {"protocol": "icmp", "source_addresses": ["10.0.0.0/8"]},
    ]


def test_outbound_rules_are_explicit_and_firewall_is_bound_to_the_vms_own_tag():
    tag = m.firewall_tag(spec(), "proj/stack")
    args = m.firewall_args(spec(), tag)
    # The tag is unique to this VM and stack, so the firewall covers exactly this Droplet.
    assert args["tags"] == [tag] and tag != m.firewall_tag(spec(), "proj/other") != m.firewall_tag(spec(name="db2"), "proj/stack")
    assert m.firewall_rules(args["outbound_rules"], "destinationAddresses") == {
        (p, lo, hi, c) for p, lo, hi in (("tcp", 1, 65535), ("udp", 1, 65535), ("icmp", None, None))
        for c in ("0.0.0.0/0", "::/0")}
    assert set(BE.egress_rules) == m.firewall_rules(args["outbound_rules"], "destinationAddresses")


def test_firewall_rules_round_trip():
    from polyvm.backend import spec_ingress_rules

    s = spec()
    assert m.firewall_rules(m.inbound_rules(s), "sourceAddresses") == spec_ingress_rules(s)


# --- tags, volumes, region ----------------------------------------------------------------------------
def test_tags_are_key_colon_value_and_round_trip():
    s = spec(tags={"env": "prod", "empty": ""})
    assert m.tags(s) == ["Name:db1", "managed-by:polyvm", "env:prod", "empty"]
    assert m.parse_tags(m.tags(s)) == s.all_tags()


@pytest.mark.parametrize("tags,where", [
    ({"cost:center": "a"}, "tags.cost:center"),
    ({"owner": "Jane Doe"}, "tags.owner"),
    ({"path": "a/b"}, "tags.path"),
])
def test_unrepresentable_tags_rejected(tags, where):
    with pytest.raises(UnsupportedFeatureError, match=f"backend 'digitalocean' cannot honour {where}"):
        BE.check(spec(tags=tags))


def test_volume_limits():
    long_name = "a" + "b" * 40
    problems = BE.unsupported(spec(name="x" * 40, data_disks=[{"name": long_name[:31], "size_gb": 1}]))
    assert any("data_disks[0].name" in p and "64 characters" in p for p in problems)
    problems = BE.unsupported(spec(data_disks=[{"name": "huge", "size_gb": 20000}]))
    assert any("data_disks[0].size_gb 20000" in p for p in problems)
    problems = BE.unsupported(spec(data_disks=[{"name": f"d{i}", "size_gb": 1} for i in range(8)]))
    assert any("data_disks (8 asked, at most 7)" in p for p in problems)


def test_volume_args_and_device_paths():
    vols = m.volume_args(spec(), region="fra1")
    assert [(v["name"], v["size"], v["region"]) for v in vols] == [("db1-pgdata", 50, "fra1"), ("db1-wal", 10, "fra1")]
    assert m.guest_device_path("db1-pgdata") == "/dev/disk/by-id/scsi-0DO_Volume_db1-pgdata"


def test_region_spec_wins_then_settings_then_error():
    assert m.region(spec(region="sgp1"), "fra1") == "sgp1"
    assert m.region(spec(), "fra1") == "fra1"
    with pytest.raises(SpecError, match="needs a region"):
        m.region(spec(), None)


def test_zone_is_rejected():
    with pytest.raises(UnsupportedFeatureError, match="zone"):
        BE.check(spec(zone="fra1-a"))


def test_droplet_args():
    args = m.droplet_args(spec(public_ip=False), region="fra1", vpc_uuid="8d3c1e2a-0b4f-4c8e-9a1d-2f6b7c8d9e0f")
    assert args["public_networking"] is False
    assert args["vpc_uuid"] == "8d3c1e2a-0b4f-4c8e-9a1d-2f6b7c8d9e0f"
    assert args["ipv6"] is True  # a rule admits IPv6 sources
    assert m.droplet_args(spec(ingress=[]), region="fra1", vpc_uuid=None)["ipv6"] is False
    assert "public_networking" not in m.droplet_args(spec(), region="fra1", vpc_uuid=None)


# --- settings -----------------------------------------------------------------------------------------
def test_settings_validation():
    assert BE.parse_settings({"region": "fra1"}) == DigitalOceanSettings(region="fra1")
    with pytest.raises(SpecError) as info:
        BE.parse_settings({"region": "Frankfurt", "vpc_uuid": "nope"})
    text = str(info.value)
    assert "polyvm:digitalocean.region: 'Frankfurt' is not a DigitalOcean region slug" in text
    assert "polyvm:digitalocean.vpc_uuid: 'nope' is not a VPC UUID" in text


# --- declared resources under mocks -------------------------------------------------------------------
def test_resources_and_inputs():
    p = plan(BE, [spec(region="ams3")], {"vpc_uuid": "8d3c1e2a-0b4f-4c8e-9a1d-2f6b7c8d9e0f"})
    types = sorted(r.type for r in p.resources)
    assert types == sorted([
        "polyvm:digitalocean:VirtualMachine", "tls:index/privateKey:PrivateKey",
        "digitalocean:index/sshKey:SshKey", "digitalocean:index/droplet:Droplet",
        "digitalocean:index/firewall:Firewall",
        "digitalocean:index/volume:Volume", "digitalocean:index/volume:Volume",
        "digitalocean:index/volumeAttachment:VolumeAttachment",
        "digitalocean:index/volumeAttachment:VolumeAttachment",
    ])
    (droplet,) = p.by_type("digitalocean:index/droplet:Droplet")
    (key,) = p.by_type("digitalocean:index/sshKey:SshKey")
    (fw,) = p.by_type("digitalocean:index/firewall:Firewall")
    assert droplet.inputs["region"] == "ams3" and droplet.inputs["size"] == "s-2vcpu-4gb"
    assert droplet.inputs["vpcUuid"] == "8d3c1e2a-0b4f-4c8e-9a1d-2f6b7c8d9e0f"
    assert droplet.inputs["sshKeys"] == [m.ssh_key_fingerprint(contract_public_key())]
    assert key.inputs["publicKey"] == contract_public_key()
    # user data carries the host's private key: a secret, never in clear
    assert droplet.to_dict()["inputs"]["userData"] == REDACTED
    droplet_id = int(droplet.id)
    # The firewall exists before the Droplet and covers it from creation, by the Droplet's own tag.
    assert "dropletIds" not in fw.inputs and len(fw.inputs["tags"]) == 1
    assert fw.inputs["tags"][0] in droplet.inputs["tags"]
    assert fw.urn in droplet.options["depends_on"]
    assert sorted(droplet.options["ignore_changes"]) == ["sshKeys", "userData"]
    for att in p.by_type("digitalocean:index/volumeAttachment:VolumeAttachment"):
        assert att.inputs["dropletId"] == droplet_id
    assert {v.inputs["region"] for v in p.by_type("digitalocean:index/volume:Volume")} == {"ams3"}
    out = p.outputs["db1"]
    assert out["data_disk_devices"] == {"pgdata": "/dev/disk/by-id/scsi-0DO_Volume_db1-pgdata",
                                        "wal": "/dev/disk/by-id/scsi-0DO_Volume_db1-wal"}
    assert out["public_ip"] == "203.0.113.20" and out["private_ip"] == "10.114.0.2"


def test_user_data_holds_the_injected_host_key():
    from polyvm.testing import unsecret

    p = plan(BE, [spec()], {"region": "fra1"})
    (droplet,) = p.by_type("digitalocean:index/droplet:Droplet")
    text = unsecret(droplet.inputs["userData"])
    assert text.startswith("#cloud-config") and "ed25519_private" in text
    assert p.outputs["db1"]["host_key"].split()[:2] == text.split("ed25519_public: ")[1].split()[:2]


def test_missing_region_declares_nothing():
    from polyvm.plan import run_mocked
    from polyvm.program import declare

    def program():
        try:
            declare(BE, [spec(name="has-region", region="fra1"), spec(name="no-region")], {}, export=False)
        except SpecError as exc:
            return exc

    err, _mocks, monitor = run_mocked(program, [BE])
    assert err is not None and "no-region: region: DigitalOcean needs a region" in str(err)
    assert "has-region" not in str(err)
    assert not monitor.registered


def test_plan_cli_renders_offline(tmp_path):
    import yaml
    from click.testing import CliRunner

    from polyvm.cli import build_cli

    f = tmp_path / "vm.yaml"
    data = spec().model_dump(mode="json")
    data["region"] = "fra1"
    f.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(build_cli(), ["plan", "--backend", "digitalocean", "--spec", str(f)])
    assert res.exit_code == 0, res.output
    assert "digitalocean:index/droplet:Droplet" in res.output and "PRIVATE KEY" not in res.output


def test_example_stack_config_plans():
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "postgres-vm" /
                          "Pulumi.digitalocean.yaml").read_text())["config"]
    assert cfg["polyvm:backend"] == "digitalocean"
    s = parse_spec(cfg["polyvm:vm"])
    p = plan(BE, [s], cfg["polyvm:digitalocean"])
    assert p.outputs[s.name]["data_disk_devices"] == {"pgdata": "/dev/disk/by-id/scsi-0DO_Volume_db1-pgdata"}


def test_ssh_key_fingerprint_matches_ssh_keygen(tmp_path):
    import shutil
    import subprocess

    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen (openssh-client) is not installed")
    f = tmp_path / "k.pub"
    f.write_text(contract_public_key() + "\n")
    out = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", str(f)], capture_output=True, text=True,
                         check=True).stdout
    assert out.split()[1] == "MD5:" + m.ssh_key_fingerprint(contract_public_key())


def test_existing_ssh_key_by_fingerprint():
    p = plan(BE, [spec(name="a"), spec(name="b")], {"region": "fra1", "register_ssh_key": False})
    assert not p.by_type("digitalocean:index/sshKey:SshKey")
    fp = m.ssh_key_fingerprint(contract_public_key())
    assert [d.inputs["sshKeys"] for d in p.by_type("digitalocean:index/droplet:Droplet")] == [[fp], [fp]]


def test_private_droplet_needs_stated_egress():
    with pytest.raises(SpecError, match="public_ip: false"):
        plan(BE, [spec(public_ip=False)], {"region": "fra1"})
    plan(BE, [spec(public_ip=False)], {"region": "fra1", "vpc_uuid": "8d3c1e2a-0b4f-4c8e-9a1d-2f6b7c8d9e0f",
                                       "private_egress": True})


def test_volumes_keep_their_names_on_rename():
    for v in plan(BE, [spec()], {"region": "fra1"}).by_type("digitalocean:index/volume:Volume"):
        assert v.options["ignore_changes"] == ["name", "description"] and v.options["protect"]
