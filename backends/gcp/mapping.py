"""Pure functions: VmSpec -> Google Compute Engine (pulumi-gcp 10.x) resource arguments. No SDK imports.

The guest sees each data disk as ``/dev/disk/by-id/google-<device name>`` (udev rules of the GCE guest
environment); polyvm uses the spec's disk name as the device name.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from polyvm.backend import CloudLimit, pick_size, root_disk_gb, root_disk_limit
from polyvm.spec import VmSpec

#: Where the ForceNew flags of the replacement table come from.
TF_GOOGLE = "hashicorp/terraform-provider-google google/services/compute"

#: Public image families per OS family/version. Only Ubuntu's GCE images ship cloud-init, which is how
#: the generated host key and the user data reach the VM; Debian and RHEL GCE images do not, so they
#: are not offered (rejected, never booted with an unpinned host key).
IMAGE_FAMILIES: dict[tuple[str, str], str] = {
    ("ubuntu", "22.04"): "projects/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts",
    ("ubuntu", "24.04"): "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64",
}
OS_FAMILIES = frozenset(f for f, _v in IMAGE_FAMILIES)

#: Machine types polyvm picks from cpus/memory: (type, vCPUs, GiB), cheapest first. Override with
#: size.instance_type.gcp.
MACHINE_TYPES: tuple[tuple[str, int, float], ...] = (
    ("e2-micro", 2, 1),
    ("e2-small", 2, 2),
    ("e2-medium", 2, 4),
    ("e2-standard-2", 2, 8),
    ("e2-standard-4", 4, 16),
    ("e2-standard-8", 8, 32),
    ("e2-standard-16", 16, 64),
    ("e2-standard-32", 32, 128),
    ("n2-standard-48", 48, 192),
    ("n2-standard-64", 64, 256),
    ("n2-highmem-64", 64, 512),
    ("n2-standard-96", 96, 384),
    ("n2-highmem-96", 96, 768),
    ("n2-standard-128", 128, 512),
    ("n2-highmem-128", 128, 864),
)

#: Persistent disks per instance polyvm allows: "You can add up to 127 secondary, non-boot zonal Persistent
#: Disk volumes to a VM instance" ("About Persistent Disk", https://cloud.google.com/compute/docs/disks/persistent-disks);
#: shared-core e2-micro/small/medium take fewer (16 disks with the boot disk: a third-party summary,
#: github.com/paulowe/gcp disk-options.md; Google's own figure was not found), hence 15.
MAX_DATA_DISKS = 15
DISK_TYPE = "pd-balanced"
DEVICE_BY_ID = "/dev/disk/by-id/google-{device_name}"

#: The implied GCE rules of a new VPC deny all ingress and allow all egress; polyvm adds its rules at
#: the default priority and states the egress explicitly.
FIREWALL_PRIORITY = 1000

_REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_ZONE_RE = re.compile(r"^([a-z]+-[a-z]+[0-9]+)-[a-z]$")
_LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
_DEVICE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: Zone polyvm uses when only a region is known ("-b" exists in every GCE region but a few).
DEFAULT_ZONE_SUFFIX = "b"


def base_name(name: str) -> str:
    """A prefix for GCE resource names short enough for Pulumi's 8-character autoname suffix and our
    own suffixes to stay within GCE's 63-character limit."""
    if len(name) <= 40:
        return name
    return f"{name[:31]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def network_tag(spec: VmSpec) -> str:
    """The instance's network tag; the firewall rules target exactly this tag."""
    return f"polyvm-{base_name(spec.name)}"


def machine_type(spec: VmSpec) -> str:
    return pick_size(spec, "gcp", MACHINE_TYPES, what="GCE machine type")


#: GCE resource names: 1-63 characters, [a-z]([-a-z0-9]*[a-z0-9])? (cloud.google.com/compute/docs/naming-resources).
NAME_MAX = 63
#: Pulumi appends "-" and 7 random characters to an auto-named resource (pulumi-gcp autonaming).
AUTONAME_SUFFIX = 8
#: pd-balanced persistent disks: 10 GB - 64 TB ("Zonal balanced PD": "Minimum capacity per disk | 10 GB",
#: "Maximum capacity per disk | 64 TB", https://cloud.google.com/compute/docs/disks, read as ?hl=nb).
DISK_MIN_GB, DISK_MAX_GB = 10, 65536
#: Boot disk size of the Ubuntu public images (10 GB); GCE refuses a boot disk smaller than its image
#: ("Requested disk size cannot be smaller than the image size").
IMAGE_DISK_GB = 10


def resource_name(vm: str, suffix: str) -> str:
    """A Pulumi resource name for a VM's child whose auto-name (with Pulumi's suffix) fits GCE's 63."""
    name = f"{vm}-{suffix}"
    room = NAME_MAX - AUTONAME_SUFFIX
    if len(name) <= room:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{vm[:room - len(suffix) - 10]}-{digest}-{suffix}" if len(suffix) < room - 12 else f"{name[:room - 9]}-{digest}"


def _disk_sizes(spec: VmSpec) -> list[str]:
    return [f"data_disks[{i}].size_gb {d.size_gb} (a {DISK_TYPE} disk is {DISK_MIN_GB}-{DISK_MAX_GB} GB)"
            for i, d in enumerate(spec.data_disks) if not DISK_MIN_GB <= d.size_gb <= DISK_MAX_GB]


def image_disk_gb(spec: VmSpec) -> int | None:
    return None if "gcp" in spec.image.image_id else IMAGE_DISK_GB


LIMITS: tuple[CloudLimit, ...] = (
    CloudLimit("data_disks[].size_gb", f"{DISK_TYPE}: {DISK_MIN_GB}-{DISK_MAX_GB} GB",
               "cloud.google.com/compute/docs/disks#disk-types", _disk_sizes),
    root_disk_limit(image_disk_gb, "GCE refuses a boot disk smaller than its image (10 GB for the Ubuntu images)"),
)


def image(spec: VmSpec) -> str:
    return spec.image.image_id.get("gcp") or IMAGE_FAMILIES[(spec.image.family, spec.image.version)]


def labels(spec: VmSpec) -> dict[str, str]:
    """spec.all_tags() as GCE labels: polyvm's own "Name" key becomes "name" (label keys are lowercase)."""
    return {("name" if k == "Name" else k): v for k, v in spec.all_tags().items()}


def unsupported(spec: VmSpec) -> list[str]:
    """GCE-specific limits beyond the declared capabilities, as 'option (why)' strings."""
    out = []
    for k, v in spec.tags.items():
        if not _LABEL_KEY_RE.match(k) or not _LABEL_VALUE_RE.match(v):
            out.append(f"tags.{k} (GCE labels need lowercase keys/values of letters, digits, '_' and '-', "
                       "keys starting with a letter, at most 63 characters)")
    if spec.region is not None and not _REGION_RE.match(spec.region):
        out.append(f"region {spec.region!r} (GCE regions look like europe-west1)")
    if spec.zone is not None and not _ZONE_RE.match(spec.zone):
        out.append(f"zone {spec.zone!r} (GCE zones look like europe-west1-b)")
    for i, disk in enumerate(spec.data_disks):
        if not _DEVICE_NAME_RE.match(disk.name):
            out.append(f"data_disks[{i}].name {disk.name!r} (a GCE device name cannot end with '-')")
    return out


def _region_of(zone: str | None) -> str | None:
    m = _ZONE_RE.match(zone or "")
    return m.group(1) if m else None


def placement(spec: VmSpec, region: str | None, zone: str | None) -> tuple[str | None, str | None]:
    """(region, zone): the spec wins over settings; a zone gives its region; a region alone gets "-b"."""
    z = spec.zone
    r = spec.region or _region_of(z)
    if r is None:
        r = region or _region_of(zone)
    if z is None:
        if zone and _region_of(zone) == r:
            z = zone
        elif r:
            z = f"{r}-{DEFAULT_ZONE_SUFFIX}"
    return r, z


def placement_problems(spec: VmSpec, region: str | None, zone: str | None) -> list[str]:
    r, z = placement(spec, region, zone)
    if r is None or z is None:
        return ["no GCE zone: set zone (or region) in the VM spec, or zone/region in Pulumi config polyvm:gcp "
                "(pulumi config set --path polyvm:gcp.zone europe-west1-b)"]
    if _region_of(z) not in (None, r):
        return [f"zone {z!r} is not in region {r!r}"]
    return []


def firewall_args(spec: VmSpec, network: Any) -> list[dict[str, Any]]:
    """One ingress firewall per spec rule (source ranges are per firewall), all targeting the VM's tag;
    then one explicit egress rule."""
    tag = network_tag(spec)
    out = []
    for i, rule in enumerate(spec.ingress):
        allow: dict[str, Any] = {"protocol": rule.protocol}
        if rule.protocol != "icmp":
            allow["ports"] = [str(rule.from_port) if rule.from_port == rule.to_port
                              else f"{rule.from_port}-{rule.to_port}"]
        out.append({
            "suffix": f"in-{i}",
            "network": network,
            "direction": "INGRESS",
            "priority": FIREWALL_PRIORITY,
            "allows": [allow],
            "source_ranges": list(rule.ipv4_cidrs),
            "target_tags": [tag],
            "description": (rule.description or f"polyvm {spec.name}: {rule.protocol}/{rule.port or 'all'}")[:2048],
        })
    out.append({
        "suffix": "egress",
        "network": network,
        "direction": "EGRESS",
        "priority": FIREWALL_PRIORITY,
        "allows": [{"protocol": "all"}],
        "destination_ranges": ["0.0.0.0/0"],
        "target_tags": [tag],
        "description": f"polyvm {spec.name}: all outbound IPv4 (package mirrors, time, DNS)",
    })
    return out


def firewall_rules(firewalls: list[dict[str, Any]], direction: str) -> set[tuple[str, int | None, int | None, str]]:
    """Firewalls as recorded in a plan (camelCase inputs) -> polyvm FirewallRule tuples."""
    out: set[tuple[str, int | None, int | None, str]] = set()
    for fw in firewalls:
        if fw.get("direction") != direction:
            continue
        ranges = fw.get("sourceRanges") if direction == "INGRESS" else fw.get("destinationRanges")
        for allow in fw.get("allows") or []:
            proto = allow["protocol"]
            for cidr in ranges or []:
                if proto == "all":
                    out.add(("all", None, None, cidr))
                elif proto == "icmp":
                    out.add(("icmp", None, None, cidr))
                else:
                    for port in allow.get("ports") or ["1-65535"]:
                        lo, _, hi = str(port).partition("-")
                        out.add((proto, int(lo), int(hi or lo), cidr))
    return out


def disk_args(spec: VmSpec, zone: str) -> list[dict[str, Any]]:
    return [{
        "size": disk.size_gb,
        "type": DISK_TYPE,
        "zone": zone,
        "labels": {**labels(spec), "polyvm-disk": disk.name},
    } for disk in spec.data_disks]


#: Cloud NAT for a VM without an external address, so the documented egress actually reaches out.
NAT_ARGS: dict[str, Any] = {
    "nat_ip_allocate_option": "AUTO_ONLY",
    "source_subnetwork_ip_ranges_to_nat": "ALL_SUBNETWORKS_ALL_IP_RANGES",
}


def guest_device_path(device_name: str) -> str:
    return DEVICE_BY_ID.format(device_name=device_name)


def ssh_keys_metadata(spec: VmSpec) -> str:
    return f"{spec.ssh.user}:{spec.ssh.public_key}"


#: Written by cloud-init before the guest agent's first run would regenerate host keys, so the host key
#: cloud-init installs stays the one sshd offers. /etc/default/instance_configs.cfg is the user's file
#: in the guest agent's docs (github.com/GoogleCloudPlatform/guest-agent README, "Configuration"; the
#: image's defaults live in instance_configs.cfg.distro, which it must not override): the section is
#: appended, so whatever the image already put there stays.
GUEST_AGENT_CONFIG = {"path": "/etc/default/instance_configs.cfg", "permissions": "0644", "append": True,
                      "content": "\n# polyvm: keep the host key cloud-init installed\n[InstanceSetup]\nset_host_keys = false\n"}


def instance_args(spec: VmSpec, zone: str) -> dict[str, Any]:
    """Everything about the Instance that does not depend on other resources' outputs."""
    return {
        "machine_type": machine_type(spec),
        "zone": zone,
        "tags": [network_tag(spec)],
        "labels": labels(spec),
        "boot_disk": {"auto_delete": True,
                      "initialize_params": {"image": image(spec), "size": root_disk_gb(spec, IMAGE_DISK_GB),
                                            "type": DISK_TYPE,
                                            "labels": labels(spec)}},
        "shielded_instance_config": {"enable_secure_boot": True, "enable_vtpm": True,
                                     "enable_integrity_monitoring": True},
        "allow_stopping_for_update": True,
    }


def static_metadata(spec: VmSpec) -> dict[str, str]:
    """Instance metadata besides user-data: the login key only from here (project-wide keys blocked,
    OS Login off so ssh-keys is honoured)."""
    return {"ssh-keys": ssh_keys_metadata(spec), "block-project-ssh-keys": "true", "enable-oslogin": "FALSE"}
