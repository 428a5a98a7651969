"""docs/backends.md, generated from the backends' own declarations (capabilities, settings model,
egress rules, reference tables). ``python -m polyvm.backend_docs > docs/backends.md`` regenerates it from
the built-in backends; ``polyvm backends --markdown`` prints the same for every registered backend.
tests/core/test_backend_docs.py fails when the committed file drifts.
"""

from __future__ import annotations

from typing import Any, Mapping

from .backend import Backend

HEADER = """# Backends

<!-- Generated from the backends' declarations by `python -m polyvm.backend_docs > docs/backends.md`.
     Do not edit by hand: tests/core/test_backend_docs.py fails when this file drifts. -->

Every backend maps the same VmSpec to one `polyvm:<backend>:VirtualMachine` component with the same
outputs (`public_ip`, `private_ip`, `ssh_user`, `host_key`, `data_disk_devices`). A spec asking for
something a backend cannot do is rejected before anything is declared, naming the backend and the
option. Every backend passes the contract suite (`polyvm.testing.BackendContract`); a third-party
backend runs it with `class TestMine(BackendContract): backend = MineBackend()` in its own tests.
"""


def _cell(v: Any) -> str:
    s = "" if v is None else str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _rule(r: tuple) -> str:
    proto, lo, hi, cidr = r
    ports = "" if lo is None else (f" {lo}" if lo == hi else f" {lo}-{hi}")
    return f"`{proto}{ports} {cidr}`"


def settings_rows(be: Backend) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in be.settings_model.model_fields.items():
        ann = field.annotation
        typ = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        typ = typ.replace("NoneType", "None")
        default = "(required)" if field.is_required() else f"`{field.default!r}`"
        rows.append((f"`{name}`", typ, default, field.description or ""))
    return rows


def backend_section(be: Backend) -> list[str]:
    caps = be.capabilities
    out = [f"## {be.name}", "", be.description + ".", ""]
    if caps.notes:
        out += [caps.notes, ""]
    if be.extra:
        out += [f"Install: `pip install 'polyvm[{be.extra}]'`.", ""]
    out += [f"Egress: {caps.egress} — " + (", ".join(_rule(r) for r in sorted(be.egress_rules, key=repr))
                                          or "none") + ".", ""]
    out += [f"Settings (Pulumi config `polyvm:{be.name}`):", ""]
    rows = settings_rows(be)
    out += _table(("setting", "type", "default", "meaning"), rows) if rows else ["(none)"]
    out.append("")
    doc = (be.settings_model.__doc__ or "").strip()
    if doc and doc != "Per-backend settings from Pulumi config ``polyvm:<backend>``; backends subclass this.":
        out += [" ".join(doc.split()).replace("``", "`"), ""]
    for title, (headers, table_rows) in be.doc_tables().items():
        out += [f"### {be.name}: {title}", ""] + _table(headers, table_rows) + [""]
    return out


def backends_markdown(backends: Mapping[str, Backend]) -> str:
    """The whole docs/backends.md for ``backends`` (name -> backend), in name order."""
    from .commands import capability_matrix_markdown

    ordered = dict(sorted(backends.items()))
    out = [HEADER, "## Capability matrix", "", capability_matrix_markdown(ordered), ""]
    for be in ordered.values():
        out += backend_section(be)
    return "\n".join(out).rstrip() + "\n"


def builtin_backends() -> dict[str, Backend]:
    """The built-in backends only (no entry-point plugins), what docs/backends.md documents."""
    from .plugins import Plugins

    return Plugins(entry_point_group=None).backends()


if __name__ == "__main__":
    import sys

    sys.stdout.write(backends_markdown(builtin_backends()))
