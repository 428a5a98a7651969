"""Pure functions: VmSpec -> DigitalOcean resource arguments. No Pulumi calls, no SDK imports; tested directly."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from polyvm.backend import pick_size
from polyvm.errors import SpecError
from polyvm.spec import VmSpec

#: Where the ForceNew flags of the replacement table come from.
TF_DO = "digitalocean/terraform-provider-digitalocean digitalocean"

#: Public distribution images per OS family/version (DigitalOcean image slugs, x86_64, cloud-init enabled).
#: The spec's "rhel" family is the RHEL-compatible family; DigitalOcean offers no RHEL image, so polyvm
#: uses Rocky Linux 9. Amazon Linux exists only on AWS: give ``image.image_id.digitalocean`` (a custom
#: image id or slug) to use it anyway.
IMAGE_SLUGS: dict[tuple[str, str], str] = {
    ("ubuntu", "22.04"): "ubuntu-22-04-x64",
    ("ubuntu", "24.04"): "ubuntu-24-04-x64",
    ("debian", "12"): "debian-12-x64",
    ("rhel", "9"): "rockylinux-9-x64",
}

#: Droplet sizes polyvm picks from: (slug, vCPUs, GiB memory, GiB root disk), cheapest first. A Droplet's
#: root disk size is fixed by its size, so the pick must also cover ``root_disk_gb``. Override with
#: ``size.instance_type.digitalocean`` (then the root disk is whatever that size has).
DROPLET_SIZES: tuple[tuple[str, int, float, int], ...] = (
    ("s-1vcpu-512mb-10gb", 1, 0.5, 10),
    ("s-1vcpu-1gb", 1, 1, 25),
    ("s-1vcpu-2gb", 1, 2, 50),
    ("s-2vcpu-2gb", 2, 2, 60),
    ("s-2vcpu-4gb", 2, 4, 80),
    ("s-4vcpu-8gb", 4, 8, 160),
    ("s-8vcpu-16gb", 8, 16, 320),
    ("g-8vcpu-32gb", 8, 32, 100),
    ("g-16vcpu-64gb", 16, 64, 200),
    ("g-32vcpu-128gb", 32, 128, 400),
    ("g-40vcpu-160gb", 40, 160, 500),
)

#: Block storage limits. Size: volumes "may be created in sizes from 1GiB to 16TiB" (DigitalOcean API
#: reference, https://docs.digitalocean.com/reference/pydo/reference/volumes). 7 volumes per Droplet: not
#: found in DigitalOcean's own pages in the search index (only third-party reports of the API's "exceed max
#: volume count" error at 7, e.g. gitlab.com/thorchain/devops/cluster-launcher/-/issues/12); unverified.
MAX_VOLUMES = 7
MAX_VOLUME_GB = 16384
#: Volume names: lowercase letters, digits and '-', starting with a letter, at most 64 characters.
_VOLUME_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")

#: Where the guest sees a volume: udev's by-id link built from the volume name (stable across reboots).
GUEST_DEVICE_PATH = "/dev/disk/by-id/scsi-0DO_Volume_{name}"

#: Tag names: letters, digits, ':', '-' and '_', at most 255 characters (DigitalOcean API).
_TAG_RE = re.compile(r"^[A-Za-z0-9:_-]{1,255}$")

#: Outbound rules: DigitalOcean firewalls deny everything not listed, so egress must be explicit.
ALL_ADDRESSES = ["0.0.0.0/0", "::/0"]
OUTBOUND_RULES: tuple[dict[str, Any], ...] = (
    {"protocol": "tcp", "port_range": "1-65535", "destination_addresses": ALL_ADDRESSES},
    {"protocol": "udp", "port_range": "1-65535", "destination_addresses": ALL_ADDRESSES},
    {"protocol": "icmp", "destination_addresses": ALL_ADDRESSES},
)


def droplet_size(spec: VmSpec) -> str:
    """The override if given, else the cheapest table entry with the asked cpus, memory and root disk."""
    return pick_size(spec, "digitalocean", DROPLET_SIZES, what="DigitalOcean Droplet size",
                     fits=lambda row: row[3] >= spec.root_disk_gb,
                     needs=f" and a {spec.root_disk_gb} GiB disk (or use a data disk)")


def image(spec: VmSpec) -> str:
    """The override if given, else the distribution image slug (KeyError for unsupported families,
    which :func:`unsupported` reports first)."""
    if "digitalocean" in spec.image.image_id:
        return spec.image.image_id["digitalocean"]
    return IMAGE_SLUGS[(spec.image.family, spec.image.version)]


NO_REGION = ("region: DigitalOcean needs a region; set region in the spec or region in Pulumi config "
             "polyvm:digitalocean (e.g. fra1)")


def region(spec: VmSpec, default: str | None) -> str:
    """The spec's region wins over the ``polyvm:digitalocean`` default; one of them is required."""
    r = spec.region or default
    if not r:
        raise SpecError([f"{spec.name}: {NO_REGION}"])
    return r


def ssh_key_fingerprint(public_key: str) -> str:
    """The MD5 fingerprint DigitalOcean identifies an account's SSH key by ('3b:16:bf:…')."""
    import base64
    import hashlib

    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def tag_name(key: str, value: str) -> str:
    """DigitalOcean tags are plain strings: ``key:value`` (just ``key`` when the value is empty)."""
    return f"{key}:{value}" if value else key


def tags(spec: VmSpec) -> list[str]:
    """The spec's tags (with polyvm's own) as DigitalOcean tag names, in a stable order."""
    return [tag_name(k, v) for k, v in spec.all_tags().items()]


def volume_name(spec: VmSpec, disk_name: str) -> str:
    return f"{spec.name}-{disk_name}"


def unsupported(spec: VmSpec) -> list[str]:
    """What the generic capability checks cannot see: tag characters, volume names and sizes."""
    out: list[str] = []
    for k, v in spec.all_tags().items():
        if ":" in k:
            out.append(f"tags.{k} (DigitalOcean tags are 'key:value' strings, so a key cannot contain ':')")
        elif not _TAG_RE.match(tag_name(k, v)):
            out.append(f"tags.{k} (DigitalOcean tags are 'key:value' strings of letters, digits, ':', '-' "
                       f"and '_'; {tag_name(k, v)!r} is not one)")
    for i, disk in enumerate(spec.data_disks):
        vname = volume_name(spec, disk.name)
        if not _VOLUME_NAME_RE.match(vname):
            out.append(f"data_disks[{i}].name (volume name {vname!r} is longer than 64 characters)")
        if disk.size_gb > MAX_VOLUME_GB:
            out.append(f"data_disks[{i}].size_gb {disk.size_gb} (at most {MAX_VOLUME_GB} GiB per volume)")
    return out


def inbound_rules(spec: VmSpec) -> list[dict[str, Any]]:
    """One firewall inbound rule per spec rule: same protocol, ports and sources (IPv4 and IPv6 together)."""
    rules = []
    for rule in spec.ingress:
        entry: dict[str, Any] = {"protocol": rule.protocol, "source_addresses": list(rule.cidrs)}
        if rule.protocol != "icmp":
            entry["port_range"] = (str(rule.port) if rule.from_port == rule.to_port
                                   else f"{rule.from_port}-{rule.to_port}")
        rules.append(entry)
    return rules


def outbound_rules() -> list[dict[str, Any]]:
    return [dict(r, destination_addresses=list(r["destination_addresses"])) for r in OUTBOUND_RULES]


def firewall_tag(spec: VmSpec, scope: str) -> str:
    """The tag binding the VM's firewall: unique to this VM in this stack (``scope``: project/stack), so
    the firewall covers exactly this Droplet, and present on the Droplet from its creation, so sshd is
    never reachable outside the spec's rules. (A firewall bound by droplet_ids can only be created once
    the Droplet exists and is active: open to the internet until then.)"""
    digest = hashlib.sha256(f"{scope}/{spec.name}".encode()).hexdigest()[:12]
    return f"polyvm-fw-{digest}"


def firewall_args(spec: VmSpec, tag: str) -> dict[str, Any]:
    """Inbound exactly as the spec says, explicit outbound, bound to the VM's own tag."""
    return {
        "name": f"{spec.name}-fw",
        "inbound_rules": inbound_rules(spec),
        "outbound_rules": outbound_rules(),
        "tags": [tag],
    }


def droplet_args(spec: VmSpec, *, region: str, vpc_uuid: str | None, firewall_tag: str | None = None) -> dict[str, Any]:
    """Everything about the Droplet that does not depend on other resources' outputs."""
    args: dict[str, Any] = {
        "name": spec.name,
        "size": droplet_size(spec),
        "image": image(spec),
        "region": region,
        "tags": tags(spec) + ([firewall_tag] if firewall_tag else []),
        # IPv6 only when a rule admits IPv6 sources; otherwise the address would be unused.
        "ipv6": any(r.ipv6_cidrs for r in spec.ingress),
        "monitoring": False,
        # Changing the size must not silently grow the root disk (that makes a resize irreversible).
        "resize_disk": False,
    }
    if not spec.public_ip:
        args["public_networking"] = False
    if vpc_uuid:
        args["vpc_uuid"] = vpc_uuid
    return args


def volume_args(spec: VmSpec, *, region: str) -> list[dict[str, Any]]:
    """One unformatted volume per data disk, in the Droplet's region (the recipe formats and mounts it)."""
    return [{
        "name": volume_name(spec, disk.name),
        "region": region,
        "size": disk.size_gb,
        "description": f"polyvm {spec.name}: data disk {disk.name}",
        "tags": tags(spec),
    } for disk in spec.data_disks]


def guest_device_path(volume_name: str) -> str:
    """Where the guest sees the volume: /dev/disk/by-id/scsi-0DO_Volume_<volume name>."""
    return GUEST_DEVICE_PATH.format(name=volume_name)


# --- reading a plan back (contract suite; recorded inputs are camelCase) ------------------------------
FirewallRule = tuple[str, "int | None", "int | None", str]


def _ports(port_range: str | None) -> tuple[int | None, int | None]:
    if not port_range:
        return None, None
    lo, _, hi = str(port_range).partition("-")
    return int(lo), int(hi or lo)


def firewall_rules(rules: list[dict[str, Any]], addresses_key: str) -> set[FirewallRule]:
    """Firewall rules (as recorded in a plan or as built above) -> polyvm FirewallRule tuples."""
    snake = {"sourceAddresses": "source_addresses", "destinationAddresses": "destination_addresses"}
    out: set[FirewallRule] = set()
    for r in rules:
        proto = str(r["protocol"])
        addresses = r.get(addresses_key) or r.get(snake[addresses_key]) or []
        lo, hi = (None, None) if proto == "icmp" else _ports(r.get("portRange") or r.get("port_range"))
        for addr in addresses:
            out.add((proto, lo, hi, str(addr)))
    return out


def parse_tags(names: list[str]) -> dict[str, str]:
    """DigitalOcean tag names -> key/value (the inverse of :func:`tag_name`; keys never contain ':');
    the firewall's own tag is not a spec tag and is left out."""
    out = {}
    for n in names:
        if n.startswith("polyvm-fw-"):
            continue
        k, _, v = n.partition(":")
        out[k] = v
    return out
