"""Pure functions: VmSpec -> fakecloud resource arguments. No Pulumi, no SDK: this is where tests live.

fakecloud's "API" is pulumi-random: a VM is a RandomPet whose keepers record its size, image and tags; the
firewall is a RandomUuid whose keepers record the rules; each data disk is a RandomId whose hex becomes
the device id. Keepers are string maps, so structured values are stored as compact JSON.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from polyvm.backend import ALL_EGRESS, FirewallRule
from polyvm.spec import VmSpec

TAG_PREFIX = "tag:"
DEVICE_PATH = "/dev/disk/by-id/fakecloud-{hex}"


def instance_keepers(spec: VmSpec) -> dict[str, str]:
    """What the 'instance' is: changing any of it replaces the VM, as on a real cloud."""
    keepers = {
        "size": f"{spec.size.cpus}cpu-{spec.size.memory_gb:g}gb",
        "image": f"{spec.image.family}-{spec.image.version}",
        "root_disk_gb": str(spec.root_disk_gb),
        "ssh_user": spec.ssh.user,
        "ssh_key": spec.ssh.public_key,
    }
    keepers.update({f"{TAG_PREFIX}{k}": v for k, v in spec.all_tags().items()})
    return keepers


def ingress_rules(spec: VmSpec) -> list[FirewallRule]:
    """One rule per (spec rule, CIDR), in the cloud-neutral form polyvm uses."""
    out: list[FirewallRule] = []
    for rule in spec.ingress:
        for cidr in rule.cidrs:
            if rule.protocol == "icmp":
                out.append(("icmp", None, None, cidr))
            else:
                out.append((rule.protocol, rule.from_port, rule.to_port, cidr))
    return out


EGRESS: list[FirewallRule] = sorted(ALL_EGRESS, key=repr)


def firewall_keepers(spec: VmSpec) -> dict[str, str]:
    return {"ingress": json.dumps(ingress_rules(spec)), "egress": json.dumps(EGRESS)}


def disk_keepers(spec: VmSpec) -> list[dict[str, str]]:
    return [{"disk": d.name, "size_gb": str(d.size_gb)} for d in spec.data_disks]


def address(network: str, octet: int) -> str:
    """The ``octet``-th address of a /24."""
    return str(ipaddress.ip_network(network)[octet])


def device_path(hex_id: str) -> str:
    return DEVICE_PATH.format(hex=hex_id)


# --- reading a plan back ----------------------------------------------------------------------------------
def parse_rules(text: str) -> set[FirewallRule]:
    return {tuple(r) for r in json.loads(text or "[]")}  # type: ignore[misc]


def parse_tags(keepers: dict[str, Any]) -> dict[str, str]:
    return {k[len(TAG_PREFIX):]: v for k, v in keepers.items() if k.startswith(TAG_PREFIX)}
