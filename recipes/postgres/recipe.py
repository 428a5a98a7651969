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
from typing import TYPE_CHECKING, Callable, Sequence

from polyvm.errors import CommandError, RecipeError
from polyvm.provisioners.steps import Script, Step, StepResult

from .inputs import PostgresInputs
from .platform import Layout, OsRelease, layout_for, parse_os_release
from .render import (
    CHANGED_MARKER,
    pgpass_line,
    render_apply_script,
    render_cluster_script,
    render_datadisk_script,
    render_install_script,
    render_pg_hba,
    render_postgresql_conf,
    render_template,
    render_verify_script,
)
from .roles import parse_current, query_current_sql, roles_sql

if TYPE_CHECKING:
    from polyvm.provisioners.connection import Connection

__all__ = ["PostgresRecipe", "RecipeResult", "apply_postgres", "build_steps", "detect", "layout_for_inputs",
           "steps_for"]

FIREWALL_RULES_PATH = "/etc/polyvm/firewall.nft"
PSQL_AS_POSTGRES = ("cd / && runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -h /var/run/postgresql "
                    "-p {port} -d postgres -f -")


@dataclass(frozen=True)
class RemoteFile:
    remote_path: str
    content: str
    mode: int = 0o640
    owner: str | None = "postgres"
    group: str | None = "postgres"


class ScriptStep(Script):
    """A shell script run as root (uploaded and run in one channel). It prints CHANGED_MARKER when it changed
    something; its other output lines are the step's detail. ``stdin`` may hold secrets (never argv)."""

    def __init__(self, name: str, script: str, *, stdin: str | None = None, secrets: Sequence[str] = ()) -> None:
        super().__init__(script, name=name, stdin=stdin, changed_marker=CHANGED_MARKER, secrets=secrets)
        self.script = script

    def declared_command(self) -> str:
        """A command that is the same on every declaration (for Pulumi's RemoteExec, where a changed command
        means "run again"): the script arrives first on stdin, then the step's own stdin, if any."""
        take = f"head -c {len(self.content)}" if self.stdin is not None else "cat"
        return (f"t=$(mktemp) || exit 1; trap 'rm -f \"$t\"' EXIT; {take} > \"$t\" || exit 1; "
                f"/bin/sh \"$t\"" + ("" if self.stdin is not None else " </dev/null"))

    def apply(self, conn: "Connection") -> StepResult:
        cmd, data = self.command()
        r = conn.run(cmd, stdin=data, name=self.name, secrets=self.secrets, timeout=self.timeout)
        lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
        return StepResult(self.name, CHANGED_MARKER in lines, "; ".join(ln for ln in lines if ln != CHANGED_MARKER))


class FilesStep(Step):
    """Files copied atomically in one round trip; unchanged files are not sent (content, mode and owner compared)."""

    def __init__(self, name: str, files: Sequence[RemoteFile]) -> None:
        self.name = name
        self.files = list(files)

    def apply(self, conn: "Connection") -> StepResult:
        from polyvm.provisioners.transfer import Upload

        flags = conn.put_files([Upload(f.content, f.remote_path, f.mode, f.owner, f.group) for f in self.files])
        changed = [f.remote_path for f, c in zip(self.files, flags) if c]
        return StepResult(self.name, bool(changed), ("updated " + ", ".join(changed)) if changed else "")


class RolesStep(Step):
    """Roles and databases. Reads the stored SCRAM verifiers, sets a password only when it differs, and
    sends verifiers (never the password) through psql's stdin."""

    def __init__(self, name: str, inputs: PostgresInputs) -> None:
        self.name = name
        self.inputs = inputs

    def apply(self, conn: "Connection") -> StepResult:
        inputs = self.inputs
        if not inputs.users:
            return StepResult(self.name, False, "no users")
        cmd = PSQL_AS_POSTGRES.format(port=inputs.port)
        secrets = [u.password.get_secret_value() for u in inputs.users if u.password]
        cur = conn.run(cmd, stdin=query_current_sql(inputs), name="read roles", secrets=secrets)
        sql, changes = roles_sql(inputs, parse_current(cur.stdout))
        if not sql:
            return StepResult(self.name, False, "")
        conn.run(cmd, stdin=sql, name="create roles and databases", secrets=secrets)
        return StepResult(self.name, bool(changes), "; ".join(changes))


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

def layout_for_inputs(inputs: PostgresInputs, os_release: OsRelease) -> Layout:
    return layout_for(os_release.family, os_release.version, inputs.version,
                      data_mount=inputs.mount_point if inputs.data_device else None)


def build_steps(inputs: PostgresInputs, layout: Layout, *, memory_mb: int | None = None) -> list[Step]:
    """Every step of the recipe for one host whose OS layout is known. Passwords must all be set."""
    missing = inputs.missing_passwords()
    if missing:
        raise RecipeError(f"users without a password: {', '.join(missing)} (generate them first: "
                          "polyvm.recipes.postgres.ensure_passwords)")
    steps: list[Step] = [ScriptStep("install PostgreSQL", render_install_script(layout))]
    if inputs.data_device:
        steps.append(ScriptStep("data disk", render_datadisk_script(inputs, layout)))
    steps.append(ScriptStep("cluster", render_cluster_script(inputs, layout)))
    steps.append(FilesStep("configuration", [
        RemoteFile(layout.dropin_path, render_postgresql_conf(inputs, layout, memory_mb=memory_mb)),
        RemoteFile(layout.hba_path, render_pg_hba(inputs, layout)),
    ]))
    if inputs.guest_firewall:
        from polyvm.firewall import render_nftables

        steps.append(FilesStep("firewall rules", [
            RemoteFile(FIREWALL_RULES_PATH, render_nftables(inputs.firewall_rules()), mode=0o600,
                       owner="root", group="root")]))
        steps.append(ScriptStep("firewall", render_template("firewall.sh.j2", rules_path=FIREWALL_RULES_PATH)))
    steps.append(ScriptStep("server", render_apply_script(inputs, layout)))
    steps.append(RolesStep("roles and databases", inputs))
    steps.append(verify_step(inputs, layout))
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


# --------------------------------------------------------------------------------------------------------
# Running against a host
# --------------------------------------------------------------------------------------------------------

_FACTS = ("cat /etc/os-release; echo @@polyvm@@; sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo")


def detect(conn: "Connection") -> tuple[OsRelease, int | None]:
    """(OS from /etc/os-release, RAM in MB) of the host, in one command."""
    r = conn.run(_FACTS, name="detect OS", sudo=False)
    text, _, mem = r.stdout.partition("@@polyvm@@")
    mem = mem.strip()
    return parse_os_release(text), (int(mem) // 1024 if mem.isdigit() else None)


def apply_postgres(conn: "Connection", inputs: PostgresInputs, *, os_release: OsRelease | None = None,
                   memory_mb: int | None = None) -> RecipeResult:
    """Bring the host behind ``conn`` to the state ``inputs`` describe and verify it. Returns what changed."""
    start = time.monotonic()
    if os_release is None or memory_mb is None:
        found_os, found_mem = detect(conn)
        os_release = os_release or found_os
        memory_mb = memory_mb or found_mem
    layout = layout_for_inputs(inputs, os_release)
    steps = build_steps(inputs, layout, memory_mb=memory_mb)
    result = RecipeResult(host=getattr(conn, "name", "") or getattr(conn, "host", ""), os=os_release.pretty,
                          pg_version=layout.pg_version, data_dir=layout.data_dir)
    for step in steps:
        t0 = time.monotonic()
        try:
            result.steps.append(step.apply(conn))
            result.durations[step.name] = time.monotonic() - t0
        except CommandError as exc:
            raise RecipeError(f"postgres recipe, step {step.name!r}: {exc}") from None
    result.duration = time.monotonic() - start
    return result



def steps_for(inputs: PostgresInputs) -> "Callable[[Connection], list[Step]]":
    """For ``fanout(conns, steps_for(inputs))``: per host, detect the OS and RAM, then build the steps."""
    def build(conn: "Connection") -> list[Step]:
        os_release, memory_mb = detect(conn)
        return build_steps(inputs, layout_for_inputs(inputs, os_release), memory_mb=memory_mb)
    return build


class PostgresRecipe(Step):
    """The whole recipe as one step (detect, then every step), e.g. for ``fanout(hosts, [PostgresRecipe(inputs)])``."""

    def __init__(self, inputs: PostgresInputs, *, name: str = "postgres") -> None:
        self.inputs = inputs
        self.name = name

    def apply(self, conn: "Connection") -> StepResult:
        result = apply_postgres(conn, self.inputs)
        return StepResult(self.name, result.changed, "; ".join(result.changes) or "no change")
