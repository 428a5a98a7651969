"""Pure functions: VmSpec -> Azure (pulumi-azure-native 3.x) resource arguments. No SDK imports.

Everything here is plain data; component.py wires the resources together. The guest sees data disks
by LUN under ``/dev/disk/azure/scsi1/lun<N>`` (udev rules shipped by the Azure Linux agent /
azure-vm-utils in the marketplace images below).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from polyvm.backend import CloudLimit, pick_size, root_disk_gb, root_disk_limit
from polyvm.spec import VmSpec

#: Marketplace image references (publisher, offer, sku) per OS family/version; Gen2, x86_64, "latest".
#: Amazon Linux is not published on Azure. RHEL is Red Hat's pay-as-you-go image.
IMAGES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("ubuntu", "22.04"): ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"),
    ("ubuntu", "24.04"): ("Canonical", "ubuntu-24_04-lts", "server"),
    ("debian", "12"): ("Debian", "debian-12", "12-gen2"),
    ("rhel", "9"): ("RedHat", "RHEL", "9-lvm-gen2"),
}

#: VM sizes polyvm picks: (size, vCPUs, GiB, max data disks), the cheapest with at least the asked
#: cpus, memory and number of data disks. All support Premium SSD and present data disks on SCSI (so
#: /dev/disk/azure/scsi1/lun<N> exists). Override with size.instance_type.azure.
VM_SIZES: tuple[tuple[str, int, float, int], ...] = (
    ("Standard_B1ls", 1, 0.5, 2),
    ("Standard_B1s", 1, 1, 2),
    ("Standard_B1ms", 1, 2, 2),
    ("Standard_B2s", 2, 4, 4),
    ("Standard_B2ms", 2, 8, 4),
    ("Standard_B4ms", 4, 16, 8),
    ("Standard_B8ms", 8, 32, 16),
    ("Standard_D16s_v5", 16, 64, 32),
    ("Standard_D32s_v5", 32, 128, 32),
    ("Standard_D48s_v5", 48, 192, 32),
    ("Standard_D64s_v5", 64, 256, 32),
    ("Standard_E64s_v5", 64, 512, 32),
    ("Standard_D96s_v5", 96, 384, 32),
    ("Standard_E96s_v5", 96, 672, 32),
)

#: The most data disks polyvm attaches (a size from the table is chosen to take them all).
MAX_DATA_DISKS = 16

#: Guest path of the data disk at a LUN.
DEVICE_BY_LUN = "/dev/disk/azure/scsi1/lun{lun}"

#: NSG priorities: spec rules from 100 in steps of 10 (IPv4 rule at +0), then the explicit deny.
FIRST_PRIORITY = 100
PRIORITY_STEP = 10
DENY_ALL_INBOUND_PRIORITY = 4096
ALLOW_ALL_OUTBOUND_PRIORITY = 4000
MAX_INGRESS_RULES = (ALLOW_ALL_OUTBOUND_PRIORITY - FIRST_PRIORITY) // PRIORITY_STEP

#: Admin user names Azure refuses for Linux VMs.
RESERVED_ADMIN_USERS = frozenset({
    "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3", "admin1", "1", "123", "a",
    "actuser", "adm", "admin2", "aspnet", "backup", "console", "david", "guest", "john", "owner", "root",
    "server", "sql", "support", "support_388945a0", "sys", "test2", "test3", "user4", "user5",
})
#: SSH public key types Azure accepts in osProfile.linuxConfiguration.ssh.
SSH_KEY_TYPES = ("ssh-rsa", "ssh-ed25519")

ZONES = ("1", "2", "3")
_LOCATION_RE = re.compile(r"^[a-z][a-z0-9]{2,40}$")
_IMAGE_URN_RE = re.compile(r"^[^:\s]+:[^:\s]+:[^:\s]+:[^:\s]+$")
#: Azure tags: "The maximum supported key/value length is 256 characters ... Keys cannot contain < > % & \ ? /"
#: (Azure SDK reference, ProxyResourceWithTags.tags,
#: https://learn.microsoft.com/javascript/api/@azure/arm-billing/proxyresourcewithtags). Of those characters
#: only '/' passes core's tag-key check (letters, digits, _.:/=+@-), so '/' is the one checked here.
_TAG_VALUE_MAX = 256
_NVME_ONLY_SIZE_RE = re.compile(r"_v6$", re.IGNORECASE)

_PROTOCOLS = {"tcp": "Tcp", "udp": "Udp", "icmp": "Icmp"}
AZ_SPECS = "Azure/azure-rest-api-specs specification/"


def base_name(name: str) -> str:
    """A prefix for Azure resource names that leaves room for suffixes and Pulumi's 8-character
    autoname suffix within Azure's limits (64 for a VNet, 80 for NICs, NSGs, disks)."""
    if len(name) <= 40:
        return name
    return f"{name[:31]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def vm_size(spec: VmSpec) -> str:
    """The override if given, else the cheapest table entry with at least the asked cpus, memory and
    data disks."""
    disks = len(spec.data_disks)
    return pick_size(spec, "azure", VM_SIZES, what="Azure VM size", fits=lambda row: row[3] >= disks,
                     needs=f" and room for {disks} data disks")


#: OS disk size of the marketplace images above: Azure refuses an OS disk smaller than the image's
#: ("The specified disk size N GB is smaller than the size of the corresponding disk in the VM image:
#: 30 GB", learn.microsoft.com/azure/virtual-machines/linux/expand-disks). Canonical, Debian and Red Hat
#: publish 30 GB (RHEL LVM images 64 GB).
IMAGE_DISK_GB: dict[tuple[str, str], int] = {
    ("ubuntu", "22.04"): 30, ("ubuntu", "24.04"): 30, ("debian", "12"): 30, ("rhel", "9"): 64,
}
#: Managed disks: 4 GiB .. 32767 GiB for Premium SSD / Standard SSD / Standard HDD
#: (learn.microsoft.com/azure/virtual-machines/disks-types, not found in the search index; corroborated by
#: hashicorp/terraform-provider-azurerm#7689: "disk_size_gb can be higher than 32767 only for
#: storage_account_type UltraSSD_LRS"); host caching is not supported for disks of
#: 4 TiB (4095 GiB) and more (learn.microsoft.com/azure/virtual-machines/premium-storage-performance#disk-caching).
DISK_MAX_GB = 32767
CACHING_MAX_GB = 4094


def image_disk_gb(spec: VmSpec) -> int | None:
    return None if "azure" in spec.image.image_id else IMAGE_DISK_GB.get((spec.image.family, spec.image.version))


def _disk_sizes(spec: VmSpec) -> list[str]:
    return [f"data_disks[{i}].size_gb {d.size_gb} (Azure managed disks are at most {DISK_MAX_GB} GiB)"
            for i, d in enumerate(spec.data_disks) if d.size_gb > DISK_MAX_GB]


#: A security rule's description: "A description for this rule. Restricted to 140 chars." (the installed
#: pulumi_azure_native SDK, network/get_security_rule.py; the same text in the Azure REST API's SecurityRule).
RULE_DESCRIPTION_MAX = 140


def _rule_descriptions(spec: VmSpec) -> list[str]:
    return [f"ingress[{i}].description of {len(r.description)} characters (Azure security rule descriptions are at "
            f"most {RULE_DESCRIPTION_MAX})" for i, r in enumerate(spec.ingress)
            if r.description and len(r.description) > RULE_DESCRIPTION_MAX]


LIMITS: tuple[CloudLimit, ...] = (
    root_disk_limit(image_disk_gb, "Azure refuses an OS disk smaller than the image's (30 GB for the Ubuntu and "
                                   "Debian images, 64 GB RHEL LVM)"),
    CloudLimit("data_disks[].size_gb", f"at most {DISK_MAX_GB} GiB", "learn.microsoft.com/azure/virtual-machines/disks-types",
               _disk_sizes),
    CloudLimit("ingress[].description", f"at most {RULE_DESCRIPTION_MAX} characters",
               "pulumi_azure_native network SecurityRule.description (\"Restricted to 140 chars.\")", _rule_descriptions),
)


def image_reference(spec: VmSpec) -> dict[str, str]:
    """Marketplace reference, or the override: 'publisher:offer:sku:version' or an image resource id."""
    override = spec.image.image_id.get("azure")
    if override:
        if override.startswith("/"):
            return {"id": override}
        publisher, offer, sku, version = override.split(":")
        return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}
    publisher, offer, sku = IMAGES[(spec.image.family, spec.image.version)]
    return {"publisher": publisher, "offer": offer, "sku": sku, "version": "latest"}


def unsupported(spec: VmSpec) -> list[str]:
    """Azure-specific limits beyond the declared capabilities, as 'option (why)' strings."""
    out = []
    if spec.ssh.user in RESERVED_ADMIN_USERS:
        out.append(f"ssh.user {spec.ssh.user!r} (Azure refuses it as an admin user name)")
    key_type = spec.ssh.public_key.split()[0]
    if key_type not in SSH_KEY_TYPES:
        out.append(f"ssh.public_key of type {key_type} (Azure accepts {', '.join(SSH_KEY_TYPES)})")
    if spec.zone is not None and spec.zone not in ZONES:
        out.append(f"zone {spec.zone!r} (Azure availability zones are {', '.join(ZONES)})")
    size = spec.size.instance_type.get("azure", "")
    if _NVME_ONLY_SIZE_RE.search(size):
        out.append(f"size.instance_type.azure {size!r} (v6 sizes attach data disks over NVMe only; polyvm's "
                   "device paths /dev/disk/azure/scsi1/lun<N> need a SCSI size such as the v5 family)")
    override = spec.image.image_id.get("azure")
    if override and not override.startswith("/") and not _IMAGE_URN_RE.match(override):
        out.append(f"image.image_id.azure {override!r} (expected 'publisher:offer:sku:version' "
                   "or an image resource id starting with /subscriptions/)")
    if len(spec.ingress) > MAX_INGRESS_RULES:
        out.append(f"ingress ({len(spec.ingress)} rules, at most {MAX_INGRESS_RULES} fit the NSG priorities)")
    bad_keys = [k for k in spec.tags if "/" in k]
    if bad_keys:
        out.append(f"tags {bad_keys} (Azure tag names cannot contain '/')")
    long_tags = [k for k, v in spec.tags.items() if len(v) > _TAG_VALUE_MAX]
    if long_tags:
        out.append(f"tags {long_tags} (Azure tag values are at most {_TAG_VALUE_MAX} characters)")
    return out


def location(spec: VmSpec, default: str | None) -> str | None:
    return spec.region or default


def location_problems(spec: VmSpec, default: str | None) -> list[str]:
    loc = location(spec, default)
    if loc is None:
        return ["no Azure location: set region in the VM spec or location in Pulumi config polyvm:azure "
                "(pulumi config set --path polyvm:azure.location westeurope)"]
    if not _LOCATION_RE.match(loc):
        where = "region" if spec.region else "polyvm:azure.location"
        return [f"{where} {loc!r} is not an Azure location name (like westeurope, eastus2)"]
    return []


def security_rules(spec: VmSpec) -> list[dict[str, Any]]:
    """NSG rules: each spec rule in order with priority 100, 110, …; then an explicit allow-all IPv4
    outbound and a deny-all inbound that overrides Azure's default AllowVnetInBound and
    AllowAzureLoadBalancerInBound (so only the spec's ingress is open)."""
    rules: list[dict[str, Any]] = []
    for i, rule in enumerate(spec.ingress):
        if rule.protocol == "icmp":
            port = "*"
        elif rule.from_port == rule.to_port:
            port = str(rule.from_port)
        else:
            port = f"{rule.from_port}-{rule.to_port}"
        rules.append({
            "name": f"polyvm-in-{i}",
            "description": rule.description or f"polyvm {rule.protocol}/{port}",  # length: LIMITS
            "priority": FIRST_PRIORITY + i * PRIORITY_STEP,
            "direction": "Inbound",
            "access": "Allow",
            "protocol": _PROTOCOLS[rule.protocol],
            "source_address_prefixes": list(rule.ipv4_cidrs),
            "source_port_range": "*",
            "destination_address_prefix": "*",
            "destination_port_range": port,
        })
    rules.append({
        "name": "polyvm-out-all",
        "description": "all outbound IPv4 (package mirrors, time, DNS)",
        "priority": ALLOW_ALL_OUTBOUND_PRIORITY,
        "direction": "Outbound",
        "access": "Allow",
        "protocol": "*",
        "source_address_prefix": "*",
        "source_port_range": "*",
        "destination_address_prefixes": ["0.0.0.0/0"],
        "destination_port_range": "*",
    })
    rules.append({
        "name": "polyvm-in-deny-all",
        "description": "deny everything the spec does not allow (overrides Azure's default VNet allow)",
        "priority": DENY_ALL_INBOUND_PRIORITY,
        "direction": "Inbound",
        "access": "Deny",
        "protocol": "*",
        "source_address_prefix": "*",
        "source_port_range": "*",
        "destination_address_prefix": "*",
        "destination_port_range": "*",
    })
    return rules


def firewall_rules(nsg_rules: list[dict[str, Any]], direction: str) -> set[tuple[str, int | None, int | None, str]]:
    """Allow rules of an NSG as recorded in a plan (camelCase inputs) -> polyvm FirewallRule tuples."""
    out: set[tuple[str, int | None, int | None, str]] = set()
    for r in nsg_rules:
        if r.get("direction") != direction or r.get("access") != "Allow":
            continue
        proto = str(r.get("protocol")).lower()
        if direction == "Inbound":
            cidrs = list(r.get("sourceAddressPrefixes") or []) + ([r["sourceAddressPrefix"]]
                                                                  if r.get("sourceAddressPrefix") else [])
        else:
            cidrs = list(r.get("destinationAddressPrefixes") or []) + ([r["destinationAddressPrefix"]]
                                                                       if r.get("destinationAddressPrefix") else [])
        cidrs = ["0.0.0.0/0" if c in ("*", "Internet") else c for c in cidrs]
        port = str(r.get("destinationPortRange", "*"))
        for cidr in cidrs:
            if proto == "*":
                out.add(("all", None, None, cidr))
            elif proto == "icmp":
                out.add(("icmp", None, None, cidr))
            elif port == "*":
                out.add((proto, 1, 65535, cidr))
            else:
                lo, _, hi = port.partition("-")
                out.add((proto, int(lo), int(hi or lo), cidr))
    return out


def data_disk_args(spec: VmSpec, storage_account_type: str) -> list[dict[str, Any]]:
    """One empty managed disk per data disk (its own resource, so the VM can be replaced without it)."""
    return [{
        "disk_size_gb": disk.size_gb,
        "creation_data": {"create_option": "Empty"},
        "sku": {"name": storage_account_type},
        "tags": {**spec.all_tags(), "Name": f"{spec.name}-{disk.name}", "polyvm-disk": disk.name},
        **({"zones": [spec.zone]} if spec.zone else {}),
    } for disk in spec.data_disks]


def data_disk_attachment(lun: int, disk_id: Any, size_gb: int) -> dict[str, Any]:
    """Attach by LUN, detach (never delete) with the VM; ReadOnly host caching where Azure allows it."""
    return {"lun": lun, "create_option": "Attach", "managed_disk": {"id": disk_id},
            "caching": "ReadOnly" if size_gb <= CACHING_MAX_GB else "None", "delete_option": "Detach"}


def guest_device_path(lun: int) -> str:
    return DEVICE_BY_LUN.format(lun=lun)


def custom_data(user_data: str) -> str:
    """Azure wants custom data base64-encoded; cloud-init reads it as user data."""
    return base64.b64encode(user_data.encode()).decode()


def os_profile(spec: VmSpec) -> dict[str, Any]:
    """SSH key login only: password authentication disabled, no admin password set."""
    return {
        "computer_name": spec.name,
        "admin_username": spec.ssh.user,
        "linux_configuration": {
            "disable_password_authentication": True,
            "provision_vm_agent": True,
            "ssh": {"public_keys": [{"path": f"/home/{spec.ssh.user}/.ssh/authorized_keys",
                                     "key_data": spec.ssh.public_key}]},
        },
    }


def storage_profile(spec: VmSpec, storage_account_type: str, data_disks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image_reference": image_reference(spec),
        "os_disk": {"create_option": "FromImage", "disk_size_gb": root_disk_gb(spec, image_disk_gb(spec) or 30), "caching": "ReadWrite",
                    "delete_option": "Delete", "managed_disk": {"storage_account_type": storage_account_type}},
        "data_disks": data_disks,
    }


def public_ip_args(spec: VmSpec) -> dict[str, Any]:
    """Standard SKU, static (Basic SKU public IPs are retired)."""
    return {
        "sku": {"name": "Standard", "tier": "Regional"},
        "public_ip_allocation_method": "Static",
        "public_ip_address_version": "IPv4",
        "tags": spec.all_tags(),
        **({"zones": [spec.zone]} if spec.zone else {}),
    }
