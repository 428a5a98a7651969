"""FleetSpec: N identical VMs, optionally behind a load balancer, as one validated description.

A fleet is a :class:`~polyvm.spec.VmSpec` (without a name: members are named ``<fleet>-0`` …
``<fleet>-<count-1>``, stable across changes), a ``count``, optional ``zones`` the members are spread
over, and an optional ``load_balancer``: listeners, one health check, the CIDRs allowed to reach it (the
same world-open rules as a VM's ingress: :class:`~polyvm.spec.IngressRule` checks them) and whether
members keep public addresses.

Members' firewalls admit the load balancer and nothing more: :meth:`FleetSpec.member_specs` adds, to the
VM's own ingress, the target ports from where the backend's load balancer sends traffic and the health
check port from where it probes (:class:`LbSources`, which each backend's ``lb.py`` states with its
sources cited). Like VmSpec, every problem is reported at once with its field path. Schema: docs/fleets.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, Sequence

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import ConfigError, SpecError
from .spec import Cidr, IngressRule, VmSpec, _Model, format_validation_error, load_yaml

_FLEET_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,50}[a-z0-9])?$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")

#: Most members one fleet may have. Every backend's own limit is lower or equal and is checked in its
#: lb.py (e.g. AWS: targets per target group).
MAX_COUNT = 100


class Listener(_Model):
    """One port the load balancer accepts connections on, and the member port it forwards them to."""

    protocol: Literal["tcp", "http", "https"] = "tcp"
    port: int = Field(ge=1, le=65535)
    target_port: int | None = Field(default=None, ge=1, le=65535,
                                    description="Port on the members; default: the same as port.")
    certificate: str | None = Field(
        default=None, description="https only: the backend's certificate reference (AWS ACM ARN, "
        "DigitalOcean certificate name); TLS ends at the load balancer.")

    @property
    def member_port(self) -> int:
        return self.target_port if self.target_port is not None else self.port

    @model_validator(mode="after")
    def _certificate(self) -> "Listener":
        if self.protocol == "https" and not self.certificate:
            raise ValueError("https listeners need a certificate (the backend's certificate reference)")
        if self.protocol != "https" and self.certificate:
            raise ValueError(f"certificate is for https listeners only, not {self.protocol}")
        return self


class HealthCheck(_Model):
    """How the load balancer decides a member may receive traffic."""

    protocol: Literal["tcp", "http", "https"] = "tcp"
    port: int | None = Field(default=None, ge=1, le=65535,
                             description="Member port probed; default: the first listener's target port.")
    path: str | None = Field(default=None, description="http/https only; default '/'.")
    interval_s: int = Field(default=10, ge=1, le=300)
    timeout_s: int = Field(default=5, ge=1, le=300)
    healthy_threshold: int = Field(default=3, ge=1, le=10)
    unhealthy_threshold: int = Field(default=3, ge=1, le=10)

    @property
    def request_path(self) -> str | None:
        if self.protocol == "tcp":
            return None
        return self.path or "/"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not _PATH_RE.match(v):
            raise ValueError(f"{v!r} must be an absolute URL path like /healthz (no spaces)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "HealthCheck":
        problems = []
        if self.protocol == "tcp" and self.path is not None:
            problems.append("path is for http/https health checks only")
        if self.timeout_s > self.interval_s:
            problems.append(f"timeout_s ({self.timeout_s}) must not exceed interval_s ({self.interval_s})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def range_problems(self, limits: Mapping[str, tuple[int, int]], who: str) -> list[str]:
        """'load_balancer.health_check.<field> <value> (<who> takes lo-hi)' for each field outside its
        backend's limits (``limits``: field name -> inclusive range)."""
        out = []
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                out.append(f"load_balancer.health_check.{name} {value} ({who} takes {lo}-{hi})")
        return out

    def detection_bound_s(self) -> int:
        """Seconds after which a member that stopped answering is out: unhealthy_threshold probes, each
        at most interval_s apart, the last one waiting timeout_s."""
        return self.unhealthy_threshold * self.interval_s + self.timeout_s


class LoadBalancerSpec(_Model):
    """The load balancer in front of a fleet."""

    # allowed_cidrs and allow_public come first: the listeners' validator reads them.
    allowed_cidrs: list[Cidr] = Field(min_length=1, description="Who may connect to the listeners.")
    allow_public: bool = Field(
        default=False, description="Required to forward SSH or a database port from 0.0.0.0/0 or ::/0.")
    listeners: list[Listener] = Field(min_length=1)
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    members_public_ip: bool | None = Field(
        default=None, description="Whether members keep their own public address; default: the vm's "
        "public_ip.")

    @field_validator("listeners")
    @classmethod
    def _listeners(cls, listeners: list[Listener], info: ValidationInfo) -> list[Listener]:
        ports = [ln.port for ln in listeners]
        dup = sorted({p for p in ports if ports.count(p) > 1})
        problems = [f"listener ports must be unique; repeated: {', '.join(map(str, dup))}"] if dup else []
        # The same rules as a VM's ingress, applied to what the listeners expose on the members:
        # IngressRule itself refuses SSH or a database port open to the world without allow_public.
        cidrs = info.data.get("allowed_cidrs")
        if cidrs:
            for i, ln in enumerate(listeners):
                try:
                    IngressRule(protocol="tcp", port=ln.member_port, cidrs=list(cidrs),
                                allow_public=bool(info.data.get("allow_public")))
                except ValidationError as exc:
                    for err in exc.errors(include_url=False):
                        msg = err["msg"].removeprefix("Value error, ").replace(
                            "allow_public: true on this rule", "load_balancer.allow_public: true")
                        problems.append(f"[{i}] (target port {ln.member_port}): {msg}")
        if problems:
            raise ValueError("; ".join(problems))
        return listeners

    def protocol_problems(self, allowed: set[str], why: str) -> list[str]:
        """'load_balancer.listeners[i].protocol <p> (<why>)' for each listener whose protocol a backend
        does not offer."""
        return [f"load_balancer.listeners[{i}].protocol {ln.protocol} ({why})"
                for i, ln in enumerate(self.listeners) if ln.protocol not in allowed]

    @property
    def health_port(self) -> int:
        return self.health_check.port or self.listeners[0].member_port

    @property
    def target_ports(self) -> list[int]:
        """Member ports the listeners forward to, in listener order, without repeats."""
        out: list[int] = []
        for ln in self.listeners:
            if ln.member_port not in out:
                out.append(ln.member_port)
        return out


class Scaling(_Model):
    """Autoscaling bounds, for backends whose fleets scale (none does yet; each lb.py says so)."""

    min: int = Field(ge=0, le=MAX_COUNT)
    max: int = Field(ge=1, le=MAX_COUNT)

    @model_validator(mode="after")
    def _order(self) -> "Scaling":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


@dataclass(frozen=True)
class LbSources:
    """Where a backend's load balancer reaches the members from, as the members' firewall sees it.

    ``traffic``: source CIDRs of forwarded connections (the load balancer's own addresses, or the clients'
    when it preserves them, as passthrough load balancers do). ``health_checks``: source CIDRs of the
    probes. Empty when the backend admits its load balancer another way (e.g. DigitalOcean's firewall
    ``source_load_balancer_uids``)."""

    traffic: tuple[str, ...] = ()
    health_checks: tuple[str, ...] = ()
    description: str = "load balancer"


class FleetSpec(_Model):
    """N identical VMs with stable names, optionally behind a load balancer."""

    name: str
    count: int = Field(ge=1, le=MAX_COUNT)
    vm: VmSpec
    zones: list[str] = Field(default_factory=list,
                             description="Members are spread over these zones, round robin (member i in "
                             "zones[i % len(zones)]).")
    scaling: Scaling | None = None
    load_balancer: LoadBalancerSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _FLEET_NAME_RE.match(v):
            raise ValueError(f"{v!r} must be 1-52 lowercase letters, digits and '-', starting with a letter "
                             "(members are named <name>-<index> and become hostnames)")
        return v

    @field_validator("vm", mode="before")
    @classmethod
    def _vm_name(cls, v: Any, info: ValidationInfo) -> Any:
        # The VM part has no name of its own: members are named after the fleet. A valid placeholder
        # lets the rest of the VM spec be checked even when the fleet name is bad.
        if isinstance(v, Mapping):
            if "name" in v:
                raise ValueError("has no name of its own (members are named <fleet name>-<index>); "
                                 "remove vm.name")
            v = {**v, "name": info.data.get("name", "member")}
        return v

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[str]) -> list[str]:
        dup = sorted({z for z in v if v.count(z) > 1})
        if dup:
            raise ValueError(f"zones must be unique; repeated: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "FleetSpec":
        problems = []
        if self.zones and self.vm.zone:
            problems.append("vm.zone and zones are exclusive: members are spread over zones")
        if self.scaling and not self.scaling.min <= self.count <= self.scaling.max:
            problems.append(f"count ({self.count}) must lie within scaling min-max "
                            f"({self.scaling.min}-{self.scaling.max})")
        lb = self.load_balancer
        if lb is not None and lb.members_public_ip and not self.vm.public_ip:
            problems.append("load_balancer.members_public_ip: true contradicts vm.public_ip: false")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_data(self) -> dict[str, Any]:
        """The fleet as plain data that :func:`parse_fleet` reads back to an equal FleetSpec (JSON types,
        no vm.name: members are named after the fleet)."""
        data = self.model_dump(mode="json", exclude_unset=True)
        data["vm"].pop("name", None)
        return data

    # --- members -------------------------------------------------------------------------------------
    @property
    def member_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.count)]

    @property
    def members_public_ip(self) -> bool:
        lb = self.load_balancer
        if lb is not None and lb.members_public_ip is not None:
            return lb.members_public_ip
        return self.vm.public_ip

    def lb_ingress(self, sources: LbSources) -> list[IngressRule]:
        """The ingress rules members need for the load balancer: target ports from ``sources.traffic``,
        the health-check port from ``sources.health_checks``; nothing else."""
        lb = self.load_balancer
        if lb is None:
            return []
        rules = []
        if sources.traffic:
            for port in lb.target_ports:
                rules.append(IngressRule(protocol="tcp", port=port, cidrs=list(sources.traffic),
                                         allow_public=lb.allow_public,
                                         description=f"{sources.description} traffic"))
        covered = lb.health_port in lb.target_ports and set(sources.health_checks) <= set(sources.traffic)
        if sources.health_checks and not covered:
            rules.append(IngressRule(protocol="tcp", port=lb.health_port, cidrs=list(sources.health_checks),
                                     description=f"{sources.description} health checks"))
        return rules

    def member_specs(self, sources: LbSources | None = None) -> list[VmSpec]:
        """One VmSpec per member, in index order: named ``<fleet>-<i>``, in its zone, with the VM's own
        ingress plus :meth:`lb_ingress` (when there is a load balancer and ``sources``), tagged with the
        fleet's name so backends can group them."""
        extra = self.lb_ingress(sources) if sources is not None else []
        # Only what the fleet's vm sets (exclude_unset): defaults stay defaults in the members, so rules
        # that look at what a spec sets explicitly (root_disk_gb) see the member as the user wrote it.
        base = self.vm.model_dump(exclude_unset=True)
        out = []
        for i, name in enumerate(self.member_names):
            data = dict(base, name=name, public_ip=self.members_public_ip,
                        ingress=[r.model_dump() for r in self.vm.ingress] + [r.model_dump() for r in extra],
                        tags={**self.vm.tags, "polyvm-fleet": self.name})
            if self.zones:
                data["zone"] = self.zones[i % len(self.zones)]
            out.append(VmSpec.model_validate(data))
        return out


class ConfigSource(Protocol):
    """What :func:`fleet_from_config` needs of a ``pulumi.Config`` (duck-typed: core imports no Pulumi here)."""

    def get(self, key: str) -> str | None: ...

    def get_object(self, key: str) -> Any: ...


def parse_fleet(data: Mapping[str, Any] | None, *, source: str | None = None, prefix: str = "") -> FleetSpec:
    """Validate a plain mapping (YAML or Pulumi config) into a FleetSpec, or raise SpecError listing all
    problems with their field paths (``load_balancer.listeners[0].port: ...``)."""
    if not isinstance(data, Mapping):
        where = f"{prefix}: " if prefix else "(fleet): "
        raise SpecError([f"{where}expected a mapping of fields, got {type(data).__name__}"], source=source)
    try:
        return FleetSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, prefix=prefix), source=source) from None


def load_fleet_file(path: str | Path) -> FleetSpec:
    """Load a YAML file holding one fleet spec (a mapping with ``count`` and ``vm``)."""
    return parse_fleet(load_yaml(path), source=str(path))


def is_fleet_document(data: Any) -> bool:
    """Whether a loaded YAML document is a fleet spec rather than a VM spec (it has ``count`` and ``vm``)."""
    return isinstance(data, Mapping) and "vm" in data and "count" in data


def load_document(path: str | Path) -> "list[VmSpec] | FleetSpec":
    """A spec file as ``polyvm plan`` and ``polyvm validate`` read it: a fleet (a mapping with ``count``
    and ``vm``) as a FleetSpec, else one VM spec or ``vms: [...]`` as a list of VmSpec."""
    from .spec import load_spec_file

    data = load_yaml(path)
    if is_fleet_document(data):
        return parse_fleet(data, source=str(path))
    return load_spec_file(path)


def fleet_from_config(cfg: ConfigSource) -> tuple[str, FleetSpec, Mapping[str, Any]]:
    """(backend name, fleet, backend settings) from the ``polyvm`` Pulumi config namespace
    (``polyvm:backend``, ``polyvm:fleet``, ``polyvm:<backend>``); all problems at once."""
    backend = cfg.get("backend")
    if not backend:
        raise ConfigError("Pulumi config polyvm:backend is not set: pulumi config set polyvm:backend aws")
    data = cfg.get_object("fleet")
    if data is None:
        raise ConfigError("Pulumi config has no polyvm:fleet; see docs/fleets.md")
    fleet = parse_fleet(data, source="Pulumi config", prefix="polyvm:fleet")
    return backend, fleet, cfg.get_object(backend) or {}


def member_problems(fleet: FleetSpec, sources: LbSources | None = None) -> list[str]:
    """Problems of the derived member specs (e.g. a source range the world-open rules refuse), as
    'member: path: why' lines; empty when every member spec is valid."""
    try:
        fleet.member_specs(sources)
    except ValidationError as exc:
        return format_validation_error(exc, prefix="members")
    return []


__all__: Sequence[str] = ("FleetSpec", "HealthCheck", "LbSources", "Listener", "LoadBalancerSpec", "Scaling",
                          "fleet_from_config", "is_fleet_document", "load_document", "load_fleet_file", "member_problems",
                          "parse_fleet")
