"""local backend: VM-like hosts on this Linux machine (network namespace + in-memory overlay of ``/`` +
own sshd), no cloud account. Also provides ``polyvm sandbox``.

Hosts are copies of this machine: their OS is this machine's OS, they share its CPUs and memory, and
they reach nothing but this machine (each has a /30 link in 198.19.0.0/16 and no route beyond it).
Creating one needs root and openssh-server, nftables, iproute2 (see docs/local.md).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Mapping, Sequence

from pydantic import Field, model_validator

from polyvm.backend import Backend, BackendSettings, Capabilities, Replacement
from polyvm.hookspecs import hookimpl
from polyvm.spec import SUPPORTED_IMAGES, VmSpec

from . import mapping as m

#: This machine's OS, which is every local host's OS.
HOST_FAMILY, HOST_VERSION = m.host_os()
_HOST_SUPPORTED = bool(HOST_FAMILY) and HOST_VERSION in SUPPORTED_IMAGES.get(HOST_FAMILY or "", ())
HOST_TYPE = "pulumi-python:dynamic/local:Host"
LB_TYPE = "pulumi-python:dynamic/local:LoadBalancer"
_MOCK_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockLocalHostKeyMockLocalHostKeyMockLocal"


class LocalSettings(BackendSettings):
    """Pulumi config ``polyvm:local``."""

    state_dir: str | None = Field(default=None, description="Where host records live (default "
                                  "/var/lib/polyvm/local, mode 0700).")
    boot: Literal["direct", "cloud-init"] = Field(
        default="direct",
        description=("How a host is set up before its sshd starts: `direct` (the engine installs the login "
                     "user, its key and the host key) or `cloud-init` (this machine's cloud-init runs inside "
                     "the host from a NoCloud seed with the user data every cloud backend sends; needs the "
                     "cloud-init package; about 1 s more per host, see docs/local.md). Default: "
                     "$POLYVM_LOCAL_BOOT or `direct`."))
    fresh: bool = Field(default=True, description=(
        "Remove inside the host what the registered recipes name as leftovers of their packages on this "
        "machine (e.g. a database cluster created at package install), so the host looks like a new VM; "
        "false: keep this machine's copy as it is."))


    @model_validator(mode="before")
    @classmethod
    def _boot_from_environment(cls, data: Any) -> Any:
        env = os.environ.get("POLYVM_LOCAL_BOOT")
        if env and isinstance(data, Mapping) and data.get("boot") is None:
            data = {**data, "boot": env}
        return data


def recipe_leftovers() -> list[str]:
    """What every registered recipe says a new VM would not have (``Recipe.leftovers``), for ``fresh`` hosts."""
    from polyvm.plugins import list_recipes

    return sorted({p for r in list_recipes().values() for p in r.leftovers})


def _mock_host(name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    disks = inputs.get("disks") or []
    return {"id": "pvm-1", "host_id": "pvm-1", "guest_ip": "198.19.0.6", "host_ip": "198.19.0.5",
            "host_key": f"{_MOCK_HOST_KEY} {inputs.get('hostname', name)}",
            "disk_devices": {d["name"]: f"/dev/loop{i}" for i, d in enumerate(disks)}}


class LocalBackend(Backend):
    name = "local"
    description = "host on this Linux machine: network namespace, in-memory overlay of /, own sshd (root)"
    capabilities = Capabilities(
        firewall="guest",
        egress="this machine only (own /30 link in 198.19.0.0/16, no route beyond it)",
        max_data_disks=16,
        public_ip=True,
        private_ip_only=True,
        host_key_at_creation=True,
        os_families=frozenset({HOST_FAMILY}) if _HOST_SUPPORTED else frozenset(),
        instance_type_override=False,
        image_id_override=False,
        regions=False,
        zones=False,
        durable_data_disks=False,
        load_balancer="HAProxy in its own network namespace",
        lb_protocols=frozenset({"tcp", "http"}),
        notes=("OS: this machine's own (detected from /etc/os-release"
               + (f"; here {HOST_FAMILY} {HOST_VERSION}" if _HOST_SUPPORTED else "; here none polyvm supports") + "). "
               "One address, reachable from this machine only, reported as public_ip and private_ip. "
               "Ingress is enforced by nftables inside the host (IPv4 link; IPv6 rules are loaded but the "
               "link has no IPv6 addresses). cpus/memory_gb are not enforced (hosts share this machine); "
               "root_disk_gb caps writes to the in-memory root. Data disks are sparse loop devices; "
               "tags are kept in the host's record."),
    )
    settings_model = LocalSettings
    egress_rules = frozenset({("all", None, None, "198.19.0.0/16")})
    mock_outputs = {HOST_TYPE: _mock_host,
                    LB_TYPE: lambda name, inputs: {"id": "pvlb-1", "lb_id": "pvlb-1", "address": "198.18.193.2"}}
    # The host holds its loop-device data disks; its own provider says which inputs need a new host.
    data_disk_types = frozenset({HOST_TYPE})
    # The dynamic providers' own diffs decide (backends/local/provider.py): LocalHostProvider.diff replaces
    # on REPLACING, LocalLoadBalancerProvider.diff on every input. Inputs are recorded as given (snake_case,
    # no camelCase translation for dynamic resources). tests/backends/test_local_replacements.py checks that
    # each name is a real input and that exactly these replace in the providers' diffs.
    replacements = (Replacement(HOST_TYPE, ("hostname", "ssh_user", "authorized_keys", "disks", "root_mb", "scrub",
                                            "state_dir", "boot"),
                                "backends/local/provider.py REPLACING (the local host provider's diff)"),
                    Replacement(LB_TYPE, ("fleet", "members", "state_dir"),
                                "backends/local/provider.py LocalLoadBalancerProvider.diff (every change replaces)"))

    def unsupported(self, spec: VmSpec) -> list[str]:
        out = super().unsupported(spec)
        if spec.image.family == HOST_FAMILY and spec.image.version != HOST_VERSION:
            out.append(f"image.version {spec.image.version!r} (local hosts run this machine's OS, "
                       f"{HOST_FAMILY} {HOST_VERSION})")
        return out

    # --- fleets: members behind HAProxy in its own network namespace (loadbalancer.py) ---------------------
    lb_module = "polyvm.backends.local.loadbalancer"
    fleet_component = "polyvm.backends.local.component:LocalFleet"

    def fleet_sources(self, fleet: Any, settings: BackendSettings) -> Any:
        from .loadbalancer import range_sources

        # The load balancer is made after its members (it links into their namespaces), so they admit
        # any local load balancer's block: only this machine's own load balancers have addresses there.
        return range_sources() if fleet.load_balancer is not None else None

    def create_host(self, spec: VmSpec, settings: BackendSettings, *, extra_authorized_keys: Sequence[str] = (),
                    labels: Mapping[str, str] | None = None) -> Any:
        """Start a host for ``spec`` now, without Pulumi (``polyvm sandbox``): the same inputs and engine call
        as the Pulumi resource. ``labels`` are added to the spec's tags. Returns the engine's host record."""
        assert isinstance(settings, LocalSettings)
        self.check(spec)
        props = m.host_props(spec, scrub=recipe_leftovers() if settings.fresh else (), boot=settings.boot)
        if extra_authorized_keys:
            props["authorized_keys"] = "\n".join([props["authorized_keys"], *extra_authorized_keys])
        props["tags"] = {**props["tags"], **dict(labels or {})}
        return start_host(props, settings.state_dir)

    def create(self, spec: VmSpec, settings: BackendSettings, opts: Any = None) -> Any:
        from .component import LocalVirtualMachine

        assert isinstance(settings, LocalSettings)
        return LocalVirtualMachine(spec, settings, opts)

    # --- reading a plan back (contract suite) ---------------------------------------------------------
    def _host(self, plan: Any) -> dict[str, Any]:
        (host,) = plan.by_type(HOST_TYPE)
        return host.inputs

    def planned_ingress(self, plan: Any) -> set:
        """What the nftables ruleset loaded in the host accepts (parsed back from the ruleset itself)."""
        return m.planned_ingress(self._host(plan))

    def planned_egress(self, plan: Any) -> set:
        self._host(plan)
        return set(self.egress_rules)

    def planned_disks(self, plan: Any) -> dict[str, int]:
        return {d["name"]: int(d["size_mb"]) // 1024 for d in self._host(plan).get("disks") or []}

    def planned_tags(self, plan: Any) -> dict[str, str]:
        return dict(self._host(plan).get("tags") or {})


def start_host(props: dict[str, Any], state_dir: str | None) -> Any:
    """Start the host ``props`` (:func:`mapping.host_props`) describe: the engine's host record. The Pulumi
    provider and :meth:`LocalBackend.create_host` both start hosts through here."""
    from .engine import Engine

    disks = list(props.get("disks") or [])
    boot = props.get("boot") or "direct"
    user_data = None
    if boot == "cloud-init":
        from polyvm.cloudinit import render_cloud_config

        def user_data(private: str, public: str) -> str:  # the renderer every cloud backend uses
            return render_cloud_config(props["hostname"], props["ssh_user"],
                                       str(props["authorized_keys"]).splitlines(), private, public)

    return Engine(state_dir or None).up(
        authorized_keys=props["authorized_keys"], name=props["hostname"], user=props.get("ssh_user"),
        disks_mb=[d["size_mb"] for d in disks], scrub=props.get("scrub") or (), firewall=props.get("firewall"),
        root_mb=props.get("root_mb"), labels=dict(props.get("tags") or {}), boot=boot, user_data=user_data)


def host_of(record: Any, spec: VmSpec) -> Any:
    """The :class:`polyvm.host.Host` of a local host record started for ``spec`` (the guest enforces the
    firewall: ``capabilities.firewall == "guest"``)."""
    from polyvm.host import Host

    return Host.from_spec(spec, address=record.guest_ip, host_key=record.host_key,
                          data_disk_devices=m.device_map(m.disks_mb(spec), record.disks),
                          guest_firewall=LocalBackend.capabilities.firewall == "guest", user=record.user,
                          labels=record.labels)


@hookimpl
def polyvm_register_backends(register):
    register(LocalBackend())


@hookimpl
def polyvm_register_commands(cli):
    from .cli import sandbox_group

    cli.add_command(sandbox_group)
