"""Where backups (:mod:`.backup`) and replicas plug into the recipe's step list (recipe.build_steps).

Each function returns nothing when its section is absent from the inputs, so a recipe without ``backup:``
runs exactly the steps it ran before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import backup as _backup
from . import replication as _rep

if TYPE_CHECKING:
    from polyvm.provisioners.steps import Step

    from .inputs import PostgresInputs
    from .platform import Layout


def _script(name: str, script: str, *, stdin: str | None = None, secrets: list[str] | None = None) -> "Step":
    from .recipe import ScriptStep

    return ScriptStep(name, script, stdin=stdin, secrets=secrets or [])


def before_cluster(inputs: "PostgresInputs", layout: "Layout") -> list["Step"]:
    """pgBackRest and its configuration; a restore when one is asked for (the cluster step adopts it)."""
    steps: list["Step"] = []
    r = inputs.replication
    if r is not None:
        steps.append(_script("replica", _rep.render_clone_script(r, layout, inputs.port),
                             stdin=_rep.clone_stdin(r), secrets=_rep.secret_values(r)))
    b = inputs.backup
    if b is None:
        return steps
    steps += [_script("backup repository", _backup.render_repository_script(b, layout, layout.data_dir),
                     stdin=_backup.config_stdin(inputs, layout), secrets=b.secret_values())]
    if b.restore is not None:
        steps.append(_script("restore", _backup.render_restore_script(b, layout, inputs.port)))
    return steps


def dropin_lines(inputs: "PostgresInputs") -> str:
    return ((_backup.conf_section(inputs.backup) if inputs.backup is not None else "")
            + (_rep.conf_section(inputs.replication) if inputs.replication is not None else ""))


def hba_lines(inputs: "PostgresInputs") -> str:
    return _rep.hba_lines(inputs.replication) if inputs.replication is not None else ""


def after_server(inputs: "PostgresInputs", layout: "Layout") -> list["Step"]:
    steps: list["Step"] = []
    b = inputs.backup
    if b is not None and b.restore is not None:
        steps.append(_script("recovery", _backup.render_recovery_wait_script(layout, inputs.port)))
    r = inputs.replication
    if r is not None:
        steps.append(_script("replication", _rep.render_member_script(r, layout, inputs.port),
                             stdin=_rep.member_stdin(r), secrets=_rep.secret_values(r)))
    return steps


def after_verify(inputs: "PostgresInputs", layout: "Layout") -> list["Step"]:
    b = inputs.backup
    if b is None:
        return []
    return [_script("backups", _backup.render_stanza_script(b, layout, inputs.port))]
