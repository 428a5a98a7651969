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
from typing import Any, Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from polyvm.errors import ConfigError, SpecError
from polyvm.spec import Cidr, IngressRule, format_validation_error

from .backup import BackupInputs
from .replication import ReplicationInputs

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


#: Predefined roles a declared role may be made a member of (PostgreSQL 14+ docs, "Predefined Roles").
PREDEFINED_ROLES = ("pg_read_all_data", "pg_write_all_data", "pg_read_all_settings", "pg_read_all_stats",
                    "pg_stat_scan_tables", "pg_monitor", "pg_signal_backend", "pg_checkpoint")
#: Extensions whose library must be in shared_preload_libraries before they work (added automatically;
#: changing shared_preload_libraries needs a restart, which the server step does and says).
PRELOAD_EXTENSIONS = {"pg_stat_statements": "pg_stat_statements", "pg_cron": "pg_cron", "pgaudit": "pgaudit",
                      "timescaledb": "timescaledb", "pg_wait_sampling": "pg_wait_sampling"}
DATABASE_PRIVILEGES = ("CONNECT", "CREATE", "TEMPORARY")
SCHEMA_PRIVILEGES = ("USAGE", "CREATE")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
HBA_METHODS = ("scram-sha-256", "cert")
_VALID_UNTIL_RE = re.compile(r"^(infinity|\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?(Z|[+-]\d{2}(:?\d{2})?| UTC)?)$")
_ENCODING_RE = re.compile(r"^[A-Za-z0-9_-]{2,20}$")
_LOCALE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_EXT_VERSION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


def _privileges(kind: str, allowed: tuple[str, ...], v: list[str]) -> list[str]:
    out = []
    for p in v:
        p = str(p).upper()
        if p == "TEMP":
            p = "TEMPORARY"
        if p == "ALL":
            out.extend(allowed)
            continue
        if p not in allowed:
            raise ValueError(f"{p!r} is not a {kind} privilege (one of {', '.join(allowed)}, or ALL)")
        out.append(p)
    return list(dict.fromkeys(out))


class DbUser(_Model):
    """A role (``login: false`` for a group role such as a read-only role). A login role without a password gets
    one generated (CLI: kept in a 0600 file; Pulumi: RandomPassword). ``state: absent`` drops it (refused while
    it owns objects, unless ``reassign_owned_to`` names who takes them over)."""

    name: str
    password: SecretStr | None = None
    login: bool = True
    createdb: bool = False
    createrole: bool = False
    replication: bool = False
    connection_limit: int = Field(default=-1, ge=-1, description="-1: no limit")
    valid_until: str | None = Field(default=None, description="Password expiry (ISO date/time) or 'infinity'.")
    member_of: list[str] = Field(default_factory=list, description="Roles it is a member of (exactly these).")
    state: Literal["present", "absent"] = "present"
    reassign_owned_to: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _ident("user", v, _RESERVED_ROLES)

    @field_validator("valid_until", mode="before")
    @classmethod
    def _valid_until(cls, v: Any) -> Any:
        if v is None:
            return v
        v = str(v).strip()
        if not _VALID_UNTIL_RE.match(v):
            raise ValueError(f"{v!r} is not an ISO date/time (2027-01-31, 2027-01-31T12:00:00Z) or 'infinity'")
        return v

    @field_validator("member_of")
    @classmethod
    def _member_of(cls, v: list[str]) -> list[str]:
        for r in v:
            if r.startswith("pg_") and r not in PREDEFINED_ROLES:
                raise ValueError(f"{r!r} is not a predefined role polyvm grants ({', '.join(PREDEFINED_ROLES)})")
            if not r.startswith("pg_"):
                _ident("role", r, _RESERVED_ROLES)
        return list(dict.fromkeys(v))

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

    @model_validator(mode="after")
    def _state(self) -> "DbUser":
        if self.state == "present" and self.reassign_owned_to:
            raise ValueError("reassign_owned_to is only for state: absent")
        if self.reassign_owned_to == self.name:
            raise ValueError("reassign_owned_to names the role being dropped")
        if not self.login and self.password is not None:
            raise ValueError("a role with login: false cannot log in; remove its password")
        return self

    @property
    def wants_password(self) -> bool:
        return self.login and self.state == "present"


class Extension(_Model):
    """An extension in one database, from what the OS's PostgreSQL packages ship (pg_available_extensions)."""

    name: str
    version: str | None = Field(default=None, description="Default: the version the packages ship.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,62}", v):
            raise ValueError(f"{v!r} is not an extension name")
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if v is not None and not _EXT_VERSION_RE.match(str(v)):
            raise ValueError(f"{v!r} is not an extension version")
        return None if v is None else str(v)


class Database(_Model):
    """A database, owned by one of the recipe's roles (default: the first login role)."""

    name: str
    owner: str | None = None
    encoding: str | None = Field(default=None, description="e.g. UTF8; only when the database is created.")
    lc_collate: str | None = None
    lc_ctype: str | None = None
    template: str | None = Field(default=None, description="template0 or template1 (default template1; template0 "
                                 "when encoding or locale are given).")
    extensions: list[Extension] = Field(default_factory=list)
    state: Literal["present", "absent"] = "present"
    confirm_drop: str | None = Field(default=None, description="state: absent drops only when this is the name.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _ident("database", v, _RESERVED_DBS)

    @field_validator("extensions", mode="before")
    @classmethod
    def _extensions(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": e} if isinstance(e, str) else e for e in v]
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str | None) -> str | None:
        if v is not None and not _ENCODING_RE.match(v):
            raise ValueError(f"{v!r} is not an encoding name (e.g. UTF8)")
        return v.upper().replace("-", "") if v else v

    @field_validator("lc_collate", "lc_ctype")
    @classmethod
    def _locale(cls, v: str | None) -> str | None:
        if v is not None and not _LOCALE_RE.match(v):
            raise ValueError(f"{v!r} is not a locale name (e.g. C.UTF-8, en_US.UTF-8)")
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and v not in ("template0", "template1"):
            raise ValueError(f"{v!r}: the template is template0 or template1")
        return v

    @model_validator(mode="after")
    def _drop(self) -> "Database":
        if self.state == "absent" and self.confirm_drop != self.name:
            raise ValueError(f"state: absent drops database {self.name!r} and all its data; "
                             f"confirm with confirm_drop: {self.name}")
        if self.state == "present" and self.confirm_drop is not None:
            raise ValueError("confirm_drop is only for state: absent")
        names = [e.name for e in self.extensions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"extensions repeated: {', '.join(dup)}")
        return self

    @property
    def effective_template(self) -> str | None:
        if self.template:
            return self.template
        # PostgreSQL copies template1, whose encoding and locale a new database cannot change (docs,
        # "Template Databases"): another encoding or locale needs template0.
        return "template0" if (self.encoding or self.lc_collate or self.lc_ctype) else None


class Grant(_Model):
    """Privileges of one role in one database: on the database, on a schema, on ALL TABLES IN that schema, and
    (``default_privileges``) on tables the database owner (or ``default_for``) creates later."""

    role: str
    database: str
    database_privileges: list[str] = Field(default_factory=list)
    schema_: str = Field(default="public", alias="schema")
    schema_privileges: list[str] = Field(default_factory=list)
    table_privileges: list[str] = Field(default_factory=list)
    default_privileges: bool = True
    default_for: list[str] = Field(default_factory=list, description="Roles whose future tables get "
                                   "table_privileges; default: the database owner.")

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, populate_by_name=True)

    @field_validator("database_privileges")
    @classmethod
    def _dbp(cls, v: list[str]) -> list[str]:
        return _privileges("database", DATABASE_PRIVILEGES, v)

    @field_validator("schema_privileges")
    @classmethod
    def _sp(cls, v: list[str]) -> list[str]:
        return _privileges("schema", SCHEMA_PRIVILEGES, v)

    @field_validator("table_privileges")
    @classmethod
    def _tp(cls, v: list[str]) -> list[str]:
        return _privileges("table", TABLE_PRIVILEGES, v)

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str) -> str:
        if not _IDENT_RE.match(v) or (v.startswith("pg_") and v != "pg_temp"):
            raise ValueError(f"{v!r} is not a schema name polyvm grants on")
        return v

    @model_validator(mode="after")
    def _some(self) -> "Grant":
        if not (self.database_privileges or self.schema_privileges or self.table_privileges):
            raise ValueError("grants nothing: give database_privileges, schema_privileges or table_privileges")
        return self


class HbaEntry(_Model):
    """An extra pg_hba.conf line: always ``hostssl``, with scram-sha-256 or cert (a client certificate issued by
    ``client_ca_file``'s CA, checked with clientcert=verify-full)."""

    type: Literal["hostssl"] = "hostssl"
    database: str = "all"
    user: str = "all"
    address: Cidr
    method: str = "scram-sha-256"

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> Any:
        if v != "hostssl":
            raise ValueError(f"{v!r}: only hostssl entries (TLS required) are allowed")
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in HBA_METHODS:
            raise ValueError(f"{v!r} is refused: use scram-sha-256 or cert (never trust, password, md5, ident)")
        return v

    @field_validator("database", "user")
    @classmethod
    def _names(cls, v: str) -> str:
        for n in v.split(","):
            if n != "all" and not _IDENT_RE.match(n):
                raise ValueError(f"{n!r} is not 'all' or a role/database name")
        return v


def default_memory_settings(memory_mb: int, max_connections: int = 100) -> dict[str, str]:
    """Memory settings from the VM's RAM, after the PostgreSQL wiki's "Tuning Your PostgreSQL Server" and the
    docs' "Resource Consumption": shared_buffers 25 % of RAM, effective_cache_size 75 %, maintenance_work_mem
    RAM/16 (64 MB..2 GB), work_mem RAM/4 shared by the connections (4 MB..64 MB)."""
    mb = max(int(memory_mb), 256)
    shared = max(32, mb // 4)
    work = min(64, max(4, math.floor(mb / 4 / max_connections)))
    return {
        "shared_buffers": f"{shared}MB",
        "effective_cache_size": f"{max(64, mb * 3 // 4)}MB",
        "maintenance_work_mem": f"{min(2048, max(64, mb // 16))}MB",
        "work_mem": f"{work}MB",
    }


def default_wal_settings(disk_mb: int) -> dict[str, str]:
    """WAL size from the data disk: max_wal_size 10 % of it (256 MB..16 GB; PostgreSQL's default is 1 GB, a
    soft limit the docs' "WAL Configuration" say can be exceeded under load, so a small disk gets less),
    min_wal_size a quarter of that (at least 80 MB, the default)."""
    max_wal = min(16384, max(256, int(disk_mb) // 10))
    return {"max_wal_size": f"{max_wal}MB", "min_wal_size": f"{max(80, max_wal // 4)}MB"}


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
    grants: list[Grant] = Field(default_factory=list)
    hba: list[HbaEntry] = Field(default_factory=list, description="Extra pg_hba.conf entries (hostssl only).")
    client_ca_file: str | None = Field(default=None, description="Path on the host of the CA certificate that "
                                       "issues client certificates (ssl_ca_file); needed by method: cert.")
    settings: dict[str, SettingValue] = Field(default_factory=dict)
    memory_mb: int | None = Field(default=None, ge=128,
                                  description="VM RAM for memory defaults; detected on the host when unset.")
    disk_mb: int | None = Field(default=None, ge=256, description="Size of the data disk, for WAL defaults "
                                "(max_wal_size); none when unset.")
    mount_point: str | None = Field(default=None, description="Where the data disk is mounted (the guest "
                                    "baseline mounts it); the cluster lives below it. Default: the host's first "
                                    "data disk with a mount point, else the distribution's data directory.")
    backup: BackupInputs | None = Field(default=None, description="pgBackRest WAL archiving and base backups "
                                        "(docs/postgres-ha.md)")
    replication: ReplicationInputs | None = Field(default=None, description="a primary and its streaming "
                                                  "standbys (docs/postgres-ha.md)")

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
        present = {u.name for u in self.users if u.state == "present"}
        absent = {u.name for u in self.users if u.state == "absent"}
        for u in self.users:
            for r in u.member_of:
                if not r.startswith("pg_") and r not in present:
                    problems.append(f"user {u.name!r}: member_of {r!r} is not one of the users (state: present)")
            if u.reassign_owned_to and u.reassign_owned_to not in present | {"postgres"}:
                problems.append(f"user {u.name!r}: reassign_owned_to {u.reassign_owned_to!r} is not a present user")
        dbs = [d.name for d in self.databases]
        dup = sorted({n for n in dbs if dbs.count(n) > 1})
        if dup:
            problems.append(f"database names must be unique; repeated: {', '.join(dup)}")
        for d in self.databases:
            if d.owner is not None and d.owner not in names:
                problems.append(f"database {d.name!r}: owner {d.owner!r} is not one of the users")
            elif d.owner in absent and d.state == "present":
                problems.append(f"database {d.name!r}: owner {d.owner!r} has state: absent")
        if any(d.state == "present" for d in self.databases) and not self.login_users():
            problems.append("databases need at least one user to own them")
        present_dbs = {d.name for d in self.databases if d.state == "present"}
        for i, g in enumerate(self.grants):
            if g.role not in present:
                problems.append(f"grants[{i}]: role {g.role!r} is not one of the users (state: present)")
            if g.database not in present_dbs:
                problems.append(f"grants[{i}]: database {g.database!r} is not one of the databases (state: present)")
            for r in g.default_for:
                if r not in present:
                    problems.append(f"grants[{i}]: default_for {r!r} is not one of the users")
        for i, h in enumerate(self.hba):
            if ipaddress.ip_network(h.address).prefixlen == 0 and not self.allow_public:
                problems.append(f"hba[{i}]: address {h.address} opens PostgreSQL to the world; "
                                "restrict it or set allow_public: true")
            if h.method == "cert" and not self.client_ca_file:
                problems.append(f"hba[{i}]: method cert needs client_ca_file (the CA that issues the client "
                                "certificates)")
            for r in h.user.split(","):
                if r != "all" and r not in present:
                    problems.append(f"hba[{i}]: user {r!r} is not one of the users")
            for n in h.database.split(","):
                if n != "all" and n not in present_dbs:
                    problems.append(f"hba[{i}]: database {n!r} is not one of the databases")
        if self.client_ca_file is not None and not re.fullmatch(r"/[A-Za-z0-9._/-]+", self.client_ca_file):
            problems.append(f"client_ca_file {self.client_ca_file!r} must be an absolute path (letters, digits, . _ - /)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- conveniences ------------------------------------------------------------------------------
    def login_users(self) -> list[DbUser]:
        return [u for u in self.users if u.login and u.state == "present"]

    def owner_of(self, db: Database) -> str:
        if db.owner:
            return db.owner
        owners = self.login_users() or [u for u in self.users if u.state == "present"]
        return owners[0].name if owners else "postgres"

    def preload_libraries(self) -> list[str]:
        """Libraries the declared extensions need in shared_preload_libraries."""
        return list(dict.fromkeys(PRELOAD_EXTENSIONS[e.name] for d in self.databases if d.state == "present"
                                  for e in d.extensions if e.name in PRELOAD_EXTENSIONS))

    def ingress_rule(self) -> IngressRule:
        """The inbound rule PostgreSQL needs: its port from ``allowed_cidrs``."""
        return IngressRule(protocol="tcp", port=self.port, cidrs=list(self.allowed_cidrs),
                           allow_public=self.allow_public, description="postgresql")

    def missing_passwords(self) -> list[str]:
        """Users without a password, then the generated secrets of the backup section (names with a ':')."""
        return [u.name for u in self.users if u.password is None and u.wants_password] + (
            self.backup.missing_secrets() if self.backup else []) + (
            self.replication.missing_secrets() if self.replication else [])

    def with_passwords(self, passwords: Mapping[str, str]) -> "PostgresInputs":
        """A copy where users without a password get the one in ``passwords`` (by user name)."""
        users = [u if u.password is not None or u.name not in passwords
                 else u.model_copy(update={"password": SecretStr(passwords[u.name])}) for u in self.users]
        update: dict[str, Any] = {"users": users}
        if self.backup is not None:
            update["backup"] = self.backup.with_secrets(passwords)
        if self.replication is not None:
            update["replication"] = self.replication.with_secrets(passwords)
        return self.model_copy(update=update)

    def effective_settings(self, memory_mb: int | None = None) -> dict[str, SettingValue]:
        """Memory defaults (from ``memory_mb`` or the input's) and WAL defaults (from ``disk_mb``) overlaid with
        the user's settings; the declared extensions' libraries added to shared_preload_libraries."""
        mem = self.memory_mb or memory_mb
        out: dict[str, SettingValue] = {}
        if mem:
            max_conn = self.settings.get("max_connections", 100)
            out.update(default_memory_settings(mem, int(max_conn) if isinstance(max_conn, (int, str))
                                               and str(max_conn).isdigit() else 100))
        if self.disk_mb:
            out.update(default_wal_settings(self.disk_mb))
        out.update(self.settings)
        preload = self.preload_libraries()
        if preload:
            have = [n.strip().strip('"') for n in str(out.get("shared_preload_libraries", "")).split(",") if n.strip()]
            out["shared_preload_libraries"] = ",".join(dict.fromkeys(have + preload))
        return out

    def verify_target(self) -> tuple[str, str] | None:
        """(user, database) the recipe logs in as over TCP at the end, or None without users."""
        users = self.login_users()
        if not users:
            return None
        user = users[0].name
        for d in self.databases:
            if d.state == "present" and self.owner_of(d) == user:
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
        raise SpecError(format_validation_error(exc, prefix="postgres", docs="docs/postgres.md"), source=source,
                        what="postgres recipe inputs") from None


def default_version(family: str, os_version: str) -> str:
    """The PostgreSQL major version the distribution ships; SpecError for a release polyvm does not know."""
    try:
        return DEFAULT_VERSIONS[(family, os_version)]
    except KeyError:
        raise SpecError([f"no default PostgreSQL version known for {family} {os_version}; set 'version'"]) from None
