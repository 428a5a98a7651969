"""The PostgreSQL recipe: a list of steps for the SSH layer, per OS family.

    from polyvm.provisioners import Connection
    from polyvm.recipes.postgres import PostgresInputs, apply_postgres

    with Connection("198.51.100.7", "admin", private_key_path="~/.ssh/id_ed25519", host_key="ssh-ed25519 AAAA…") as c:
        result = apply_postgres(c, inputs)       # detects the OS, builds the steps, runs them, verifies
        print(result.summary())

Every step is idempotent: a second run with the same inputs changes nothing and does not restart the
server; a changed setting reloads, or restarts when the setting needs it (pg_settings context
'postmaster'). :func:`build_steps` is pure (for an already known OS), which is what the Pulumi form and
the unit tests use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from polyvm.errors import CommandError, RecipeError
from polyvm.host import Facts, Host
from polyvm.provisioners.steps import DeclaredExec, FilesStep, Piece, RemoteFile, Script, Step, StepResult, apply_steps
from polyvm.recipe import Recipe

from .inputs import PostgresInputs
from .platform import Layout, OsRelease, layout_for
from .render import (
    CA_CERTIFICATE,
    CHANGED_MARKER,
    pgpass_line,
    render_apply_script,
    render_cluster_script,
    render_datadir_script,
    render_install_script,
    render_pg_hba,
    render_postgresql_conf,
    render_verify_script,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from polyvm.provisioners.connection import Connection

__all__ = ["PostgresRecipe", "RecipeResult", "apply_postgres", "build_steps", "dsn", "layout_for_inputs"]


def dsn(address: str, port: int, user: str, database: str, ca_file: str) -> str:
    """A libpq connection URI that verifies the server: TLS, the certificate signed by the server's CA
    (``ca_file``) and naming ``address``. The password comes from a pgpass file or PGPASSWORD."""
    from urllib.parse import quote

    host = f"[{address}]" if ":" in address else address
    return (f"postgresql://{quote(user, safe='')}@{host}:{port}/{quote(database, safe='')}"
            f"?sslmode=verify-full&sslrootcert={quote(ca_file, safe='/')}")

PSQL_AS_POSTGRES = ("cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -h /var/run/postgresql "
                    "-p {port} -d postgres -f -")


def _pg_file(remote_path: str, content: str) -> RemoteFile:
    return RemoteFile(remote_path, content, mode=0o640, owner="postgres", group="postgres")


class ScriptStep(Script):
    """A shell script run as root (uploaded and run in one channel). It prints CHANGED_MARKER when it changed
    something; its other output lines are the step's detail. ``stdin`` may hold secrets (never argv)."""

    def __init__(self, name: str, script: str, *, stdin: str | None = None, secrets: Sequence[str] = ()) -> None:
        super().__init__(script, name=name, stdin=stdin, changed_marker=CHANGED_MARKER, secrets=secrets,
                         detail="output")
        self.script = script


class RolesStep(Step):
    """Roles, databases, extensions and grants: one psql run reads the catalog (:mod:`.catalog`), and only when
    something differs a second one applies exactly that (SCRAM verifiers, never passwords, on psql's stdin).
    Pipelined in two parts: the catalog read ends the program of the steps before it (it ``continues``), and
    the changes (or nothing) start the next one, with the login check after them.
    Its Pulumi form sends every statement, each guarded or idempotent, with the passwords (secret stdin)."""

    def __init__(self, name: str, inputs: PostgresInputs) -> None:
        self.name = name
        self.inputs = inputs
        self._snapshot: Any = None  # the catalog read by the first part, for the second

    def _secrets(self) -> list[str]:
        return [u.password.get_secret_value() for u in self.inputs.users if u.password]

    def _empty(self) -> bool:
        return not (self.inputs.users or self.inputs.databases)

    def _psql(self, sql: str) -> str:
        import shlex

        return f"printf '%s' {shlex.quote(sql)} | {{ {PSQL_AS_POSTGRES.format(port=self.inputs.port)}; }}"

    def _plan(self, snapshot: Any) -> Any:
        from .catalog import plan

        p = plan(self.inputs, snapshot)
        if p.refusals:
            raise RecipeError("nothing changed in roles and databases: " + "; ".join(p.refusals))
        return p

    def _applied(self, p: Any) -> StepResult:
        from .catalog import change_lines

        return StepResult(self.name, True, "; ".join(change_lines(p))) if p.changes else StepResult(self.name, False, "")

    def pipelined(self, conn: "Connection") -> Piece | None:
        from .catalog import parse_snapshot, plan_sql, snapshot_sql

        if self._empty():
            return Piece(":", self.name, lambda r: StepResult(self.name, False, "no users"))
        if self._snapshot is None:
            def read(r: Any) -> StepResult:
                self._snapshot = parse_snapshot(r.stdout)
                return StepResult(self.name, False, "catalog read")

            return Piece(self._psql(snapshot_sql(self.inputs)), f"{self.name} (read)", read, continues=True)
        try:
            p = self._plan(self._snapshot)
        except RecipeError:
            return None  # apply() reports it
        self._snapshot = None
        if not p.changes:
            return Piece(":", self.name, lambda r: self._applied(p))
        return Piece(self._psql(plan_sql(p)), self.name, lambda r: self._applied(p), self._secrets(), private=True)

    def apply(self, conn: "Connection") -> StepResult:
        from .catalog import parse_snapshot, plan_sql, snapshot_sql

        inputs = self.inputs
        if self._empty():
            return StepResult(self.name, False, "no users")
        cmd = PSQL_AS_POSTGRES.format(port=inputs.port)
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            cur = conn.run(cmd, stdin=snapshot_sql(inputs), name="read roles", secrets=self._secrets())
            snapshot = parse_snapshot(cur.stdout)
        p = self._plan(snapshot)
        if p.changes:
            conn.run(cmd, stdin=plan_sql(p), name="create roles and databases", secrets=self._secrets())
        return self._applied(p)

    def declared(self) -> DeclaredExec:
        from .catalog import plan, plan_sql

        sql = plan_sql(plan(self.inputs, None, plaintext=True)) if not self._empty() else "select 1;"
        return DeclaredExec(PSQL_AS_POSTGRES.format(port=self.inputs.port), sql, secret=True, follows_files=False)


@dataclass
class RecipeResult:
    """What a run did on one host."""

    host: str
    os: str
    pg_version: str
    data_dir: str
    steps: list[StepResult] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    duration: float = 0.0

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.steps)

    @property
    def changes(self) -> list[str]:
        return [f"{s.name}: {s.detail or 'changed'}" for s in self.steps if s.changed]

    @property
    def restarted(self) -> bool:
        return any("restarted" in s.detail for s in self.steps)

    def summary(self) -> str:
        head = (f"{self.host}: PostgreSQL {self.pg_version} on {self.os}, data in {self.data_dir}: "
                f"{'changed' if self.changed else 'no change'} ({self.duration:.1f}s)")
        return "\n".join([head] + [f"  - {c}" for c in self.changes])


# --------------------------------------------------------------------------------------------------------
# Building the steps (pure)
# --------------------------------------------------------------------------------------------------------

def layout_for_inputs(inputs: PostgresInputs, os_release: OsRelease | Facts) -> Layout:
    return layout_for(os_release.family, os_release.version, inputs.version, data_mount=inputs.mount_point)


def build_steps(inputs: PostgresInputs, layout: Layout, *, memory_mb: int | None = None,
                tls_names: Sequence[str] = ()) -> list[Step]:
    """Every step of the recipe for one host whose OS layout is known. Passwords must all be set. The data
    disk (mounted) and the guest firewall are the guest baseline's, applied before these steps.
    ``tls_names``: the addresses/names clients use besides the host's own (the server certificate's SANs)."""
    missing = inputs.missing_passwords()
    if missing:
        raise RecipeError(f"users without a password: {', '.join(missing)} (generate them first: "
                          "polyvm.recipes.postgres.ensure_passwords)")
    from . import ha  # backups and replicas: their own steps and drop-in lines (docs/postgres-ha.md)

    steps: list[Step] = [ScriptStep("install PostgreSQL", render_install_script(layout))]
    if inputs.mount_point:
        steps.append(ScriptStep("data directory", render_datadir_script(inputs, layout)))
    steps += ha.before_cluster(inputs, layout)
    steps.append(ScriptStep("cluster", render_cluster_script(inputs, layout, tls_names)))
    steps.append(FilesStep("configuration", [
        _pg_file(layout.dropin_path, render_postgresql_conf(inputs, layout, memory_mb=memory_mb)
                 + ha.dropin_lines(inputs)),
        _pg_file(layout.hba_path, render_pg_hba(inputs, layout) + ha.hba_lines(inputs)),
    ]))
    steps.append(ScriptStep("server", render_apply_script(inputs, layout)))
    steps += ha.after_server(inputs, layout)
    steps.append(RolesStep("roles and databases", inputs))
    steps.append(verify_step(inputs, layout))
    steps += ha.after_verify(inputs, layout)
    return steps


def verify_step(inputs: PostgresInputs, layout: Layout) -> ScriptStep:
    target = inputs.verify_target() if inputs.allow_loopback else None
    stdin = None
    secrets: list[str] = []
    if target:
        user, db = target
        pw = next(u.password for u in inputs.users if u.name == user)
        assert pw is not None
        stdin = pgpass_line("127.0.0.1", inputs.port, db, user, pw.get_secret_value())
        secrets = [pw.get_secret_value()]
    return ScriptStep("verify", render_verify_script(inputs, layout), stdin=stdin, secrets=secrets)


class PostgresRecipe(Recipe):
    """PostgreSQL as a polyvm recipe (registered as ``postgres``)."""

    name = "postgres"
    description = "a locked-down PostgreSQL server: TLS, scram-sha-256, only the allowed client networks"
    inputs_model = PostgresInputs
    docs = "docs/postgres.md"
    # Debian's postgresql package creates a cluster at install time; a new VM installs the server itself.
    leftovers = ("var/lib/postgresql/*/*", "etc/postgresql/*/*")

    def defaults_for(self, host: Host, data: Mapping[str, Any]) -> dict[str, Any]:
        """Allowed clients from the spec's ingress rules for the PostgreSQL port (never a world default);
        the data directory on the host's first data disk that has a mount point."""
        out = dict(data or {})
        if "allowed_cidrs" not in out:
            port = int(out.get("port", 5432))
            cidrs = [c for r in host.ingress if r.covers(port) for c in r.cidrs]
            if cidrs:
                out["allowed_cidrs"] = list(dict.fromkeys(cidrs))
        if "mount_point" not in out:
            mounted = [d.mount_point for d in host.disks if d.mount_point]
            if mounted:
                out["mount_point"] = mounted[0]
        if "memory_mb" not in out and host.facts is not None and host.facts.memory_mb:
            out["memory_mb"] = max(128, host.facts.memory_mb)
        return out

    def sandbox_inputs(self, host: Host, client: str) -> dict[str, Any]:
        """Clients from ``client`` only; a user and a database called app (password generated)."""
        return {"allowed_cidrs": [f"{client}/32"], "users": [{"name": "app"}], "databases": [{"name": "app"}]}

    def secrets_needed(self, inputs: "BaseModel") -> list[str]:
        assert isinstance(inputs, PostgresInputs)
        return inputs.missing_passwords()

    def with_secrets(self, inputs: "BaseModel", secrets: Mapping[str, str]) -> PostgresInputs:
        assert isinstance(inputs, PostgresInputs)
        return inputs.with_passwords(secrets)

    def ensure_secrets(self, inputs: "BaseModel", path: Any) -> tuple[PostgresInputs, list[str]]:
        from .passwords import ensure_passwords

        assert isinstance(inputs, PostgresInputs)
        return ensure_passwords(inputs, path)

    def steps(self, inputs: "BaseModel", host: Host, facts: Facts) -> list[Step]:
        assert isinstance(inputs, PostgresInputs)
        if host.user == "postgres":
            raise RecipeError(f"{host.label}: the SSH login user 'postgres' is the server's own system account; "
                              "log in as another user")
        return build_steps(inputs, layout_for_inputs(inputs, facts), memory_mb=facts.memory_mb,
                           tls_names=[host.address])

    def ports(self, inputs: "BaseModel") -> list[int]:
        assert isinstance(inputs, PostgresInputs)
        return [inputs.port]

    def outputs(self, inputs: "BaseModel", host: Host) -> dict[str, Any]:
        """What a client needs to connect securely: ``dsn`` (sslmode=verify-full against the server's own
        CA; ``sslrootcert=ca.crt`` names the CA file: fetch ``ca_certificate`` from the host to a file of
        that name, or give its path), the CA certificate's path on the host, and a ``pgpass`` line (the
        password field is ``*`` here: the password is a secret, shown by the form that keeps it)."""
        assert isinstance(inputs, PostgresInputs)
        out: dict[str, Any] = {"address": host.address, "port": inputs.port, "sslmode": "verify-full",
                               "ca_certificate": CA_CERTIFICATE}
        target = inputs.verify_target()
        if target:
            user, db = target
            out.update(user=user, database=db, dsn=dsn(host.address, inputs.port, user, db, "ca.crt"),
                       pgpass=pgpass_line(host.address, inputs.port, db, user, "*").rstrip("\n"))
        return out

    def client_files(self, inputs: "BaseModel", host: Host) -> dict[str, str]:
        """The server's CA certificate: what clients pin (sslrootcert) to verify the server."""
        return {"ca.crt": CA_CERTIFICATE}

    def localize(self, outputs: Mapping[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
        """The DSN naming the local copy of the CA certificate (``ca_file``)."""
        out = dict(outputs)
        ca = files.get("ca.crt")
        if ca:
            out["ca_file"] = ca
            if out.get("dsn"):
                out["dsn"] = dsn(out["address"], out["port"], out["user"], out["database"], ca)
        return out

    def stamp_probe(self, inputs: "BaseModel", host: Host, facts: Facts) -> str | None:
        """What the steps act on besides the copied files: packages, the cluster and its unit, the data
        directory, the TLS files (and whether the certificate is due), the running server's settings and the
        catalog the roles step plans from. None (no stamp) with backups or replication: their steps act on a
        repository and on other servers, which no probe on this host sees."""
        from .catalog import snapshot_sql
        from .render import render_template, ssl_files

        assert isinstance(inputs, PostgresInputs)
        if inputs.backup is not None or inputs.replication is not None:
            return None
        layout = layout_for_inputs(inputs, facts)
        crt, key = ssl_files(layout)
        return render_template("stamp-probe.sh.j2", layout=layout, port=inputs.port, mount_point=inputs.mount_point,
                               ssl_cert_file=crt, ssl_key_file=key, catalog_sql=snapshot_sql(inputs, stamp=True))

    def drift(self, inputs: "BaseModel", host: Host, conn: Any, *, tls_days: int = 30) -> list:
        """Settings, pg_hba, roles, databases, extensions, grants, file modes, the guest firewall and the
        certificate's expiry against the inputs; one script, one exec channel, nothing changed."""
        from .drift import check_host

        assert isinstance(inputs, PostgresInputs)
        return check_host(conn, inputs, host, tls_days=tls_days)

    def check(self, inputs: "BaseModel", host: Host, *, timeout: float = 10.0) -> str:
        """Log in over TCP with TLS and SCRAM from this machine as the first user."""
        from .login import check_login

        assert isinstance(inputs, PostgresInputs)
        target = inputs.verify_target()
        if not target:
            return ""
        user, db = target
        pw = next(u.password for u in inputs.users if u.name == user)
        assert pw is not None
        check_login(host.address, inputs.port, user, db, pw.get_secret_value(), timeout=timeout)
        return f"database login as {user}"


# --------------------------------------------------------------------------------------------------------
# Running against a host
# --------------------------------------------------------------------------------------------------------

def apply_postgres(conn: "Connection", inputs: PostgresInputs, *, host: Host | None = None,
                   os_release: OsRelease | Facts | None = None, memory_mb: int | None = None) -> RecipeResult:
    """Bring the host behind ``conn`` to the state ``inputs`` describe and verify it; returns what changed.
    With ``host``, the guest baseline (firewall, data disks) runs first, as in ``run_recipe``."""
    from dataclasses import replace

    from polyvm.provisioners.baseline import baseline_steps
    from polyvm.provisioners.fanout import detect_facts

    start = time.monotonic()
    if host is None:
        host = Host(address=conn.host, user=conn.user, port=conn.port, name=getattr(conn, "name", "") or "")
    facts = (Facts(os_release.family, os_release.version, os_release.pretty, memory_mb) if os_release is not None
             else host.facts)
    if facts is None:
        facts = detect_facts(conn)
    if memory_mb is not None or facts.memory_mb is None:
        facts = replace(facts, memory_mb=memory_mb or detect_facts(conn).memory_mb)
    layout = layout_for_inputs(inputs, facts)
    steps = baseline_steps(host, facts) + build_steps(inputs, layout, memory_mb=facts.memory_mb,
                                                      tls_names=[host.address])
    result = RecipeResult(host=host.label, os=facts.pretty, pg_version=layout.pg_version, data_dir=layout.data_dir)
    t0 = time.monotonic()
    try:
        for step, res in apply_steps(conn, steps):
            result.steps.append(res)
            result.durations[step.name] = time.monotonic() - t0
            t0 = time.monotonic()
    except CommandError as exc:
        raise RecipeError(f"postgres recipe, step {exc.step!r}: {exc}") from None
    result.duration = time.monotonic() - start
    return result
