"""The guest baseline: what every VM needs before (and without) any recipe.

* **Guest firewall** — for hosts whose backend filters in the guest (``Host.firewall`` is not None:
  ``capabilities.firewall == "guest"``, e.g. vSphere and local hosts): the spec's ingress rules as an
  nftables ruleset (:func:`polyvm.firewall.render_nftables`), installing nftables if it is missing, re-applied
  only when the rules change, kept across reboots (a systemd unit). A rule set that would lock the
  provisioner out (no rule opening the SSH port, or none from the provisioner's address when it is known)
  is refused before anything is sent. An output chain lets only root reach the instance metadata address
  (:func:`metadata_guard`).
* **Data disks** — each disk of ``Host.disks`` with a mount point: a filesystem is created only on a blank
  device (never reformatted), mounted by UUID through /etc/fstab, never over a directory holding files.
  Disks without a mount point are left raw.

:func:`baseline_steps` is pure (a Host and its OS facts in, steps out); the same steps run over SSH
(``run_recipe`` in fanout.py, which puts them before any recipe's) and become Pulumi resources
(``BaselineResource`` in pulumi.py).
"""

from __future__ import annotations

import functools
import ipaddress
import shlex
from importlib import resources
from typing import Sequence

import jinja2

from polyvm.errors import SpecError
from polyvm.firewall import render_nftables
from polyvm.host import Facts, Host, HostDisk
from polyvm.spec import IngressRule

from .steps import FilesStep, RemoteFile, Script, Step

#: A line the baseline scripts print when they changed something (Script's changed_marker).
CHANGED_MARKER = "polyvm:changed"
FIREWALL_RULES_PATH = "/etc/polyvm/firewall.nft"


@functools.lru_cache(maxsize=None)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["q"] = lambda v: shlex.quote(str(v))
    return env


def render(template: str, **values: object) -> str:
    text = resources.files("polyvm.provisioners").joinpath(f"templates/{template}").read_text()
    return _env().from_string(text).render(marker=CHANGED_MARKER, **values)


def filesystem_for(facts: Facts | None) -> str:
    """The filesystem a blank data disk gets: the distribution's default (xfs on RHEL-family, else ext4)."""
    return "xfs" if facts is not None and facts.family in ("rhel", "amazon-linux") else "ext4"


def lockout_problems(rules: Sequence[IngressRule], *, ssh_port: int = 22, source: str | None = None) -> list[str]:
    """Why loading ``rules`` in the guest would cut off the provisioner's SSH access (empty: it would not).
    ``source``: the provisioner's address as the guest sees it, when known."""
    ssh = [r for r in rules if r.covers(ssh_port)]
    if not ssh:
        return [f"the guest firewall rules open no TCP rule for SSH ({ssh_port}); applying them would lock the "
                "provisioner out (add an ingress rule for port "
                f"{ssh_port} from the machine that provisions)"]
    if source is not None:
        addr = ipaddress.ip_address(source)
        if not any(addr.version == ipaddress.ip_network(c).version and addr in ipaddress.ip_network(c)
                   for r in ssh for c in r.cidrs):
            return [f"the guest firewall rules do not allow SSH ({ssh_port}) from {source}, the address this "
                    "provisioner connects from; applying them would lock it out"]
    return []


#: The instance metadata service of the clouds: 169.254.169.254 (AWS IMDS, Azure IMDS, GCP's
#: metadata.google.internal, DigitalOcean's metadata API) and AWS's IPv6 IMDS endpoint fd00:ec2::254. It
#: serves user data (which carries the VM's first host key) to any process that asks.
METADATA_ADDRESSES = ("169.254.169.254", "fd00:ec2::254")


def metadata_guard() -> str:
    """An nftables output chain (same table as the ingress rules, loaded with them) that drops packets of
    non-root processes to the metadata addresses: root's agents (cloud-init, guest agents) keep their access;
    an unprivileged process's connect() fails with EPERM, before any packet leaves."""
    v4, v6 = METADATA_ADDRESSES
    return (f"# Only root may reach the instance metadata service (it serves user data).\n"
            f"table inet polyvm {{\n"
            f"  chain output {{\n"
            f"    type filter hook output priority filter; policy accept;\n"
            f"    meta skuid != 0 ip daddr {v4} drop\n"
            f"    meta skuid != 0 ip6 daddr {v6} drop\n"
            f"  }}\n"
            f"}}\n")


def guest_ruleset(rules: Sequence[IngressRule]) -> str:
    """What the guest firewall loads: the spec's ingress (:func:`polyvm.firewall.render_nftables`) and the
    :func:`metadata_guard`."""
    return render_nftables(rules) + metadata_guard()


def firewall_steps(rules: Sequence[IngressRule], *, ssh_port: int = 22, source: str | None = None) -> list[Step]:
    """The guest firewall: the ruleset file, then the script that installs nftables if needed and loads it."""
    problems = lockout_problems(rules, ssh_port=ssh_port, source=source)
    if problems:
        raise SpecError(problems, source="guest firewall")
    return [
        FilesStep("guest firewall rules", [RemoteFile(FIREWALL_RULES_PATH, guest_ruleset(rules), mode=0o600,
                                                      owner="root", group="root")]),
        Script(render("firewall.sh.j2", rules_path=FIREWALL_RULES_PATH), name="guest firewall",
               changed_marker=CHANGED_MARKER, detail="output"),
    ]


def datadisk_step(disk: HostDisk, facts: Facts | None) -> Script:
    """One data disk formatted (only when blank) and mounted by UUID at its mount point."""
    assert disk.mount_point, "a data disk without a mount point is left raw"
    return Script(render("datadisk.sh.j2", name=disk.name, device=disk.device, mount_point=disk.mount_point,
                         filesystem=filesystem_for(facts), label=disk.name[:16]),
                  name=f"data disk {disk.name}", changed_marker=CHANGED_MARKER, detail="output")


def baseline_steps(host: Host, facts: Facts | None = None, *, source: str | None = None) -> list[Step]:
    """Every baseline step ``host`` needs (none for a host with a cloud firewall and no data disks)."""
    facts = facts or host.facts
    steps: list[Step] = []
    if host.firewall is not None:
        steps += firewall_steps(host.firewall, ssh_port=host.port, source=source)
    steps += [datadisk_step(d, facts) for d in host.disks if d.mount_point]
    return steps


def baseline_probe(host: Host) -> str:
    """The live state the baseline steps act on, for the run stamp (:mod:`.stamp`): the loaded nftables table
    and its unit; per data disk the device, what it holds and where it is mounted, and its fstab line."""
    lines: list[str] = []
    if host.firewall is not None:
        lines += ["nft list table inet polyvm 2>&1",
                  "f /var/lib/polyvm/firewall.applied",
                  "if [ -d /run/systemd/system ]; then f /etc/systemd/system/polyvm-firewall.service; "
                  "echo \"firewall unit $(systemctl is-enabled polyvm-firewall.service 2>&1)\"; fi"]
    for d in host.disks:
        if not d.mount_point:
            continue
        dev, mp = shlex.quote(d.device), shlex.quote(d.mount_point)
        lines += [f"echo \"disk {d.name}: $(readlink -f {dev}) $(blkid -p -o value -s TYPE -s UUID {dev} 2>&1 | "
                  "tr '\\n' ' ')\"",
                  f"findmnt -n -o SOURCE,FSTYPE,TARGET --mountpoint {mp} 2>&1",
                  f"awk -v mp={mp} '$1 !~ /^#/ && $2 == mp' /etc/fstab"]
    return "\n".join(lines)
