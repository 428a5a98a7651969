"""Streaming replication for the PostgreSQL recipe: one primary and N standbys from one set of inputs.

The ``replication:`` section names every member (``name``: its replication slot and application_name;
``address``: where the others reach it) and which one is the primary. The same inputs are applied to every
member; each host finds its own member at run time (the member whose address is on one of its interfaces),
so N VMs made from one spec get one recipe run each, in any order after the primary:

* pg_hba: ``hostssl replication <user> <member>/32 scram-sha-256`` for the members' addresses only;
* the primary: a replication role (password generated like every other secret, sent as a SCRAM verifier),
  one physical replication slot per other member, ``synchronous_standby_names = 'FIRST k (members)'`` when
  ``synchronous`` is k > 0 (the first k connected standbys in member order confirm every commit);
* a standby: cloned once with pg_basebackup from the primary into an absent or empty data directory, then
  ``primary_conninfo`` (TLS, password in a 0600 passfile, never in argv or the settings) and
  ``primary_slot_name`` in its own drop-in ``conf.d/60-polyvm-replication.conf``;
* promote: when the inputs name a standby as primary (``polyvm postgres promote``), that member is promoted
  (pg_promote) and every other reachable member re-points its primary_conninfo to it. A member that runs as a
  primary while the inputs name another one is refused (it diverged: re-clone it; pg_rewind is not run).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

if TYPE_CHECKING:
    from .inputs import PostgresInputs
    from .platform import Layout

PASSWORD_SECRET = "replication:password"
PASSFILE = "/var/lib/postgresql/.polyvm-replication.pgpass"
DROPIN = "60-polyvm-replication.conf"
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ReplicaMember(_Model):
    name: str = Field(description="the member's replication slot and application_name")
    address: str = Field(description="the IP address the other members reach it at")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a member name (lowercase letters, digits, '_')")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None


class ReplicationInputs(_Model):
    """The ``replication:`` section of the recipe's inputs."""

    members: list[ReplicaMember] = Field(min_length=2)
    primary: str
    synchronous: int = Field(default=0, ge=0, description="standbys that confirm each commit (0: asynchronous)")
    user: str = "replicator"
    password: SecretStr | None = None
    max_slot_wal_keep_size_mb: int = Field(default=1024, ge=64,
                                           description="WAL a slot may hold for an absent standby")

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not _NAME_RE.match(v) or v in ("postgres", "public") or v.startswith("pg_"):
            raise ValueError(f"{v!r} is not a usable role name")
        return v

    @field_validator("password")
    @classmethod
    def _pw(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            pw = v.get_secret_value()
            if len(pw) < 12 or any(ord(c) < 33 or ord(c) == 127 or c in ":\\" for c in pw):
                raise ValueError("must be at least 12 printable characters, without spaces, ':' or '\\'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ReplicationInputs":
        names = [m.name for m in self.members]
        addrs = [m.address for m in self.members]
        problems = []
        if len(set(names)) != len(names):
            problems.append("member names must be unique")
        if len(set(addrs)) != len(addrs):
            problems.append("member addresses must be unique")
        if self.primary not in names:
            problems.append(f"primary {self.primary!r} is not one of the members ({', '.join(names)})")
        if self.synchronous > len(self.members) - 1:
            problems.append(f"synchronous {self.synchronous} is more than the {len(self.members) - 1} standbys")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- secrets ---------------------------------------------------------------------------------------
    def missing_secrets(self) -> list[str]:
        return [PASSWORD_SECRET] if self.password is None else []

    def with_secrets(self, secrets: object) -> "ReplicationInputs":
        get = getattr(secrets, "get")
        if self.password is None and get(PASSWORD_SECRET):
            return self.model_copy(update={"password": SecretStr(get(PASSWORD_SECRET))})
        return self

    def member(self, name: str) -> ReplicaMember:
        return next(m for m in self.members if m.name == name)

    def verifier(self) -> str:
        """A SCRAM verifier of the password with a salt derived from it: the same on every run, so the
        script can tell whether the role already has it."""
        from .roles import scram_verifier

        assert self.password is not None
        pw = self.password.get_secret_value()
        salt = hmac.new(pw.encode(), b"polyvm replication salt", hashlib.sha256).digest()[:16]
        return scram_verifier(pw, salt=salt)

    def synchronous_standby_names(self) -> str:
        if not self.synchronous:
            return ""
        return f"FIRST {self.synchronous} ({', '.join(m.name for m in self.members)})"


# --------------------------------------------------------------------------------------------------------
# Rendering (pure)
# --------------------------------------------------------------------------------------------------------

def hba_lines(rep: ReplicationInputs) -> str:
    lines = ["", "# Streaming replication between the members only (replication: input)"]
    for m in rep.members:
        net = ipaddress.ip_network(m.address)
        lines.append(f"hostssl replication {rep.user:<9} {str(net):<24} scram-sha-256")
    return "\n".join(lines) + "\n"


def conf_section(rep: ReplicationInputs) -> str:
    from .render import pg_string

    return ("\n# Streaming replication (replication: input); primary_conninfo is in conf.d/" + DROPIN + "\n"
            "wal_level = replica\n"
            f"max_wal_senders = {max(10, 2 * len(rep.members))}\n"
            f"max_replication_slots = {max(10, 2 * len(rep.members))}\n"
            f"max_slot_wal_keep_size = {pg_string(str(rep.max_slot_wal_keep_size_mb) + 'MB')}\n"
            "hot_standby = on\n"
            "hot_standby_feedback = on\n"
            "wal_log_hints = on\n"
            f"synchronous_standby_names = {pg_string(rep.synchronous_standby_names())}\n")


def _passfile_line(rep: ReplicationInputs) -> str:
    assert rep.password is not None
    return f"*:*:replication:{rep.user}:{rep.password.get_secret_value()}\n"


def secret_values(rep: ReplicationInputs) -> list[str]:
    return [rep.password.get_secret_value(), rep.verifier()] if rep.password else []


def render_clone_script(rep: ReplicationInputs, layout: "Layout", port: int) -> str:
    from .render import render_template

    return render_template("replica-clone.sh.j2", rep=rep, layout=layout, port=port, passfile=PASSFILE)


def render_member_script(rep: ReplicationInputs, layout: "Layout", port: int) -> str:
    from .render import render_template

    return render_template("replica-member.sh.j2", rep=rep, layout=layout, port=port, passfile=PASSFILE,
                           dropin=f"{layout.dropin_dir}/{DROPIN}")


def clone_stdin(rep: ReplicationInputs) -> str:
    return _passfile_line(rep)


def member_stdin(rep: ReplicationInputs) -> str:
    return _passfile_line(rep) + rep.verifier() + "\n"


def inputs_member(inputs: "PostgresInputs", host: str) -> str:
    """The member named ``host`` (a name or an address), for ``polyvm postgres promote HOST``."""
    from polyvm.errors import ConfigError

    assert inputs.replication is not None
    for m in inputs.replication.members:
        if host in (m.name, m.address):
            return m.name
    raise ConfigError(f"{host!r} is not a replication member (members: "
                      f"{', '.join(m.name + ' ' + m.address for m in inputs.replication.members)})")
