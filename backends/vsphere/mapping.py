"""Pure functions: VmSpec -> vSphere resource arguments. No Pulumi calls, no SDK imports; tested directly."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from polyvm.errors import ConfigError
from polyvm.spec import VmSpec

#: The provider's disk ``unit_number`` is a logical index, not the SCSI unit: bus = n / 15 and unit =
#: n % 15, shifted up by one from the controller's own unit 7 (terraform-provider-vsphere
#: vsphere/internal/virtualdevice/virtual_machine_disk_subresource.go, "bus := number / 15" and
#: "if unit >= scsiUnit { unit++ }"). The root disk is 0 (SCSI 0:0); data disks are 1-14, which land on
#: SCSI 0:1-6 and 0:8-15 of the one controller polyvm uses: 14 data disks.
DATA_DISK_UNITS: tuple[int, ...] = tuple(range(1, 15))
MAX_DATA_DISKS = len(DATA_DISK_UNITS)
#: Where the ForceNew rules of the replacement table come from.
TF_VSPHERE = "hashicorp/terraform-provider-vsphere vsphere"


def scsi_address(unit_number: int) -> tuple[int, int]:
    """(bus, unit) the provider attaches a disk with logical ``unit_number`` at (controller at unit 7)."""
    bus, unit = divmod(unit_number, 15)
    return bus, unit + 1 if unit >= 7 else unit

#: With ``disk.EnableUUID`` set (``enable_disk_uuid``), the guest sees each virtual disk's UUID as its
#: SCSI WWN, so udev links it as /dev/disk/by-id/wwn-0x<uuid, lower case, no dashes>. Stable across
#: reboots and controller renumbering (unlike /dev/sdX or by-path), and known once the VM exists. This is
#: the rule the vSphere CSI driver uses too.
GUEST_DEVICE_PATH = "/dev/disk/by-id/wwn-0x{uuid}"


def guest_device_path(disk_uuid: str) -> str:
    """'6000C29a-…' (the vSphere disk UUID) -> '/dev/disk/by-id/wwn-0x6000c29a…'."""
    return GUEST_DEVICE_PATH.format(uuid=disk_uuid.replace("-", "").lower())


def template_name(spec: VmSpec, default: str) -> str:
    """``image.image_id.vsphere`` (a template name) wins over the ``template`` setting."""
    return spec.image.image_id.get("vsphere", default)


def memory_mb(spec: VmSpec) -> int:
    """vSphere takes memory in MiB, a multiple of 4."""
    mb = math.ceil(spec.size.memory_gb * 1024)
    return mb + (-mb % 4)


def root_disk_size(spec: VmSpec, template_disk_gb: int | float | None, *, linked_clone: bool = False) -> int:
    """The spec's root disk size; a full clone can grow the template's disk but never shrink it, a linked
    clone keeps it exactly."""
    if linked_clone and template_disk_gb is not None and spec.root_disk_gb != template_disk_gb:
        raise ConfigError(f"{spec.name}: root_disk_gb {spec.root_disk_gb} differs from the vSphere template's "
                          f"disk ({int(template_disk_gb)} GiB); a linked clone keeps the template's disk size "
                          "(set root_disk_gb to it, or linked_clone: false)")
    if template_disk_gb is not None and spec.root_disk_gb < template_disk_gb:
        raise ConfigError(f"{spec.name}: root_disk_gb {spec.root_disk_gb} is smaller than the vSphere "
                          f"template's disk ({int(template_disk_gb)} GiB); a clone cannot shrink a disk")
    return spec.root_disk_gb


def disk_label(disk_name: str) -> str:
    """The vSphere disk label of a data disk (labels are how the provider tracks disks; the root is disk0)."""
    return f"data-{disk_name}"


def disks(spec: VmSpec, root: dict[str, Any], *, keep_data: bool = True) -> list[dict[str, Any]]:
    """The root disk (``root``: size/thin_provisioned/eagerly_scrub from the template) and one
    thin-provisioned disk per data disk, on SCSI 0 by unit number, in spec order. ``keep_data`` sets
    keep_on_remove: the data disk's file stays on the datastore when it leaves the spec or the VM is
    destroyed."""
    out = [{"label": "disk0", "unit_number": 0, **root}]
    for disk, unit in zip(spec.data_disks, DATA_DISK_UNITS):
        out.append({"label": disk_label(disk.name), "unit_number": unit, "size": disk.size_gb,
                    "thin_provisioned": True, "keep_on_remove": keep_data})
    return out


def annotation(spec: VmSpec) -> str:
    """The VM's Notes: what polyvm made it from, and its tags as key=value lines."""
    lines = [f"polyvm VM {spec.name}", "tags:"]
    lines += [f"  {k}={v}" for k, v in spec.all_tags().items()]
    return "\n".join(lines)


def ingress_document(spec: VmSpec) -> str:
    """The ingress rules the guest firewall (nftables, applied over SSH) enforces, as compact JSON.
    Published as ``guestinfo.polyvm.ingress`` so what the VM will accept is visible in vCenter too."""
    rules = []
    for r in spec.ingress:
        rules.append({"protocol": r.protocol,
                      "ports": None if r.port is None else [r.from_port, r.to_port],
                      "cidrs": list(r.cidrs)})
    return json.dumps(rules, separators=(",", ":"))


def guestinfo_plain(spec: VmSpec) -> dict[str, str]:
    """The non-secret extra_config: cloud-init meta data (instance id, hostname) and the ingress rules."""
    # redact: cloud-init's VMware datasource overwrites these guestinfo keys with "---" once read
    # (cloudinit/sources/DataSourceVMware.py, redact_keys), so the host's private key in the user data
    # does not stay readable to anyone who can read the VM's guestinfo.
    meta = {"instance-id": spec.name, "local-hostname": spec.name, "redact": ["userdata"]}
    return {
        "guestinfo.metadata": base64.b64encode(json.dumps(meta).encode()).decode(),
        "guestinfo.metadata.encoding": "base64",
        "guestinfo.userdata.encoding": "base64",
        "guestinfo.polyvm.ingress": ingress_document(spec),
    }


def guestinfo_userdata(user_data: str) -> str:
    """``guestinfo.userdata`` for cloud-init's VMware datasource (cloud-init >= 21.3 with open-vm-tools).
    It carries the generated host key: the component keeps it a secret."""
    return base64.b64encode(user_data.encode()).decode()


def customize(spec: VmSpec, domain: str, dns_servers: list[str]) -> dict[str, Any]:
    """Guest customization on clone: hostname and one DHCP interface (an empty interface block)."""
    out: dict[str, Any] = {
        "linux_options": {"host_name": spec.name, "domain": domain},
        "network_interfaces": [{}],
    }
    if dns_servers:
        out["dns_server_lists"] = list(dns_servers)
    return out


def vm_args(spec: VmSpec, *, folder: str | None) -> dict[str, Any]:
    """Everything about the VirtualMachine that does not depend on lookups."""
    args: dict[str, Any] = {
        "name": spec.name,
        "num_cpus": spec.size.cpus,
        "memory": memory_mb(spec),
        "enable_disk_uuid": True,  # so data disks have stable /dev/disk/by-id/wwn-0x… paths
        "annotation": annotation(spec),
        "wait_for_guest_net_timeout": 10,
        "wait_for_guest_ip_timeout": 0,
        # The provider reboots the VM for any extra_config change by default (virtual_machine_config_structure.go,
        # extra_config_reboot_required Default: true): editing an ingress CIDR (guestinfo.polyvm.ingress)
        # must not reboot the database. The guest firewall is applied over SSH, not read at boot.
        "extra_config_reboot_required": False,
    }
    if folder:
        args["folder"] = folder
    return args


# --- reading a plan back (contract suite) -------------------------------------------------------------
FirewallRule = tuple[str, "int | None", "int | None", str]


def firewall_rules(document: str) -> set[FirewallRule]:
    """``guestinfo.polyvm.ingress`` -> polyvm FirewallRule tuples."""
    out: set[FirewallRule] = set()
    for r in json.loads(document or "[]"):
        lo, hi = r["ports"] if r["ports"] else (None, None)
        for cidr in r["cidrs"]:
            out.add((r["protocol"], lo, hi, cidr))
    return out


def parse_annotation_tags(text: str) -> dict[str, str]:
    """The inverse of :func:`annotation`'s tag lines."""
    out = {}
    lines = (text or "").splitlines()
    if "tags:" in lines:
        for line in lines[lines.index("tags:") + 1:]:
            if line.startswith("  ") and "=" in line:
                k, _, v = line.strip().partition("=")
                out[k] = v
    return out
