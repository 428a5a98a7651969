"""Pure functions: VmSpec -> AWS resource arguments. No Pulumi calls, no SDK imports; tested directly."""

from __future__ import annotations

from typing import Any

from polyvm.backend import CloudLimit, pick_size, root_disk_gb, root_disk_limit
from polyvm.errors import SpecError
from polyvm.spec import VmSpec

#: Where the ForceNew flags of the replacement table come from.
TF_AWS = "hashicorp/terraform-provider-aws internal/service/ec2"

#: Official AMI owners and name patterns per OS family/version (x86_64, HVM, EBS-backed).
AMI_LOOKUP: dict[tuple[str, str], tuple[str, str]] = {
    ("ubuntu", "22.04"): ("099720109477", "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-amd64-server-*"),
    ("ubuntu", "24.04"): ("099720109477", "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-amd64-server-*"),
    ("debian", "12"): ("136693071363", "debian-12-amd64-*"),
    ("amazon-linux", "2023"): ("137112412989", "al2023-ami-2023.*-x86_64"),
    ("rhel", "9"): ("309956199498", "RHEL-9.*_HVM-*-x86_64-*"),
}

#: Instance types polyvm picks from cpus/memory: (type, vCPUs, GiB), cheapest first. All are Nitro
#: instances, so EBS volumes appear as NVMe devices (see DEVICE_BY_ID). Override with size.instance_type.aws.
INSTANCE_TYPES: tuple[tuple[str, int, float], ...] = (
    ("t3.nano", 2, 0.5),
    ("t3.micro", 2, 1),
    ("t3.small", 2, 2),
    ("t3.medium", 2, 4),
    ("t3.large", 2, 8),
    ("t3.xlarge", 4, 16),
    ("t3.2xlarge", 8, 32),
    ("m6i.4xlarge", 16, 64),
    ("m6i.8xlarge", 32, 128),
    ("m6i.16xlarge", 64, 256),
    ("r6i.16xlarge", 64, 512),
    ("m6i.32xlarge", 128, 512),
    ("r6i.32xlarge", 128, 1024),
)

#: Device names for VolumeAttachment, in order; on Nitro the guest sees NVMe devices instead.
ATTACH_DEVICE_NAMES = tuple(f"/dev/sd{c}" for c in "fghijklmnop")

#: Stable guest path of an EBS volume on Nitro instances ("vol-0abc" -> "...vol0abc").
DEVICE_BY_ID = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id_nodash}"

ALL_TRAFFIC_EGRESS = {
    "protocol": "-1",
    "from_port": 0,
    "to_port": 0,
    "cidr_blocks": ["0.0.0.0/0"],
    "ipv6_cidr_blocks": ["::/0"],
    "description": "all outbound (package mirrors, time, DNS)",
}


def instance_type(spec: VmSpec) -> str:
    """The override if given, else the cheapest table entry with at least the asked cpus and memory."""
    return pick_size(spec, "aws", INSTANCE_TYPES, what="AWS instance type")


#: Root snapshot size (GiB) of the official AMIs polyvm looks up: EC2 refuses a root volume smaller
#: than the AMI's snapshot ("Volume of size N is smaller than snapshot"). Ubuntu, Debian and AL2023
#: publish 8 GiB snapshots, Red Hat 10 GiB (`aws ec2 describe-images` BlockDeviceMappings[0].Ebs.VolumeSize).
ROOT_SNAPSHOT_GB = {"ubuntu": 8, "debian": 8, "amazon-linux": 8, "rhel": 10}
#: EBS gp3 volume size range: "gp2 and gp3: 1 - 16,384 GiB" (EC2 API LaunchTemplateEbsBlockDeviceRequest
#: VolumeSize, https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/ec2/aws.sdk.kotlin.services.ec2.model/-launch-template-ebs-block-device-request/volume-size.html;
#: also docs.aws.amazon.com/ebs/latest/userguide/general-purpose.html).
GP3_MAX_GB = 16384
#: EC2 key pairs: RSA (2048-4096) and ED25519 only (docs.aws.amazon.com/AWSEC2/latest/UserGuide/create-key-pairs.html,
#: ImportKeyPair: "supported key types: RSA and ED25519").
KEY_TYPES = ("ssh-rsa", "ssh-ed25519")
#: EC2 tags: "Tag keys are case-sensitive and accept a maximum of 127 Unicode characters. May not begin with
#: aws:", "Tag values ... accept a maximum of 256 Unicode characters" (EC2 API Reference, Tag,
#: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Tag.html). Was 128, the general AWS tagging
#: figure; EC2's own API says 127.
TAG_KEY_MAX, TAG_VALUE_MAX = 127, 256


def _key_type(spec: VmSpec) -> list[str]:
    kind = spec.ssh.public_key.split()[0]
    return [] if kind in KEY_TYPES else [f"ssh.public_key of type {kind} (EC2 key pairs accept {', '.join(KEY_TYPES)} only)"]


def _gp3(spec: VmSpec) -> list[str]:
    out = [f"data_disks[{i}].size_gb {d.size_gb} (a gp3 volume is at most {GP3_MAX_GB} GiB)"
           for i, d in enumerate(spec.data_disks) if d.size_gb > GP3_MAX_GB]
    if spec.root_disk_gb > GP3_MAX_GB:
        out.append(f"root_disk_gb {spec.root_disk_gb} (a gp3 volume is at most {GP3_MAX_GB} GiB)")
    return out


def _tags(spec: VmSpec) -> list[str]:
    out = []
    for k, v in spec.tags.items():
        if len(k) > TAG_KEY_MAX or len(v) > TAG_VALUE_MAX or k.lower().startswith("aws:"):
            out.append(f"tags.{k} (EC2 tag keys are at most {TAG_KEY_MAX} characters and cannot start with "
                       f"'aws:', values at most {TAG_VALUE_MAX})")
    return out


def root_volume_gb(spec: VmSpec, snapshot_gb: int | None) -> int:
    """The root volume size once the AMI is known: at least its snapshot (``snapshot_gb``, from the AMI's
    root block device mapping); an explicit root_disk_gb below it is refused with the field and the limit
    (EC2 would refuse RunInstances with "Volume of size N is smaller than snapshot")."""
    size = root_disk_gb(spec, max(snapshot_gb or 0, root_minimum(spec) or 8))
    if snapshot_gb and size < snapshot_gb:
        raise SpecError([f"{spec.name}: root_disk_gb {size} (the AMI's root snapshot is {snapshot_gb} GiB; EC2 "
                         "refuses a smaller root volume)"])
    return size


def snapshot_gb(block_device_mappings: Any, root_device_name: str | None) -> int | None:
    """The root snapshot size of an AMI from aws.ec2.get_ami's block_device_mappings."""
    for bdm in block_device_mappings or []:
        name = bdm.get("device_name") if isinstance(bdm, dict) else getattr(bdm, "device_name", None)
        ebs = (bdm.get("ebs") if isinstance(bdm, dict) else getattr(bdm, "ebs", None)) or {}
        if name == root_device_name and ebs.get("volume_size"):
            return int(ebs["volume_size"])
    return None


def root_minimum(spec: VmSpec) -> int | None:
    return None if "aws" in spec.image.image_id else ROOT_SNAPSHOT_GB[spec.image.family]


LIMITS: tuple[CloudLimit, ...] = (
    CloudLimit("ssh.public_key", "RSA or ED25519", "EC2 User Guide, Create a key pair / ImportKeyPair", _key_type),
    CloudLimit("data_disks[].size_gb, root_disk_gb", f"gp3: 1-{GP3_MAX_GB} GiB",
               "EC2 API, EBS VolumeSize (gp2 and gp3: 1 - 16,384 GiB); "
               "docs.aws.amazon.com/ebs/latest/userguide/general-purpose.html", _gp3),
    root_disk_limit(root_minimum, "EC2: a root volume cannot be smaller than the AMI's snapshot "
                                  "(8 GiB Ubuntu/Debian/AL2023, 10 GiB RHEL)"),
    CloudLimit("tags", f"keys <= {TAG_KEY_MAX}, values <= {TAG_VALUE_MAX} characters, no aws: prefix",
               "EC2 API Reference, Tag (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Tag.html)", _tags),
)


def ami_query(spec: VmSpec) -> dict[str, Any] | None:
    """Arguments for aws.ec2.get_ami, or None when the spec pins an image id."""
    if "aws" in spec.image.image_id:
        return None
    owner, pattern = AMI_LOOKUP[(spec.image.family, spec.image.version)]
    return {
        "most_recent": True,
        "owners": [owner],
        "filters": [
            {"name": "name", "values": [pattern]},
            {"name": "architecture", "values": ["x86_64"]},
            {"name": "virtualization-type", "values": ["hvm"]},
            {"name": "root-device-type", "values": ["ebs"]},
        ],
    }


def security_group_args(spec: VmSpec, vpc_id: str | None) -> dict[str, Any]:
    """Ingress exactly as the spec says, one explicit egress rule, tags."""
    ingress = []
    for rule in spec.ingress:
        if rule.protocol == "icmp":
            from_port, to_port, proto = -1, -1, "icmp"
        else:
            from_port, to_port, proto = rule.from_port, rule.to_port, rule.protocol
        entry: dict[str, Any] = {"protocol": proto, "from_port": from_port, "to_port": to_port,
                                 "description": rule.description or f"polyvm {proto}/{rule.port or 'all'}"}
        if rule.ipv4_cidrs:
            entry["cidr_blocks"] = rule.ipv4_cidrs
        if rule.ipv6_cidrs:
            if rule.protocol == "icmp":
                # ICMPv6 is its own protocol in EC2; split it out so both families work.
                ingress.append({"protocol": "icmpv6", "from_port": -1, "to_port": -1,
                                "ipv6_cidr_blocks": rule.ipv6_cidrs, "description": entry["description"]})
            else:
                entry["ipv6_cidr_blocks"] = rule.ipv6_cidrs
        if "cidr_blocks" in entry or "ipv6_cidr_blocks" in entry:
            ingress.append(entry)
    args: dict[str, Any] = {
        "description": f"polyvm {spec.name}: ingress from the VM spec only",
        "ingress": ingress,
        "egress": [dict(ALL_TRAFFIC_EGRESS)],
        "tags": spec.all_tags(),
    }
    if vpc_id:
        args["vpc_id"] = vpc_id
    return args


def instance_args(spec: VmSpec, *, subnet_id: str | None, zone: Any = None, root_gb: Any = None) -> dict[str, Any]:
    """Everything about the Instance that does not depend on other resources' outputs (``zone`` and
    ``root_gb`` may be Outputs of lookups)."""
    args: dict[str, Any] = {
        "instance_type": instance_type(spec),
        "associate_public_ip_address": spec.public_ip,
        "root_block_device": {"volume_size": root_volume_gb(spec, None) if root_gb is None else root_gb, "volume_type": "gp3", "encrypted": True,
                              "delete_on_termination": True, "tags": spec.all_tags()},
        # IMDSv2 only: the instance metadata service cannot be reached with a plain GET (SSRF defence).
        "metadata_options": {"http_tokens": "required", "http_endpoint": "enabled",
                             "http_put_response_hop_limit": 1},
        "user_data_replace_on_change": True,
        "tags": spec.all_tags(),
    }
    if zone is not None or spec.zone:
        args["availability_zone"] = zone if zone is not None else spec.zone
    if subnet_id:
        args["subnet_id"] = subnet_id
    if any(rule.ipv6_cidrs for rule in spec.ingress):
        # IPv6 ingress rules are only reachable if the instance has an IPv6 address; this needs a subnet
        # with an IPv6 CIDR (settings.subnet_id), and AWS says so at creation when the subnet has none.
        args["ipv6_address_count"] = 1
    return args


def volume_args(spec: VmSpec) -> list[dict[str, Any]]:
    """One gp3, encrypted EBS volume per data disk (the AZ comes from the instance at declare time)."""
    out = []
    for disk in spec.data_disks:
        out.append({
            "size": disk.size_gb,
            "type": "gp3",
            "encrypted": True,
            "tags": {**spec.all_tags(), "Name": f"{spec.name}-{disk.name}", "polyvm-disk": disk.name},
        })
    return out


def guest_device_path(volume_id: str) -> str:
    """Where a Nitro guest sees the volume: /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc…"""
    return DEVICE_BY_ID.format(volume_id_nodash=volume_id.replace("-", "", 1))


def firewall_rules(sg_rules: list[dict[str, Any]]) -> set[tuple[str, int | None, int | None, str]]:
    """Security group rules as recorded in a plan (camelCase inputs) -> polyvm FirewallRule tuples."""
    out: set[tuple[str, int | None, int | None, str]] = set()
    for r in sg_rules:
        proto = str(r.get("protocol"))
        cidrs = list(r.get("cidrBlocks") or []) + list(r.get("ipv6CidrBlocks") or [])
        for cidr in cidrs:
            if proto in ("-1", "all"):
                out.add(("all", None, None, cidr))
            elif proto in ("icmp", "icmpv6", "1", "58"):
                out.add(("icmp", None, None, cidr))
            else:
                out.add((proto, int(r["fromPort"]), int(r["toPort"]), cidr))
    return out
