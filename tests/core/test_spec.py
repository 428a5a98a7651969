"""VmSpec validation: every problem at once, with field paths; secure by default."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from polyvm.errors import ConfigError, SpecError
from polyvm.spec import NAMED_SIZES, VmSpec, load_spec_file, parse_spec


@pytest.fixture(scope="module")
def pubkey() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " me@laptop"


def base(pubkey: str, **over) -> dict:
    data = {
        "name": "db1",
        "size": {"cpus": 2, "memory_gb": 4},
        "image": {"family": "ubuntu", "version": "24.04"},
        "ssh": {"public_key": pubkey},
        "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]}],
    }
    data.update(over)
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    return exc.value.problems


def test_minimal_spec_defaults(pubkey):
    s = parse_spec(base(pubkey))
    assert isinstance(s, VmSpec)
    assert s.ssh.user == "polyvm"
    assert s.root_disk_gb == 20
    assert s.public_ip is True
    assert s.all_tags() == {"Name": "db1", "managed-by": "polyvm"}


def test_all_problems_reported_at_once_with_paths(pubkey):
    data = base(pubkey, name="Bad_Name", size={"cpus": 0, "memory_gb": 1},
                ingress=[{"port": 22, "cidrs": ["203.0.113.0/24"]},
                         {"port": 5432, "cidrs": ["10.0.0.0/33", "10.0.0.1/8"]},
                         {"port": "80-70", "cidrs": ["10.0.0.0/8"]}],
                data_disks=[{"name": "d", "size_gb": 1}, {"name": "d", "size_gb": 2}],
                colour="blue")
    p = problems(data)
    joined = "\n".join(p)
    assert any(x.startswith("name: 'Bad_Name'") for x in p), joined
    assert any(x.startswith("size.cpus:") for x in p), joined
    assert "ingress[1].cidrs[0]: '10.0.0.0/33' is not a CIDR" in p
    assert any(x.startswith("ingress[1].cidrs[1]:") and "10.0.0.0/8" in x for x in p), joined
    assert any(x.startswith("ingress[2].port:") and "reversed" in x for x in p), joined
    assert any(x.startswith("data_disks:") and "unique" in x for x in p), joined
    assert any(x.startswith("colour:") and "unknown field" in x for x in p), joined
    assert len(p) == 7


@pytest.mark.parametrize("port", [22, 5432, 3306, "5000-6000", "1-65535"])
@pytest.mark.parametrize("world", ["0.0.0.0/0", "::/0"])
def test_world_open_ssh_or_database_refused(pubkey, port, world):
    p = problems(base(pubkey, ingress=[{"port": port, "cidrs": ["10.0.0.0/8", world]}]))
    assert len(p) == 1 and p[0].startswith("ingress[0]:") and "allow_public" in p[0]


def test_world_open_allowed_explicitly(pubkey):
    s = parse_spec(base(pubkey, ingress=[{"port": 22, "cidrs": ["0.0.0.0/0"], "allow_public": True},
                                         {"port": 5432, "cidrs": ["::/0"], "allow_public": True}]))
    assert [r.port for r in s.ingress] == [22, 5432]


def test_world_open_web_port_is_fine(pubkey):
    s = parse_spec(base(pubkey, ingress=[{"port": 443, "cidrs": ["0.0.0.0/0", "::/0"]}]))
    assert s.ingress[0].ipv4_cidrs == ["0.0.0.0/0"] and s.ingress[0].ipv6_cidrs == ["::/0"]


def test_port_forms(pubkey):
    s = parse_spec(base(pubkey, ingress=[{"port": "8000-8100", "cidrs": ["10.0.0.0/8"]},
                                         {"port": "9000-9000", "cidrs": ["10.0.0.0/8"]},
                                         {"protocol": "icmp", "cidrs": ["10.0.0.0/8"]}]))
    assert (s.ingress[0].from_port, s.ingress[0].to_port) == (8000, 8100)
    assert s.ingress[1].port == 9000
    assert s.ingress[2].port is None
    p = problems(base(pubkey, ingress=[{"protocol": "icmp", "port": 1, "cidrs": ["10.0.0.0/8"]},
                                       {"protocol": "udp", "cidrs": ["10.0.0.0/8"]},
                                       {"port": 70000, "cidrs": ["10.0.0.0/8"]},
                                       {"port": "http", "cidrs": ["10.0.0.0/8"]},
                                       {"port": 80, "cidrs": []}]))
    assert [x.split(":")[0] for x in p] == ["ingress[0]", "ingress[1]", "ingress[2].port", "ingress[3].port",
                                            "ingress[4].cidrs"]


def test_named_size_and_unknown_named_size(pubkey):
    s = parse_spec(base(pubkey, size="medium"))
    assert (s.size.cpus, s.size.memory_gb) == NAMED_SIZES["medium"]
    s = parse_spec(base(pubkey, size={"name": "large", "instance_type": {"aws": "m7i.large"}}))
    assert s.size.instance_type == {"aws": "m7i.large"} and s.size.cpus == 2
    p = problems(base(pubkey, size="huge"))
    assert p[0].startswith("size:") and "huge" in p[0]


def test_image_versions_from_yaml_numbers(pubkey):
    assert parse_spec(base(pubkey, image={"family": "debian", "version": 12})).image.version == "12"
    assert parse_spec(base(pubkey, image={"family": "ubuntu", "version": 22.04})).image.version == "22.04"
    p = problems(base(pubkey, image={"family": "ubuntu", "version": "20.04"}))
    assert p[0].startswith("image:") and "22.04, 24.04" in p[0]
    p = problems(base(pubkey, image={"family": "windows", "version": "2022"}))
    assert p[0].startswith("image.family:")


def test_ssh_key_and_user_checks(pubkey):
    p = problems(base(pubkey, ssh={"public_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc"}))
    assert p == ["ssh.public_key: this is a private key; give the public half (the .pub file)"]
    p = problems(base(pubkey, ssh={"public_key": "ssh-ed25519 !!!notbase64"}))
    assert p[0].startswith("ssh.public_key:")
    p = problems(base(pubkey, ssh={"public_key": pubkey, "user": "root"}))
    assert p[0].startswith("ssh.user:") and "system account" in p[0]


def test_data_disks(pubkey):
    s = parse_spec(base(pubkey, data_disks=[{"name": "pgdata", "size_gb": 50, "mount_point": "/srv/pg/"}]))
    assert s.data_disks[0].mount_point == "/srv/pg"
    p = problems(base(pubkey, data_disks=[{"name": "a", "size_gb": 1, "mount_point": "/x"},
                                          {"name": "b", "size_gb": 1, "mount_point": "/x"},
                                          {"name": "c", "size_gb": 0, "mount_point": "relative"}]))
    assert any(x.startswith("data_disks[2].size_gb") for x in p)
    assert any(x.startswith("data_disks[2].mount_point") for x in p)


def test_duplicate_mount_points(pubkey):
    p = problems(base(pubkey, data_disks=[{"name": "a", "size_gb": 1, "mount_point": "/x"},
                                          {"name": "b", "size_gb": 1, "mount_point": "/x"}]))
    assert p == ["data_disks: data disk mount points must be unique; repeated: /x"]


def test_not_a_mapping():
    with pytest.raises(SpecError) as exc:
        parse_spec(["a"])  # type: ignore[arg-type]
    assert "expected a mapping" in str(exc.value)


def test_yaml_file_single_and_many(tmp_path, pubkey):
    f = tmp_path / "vm.yaml"
    f.write_text(f"""
name: web
size: small
image: {{family: debian, version: 12}}
ssh: {{public_key: "{pubkey}"}}
""")
    [s] = load_spec_file(f)
    assert s.name == "web" and s.image.version == "12"
    f.write_text(f"""
vms:
  - {{name: a, size: small, image: {{family: debian, version: 12}}, ssh: {{public_key: "{pubkey}"}}}}
  - {{name: b, size: nano, image: {{family: debian, version: 11}}, ssh: {{public_key: "{pubkey}"}}}}
""")
    with pytest.raises(SpecError) as exc:
        load_spec_file(f)
    assert exc.value.problems[0].startswith("vms[1].image:")
    assert str(f) in str(exc.value)


def test_yaml_errors_are_config_errors(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_spec_file(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec_file(tmp_path / "missing.yaml")
