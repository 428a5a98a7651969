"""What the PostgreSQL recipe is asked for: a validated, secret-aware inputs model.

Everything a user can get wrong is rejected here, before any host is touched, with the field path
(``allowed_cidrs[0]: '0.0.0.0/0' opens PostgreSQL to the world ...``). Passwords are
:class:`pydantic.SecretStr`: they never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
from typing import Any, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from polyvm.errors import ConfigError, SpecError
from polyvm.spec import Cidr, IngressRule, format_validation_error

#: PostgreSQL major version each distribution ships (used when no version is asked for).
DEFAULT_VERSIONS: dict[tuple[str, str], str] = {
    ("debian", "12"): "15",
    ("ubuntu", "22.04"): "14",
    ("ubuntu", "24.04"): "16",
    ("amazon-linux", "2023"): "16",
    ("rhel", "9"): "13",
}

#: Settings the recipe manages itself; setting them through ``settings`` is refused (say why).
MANAGED_SETTINGS: dict[str, str] = {
    "password_encryption": "always scram-sha-256",
    "ssl": "always on",
    "ssl_cert_file": "managed by the recipe",
    "ssl_key_file": "managed by the recipe",
    "hba_file": "managed by the recipe",
    "ident_file": "managed by the recipe",
    "data_directory": "follows the data disk",
    "config_file": "managed by the recipe",
    "port": "use the 'port' input",
    "listen_addresses": "use the 'listen_addresses' input",
}

#: Not settings but configuration-file directives: they would read files the recipe neither writes nor checks.
INCLUDE_DIRECTIVES = ("include", "include_dir", "include_if_exists")

#: PostgreSQL 15 settings that run a shell command or load code from a path (the server's own list:
#: `postgres --describe-config`; docs: "Archiving",
#: "Archive Recovery", "SSL", "Shared Library Preloading", "Other Defaults"): refused, with why.
#: Preload libraries and jit_provider are allowed as plain library names, which PostgreSQL looks up in
#: its own $libdir; a path (or $libdir itself) is refused.
UNSAFE_SETTINGS: dict[str, str] = {
    "archive_command": "runs a shell command as postgres; WAL archiving and backups are not set up through settings",
    "archive_library": "loads a library module as postgres; WAL archiving is not set up through settings",
    "archive_mode": "without a managed archive_command WAL would pile up on the data disk",
    "restore_command": "runs a shell command as postgres, in archive recovery",
    "archive_cleanup_command": "runs a shell command as postgres, on a standby",
    "recovery_end_command": "runs a shell command as postgres, at the end of recovery",
    "ssl_passphrase_command": "runs a shell command as postgres; TLS is managed by the recipe",
    "ssl_passphrase_command_supports_reload": "TLS is managed by the recipe",
    "dynamic_library_path": "would load libraries from outside PostgreSQL's own $libdir",
}
_PLAIN_LIBRARY_SETTINGS = ("shared_preload_libraries", "local_preload_libraries", "session_preload_libraries",
                           "jit_provider")
_LIBRARY_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: TLS settings the recipe leaves open, with the values it accepts (every other ssl* setting is managed).
_SSL_ALLOWED = {"ssl_min_protocol_version": ("TLSv1.2", "TLSv1.3")}

_SETTING_RE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RESERVED_ROLES = {"postgres", "public", "current_user", "session_user", "current_role", "none", "all"}
_RESERVED_DBS = {"postgres", "template0", "template1"}

SettingValue = Union[bool, int, float, str]


def _ident(kind: str, v: str, reserved: set[str]) -> str:
    if not _IDENT_RE.match(v):
        raise ValueError(f"{v!r} is not a valid {kind} name (lowercase letters, digits, '_'; "
                         "starting with a letter or '_'; at most 63 characters)")
    if v in reserved or v.startswith("pg_"):
        raise ValueError(f"{v!r} is reserved by PostgreSQL; choose another {kind} name")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class DbUser(_Model):
    """A login role. Without a password one is generated (CLI: kept in a 0600 file; Pulumi: RandomPassword)."""

    name: str
    password: SecretStr | None = None
    createdb: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _ident("user", v, _RESERVED_ROLES)

    @field_validator("password")
    @classmethod
    def _password(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        pw = v.get_secret_value()
        if len(pw) < 12:
            raise ValueError("is shorter than 12 characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in pw):
            raise ValueError("contains control characters")
        return v


class Database(_Model):
    """A database, owned by one of the recipe's users (default: the first user)."""

    name: str
    owner: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _ident("database", v, _RESERVED_DBS)


def default_memory_settings(memory_mb: int, max_connections: int = 100) -> dict[str, str]:
    """Memory settings from the VM's RAM: shared_buffers 25 %, effective_cache_size 75 %,
    maintenance_work_mem RAM/16 (64 MB..2 GB), work_mem RAM/4 per connection (4 MB..64 MB)."""
    mb = max(int(memory_mb), 256)
    shared = max(32, mb // 4)
    work = min(64, max(4, math.floor(mb / 4 / max_connections)))
    return {
        "shared_buffers": f"{shared}MB",
        "effective_cache_size": f"{max(64, mb * 3 // 4)}MB",
        "maintenance_work_mem": f"{min(2048, max(64, mb // 16))}MB",
        "work_mem": f"{work}MB",
    }


class PostgresInputs(_Model):
    """Inputs of the PostgreSQL recipe."""

    version: str | None = Field(default=None, description="Major version; default: the distribution's.")
    port: int = Field(default=5432, ge=1024, le=65535)
    listen_addresses: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    allowed_cidrs: list[Cidr] = Field(min_length=1, description="Client networks allowed to log in (hostssl + scram).")
    allow_public: bool = Field(default=False, description="Required to allow 0.0.0.0/0 or ::/0.")
    allow_loopback: bool = Field(default=True, description="Also allow hostssl+scram from 127.0.0.1/::1 "
                                 "(used by the recipe's own login check).")
    users: list[DbUser] = Field(default_factory=list)
    databases: list[Database] = Field(default_factory=list)
    settings: dict[str, SettingValue] = Field(default_factory=dict)
    memory_mb: int | None = Field(default=None, ge=128,
                                  description="VM RAM for memory defaults; detected on the host when unset.")
    mount_point: str | None = Field(default=None, description="Where the data disk is mounted (the guest "
                                    "baseline mounts it); the cluster lives below it. Default: the host's first "
                                    "data disk with a mount point, else the distribution's data directory.")

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(int(v))
        if v is not None and not re.fullmatch(r"1[0-9]|[2-9][0-9]", str(v)):
            raise ValueError(f"{v!r} is not a PostgreSQL major version (e.g. 15)")
        return v

    @field_validator("listen_addresses")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
        for a in v:
            if a in ("*", "localhost"):
                continue
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ValueError(f"{a!r} is not '*', 'localhost' or an IP address") from None
        return v

    @field_validator("settings")
    @classmethod
    def _settings(cls, v: dict[str, SettingValue]) -> dict[str, SettingValue]:
        problems = []
        for k, val in v.items():
            if not _SETTING_RE.match(k):
                problems.append(f"{k!r} is not a setting name")
            elif k in INCLUDE_DIRECTIVES:
                problems.append(f"{k!r} cannot be set here (a directive that reads another configuration file, "
                                "whose settings would bypass these checks)")
            elif k in MANAGED_SETTINGS:
                problems.append(f"{k!r} cannot be set here ({MANAGED_SETTINGS[k]})")
            elif k in UNSAFE_SETTINGS:
                problems.append(f"{k!r} cannot be set here ({UNSAFE_SETTINGS[k]})")
            elif k.startswith("ssl") and k not in _SSL_ALLOWED:
                problems.append(f"{k!r} cannot be set here (TLS is managed by the recipe)")
            elif isinstance(val, str) and ("\n" in val or "\r" in val or "\0" in val):
                problems.append(f"{k!r} has a line break in its value")
            elif k in _SSL_ALLOWED and str(val) not in _SSL_ALLOWED[k]:
                problems.append(f"{k!r} must be one of {', '.join(_SSL_ALLOWED[k])}, not {val!r}")
            elif k in _PLAIN_LIBRARY_SETTINGS:
                names = [n.strip().strip('"') for n in str(val).split(",") if n.strip()]
                bad = [n for n in names if not _LIBRARY_NAME_RE.match(n)]
                if bad:
                    problems.append(f"{k!r}: {', '.join(repr(b) for b in bad)} is not a plain library name "
                                    "(give names such as pg_stat_statements, found in PostgreSQL's $libdir; "
                                    "paths are refused)")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("mount_point")
    @classmethod
    def _mount(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.fullmatch(r"/[A-Za-z0-9._/-]+", v) or v == "/" or "/../" in f"{v}/" or "//" in v:
            raise ValueError(f"{v!r} must be an absolute path other than / (letters, digits, . _ - /)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> "PostgresInputs":
        problems = []
        world = [c for c in self.allowed_cidrs if ipaddress.ip_network(c).prefixlen == 0]
        if world and not self.allow_public:
            problems.append(f"allowed_cidrs {', '.join(world)} opens PostgreSQL to the world; "
                            "restrict it or set allow_public: true")
        names = [u.name for u in self.users]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"user names must be unique; repeated: {', '.join(dup)}")
        dbs = [d.name for d in self.databases]
        dup = sorted({n for n in dbs if dbs.count(n) > 1})
        if dup:
            problems.append(f"database names must be unique; repeated: {', '.join(dup)}")
        for d in self.databases:
            if d.owner is not None and d.owner not in names:
                problems.append(f"database {d.name!r}: owner {d.owner!r} is not one of the users")
        if self.databases and not self.users:
            problems.append("databases need at least one user to own them")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- conveniences ------------------------------------------------------------------------------
    def owner_of(self, db: Database) -> str:
        return db.owner or self.users[0].name

    def ingress_rule(self) -> IngressRule:
        """The inbound rule PostgreSQL needs: its port from ``allowed_cidrs``."""
        return IngressRule(protocol="tcp", port=self.port, cidrs=list(self.allowed_cidrs),
                           allow_public=self.allow_public, description="postgresql")

    def missing_passwords(self) -> list[str]:
        return [u.name for u in self.users if u.password is None]

    def with_passwords(self, passwords: Mapping[str, str]) -> "PostgresInputs":
        """A copy where users without a password get the one in ``passwords`` (by user name)."""
        users = [u if u.password is not None or u.name not in passwords
                 else u.model_copy(update={"password": SecretStr(passwords[u.name])}) for u in self.users]
        return self.model_copy(update={"users": users})

    def effective_settings(self, memory_mb: int | None = None) -> dict[str, SettingValue]:
        """Memory defaults (from ``memory_mb`` or the input's) overlaid with the user's settings."""
        mem = self.memory_mb or memory_mb
        out: dict[str, SettingValue] = {}
        if mem:
            max_conn = self.settings.get("max_connections", 100)
            out.update(default_memory_settings(mem, int(max_conn) if isinstance(max_conn, (int, str))
                                               and str(max_conn).isdigit() else 100))
        out.update(self.settings)
        return out

    def verify_target(self) -> tuple[str, str] | None:
        """(user, database) the recipe logs in as over TCP at the end, or None without users."""
        if not self.users:
            return None
        user = self.users[0].name
        for d in self.databases:
            if self.owner_of(d) == user:
                return user, d.name
        return user, "postgres"


def generate_password() -> str:
    """A 32-character URL-safe random password (about 190 bits)."""
    return secrets.token_urlsafe(24)


def parse_inputs(data: Mapping[str, Any] | None, *, source: str | None = None) -> PostgresInputs:
    """Validate a plain mapping into PostgresInputs, or raise SpecError listing every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"postgres inputs{' in ' + source if source else ''}: expected a mapping")
    try:
        return PostgresInputs.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, prefix="postgres"), source=source,
                        what="postgres recipe inputs") from None


def default_version(family: str, os_version: str) -> str:
    """The PostgreSQL major version the distribution ships; SpecError for a release polyvm does not know."""
    try:
        return DEFAULT_VERSIONS[(family, os_version)]
    except KeyError:
        raise SpecError([f"no default PostgreSQL version known for {family} {os_version}; set 'version'"]) from None
