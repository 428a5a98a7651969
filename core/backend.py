"""The backend contract: what every backend declares and provides.

A backend maps a :class:`~polyvm.spec.VmSpec` to its cloud's resources as one Pulumi ComponentResource
(``polyvm:<backend>:VirtualMachine``) with the same outputs everywhere (:data:`OUTPUT_NAMES`). It
declares :class:`Capabilities`; :meth:`Backend.check` turns every spec option the backend cannot honour
into an :class:`~polyvm.errors.UnsupportedFeatureError` naming the backend and the option.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import MissingDependencyError, SpecError, UnsupportedFeatureError
from .spec import SUPPORTED_IMAGES, VmSpec, format_validation_error

if TYPE_CHECKING:
    import pulumi

    from .fleet import FleetSpec, LbSources
    from .plan import Plan

#: Outputs every backend's VirtualMachine component registers, with the same meaning everywhere.
OUTPUT_NAMES: tuple[str, ...] = (
    "public_ip",         # str | None: address to SSH to from outside (None without a public IP)
    "private_ip",        # str: address inside the cloud network
    "ssh_user",          # str: login user cloud-init created with the spec's key
    "host_key",          # str | None: "ssh-ed25519 AAAA…" when known at creation, else None (trust on first use)
    "data_disk_devices", # dict[str, str]: data disk name -> stable device path the guest sees
)

#: Outputs every backend's Fleet component (``polyvm:<backend>:Fleet``) registers.
FLEET_OUTPUT_NAMES: tuple[str, ...] = (
    "members",           # dict[str, dict]: member name -> that member's OUTPUT_NAMES outputs
    "lb_addresses",      # list[str]: the load balancer's public addresses ([] without one, or when only a DNS name)
    "lb_dns_name",       # str | None: the load balancer's DNS name where the cloud gives one (AWS), else None
)

#: One firewall rule in cloud-neutral form: (protocol, from_port, to_port, cidr). ``protocol`` is "tcp",
#: "udp", "icmp" or "all"; ports are None for icmp and "all". Used by the contract suite to compare what a
#: backend will enforce with what the spec asks (see :meth:`Backend.planned_ingress`).
FirewallRule = tuple[str, "int | None", "int | None", str]

#: Unrestricted outbound traffic, IPv4 and IPv6: the usual documented egress.
ALL_EGRESS: frozenset[FirewallRule] = frozenset({("all", None, None, "0.0.0.0/0"), ("all", None, None, "::/0")})


def spec_ingress_rules(spec: VmSpec) -> set[FirewallRule]:
    """The spec's ingress rules in :data:`FirewallRule` form, one per (rule, cidr)."""
    out: set[FirewallRule] = set()
    for rule in spec.ingress:
        for cidr in rule.cidrs:
            if rule.protocol == "icmp":
                out.add(("icmp", None, None, cidr))
            else:
                out.add((rule.protocol, rule.from_port, rule.to_port, cidr))
    return out


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Rendered as the capability matrix (``polyvm backends``, docs/backends.md)."""

    firewall: Literal["cloud", "guest"]
    """Where ingress rules are enforced: a cloud firewall resource, or nftables applied in the guest over SSH."""
    egress: str
    """What outbound traffic the backend allows, in words (shown in the matrix)."""
    max_data_disks: int
    public_ip: bool
    private_ip_only: bool
    """Whether a VM without a public IP (``public_ip: false``) is possible."""
    host_key_at_creation: bool
    """True when the backend injects a generated host key (cloud-init) so SSH is pinned from the first connection."""
    os_families: frozenset[str] = frozenset(SUPPORTED_IMAGES)
    protocols: frozenset[str] = frozenset({"tcp", "udp", "icmp"})
    ipv6_ingress: bool = True
    port_ranges: bool = True
    instance_type_override: bool = True
    image_id_override: bool = True
    regions: bool = True
    zones: bool = True
    tags: bool = True
    durable_data_disks: bool = True
    """Data disks outlive everyday changes of the VM (tags, ingress, login key, size, image, name) and are
    protected from deletion; False only for disposable hosts (the local sandbox), and then said in the matrix."""
    load_balancer: str = "none"
    """The load balancer a fleet gets (docs/fleets.md), in words; "none" when the backend refuses one."""
    lb_protocols: frozenset[str] = frozenset()
    """Listener protocols of that load balancer (tcp, http, https); empty without one."""
    fleet_scaling: bool = False
    """Whether a fleet's ``scaling`` (min/max) is honoured; False: ``count`` only, scaling refused."""
    notes: str = ""

    # Row labels for the matrix, in order.
    MATRIX_ROWS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("firewall", "firewall"),
        ("egress", "egress"),
        ("max_data_disks", "data disks (max)"),
        ("public_ip", "public IP"),
        ("private_ip_only", "private-only VM"),
        ("host_key_at_creation", "host key at creation"),
        ("os_families", "OS families"),
        ("protocols", "protocols"),
        ("ipv6_ingress", "IPv6 ingress"),
        ("port_ranges", "port ranges"),
        ("instance_type_override", "instance type override"),
        ("image_id_override", "image id override"),
        ("regions", "region"),
        ("zones", "zone"),
        ("tags", "tags"),
        ("durable_data_disks", "data disks survive VM changes"),
        ("load_balancer", "fleet load balancer"),
        ("lb_protocols", "LB listener protocols"),
        ("fleet_scaling", "fleet scaling (min/max)"),
    )

    def row(self) -> dict[str, str]:
        out = {}
        for attr, label in self.MATRIX_ROWS:
            v = getattr(self, attr)
            if isinstance(v, bool):
                v = "yes" if v else "no"
            elif isinstance(v, frozenset):
                v = ", ".join(sorted(v)) or "none"
            out[label] = str(v)
        return out


def pick_size(spec: VmSpec, backend: str, table: "Sequence[tuple[Any, ...]]", *, what: str,
              fits: "Callable[[tuple[Any, ...]], bool] | None" = None, needs: str = "") -> str:
    """``size.instance_type.<backend>`` if given, else the first (cheapest) row ``(name, vCPUs, GiB, ...)``
    of ``table`` with at least the asked cpus and memory for which ``fits(row)`` holds (``needs`` says
    what ``fits`` asks, for the error)."""
    if backend in spec.size.instance_type:
        return spec.size.instance_type[backend]
    for row in table:
        if row[1] >= spec.size.cpus and row[2] >= spec.size.memory_gb and (fits is None or fits(row)):
            return str(row[0])
    raise SpecError([f"size: no {what} in polyvm's table has {spec.size.cpus} vCPUs, {spec.size.memory_gb} GiB"
                     f"{needs}; set size.instance_type.{backend}"])


def root_disk_gb(spec: VmSpec, minimum: int) -> int:
    """The root disk size to ask the cloud for: the spec's when it sets one (a smaller one than the
    image's ``minimum`` is refused by :func:`root_disk_limit`), else at least the image's minimum."""
    if "root_disk_gb" in spec.model_fields_set:
        return spec.root_disk_gb
    return max(spec.root_disk_gb, minimum)


def root_disk_limit(minimum: Callable[[VmSpec], int | None], source: str) -> "CloudLimit":
    """A limit refusing an explicit root_disk_gb below the image's own disk (``minimum(spec)``; None
    when unknown, e.g. a custom image)."""
    def check(spec: VmSpec) -> list[str]:
        least = minimum(spec)
        if least and "root_disk_gb" in spec.model_fields_set and spec.root_disk_gb < least:
            return [f"root_disk_gb {spec.root_disk_gb} (the {spec.image.family} {spec.image.version} image's disk "
                    f"is {least} GB; the cloud refuses a smaller one)"]
        return []

    return CloudLimit("root_disk_gb", "at least the image's own disk size", source, check)


@dataclass(frozen=True)
class CloudLimit:
    """One rule the cloud itself enforces on what a spec may ask, checked before anything is declared.

    ``check`` returns the spec's violations as 'field (why)' strings naming the field and the limit;
    ``source`` is where the cloud says so (its documentation or its provider's source), shown in
    docs/backends.md. A backend lists its limits in :attr:`Backend.limits`.
    """

    field: str
    rule: str
    source: str
    check: Callable[[VmSpec], list[str]]


@dataclass(frozen=True)
class Replacement:
    """Which inputs of one resource type force a new resource when they change (ForceNew in the
    provider schema), as recorded input paths ("ami", "clone.templateUuid"; a path through a list
    applies to each item). ``source`` cites the provider schema. ``polyvm plan --against`` reads these."""

    type: str
    inputs: tuple[str, ...]
    source: str


#: Replacement rules of the resources core itself declares (the generated host key, pulumi-tls).
CORE_REPLACEMENTS: tuple[Replacement, ...] = (Replacement(
    "tls:index/privateKey:PrivateKey", ("algorithm", "ecdsaCurve", "rsaBits"),
    "hashicorp/terraform-provider-tls internal/provider/resource_private_key.go (RequiresReplace on every attribute)"),)


class BackendSettings(BaseModel):
    """Per-backend settings from Pulumi config ``polyvm:<backend>``; backends subclass this."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protect_data_disks: bool = Field(default=True, description=(
        "Data disks (or the VM holding them) get Pulumi's protect and retain_on_delete: no `pulumi up` or "
        "`pulumi destroy` deletes them. false only when you mean to throw the data away."))
    renamed: dict[str, str] = Field(default_factory=dict, description=(
        "New VM name -> its previous name: the VM's resources keep their identity (Pulumi aliases), so "
        "a rename never recreates its data disks."))

    @field_validator("renamed")
    @classmethod
    def _renamed(cls, v: dict[str, str]) -> dict[str, str]:
        loops = sorted(k for k, old in v.items() if k == old)
        if loops:
            raise ValueError(f"a VM cannot be renamed to itself: {', '.join(loops)}")
        return v


class Backend(ABC):
    """Base class of every backend (built-in or third-party).

    Subclasses set ``name``, ``description``, ``capabilities``, ``sdk_modules``/``extra`` and implement
    :meth:`create`. ``settings_model`` validates ``polyvm:<name>`` config.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]
    settings_model: ClassVar[type[BackendSettings]] = BackendSettings
    #: Python modules the backend needs at declare time, and the extra that installs them.
    sdk_modules: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    #: For offline plans and contract tests under Pulumi mocks: resource type token -> function
    #: (name, inputs) -> outputs the cloud would add (may include "id"); and invoke token -> result.
    mock_outputs: ClassVar[dict[str, Any]] = {}
    mock_calls: ClassVar[dict[str, Any]] = {}
    #: The outbound rules the backend applies, in FirewallRule form (``capabilities.egress`` says it in
    #: words). The contract suite checks that :meth:`planned_egress` equals this.
    egress_rules: ClassVar[frozenset[FirewallRule]] = ALL_EGRESS
    #: The rules the cloud enforces on a spec (checked by :meth:`unsupported`, documented with sources).
    limits: ClassVar[tuple[CloudLimit, ...]] = ()
    #: Per resource type, the inputs that force its replacement (from the provider schema). The contract
    #: suite requires an entry for every resource type the backend declares.
    replacements: ClassVar[tuple[Replacement, ...]] = ()
    #: Resource types whose replacement or deletion loses a data disk's contents: the disks themselves,
    #: or the VM when the disks live inside it (see :meth:`holds_data`).
    data_disk_types: ClassVar[frozenset[str]] = frozenset()
    #: For the contract's "a newer image is published" check: invoke token -> result, overriding
    #: mock_calls as the image lookup would answer after a newer image appeared. Empty when no input
    #: depends on a lookup that can change (image families and slugs resolved by the cloud).
    newer_image_calls: ClassVar[dict[str, Any]] = {}
    #: Settings a fleet with a load balancer needs (setting name, why), checked by the default
    #: :meth:`fleet_settings_problems` (e.g. the network the members share).
    lb_settings: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Dotted path of the backend's pure load-balancer mapping, with ``problems(fleet)`` (what the cloud
    #: refuses) and ``sources(fleet)`` (an LbSources), e.g. "polyvm.backends.gcp.lb". None: no load balancer.
    lb_module: ClassVar[str | None] = None
    #: "module:Class" of the backend's Fleet component (a polyvm.fleet_component.Fleet subclass that
    #: declares the load balancer). None: the members only.
    fleet_component: ClassVar[str | None] = None
    #: Settings a new project's ``Pulumi.<name>.yaml`` starts from (``polyvm new``): values for the
    #: required fields and the ones a first VM needs (a region), as a user would write them. The
    #: scaffold test plans every backend's generated stack file with them.
    example_settings: ClassVar[dict[str, Any]] = {}
    #: Provider config the same stack file sets outside the polyvm namespace (``{"aws:region": ...}``).
    example_provider_config: ClassVar[dict[str, str]] = {}

    # --- validation ----------------------------------------------------------------------------------
    def unsupported(self, spec: VmSpec) -> list[str]:
        """Every option in ``spec`` this backend cannot honour, as 'path (why)' strings. Generic checks
        come from the capabilities; override and extend for backend-specific limits."""
        caps = self.capabilities
        out: list[str] = []
        if spec.image.family not in caps.os_families:
            out.append(f"image.family {spec.image.family!r} (supported: {', '.join(sorted(caps.os_families))})")
        if len(spec.data_disks) > caps.max_data_disks:
            out.append(f"data_disks ({len(spec.data_disks)} asked, at most {caps.max_data_disks})")
        if spec.public_ip and not caps.public_ip:
            out.append("public_ip: true (this backend gives no public address)")
        if not spec.public_ip and not caps.private_ip_only:
            out.append("public_ip: false (every VM of this backend gets a public address)")
        for i, rule in enumerate(spec.ingress):
            if rule.protocol not in caps.protocols:
                out.append(f"ingress[{i}].protocol {rule.protocol!r} "
                           f"(supported: {', '.join(sorted(caps.protocols))})")
            if rule.ipv6_cidrs and not caps.ipv6_ingress:
                out.append(f"ingress[{i}].cidrs IPv6 {', '.join(rule.ipv6_cidrs)}")
            if isinstance(rule.port, tuple) and not caps.port_ranges:
                out.append(f"ingress[{i}].port range {rule.port[0]}-{rule.port[1]}")
        if self.name in spec.size.instance_type and not caps.instance_type_override:
            out.append(f"size.instance_type.{self.name}")
        if self.name in spec.image.image_id and not caps.image_id_override:
            out.append(f"image.image_id.{self.name}")
        if spec.region and not caps.regions:
            out.append(f"region {spec.region!r}")
        if spec.zone and not caps.zones:
            out.append(f"zone {spec.zone!r}")
        if spec.tags and not caps.tags:
            out.append("tags")
        for limit in self.limits:
            out += limit.check(spec)
        return out

    def check(self, spec: VmSpec) -> None:
        """Raise UnsupportedFeatureError listing every option this backend cannot honour."""
        problems = self.unsupported(spec)
        if problems:
            raise UnsupportedFeatureError(self.name, problems)

    def settings_problems(self, spec: VmSpec, settings: BackendSettings) -> list[str]:
        """Problems only visible with both the spec and the settings (e.g. no location in either), as
        'path: why' strings. Checked for every spec before anything is declared; override as needed."""
        return []

    def parse_settings(self, data: Mapping[str, Any] | None) -> BackendSettings:
        """Validate ``polyvm:<name>`` config into this backend's settings model (all problems at once)."""
        try:
            return self.settings_model.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, prefix=f"polyvm:{self.name}"),
                            source=f"Pulumi config polyvm:{self.name}") from None

    # --- SDKs ------------------------------------------------------------------------------------------
    def require_sdk(self) -> dict[str, ModuleType]:
        """Import the backend's SDK modules, or fail with a one-line install hint."""
        mods = {}
        for mod in self.sdk_modules:
            try:
                mods[mod] = importlib.import_module(mod)
            except ImportError:
                raise MissingDependencyError(f"the {self.name} backend", self.extra or self.name, mod) from None
        return mods

    # --- declaring -------------------------------------------------------------------------------------
    @abstractmethod
    def create(self, spec: VmSpec, settings: BackendSettings,
               opts: "pulumi.ResourceOptions | None" = None) -> "pulumi.ComponentResource":
        """Declare the VM as one ComponentResource ``polyvm:<name>:VirtualMachine`` with OUTPUT_NAMES outputs."""

    def declare(self, spec: VmSpec, settings: Mapping[str, Any] | BackendSettings | None = None,
                opts: "pulumi.ResourceOptions | None" = None) -> "pulumi.ComponentResource":
        """Validate everything, then create. Nothing is declared when anything is wrong."""
        self.check(spec)
        if not isinstance(settings, BackendSettings):
            settings = self.parse_settings(settings)
        problems = self.settings_problems(spec, settings)
        if problems:
            raise SpecError(problems, source=f"Pulumi config polyvm:{self.name}")
        self.require_sdk()
        return self.create(spec, settings, opts)

    # --- fleets (docs/fleets.md) -----------------------------------------------------------------------
    def fleet_problems(self, fleet: "FleetSpec") -> list[str]:
        """What of ``fleet`` itself (its load balancer, scaling, zones) this backend cannot honour, as
        'path (why)' strings: :attr:`lb_module`'s ``problems(fleet)``; without one, a load balancer is
        refused. A fleet without load balancer is N members everywhere; scaling is refused."""
        out = []
        if fleet.load_balancer is not None:
            if self.lb_module is None:
                out.append(f"load_balancer (backend {self.name!r} declares no load balancer; remove "
                           "load_balancer for N members without one)")
            else:
                out += importlib.import_module(self.lb_module).problems(fleet)
        if fleet.scaling is not None and not any(p.startswith("scaling") for p in out):
            out.append("scaling (this backend's fleets do not scale; use count)")
        return out

    def fleet_settings_problems(self, fleet: "FleetSpec", settings: BackendSettings) -> list[str]:
        """What the settings lack for this fleet (e.g. the network its load balancer goes in), as
        'polyvm:<backend>.<field>: why' strings. Default: each unset setting in :attr:`lb_settings`."""
        if fleet.load_balancer is None:
            return []
        return [f"polyvm:{self.name}.{k}: a fleet with a load balancer needs it ({why})"
                for k, why in self.lb_settings if not getattr(settings, k, None)]

    def fleet_sources(self, fleet: "FleetSpec", settings: BackendSettings) -> "LbSources | None":
        """Where this backend's load balancer reaches the members from (:class:`~polyvm.fleet.LbSources`),
        for the members' firewall; None without a load balancer. Default: :attr:`lb_module`'s
        ``sources(fleet)``. Called only when the settings are valid."""
        if fleet.load_balancer is None or self.lb_module is None:
            return None
        return importlib.import_module(self.lb_module).sources(fleet)

    def fleet_check(self, fleet: "FleetSpec", settings: Mapping[str, Any] | BackendSettings | None = None,
                    *, check_settings: bool = True) -> tuple[list[str], BackendSettings | None]:
        """Every problem of declaring ``fleet`` here, at once, as lines naming the backend or the setting:
        the fleet's own (:meth:`fleet_problems`), the settings', and each member spec's (:meth:`unsupported`,
        :meth:`settings_problems`; one line for a problem every member shares). Returns (problems, parsed
        settings or None when they are invalid). ``check_settings=False``: the spec alone (``polyvm
        validate --backend`` without ``--settings``)."""
        from pydantic import ValidationError as _VE

        from .fleet import member_problems

        problems = [f"backend {self.name!r} cannot honour {p}" for p in self.fleet_problems(fleet)]
        parsed: BackendSettings | None = None
        if isinstance(settings, BackendSettings):
            parsed = settings
        elif check_settings:
            try:
                parsed = self.parse_settings(settings)
            except SpecError as exc:
                problems += exc.problems
        if parsed is None and check_settings:
            return problems, None
        sources = None
        if parsed is not None:
            problems += self.fleet_settings_problems(fleet, parsed)
            if fleet.load_balancer is not None and not problems:
                sources = self.fleet_sources(fleet, parsed)
        try:
            members = fleet.member_specs(sources)
        except _VE:
            return problems + member_problems(fleet, sources), parsed
        by_problem: dict[str, list[str]] = {}
        for spec in members:
            for p in ([f"backend {self.name!r} cannot honour {q}" for q in self.unsupported(spec)]
                      + (self.settings_problems(spec, parsed) if parsed is not None else [])):
                by_problem.setdefault(p, []).append(spec.name)
        for p, names in by_problem.items():
            who = "members" if len(names) == len(members) else ", ".join(names)
            problems.append(f"{who}: {p}")
        return problems, parsed

    def create_fleet(self, fleet: "FleetSpec", settings: BackendSettings,
                     opts: "pulumi.ResourceOptions | None" = None) -> "pulumi.ComponentResource":
        """Declare the fleet as one ComponentResource ``polyvm:<name>:Fleet`` (FLEET_OUTPUT_NAMES outputs)
        with each member a VirtualMachine child: :attr:`fleet_component`, or the members only."""
        from .fleet_component import Fleet

        cls = Fleet
        if self.fleet_component is not None:
            module, _, attr = self.fleet_component.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        return cls(self, fleet, settings, opts)

    def declare_fleet(self, fleet: "FleetSpec", settings: Mapping[str, Any] | BackendSettings | None = None,
                      opts: "pulumi.ResourceOptions | None" = None) -> "pulumi.ComponentResource":
        """Validate everything (:meth:`fleet_check`), then :meth:`create_fleet`. Nothing is declared when
        anything is wrong: a SpecError lists every problem."""
        problems, parsed = self.fleet_check(fleet, settings)
        if problems:
            raise SpecError(problems, source=f"fleet {fleet.name}")
        assert parsed is not None
        self.require_sdk()
        return self.create_fleet(fleet, parsed, opts)

    # --- reading an offline plan (the contract suite, polyvm.testing) ------------------------------------
    # Each takes the Plan of ONE VM (polyvm.plan.plan(backend, [spec])) and reads back what the backend
    # declared, so the contract can compare it with the spec. Guest-firewall backends return the rules
    # they will apply inside the guest.
    def planned_ingress(self, plan: "Plan") -> set[FirewallRule]:
        """Inbound traffic the planned VM accepts, one FirewallRule per (protocol, ports, cidr)."""
        raise NotImplementedError(f"backend {self.name!r} does not implement planned_ingress")

    def planned_egress(self, plan: "Plan") -> set[FirewallRule]:
        """Outbound traffic the planned VM may send, in FirewallRule form."""
        raise NotImplementedError(f"backend {self.name!r} does not implement planned_egress")

    def planned_disks(self, plan: "Plan") -> dict[str, int]:
        """The planned data disks (root disk excluded): spec disk name -> size in GB."""
        raise NotImplementedError(f"backend {self.name!r} does not implement planned_disks")

    def planned_tags(self, plan: "Plan") -> dict[str, str]:
        """Tags (labels) on the planned VM resource itself, as key -> value."""
        raise NotImplementedError(f"backend {self.name!r} does not implement planned_tags")

    def replacement_inputs(self, typ: str) -> tuple[str, ...] | None:
        """The inputs forcing replacement of resource type ``typ``, or None when the backend declares none."""
        for rep in (*self.replacements, *CORE_REPLACEMENTS):
            if rep.type == typ:
                return rep.inputs
        return None

    def holds_data(self, typ: str, inputs: Mapping[str, Any]) -> bool:
        """Whether the resource (type, recorded inputs) is or holds a data disk. Default: its type is
        in :attr:`data_disk_types`; a backend whose VM holds its disks overrides this to look at inputs."""
        return typ in self.data_disk_types

    def doc_tables(self) -> dict[str, tuple[tuple[str, ...], list[tuple[Any, ...]]]]:
        """Reference tables for docs/backends.md (e.g. the size and image tables the mapping uses):
        title -> (column headers, rows). Override to document a backend's choices."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "capabilities": dataclasses.asdict(self.capabilities)}
