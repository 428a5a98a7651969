"""Pure functions: VmSpec -> the local host resource's inputs. No Pulumi calls; tested directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from polyvm.backend import FirewallRule
from polyvm.firewall import render_nftables, rules_of
from polyvm.spec import SUPPORTED_IMAGES, VmSpec


def host_os(os_release: str | Path = "/etc/os-release") -> tuple[str | None, str | None]:
    """(polyvm OS family, version) of this machine, e.g. ("debian", "12"); (None, None) when it is not a
    family polyvm knows. Local hosts are copies of this machine, so this is the only OS they can be."""
    try:
        text = Path(os_release).read_text()
    except OSError:
        return None, None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"').strip("'")
    ids = [fields.get("ID", "")] + fields.get("ID_LIKE", "").split()
    version = fields.get("VERSION_ID", "")
    family = None
    for i in ids:
        if i in ("debian", "ubuntu"):
            family = i
            break
        if i == "amzn":
            family = "amazon-linux"
            break
        if i in ("rhel", "rocky", "almalinux", "centos", "fedora"):
            family, version = "rhel", version.split(".")[0]
            break
    if family == "debian" and fields.get("ID") != "debian":
        family = None  # a Debian derivative other than Ubuntu: not an image polyvm supports
    if family is None or version not in SUPPORTED_IMAGES.get(family, ()):
        return family, version or None
    return family, version


def disks_mb(spec: VmSpec) -> list[dict[str, Any]]:
    """One sparse loop-device disk per data disk, in spec order: {name, size_mb}."""
    return [{"name": d.name, "size_mb": d.size_gb * 1024} for d in spec.data_disks]


def firewall_ruleset(spec: VmSpec) -> str:
    """The nftables ruleset applied inside the host: exactly the spec's ingress, everything else dropped."""
    return render_nftables(spec.ingress)


def host_props(spec: VmSpec, *, scrub: Sequence[str] = ()) -> dict[str, Any]:
    """Inputs of the ``polyvm:local`` host resource (no secrets: only public keys and rules)."""
    return {
        "hostname": spec.name,
        "ssh_user": spec.ssh.user,
        "authorized_keys": spec.ssh.public_key.strip(),
        "disks": disks_mb(spec),
        "root_mb": spec.root_disk_gb * 1024,
        "firewall": firewall_ruleset(spec),
        "scrub": list(scrub),
        "tags": spec.all_tags(),
    }


def planned_ingress(props: dict[str, Any]) -> set[FirewallRule]:
    return rules_of(props.get("firewall") or "")


def device_map(disks: list[dict[str, Any]], devices: list[str]) -> dict[str, str]:
    """data disk name -> loop device, in order."""
    return {d["name"]: dev for d, dev in zip(disks, devices)}
