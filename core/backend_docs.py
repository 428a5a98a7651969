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

The rules each cloud enforces (name lengths and characters, disk sizes, root disk minimum per image, key
types, disk counts) are declared by its backend with their source and checked by `polyvm validate
--backend B` and `polyvm plan` before anything is declared: every problem at once, exit 2. Each backend
also declares which inputs of its resources force a new resource (from the provider's schema):
`polyvm plan --backend B --spec NEW --against OLD` prints create / update in place / REPLACE / delete
per resource and refuses (exit 2) any replacement or deletion of a data disk, or of the VM holding one,
unless `--allow-data-loss`. Data disks carry Pulumi's `protect` and `retain_on_delete` (a `pulumi up`
or `pulumi destroy` that would delete one fails instead) until the backend setting
`protect_data_disks: false`; to rename a VM, set `renamed: {new-name: old-name}` in the backend's
settings and its resources keep their identity (Pulumi aliases). The contract suite checks, for every
backend, that changing tags, ingress, the login key, the size or the image (a newer one published)
never replaces a data disk.

Host keys: every backend that injects a host key (`host key at creation` below) generates an ed25519 key
per VM (pulumi-tls, secret in state) and sends its private half in the VM's user data (AWS `user_data`,
Azure `custom_data`, GCP metadata `user-data`, DigitalOcean `user_data`, vSphere `guestinfo.userdata`), where
cloud-init installs it as the only host key, so the first connection is pinned. Anyone who can read
instance attributes or the metadata service can read that key, so polyvm replaces it on the first
verified connection with a key generated on the VM (`RotateHostKey`, `--rotate-host-key`); only root may
reach the metadata address where polyvm manages the guest firewall. Who can read what, before and after:
[provisioners.md, the trust chain](provisioners.md#host-keys-the-trust-chain). Local hosts can boot
through the same user data and this machine's cloud-init (`polyvm:local.boot: cloud-init`, docs/local.md).
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
    if be.limits:
        out += [f"### {be.name}: limits the cloud enforces (checked by `polyvm validate --backend {be.name}`)", ""]
        out += _table(("field", "limit", "source"), [(f"`{lim.field}`", lim.rule, lim.source) for lim in be.limits])
        out.append("")
    if be.replacements:
        out += [f"### {be.name}: inputs that force a new resource (`polyvm plan --against`)", ""]
        rows = [(f"`{r.type}`", ", ".join(f"`{i}`" for i in r.inputs) or "(none)", r.source) for r in be.replacements]
        out += _table(("resource", "inputs", "source"), rows) + [""]
        holders = ", ".join(f"`{t}`" for t in sorted(be.data_disk_types)) or "(none)"
        out += [f"Data disks live in {holders}: replacing or deleting one is reported as DATA LOSS"
                + (", and they are protected (Pulumi `protect` + `retain_on_delete`) unless "
                   "`protect_data_disks: false`." if caps.durable_data_disks else
                   "; these hosts are disposable, their disks do not survive changes of the host."), ""]
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
