"""The one hand-over from a VM to everything that works over SSH: :class:`Host`.

A backend's VM component (or a local host, or a line of inventory) becomes a ``Host``: where to connect,
as whom, which host key to pin, which block device backs each data disk, and the guest firewall rules
(None when the backend's cloud firewall filters). The guest baseline (polyvm.provisioners.baseline) and
every recipe read the VM only through this value; nothing downstream reads backend internals.

    host = Host.from_spec(spec, address="198.51.100.7", host_key="ssh-ed25519 AAAA…",
                          data_disk_devices={"data": "/dev/nvme1n1"}, guest_firewall=True)
    with host.connect(private_key_path="~/.ssh/id_ed25519") as conn: ...

From Pulumi, :func:`host_output` turns a VM component into an ``Output[Host]``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ConfigError, RecipeError
from .spec import SSH_PORT, IngressRule, VmSpec

if TYPE_CHECKING:
    import pulumi

    from polyvm.provisioners.connection import Connection


@dataclass(frozen=True)
class HostDisk:
    """A data disk as the guest sees it: the spec's name, the block device, where to mount it (or None)."""

    name: str
    device: str
    mount_point: str | None = None


@dataclass(frozen=True)
class Facts:
    """What is known about the guest's OS and memory (from the spec, or detected over SSH)."""

    family: str
    version: str
    pretty: str = ""
    memory_mb: int | None = None


@dataclass(frozen=True)
class Host:
    """One VM, ready to be reached over SSH.

    ``ingress``: the spec's inbound rules (whoever enforces them); ``firewall``: the rules the guest must
    enforce itself (backends whose ``capabilities.firewall == "guest"``), or None when a cloud firewall does. ``facts``: the OS and RAM
    when known without asking the host (Pulumi: from the spec); recipes detect them otherwise.
    """

    address: str
    user: str
    host_key: str | None = None
    port: int = SSH_PORT
    name: str = ""
    disks: tuple[HostDisk, ...] = ()
    ingress: tuple[IngressRule, ...] = ()
    firewall: tuple[IngressRule, ...] | None = None
    facts: Facts | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.address:
            raise ConfigError("a host needs an address")

    @property
    def label(self) -> str:
        return self.name or self.address

    @property
    def data_disk_devices(self) -> dict[str, str]:
        return {d.name: d.device for d in self.disks}

    @property
    def needs_baseline(self) -> bool:
        """Whether the guest baseline has something to do here (guest firewall or data disks)."""
        return self.firewall is not None or bool(self.disks)

    def with_facts(self, facts: Facts) -> "Host":
        return replace(self, facts=facts)

    @classmethod
    def from_spec(cls, spec: VmSpec, *, address: str, host_key: str | None = None,
                  data_disk_devices: Mapping[str, str] | None = None, guest_firewall: bool = False,
                  user: str | None = None, port: int = SSH_PORT, labels: Mapping[str, str] | None = None) -> "Host":
        """A Host for a VM declared by ``spec`` with its backend's outputs. Every data disk of the spec must
        have a device (RecipeError otherwise: provisioning without it would silently skip the disk)."""
        devices = dict(data_disk_devices or {})
        missing = [d.name for d in spec.data_disks if d.name not in devices]
        if missing:
            raise RecipeError(f"{spec.name}: the VM reports no device for data disk(s) {', '.join(missing)} "
                              f"(data_disk_devices: {sorted(devices)})")
        disks = tuple(HostDisk(d.name, devices[d.name], d.mount_point) for d in spec.data_disks)
        facts = Facts(spec.image.family, spec.image.version, f"{spec.image.family} {spec.image.version}",
                      int(spec.size.memory_gb * 1024))
        return cls(address=address, user=user or spec.ssh.user, host_key=host_key, port=port, name=spec.name,
                   disks=disks, ingress=tuple(spec.ingress), firewall=tuple(spec.ingress) if guest_firewall else None,
                   facts=facts,
                   labels=dict(labels or {}))

    def connection_settings(self) -> dict[str, Any]:
        """The connection mapping (``Connection.from_mapping``) for this host, without credentials."""
        out: dict[str, Any] = {"host": self.address, "user": self.user, "port": self.port}
        if self.host_key:
            out["host_key"] = self.host_key
        if self.name:
            out["name"] = self.name
        return out

    def connect(self, **credentials: Any) -> "Connection":
        """A (not yet opened) Connection to this host with its host key pinned. ``credentials``: the other
        Connection settings (private_key_path, private_key, known_hosts, bastion, deadline, ...)."""
        from polyvm.provisioners.connection import Connection

        return Connection.from_mapping({**self.connection_settings(), **credentials})

    def __repr__(self) -> str:
        return f"Host({self.label!r}, {self.user}@{self.address}:{self.port})"


# --- facts ---------------------------------------------------------------------------------------------------

#: /etc/os-release ID (and ID_LIKE) -> polyvm image family.
_FAMILY_BY_ID = {"debian": "debian", "ubuntu": "ubuntu", "amzn": "amazon-linux", "rhel": "rhel",
                 "rocky": "rhel", "almalinux": "rhel", "centos": "rhel", "ol": "rhel"}


def parse_os_release(text: str) -> Facts:
    """The OS family and version from /etc/os-release text; RecipeError for a system polyvm does not support."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, _, v = line.partition("=")
        try:
            parts = shlex.split(v)
        except ValueError:
            parts = [v]
        kv[k] = parts[0] if parts else ""
    os_id = kv.get("ID", "").lower()
    family = _FAMILY_BY_ID.get(os_id)
    if family is None:
        for like in kv.get("ID_LIKE", "").lower().split():
            if like in ("rhel", "fedora", "centos"):
                family = "rhel"
                break
            if like in ("debian", "ubuntu"):
                family = like
                break
    pretty = kv.get("PRETTY_NAME", os_id)
    if family is None:
        raise RecipeError(f"unsupported operating system {pretty!r}: polyvm supports Debian, Ubuntu, "
                          "Amazon Linux 2023 and RHEL-family 9")
    version = kv.get("VERSION_ID", "")
    if family in ("rhel", "debian"):
        version = version.split(".")[0]
    return Facts(family=family, version=version, pretty=pretty)


FACTS_COMMAND = "cat /etc/os-release; echo @@polyvm@@; sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo"


def parse_facts(output: str) -> Facts:
    """Facts from the output of :data:`FACTS_COMMAND`."""
    text, _, mem = output.partition("@@polyvm@@")
    mem = mem.strip()
    facts = parse_os_release(text)
    return replace(facts, memory_mb=int(mem) // 1024 if mem.isdigit() else None)


# --- from Pulumi ---------------------------------------------------------------------------------------------

def guest_firewall_of(vm: Any) -> bool:
    """Whether ``vm``'s backend filters in the guest (``capabilities.firewall == "guest"``). A VM component
    without a registered backend is an error, not "no firewall"."""
    from .plugins import get_backend

    name = getattr(vm, "backend_name", None)
    if not name:
        raise ConfigError(f"{vm!r} is not a polyvm VirtualMachine component (it has no backend_name)")
    return get_backend(name).capabilities.firewall == "guest"


def host_output(vm: Any, *, spec: VmSpec | None = None, guest_firewall: bool | None = None,
                port: int = SSH_PORT) -> "pulumi.Output[Host]":
    """The Host of a ``polyvm:<backend>:VirtualMachine`` component, from its outputs (public_ip or else
    private_ip, ssh_user, host_key, data_disk_devices) and its spec."""
    import pulumi

    spec = spec or vm.spec
    if guest_firewall is None:
        guest_firewall = guest_firewall_of(vm)

    def build(o: Mapping[str, Any]) -> Host:
        return Host.from_spec(spec, address=o["public"] or o["private"], host_key=o["host_key"],
                              data_disk_devices=o["devices"] or {}, guest_firewall=bool(guest_firewall),
                              user=o["user"], port=port)

    return pulumi.Output.all(public=vm.public_ip, private=vm.private_ip, user=vm.ssh_user, host_key=vm.host_key,
                             devices=vm.data_disk_devices).apply(build)

