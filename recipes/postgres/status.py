"""``polyvm postgres status``: per host its role, replication lag, WAL archiving and last backup.

:func:`assess` is pure (the JSON the status script prints in, problems out): archiving that has stopped —
a failure newer than the last success, or failures and no success at all — is a problem, and so is a
primary with archiving on but no backup in the repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .inputs import PostgresInputs


@dataclass
class HostStatus:
    host: str
    role: str = "unknown"
    lag: dict[str, Any] | None = None
    replicas: list[dict[str, Any]] = field(default_factory=list)
    archiver: dict[str, Any] = field(default_factory=dict)
    archive_mode: str = "off"
    last_backup: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def render_status_script(inputs: "PostgresInputs") -> str:
    from .render import render_template

    return render_template("status.sh.j2", port=inputs.port, backup=inputs.backup)


def _time(v: Any) -> datetime | None:
    if not v:
        return None
    try:
        return datetime.fromisoformat(str(v))
    except ValueError:
        return None


def parse_status(host: str, text: str) -> HostStatus:
    """The status script's two JSON lines (server, ``pgbackrest info``) as a HostStatus with its problems."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    server = json.loads(lines[0]) if lines else {}
    info = json.loads(lines[1]) if len(lines) > 1 else None
    st = HostStatus(host=host, role=server.get("role", "unknown"), lag=server.get("standby_lag"),
                    replicas=server.get("replicas") or [], archiver=server.get("archiver") or {},
                    archive_mode=server.get("archive_mode", "off"))
    if isinstance(info, list) and info:
        backups = info[0].get("backup") or []
        if backups:
            b = backups[-1]
            st.last_backup = {"label": b.get("label"), "type": b.get("type"),
                              "stopped": datetime.fromtimestamp(b["timestamp"]["stop"]).astimezone().isoformat()
                              if b.get("timestamp") else None}
        status = info[0].get("status") or {}
        if status.get("code") not in (0, None):
            st.problems.append(f"pgbackrest: {status.get('message', 'status code ' + str(status.get('code')))}")
    st.problems += assess(st)
    return st


def assess(st: HostStatus) -> list[str]:
    """What is wrong: archiving stopped (failed after the last success), or no backup on an archiving primary."""
    out = []
    a = st.archiver
    if st.archive_mode == "on" and st.role == "primary":
        failed, ok = _time(a.get("last_failed_time")), _time(a.get("last_archived_time"))
        if failed and (ok is None or failed > ok):
            out.append(f"WAL archiving has stopped: {a.get('failed_count')} failure(s), the last for "
                       f"{a.get('last_failed_wal')} at {a.get('last_failed_time')}, after the last success "
                       f"({a.get('last_archived_time') or 'none'})")
        if st.last_backup is None:
            out.append("no backup in the repository")
    return out


def host_status(conn, inputs: "PostgresInputs", name: str | None = None) -> HostStatus:  # noqa: ANN001
    """Run the status script over ``conn`` (a polyvm Connection) and parse what it prints."""
    from polyvm.provisioners.steps import Script

    cmd, stdin = Script(render_status_script(inputs), name="status").command()
    out = conn.run(cmd, stdin=stdin, name="postgres status")
    return parse_status(name or conn.host, out.stdout)
