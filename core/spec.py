"""VmSpec: one cloud-neutral, validated description of a VM.

Validation happens here, before any cloud is touched, and reports every problem at once with its field
path (``ingress[1].cidrs[0]: '10.0.0.0/33' is not a CIDR``). The schema is documented in docs/spec.md.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, SpecError

#: OS families and the versions polyvm knows how to boot and provision.
SUPPORTED_IMAGES: dict[str, tuple[str, ...]] = {
    "ubuntu": ("22.04", "24.04"),
    "debian": ("12",),
    "amazon-linux": ("2023",),
    "rhel": ("9",),  # the RHEL family: RHEL, Rocky, AlmaLinux (which one is a backend image choice)
}

#: Named sizes, for people who do not want to think in cpus and GiB.
NAMED_SIZES: dict[str, tuple[int, float]] = {
    "nano": (1, 0.5),
    "micro": (1, 1),
    "small": (2, 2),
    "medium": (2, 4),
    "large": (2, 8),
    "xlarge": (4, 16),
    "2xlarge": (8, 32),
}

#: Ports of well-known database servers; opening one of them to the world needs allow_public.
DATABASE_PORTS: dict[int, str] = {
    1433: "SQL Server",
    1521: "Oracle",
    3306: "MySQL",
    5432: "PostgreSQL",
    5984: "CouchDB",
    6379: "Redis",
    7000: "Cassandra",
    9042: "Cassandra",
    9200: "Elasticsearch",
    11211: "memcached",
    26257: "CockroachDB",
    27017: "MongoDB",
}
SSH_PORT = 22

_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_DISK_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_.:/=+@-]{1,127}$")
_PUBKEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_RESERVED_USERS = {"root", "daemon", "bin", "sys", "nobody", "sshd"}

# Size limits: refused on the list's length before any element is validated (a 200,000-rule list is not
# checked rule by rule). Each is a cap no built-in cloud needs more than, or says where it is stricter; the
# clouds' own, tighter limits are the backends' (CloudLimit, capabilities). Sources, as checked:
#: Ingress rules per VM. Azure: "NSG rules per NSG | 1,000" ("Azure subscription and service limits" >
#: Networking limits, https://learn.microsoft.com/azure/azure-resource-manager/management/azure-subscription-service-limits,
#: include file MicrosoftDocs/azure-docs includes/azure-virtual-network-limits.md). AWS: "Inbound or outbound
#: rules per security group" 60 by default, "This quota multiplied by the quota for security groups per
#: network interface cannot exceed 1,000" ("Amazon VPC quotas" > Security groups,
#: https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html#vpc-limits-security-groups); each
#: CIDR of a rule counts as a rule there. GCP and DigitalOcean: no per-VM or per-firewall rule count was
#: found in their documentation (searched: "GCP firewall rules limits", "DigitalOcean firewall rules
#: limit"), so none is claimed for them.
MAX_INGRESS_RULES = 1000
#: CIDRs in one ingress rule: AWS's 1,000 rules per interface above (one rule per CIDR) bound it there.
#: Stricter than Azure, which takes 4,000 "IP addresses and ranges specified for source or destination in
#: a security group" (same Azure page); GCP's per-rule source-range limit was not found in its documentation.
MAX_CIDRS_PER_RULE = 1000
#: An ingress rule's description: AWS security group rules take "Up to 255 characters in length" (EC2 API
#: IpRange/Ipv6Range Description, e.g. https://docs.aws.amazon.com/sdk-for-kotlin/api/latest/ec2/aws.sdk.kotlin.services.ec2.model/-ipv6-range/description.html).
MAX_DESCRIPTION = 255
#: Tag values: AWS "Tag values are case-sensitive and accept a maximum of 256 Unicode characters" (EC2 API
#: Reference, Tag, https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Tag.html); Azure "The maximum
#: supported key/value length is 256 characters" (Azure SDK reference, ProxyResourceWithTags.tags,
#: https://learn.microsoft.com/javascript/api/@azure/arm-billing/proxyresourcewithtags, which Microsoft's
#: docs point to tag-resources#limitations for; that page itself was not found in the search index).
MAX_TAG_VALUE = 256
#: Data disks: GCP takes the most, "You can add up to 127 secondary, non-boot zonal Persistent Disk
#: volumes to a VM instance" ("About Persistent Disk", https://cloud.google.com/compute/docs/disks/persistent-disks,
#: read from its mirror cloud-dot-devsite-v2-prod.appspot.com/compute/docs/disks/persistent-disks).
#: (Was 64, "Azure's largest sizes"; below GCP's number, so a backend that allowed more was cut short.)
MAX_DATA_DISKS = 127
#: An OpenSSH public key line (an RSA 16384-bit key is about 2.8 KB) and other free-text fields.
MAX_PUBLIC_KEY = 16384
MAX_SHORT_TEXT = 256


def _at_most(limit: int, what: str) -> Any:
    """A before-validator refusing a list or mapping longer than ``limit`` before its items are validated."""

    def check(v: Any) -> Any:
        if isinstance(v, (list, tuple, dict)) and len(v) > limit:
            raise ValueError(f"{len(v)} {what}; at most {limit}")
        return v

    return BeforeValidator(check)


ShortText = Annotated[str, Field(max_length=MAX_SHORT_TEXT)]


def _check_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR") from None
        raise ValueError(f"{value!r} has host bits set; did you mean "
                         f"{ipaddress.ip_network(value, strict=False)}?") from None
    return str(net)


def _check_ipv4_cidr(value: str) -> str:
    value = _check_cidr(value)
    if ipaddress.ip_network(value).version != 4:
        raise ValueError(f"{value!r} must be an IPv4 CIDR")
    return value


Cidr = Annotated[str, AfterValidator(_check_cidr)]
Ipv4Cidr = Annotated[str, AfterValidator(_check_ipv4_cidr)]


def _is_world(cidr: str) -> bool:
    return ipaddress.ip_network(cidr).prefixlen == 0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Size(_Model):
    """How big the VM is: cpus and memory, or a named size; optionally a per-backend instance type."""

    cpus: int = Field(ge=1, le=448)
    memory_gb: float = Field(gt=0, le=24576)
    instance_type: Annotated[dict[str, ShortText], _at_most(64, "backends")] = Field(
        default_factory=dict,
        description="Per-backend override, e.g. {aws: t3.large, gcp: e2-standard-2}; wins over cpus/memory.",
    )

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in NAMED_SIZES:
                raise ValueError(f"unknown size {data!r}; named sizes are {', '.join(NAMED_SIZES)}")
            cpus, mem = NAMED_SIZES[data]
            return {"cpus": cpus, "memory_gb": mem}
        if isinstance(data, dict) and "name" in data:
            data = dict(data)
            name = data.pop("name")
            if name not in NAMED_SIZES:
                raise ValueError(f"unknown size {name!r}; named sizes are {', '.join(NAMED_SIZES)}")
            cpus, mem = NAMED_SIZES[name]
            data.setdefault("cpus", cpus)
            data.setdefault("memory_gb", mem)
        return data


class Image(_Model):
    """Operating system: family + version, with an optional per-backend image id override."""

    family: Literal["ubuntu", "debian", "amazon-linux", "rhel"]
    version: ShortText
    image_id: Annotated[dict[str, ShortText], _at_most(64, "backends")] = Field(
        default_factory=dict, description="Per-backend image override, e.g. {aws: ami-0123456789abcdef0}."
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: Any) -> Any:
        # YAML reads 12 and 22.04 as numbers; keep the user's text.
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"{v:.2f}" if isinstance(v, float) else str(v)
        return v

    @model_validator(mode="after")
    def _known(self) -> "Image":
        known = SUPPORTED_IMAGES[self.family]
        if self.version not in known:
            raise ValueError(
                f"{self.family} {self.version!r} is not supported; supported versions: {', '.join(known)}"
            )
        return self


class DataDisk(_Model):
    """An extra block device, formatted and mounted by recipes that use it."""

    name: ShortText
    size_gb: int = Field(ge=1, le=65536)
    mount_point: Annotated[str, Field(max_length=4096)] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DISK_NAME_RE.match(v):
            raise ValueError(f"{v!r} must be lowercase letters, digits and '-', starting with a letter, "
                             "at most 31 characters")
        return v

    @field_validator("mount_point")
    @classmethod
    def _mount(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith("/") or v == "/" or "//" in v or "/../" in f"{v}/" or any(c.isspace() for c in v):
            raise ValueError(f"{v!r} must be an absolute path other than / without spaces or '..'")
        return v.rstrip("/")


def _parse_port(v: Any) -> Any:
    if isinstance(v, str) and "-" in v:
        lo, _, hi = v.partition("-")
        try:
            return (int(lo), int(hi))
        except ValueError:
            raise ValueError(f"{v!r} is not a port or a range like '8000-8100'") from None
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a port or a range like '8000-8100'") from None
    return v


class IngressRule(_Model):
    """Inbound traffic the VM accepts. Everything else inbound is dropped."""

    protocol: Literal["tcp", "udp", "icmp"] = "tcp"
    port: Annotated[int | tuple[int, int] | None, BeforeValidator(_parse_port)] = None
    cidrs: Annotated[list[Cidr], _at_most(MAX_CIDRS_PER_RULE, "CIDRs")] = Field(min_length=1)
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    allow_public: bool = Field(
        default=False, description="Required to open SSH or a database port to 0.0.0.0/0 or ::/0."
    )

    @property
    def from_port(self) -> int | None:
        return self.port[0] if isinstance(self.port, tuple) else self.port

    @property
    def to_port(self) -> int | None:
        return self.port[1] if isinstance(self.port, tuple) else self.port

    def covers(self, port: int) -> bool:
        if self.protocol != "tcp" or self.port is None:
            return False
        return self.from_port <= port <= self.to_port  # type: ignore[operator]

    @property
    def ipv4_cidrs(self) -> list[str]:
        return [c for c in self.cidrs if ipaddress.ip_network(c).version == 4]

    @property
    def ipv6_cidrs(self) -> list[str]:
        return [c for c in self.cidrs if ipaddress.ip_network(c).version == 6]

    @field_validator("port")
    @classmethod
    def _port_range(cls, v: Any) -> Any:
        ports = v if isinstance(v, tuple) else (v,) if v is not None else ()
        for p in ports:
            if not 1 <= p <= 65535:
                raise ValueError(f"{p} is not a port (1-65535)")
        if isinstance(v, tuple) and v[0] > v[1]:
            raise ValueError(f"range {v[0]}-{v[1]} is reversed")
        if isinstance(v, tuple) and v[0] == v[1]:
            return v[0]
        return v

    @model_validator(mode="after")
    def _secure_by_default(self) -> "IngressRule":
        if self.protocol == "icmp":
            if self.port is not None:
                raise ValueError("icmp rules take no port")
            return self
        if self.port is None:
            raise ValueError(f"{self.protocol} rules need a port or a range")
        if self.allow_public:
            return self
        world = [c for c in self.cidrs if _is_world(c)]
        if not world:
            return self
        if self.covers(SSH_PORT):
            raise ValueError(f"SSH (22) open to {', '.join(world)} is refused; restrict cidrs or set "
                             "allow_public: true on this rule")
        dbs = [f"{p} ({n})" for p, n in DATABASE_PORTS.items() if self.covers(p)]
        if dbs:
            raise ValueError(f"database port {', '.join(dbs)} open to {', '.join(world)} is refused; "
                             "restrict cidrs or set allow_public: true on this rule")
        return self


class SshLogin(_Model):
    """The login user cloud-init creates and the public key it authorizes."""

    user: ShortText = "polyvm"
    public_key: str = Field(max_length=MAX_PUBLIC_KEY)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not _USER_RE.match(v):
            raise ValueError(f"{v!r} is not a valid Linux user name")
        if v in _RESERVED_USERS:
            raise ValueError(f"{v!r} is a system account; choose another login user")
        return v

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: str) -> str:
        parts = v.split()
        if len(parts) < 2 or parts[0] not in _PUBKEY_TYPES:
            if "PRIVATE KEY" in v:
                raise ValueError("this is a private key; give the public half (the .pub file)")
            raise ValueError(f"not an OpenSSH public key (expected one of {', '.join(_PUBKEY_TYPES[:3])} …)")
        import base64
        import binascii

        try:
            base64.b64decode(parts[1], validate=True)
        except binascii.Error:
            raise ValueError("the key's base64 body is damaged") from None
        return v


class VmSpec(_Model):
    """One cloud-neutral, validated description of a VM."""

    name: ShortText
    size: Size
    image: Image
    root_disk_gb: int = Field(default=20, ge=8, le=16384)
    data_disks: Annotated[list[DataDisk], _at_most(MAX_DATA_DISKS, "data disks")] = Field(default_factory=list)
    ingress: Annotated[list[IngressRule], _at_most(MAX_INGRESS_RULES, "ingress rules")] = Field(
        default_factory=list)
    ssh: SshLogin
    public_ip: bool = True
    region: ShortText | None = None
    zone: ShortText | None = None
    tags: Annotated[dict[str, Annotated[str, Field(max_length=MAX_TAG_VALUE)]], _at_most(40, "tags")] = Field(
        default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"{v!r} must be 1-63 lowercase letters, digits and '-', starting with a letter "
                             "(it becomes a hostname)")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _TAG_KEY_RE.match(k)]
        if bad:
            raise ValueError(f"tag keys {bad} must be 1-127 characters of letters, digits and _.:/=+@-")
        if len(v) > 40:
            raise ValueError("at most 40 tags")
        return v

    @field_validator("data_disks")
    @classmethod
    def _unique_disks(cls, disks: list[DataDisk]) -> list[DataDisk]:
        # A field validator (not a model validator) so it reports alongside other fields' problems.
        names = [d.name for d in disks]
        dup = sorted({n for n in names if names.count(n) > 1})
        mounts = [d.mount_point for d in disks if d.mount_point]
        dup_mounts = sorted({m for m in mounts if mounts.count(m) > 1})
        problems = []
        if dup:
            problems.append(f"data disk names must be unique; repeated: {', '.join(dup)}")
        if dup_mounts:
            problems.append(f"data disk mount points must be unique; repeated: {', '.join(dup_mounts)}")
        if problems:
            raise ValueError("; ".join(problems))
        return disks

    # --- conveniences used by backends and recipes -------------------------------------------------
    def all_tags(self) -> dict[str, str]:
        """User tags plus the ones polyvm adds everywhere (Name, managed-by)."""
        return {"Name": self.name, "managed-by": "polyvm", **self.tags}

    @property
    def open_tcp_ports(self) -> list[int | tuple[int, int]]:
        return [r.port for r in self.ingress if r.protocol == "tcp" and r.port is not None]


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "tuple[", "int")):
            continue  # pydantic's internal union/validator labels say nothing to a user
        else:
            out += f".{part}" if out else str(part)
    return out or "(spec)"


def _format_error(err: dict[str, Any], docs: str = "docs/spec.md") -> str:
    loc = _format_loc(tuple(err["loc"]))
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] == "extra_forbidden":
        msg = f"unknown field (check its spelling; see {docs})"
    if err["type"] == "missing":
        msg = "is required"
    if err["type"] == "literal_error":
        msg = f"{err.get('input')!r} is not one of {msg.split('Input should be ')[-1]}"
    return f"{loc}: {msg}"


def format_validation_error(exc: ValidationError, prefix: str = "", docs: str = "docs/spec.md") -> list[str]:
    """Turn pydantic's errors into 'field.path[0]: message' lines, without duplicates. ``docs``: the page
    an unknown field's message points to (the VM spec's, a recipe's inputs', ...)."""
    seen: list[str] = []
    for err in exc.errors(include_url=False):
        line = _format_error(err, docs)
        if prefix:
            line = f"{prefix}.{line}" if not line.startswith("(spec)") else f"{prefix}: {line[8:]}"
        if line not in seen:
            seen.append(line)
    return seen


def parse_spec(data: Mapping[str, Any] | None, *, source: str | None = None) -> VmSpec:
    """Validate a plain mapping (from YAML or Pulumi config) into a VmSpec, or raise SpecError listing all problems."""
    if not isinstance(data, Mapping):
        raise SpecError([f"(spec): expected a mapping of fields, got {type(data).__name__}"], source=source)
    try:
        return VmSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc), source=source) from None


#: The most values (mappings, lists and scalars, aliases counted every time they are used) one YAML input
#: may hold: far above any real spec or inventory, and a stop for "billion laughs" alias bombs.
MAX_YAML_VALUES = 200_000


def _count_values(data: Any, limit: int) -> bool:
    """Whether ``data`` holds at most ``limit`` values (stops counting as soon as it is over)."""
    count, todo = 0, [data]
    while todo:
        item = todo.pop()
        count += 1
        if count > limit:
            return False
        if isinstance(item, Mapping):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return True


def load_yaml(path: str | Path, *, what: str = "file") -> Any:
    """The YAML document in ``path`` (``what`` names it in messages: "VM spec", "inventory", ...).
    ConfigError for a file that cannot be read, is not a regular text file of at most 4 MiB
    (:func:`polyvm.files.read_text`), is not valid YAML or holds more than :data:`MAX_YAML_VALUES` values."""
    from .files import read_text

    p = Path(path)
    text = read_text(p, what=what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{p} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{p} is nested too deeply to be a {what}") from None
    if not _count_values(data, MAX_YAML_VALUES):
        raise ConfigError(f"{what} {p} holds more than {MAX_YAML_VALUES} values (YAML aliases counted each "
                          "time they are used)")
    return data


def specs_from_values(vm: Any, vms: Any, *, source: str) -> list[VmSpec]:
    """The specs of ``polyvm:vm`` (one) and ``polyvm:vms`` (a list), all problems at once, each with its key.
    Shared by the Pulumi program and the CLI reading a Pulumi.<stack>.yaml."""
    if vm is None and vms is None:
        raise ConfigError(f"{source} has neither polyvm:vm (one VM) nor polyvm:vms (a list) nor polyvm:fleet; "
                          "see docs/spec.md")
    if vms is not None and not isinstance(vms, list):
        raise SpecError(["polyvm:vms: expected a list of VM specs"], source=source)
    raw = ([vm] if vm is not None else []) + list(vms or [])
    specs, problems = [], []
    for i, item in enumerate(raw):
        try:
            specs.append(parse_spec(item))
        except SpecError as exc:
            where = "polyvm:vm" if (vm is not None and i == 0) else f"polyvm:vms[{i - (vm is not None)}]"
            problems += [f"{where}.{p}" for p in exc.problems]
    if problems:
        raise SpecError(problems, source=source)
    return specs


#: Top-level keys of a Pulumi.<stack>.yaml (sdk/go/common/workspace/project.go ProjectStack in pulumi/pulumi).
STACK_FILE_KEYS = frozenset({"config", "secretsprovider", "encryptionsalt", "encryptedkey", "environment"})


def stack_config(data: Any) -> dict[str, Any] | None:
    """{key: value} of the ``polyvm`` namespace when ``data`` is a Pulumi.<stack>.yaml, else None."""
    if isinstance(data, Mapping) and data and set(data) <= STACK_FILE_KEYS and isinstance(data.get("config"), Mapping):
        return {k.split(":", 1)[1]: v for k, v in data["config"].items() if k.startswith("polyvm:")}
    return None


def load_spec_file(path: str | Path) -> list[VmSpec]:
    """Load a YAML file holding one spec (a mapping), several (``vms: [...]``), or a Pulumi.<stack>.yaml
    (its ``polyvm:vm`` / ``polyvm:vms``)."""
    data = load_yaml(path, what="VM spec")
    if data is None:
        raise ConfigError(f"VM spec {path} is empty (see docs/spec.md for the fields)")
    stack = stack_config(data)
    if stack is not None:
        return specs_from_values(stack.get("vm"), stack.get("vms"), source=str(path))
    if isinstance(data, Mapping) and "vms" in data and set(data) == {"vms"}:
        items = data["vms"]
        if not isinstance(items, list) or not items:
            raise SpecError(["vms: expected a non-empty list of VM specs"], source=str(path))
        specs, problems = [], []
        for i, item in enumerate(items):
            try:
                specs.append(parse_spec(item))
            except SpecError as exc:
                problems += [f"vms[{i}].{p}" for p in exc.problems]
        if problems:
            raise SpecError(problems, source=str(path))
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError([f"vms: names must be unique; repeated: {', '.join(dup)}"], source=str(path))
        return specs
    return [parse_spec(data, source=str(path))]
