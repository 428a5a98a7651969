"""``polyvm postgres --check``: what differs between a live server and what the recipe would make it.

One script (``templates/check.sh.j2``), one exec channel, changes nothing: it prints the OS facts, the recipe's
configuration files and their modes, the certificate's expiry, a catalog snapshot (:mod:`.catalog`) with the
settings' sources, and — where polyvm manages the guest firewall — the live ``inet polyvm`` table next to the
expected ruleset as nft itself lists it (loaded into a throw-away network namespace, ``unshare -n``).
:func:`drift_of` compares that with the inputs and returns one :class:`~polyvm.recipe.Drift` per difference.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
from typing import TYPE_CHECKING

from polyvm.host import Host, parse_facts
from polyvm.recipe import Drift

from .catalog import parse_snapshot, plan, snapshot_sql
from .inputs import DEFAULT_VERSIONS, PostgresInputs
from .platform import Layout, layout_for
from .render import render_pg_hba, render_postgresql_conf, render_template

if TYPE_CHECKING:
    from polyvm.provisioners.connection import Connection

#: Default warning window for the server certificate.
TLS_DAYS = 30


def candidate_layouts(inputs: PostgresInputs, host: Host) -> list[Layout]:
    """Where the recipe's files would be: the host's OS when known, else every OS the recipe supports."""
    if host.facts is not None:
        return [layout_for(host.facts.family, host.facts.version, inputs.version, data_mount=inputs.mount_point)]
    out: dict[str, Layout] = {}
    for family, os_version in DEFAULT_VERSIONS:
        lay = layout_for(family, os_version, inputs.version, data_mount=inputs.mount_point)
        out.setdefault(lay.dropin_path, lay)
    return list(out.values())


def _settings_sql() -> str:
    return ("\\c postgres\n"
            "SELECT 'auto', coalesce(json_agg(json_build_object('name', name, 'setting', setting, 'applied', applied)),"
            " '[]') FROM pg_file_settings WHERE sourcefile LIKE '%/postgresql.auto.conf';\n"
            "SELECT 'sources', coalesce(json_object_agg(name, coalesce(sourcefile, source)), '{}') FROM pg_settings "
            "WHERE source NOT IN ('default', 'override', 'client', 'session');\n"
            "SELECT 'pending', coalesce(json_agg(name), '[]') FROM pg_settings WHERE pending_restart;\n"
            "SELECT 'db_role_settings', coalesce(json_agg(json_build_object('db', coalesce(d.datname, ''), 'role', "
            "coalesce(r.rolname, ''), 'config', s.setconfig)), '[]') FROM pg_db_role_setting s LEFT JOIN pg_database d "
            "ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole;\n")


def check_script(inputs: PostgresInputs, host: Host, layouts: list[Layout]) -> str:
    from polyvm.provisioners.baseline import FIREWALL_RULES_PATH, guest_ruleset

    firewall = guest_ruleset(host.firewall) if host.firewall is not None else None
    return render_template("check.sh.j2", layouts=layouts, port=inputs.port,
                           sql=snapshot_sql(inputs) + _settings_sql(), firewall=firewall,
                           firewall_path=FIREWALL_RULES_PATH)


def _sections(out: str) -> dict[str, str]:
    parts: dict[str, list[str]] = {}
    cur = None
    for line in out.splitlines():
        if line.startswith("@@polyvm:"):
            cur = line[len("@@polyvm:"):]
            parts[cur] = []
        elif cur is not None:
            parts[cur].append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


def _diff(name: str, have: str, want: str) -> str:
    return "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True), f"{name} (live)",
                                        f"{name} (polyvm)"))


def _content(text: str) -> list[str]:
    """The lines that mean something (whitespace normalised, comments and blank lines left out)."""
    return [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def drift_of(inputs: PostgresInputs, host: Host, output: str, *, tls_days: int = TLS_DAYS,
             now: _dt.datetime | None = None) -> list[Drift]:
    """The differences in the check script's ``output`` (pure; the unit tests feed it text)."""
    sec = _sections(output)
    layouts = candidate_layouts(inputs, host)
    idx = sec.get("layout", "").strip()
    if not idx.isdigit():
        return [Drift("server", "no polyvm-managed PostgreSQL here (no recipe drop-in in any known place)")]
    layout = layouts[int(idx)]
    facts = host.facts or parse_facts(sec.get("facts", ""))
    drifts: list[Drift] = []

    # --- configuration files ----------------------------------------------------------------------------
    want_conf = render_postgresql_conf(inputs, layout, memory_mb=facts.memory_mb)
    want_hba = render_pg_hba(inputs, layout)
    for name, path, want in (("settings", layout.dropin_path, want_conf), ("pg_hba", layout.hba_path, want_hba)):
        have = sec.get("dropin" if name == "settings" else "hba", "")
        if _content(have) != _content(want):
            added = [x for x in _content(have) if x not in _content(want)]
            removed = [x for x in _content(want) if x not in _content(have)]
            what = "; ".join([f"extra line {x!r}" for x in added] + [f"missing line {x!r}" for x in removed])
            drifts.append(Drift(name, f"{path}: {what or 'lines in another order'}",
                                _diff(path, have + "\n", want)))

    # --- file modes ---------------------------------------------------------------------------------------
    for line in sec.get("stat", "").splitlines():
        try:
            path, owner, group, mode_s, _kind = line.split("|")
        except ValueError:
            continue
        mode = int(mode_s, 8)
        problems = []
        if path == layout.data_dir:
            if mode & 0o077:
                problems.append(f"mode {mode_s}, want 700")
        elif path.endswith("/server.crt"):
            pass  # a certificate is public
        elif mode & 0o007:
            problems.append(f"mode {mode_s} lets every local user {'read' if mode & 0o004 else 'use'} it")
        if owner not in ("postgres", "root"):
            problems.append(f"owned by {owner}, want postgres")
        if path in (layout.dropin_path, layout.hba_path) and (owner, group, mode) != ("postgres", "postgres", 0o640):
            problems.append(f"{owner}:{group} {mode_s}, want postgres:postgres 640")
        if problems:
            drifts.append(Drift("file", f"{path}: {'; '.join(dict.fromkeys(problems))}"))

    # --- TLS ----------------------------------------------------------------------------------------------
    tls = sec.get("tls", "").strip()
    try:
        not_after = _dt.datetime.strptime(tls, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        drifts.append(Drift("tls", f"server certificate unreadable: {tls[:200]}"))
    else:
        left = not_after - (now or _dt.datetime.now(_dt.timezone.utc))
        if left < _dt.timedelta(days=tls_days):
            drifts.append(Drift("tls", f"server certificate expires {not_after:%Y-%m-%d} (in {left.days} days; "
                                       f"warning window {tls_days} days)"))

    # --- catalog ------------------------------------------------------------------------------------------
    catalog = sec.get("catalog", "")
    if not any(line.startswith("roles\t") for line in catalog.splitlines()):
        drifts.append(Drift("server", f"PostgreSQL does not answer: {catalog.strip()[:300]}"))
        return drifts
    snap = parse_snapshot(catalog)
    p = plan(inputs, snap, check=True)
    for c in p.changes:
        if c.what:
            drifts.append(Drift(c.kind if c.kind in ("role", "database", "extension", "grant") else
                                {"password": "role", "membership": "role", "owner": "database"}.get(c.kind, c.kind),
                                c.what))
    drifts += [Drift("role", n.what) for n in p.notices]
    drifts += [Drift("refused", r) for r in p.refusals]
    extra: dict[str, object] = {}
    for line in catalog.splitlines():
        tag, _, data = line.partition("\t")
        if tag in ("auto", "sources", "pending", "db_role_settings") and data:
            extra[tag] = json.loads(data)
    for row in extra.get("auto", []) or []:  # type: ignore[union-attr]
        drifts.append(Drift("setting", f"{row['name']} = {row['setting']} set by ALTER SYSTEM (postgresql.auto.conf)"))
    sources = extra.get("sources", {}) or {}
    for name in inputs.effective_settings(facts.memory_mb):
        src = sources.get(name)  # type: ignore[union-attr]
        if src and src != layout.dropin_path and not str(src).endswith("postgresql.auto.conf"):
            drifts.append(Drift("setting", f"{name} comes from {src}, not from {layout.dropin_path}"))
    for name in extra.get("pending", []) or []:  # type: ignore[union-attr]
        drifts.append(Drift("setting", f"{name} changed in the files but waits for a restart"))
    for row in extra.get("db_role_settings", []) or []:  # type: ignore[union-attr]
        where = " ".join(x for x in (f"database {row['db']}" if row["db"] else "",
                                     f"role {row['role']}" if row["role"] else "") if x)
        drifts.append(Drift("setting", f"{where} sets {', '.join(row['config'] or [])} (ALTER ... SET)"))

    # --- guest firewall -----------------------------------------------------------------------------------
    if host.firewall is not None:
        from polyvm.provisioners.baseline import guest_ruleset

        have_fw, want_fw = sec.get("firewall", ""), sec.get("firewall_want", "")
        if "table inet polyvm" not in want_fw:
            drifts.append(Drift("firewall", f"could not list the expected ruleset: {want_fw.strip()[:200]}"))
        elif _content(have_fw) != _content(want_fw):
            drifts.append(Drift("firewall", "the loaded nftables table inet polyvm differs from the spec's rules",
                                _diff("table inet polyvm", have_fw + "\n", want_fw + "\n")))
        import hashlib

        want_sha = hashlib.sha256(guest_ruleset(host.firewall).encode()).hexdigest()
        if sec.get("firewall_file", "").strip() != want_sha:
            drifts.append(Drift("firewall", "the firewall rules file /etc/polyvm/firewall.nft differs from the spec's"))
    return drifts


def check_host(conn: "Connection", inputs: PostgresInputs, host: Host, *, tls_days: int = TLS_DAYS) -> list[Drift]:
    """Run the check script on ``conn`` (one exec channel) and return the drift."""
    from polyvm.provisioners.steps import Script

    script = check_script(inputs, host, candidate_layouts(inputs, host))
    cmd, stdin = Script(script, name="postgres check").command()
    out = conn.run(cmd, stdin=stdin, name="postgres check", check=False)
    if out.exit_status != 0:
        return [Drift("server", f"the check script failed ({out.exit_status}): {out.stderr.strip()[:300]}")]
    return drift_of(inputs, host, out.stdout, tls_days=tls_days)
