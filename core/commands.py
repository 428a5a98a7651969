"""Built-in CLI commands (registered through the polyvm_register_commands hook like any plugin's)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .hookspecs import hookimpl


def _matrix(backends: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    from .backend import Capabilities

    names = list(backends)
    rows = []
    for _attr, label in Capabilities.MATRIX_ROWS:
        rows.append([label] + [backends[n].capabilities.row()[label] for n in names])
    return names, rows


def capability_matrix_markdown(backends: dict[str, Any]) -> str:
    """The backend x feature matrix as Markdown (docs/backends.md is generated from this)."""
    names, rows = _matrix(backends)
    out = ["| feature | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--markdown", is_flag=True, help="The capability matrix as Markdown.")
def backends_cmd(as_json: bool, markdown: bool) -> None:
    """List backends and their capabilities (a backend x feature matrix)."""
    from rich.console import Console
    from rich.table import Table

    from .plugins import get_plugins

    plugins = get_plugins()
    backends = plugins.backends()
    if as_json:
        click.echo(json.dumps([b.describe() for b in backends.values()], indent=2, default=sorted))
        return
    if markdown:
        click.echo(capability_matrix_markdown(backends))
        return
    names, rows = _matrix(backends)
    table = Table(title="polyvm backends", show_lines=False)
    # Labels never wrap and values fold rather than end in "…": a narrow terminal still shows everything.
    table.add_column("feature", style="bold", no_wrap=True)
    for n in names:
        table.add_column(n, overflow="fold")
    for r in rows:
        table.add_row(*r)
    console = Console()
    console.print(table)
    for n, b in backends.items():
        console.print(f"[bold]{n}[/]: {b.description}" + (f" — {b.capabilities.notes}" if b.capabilities.notes else ""))
    for name, why in plugins.failed.items():
        console.print(f"[yellow]warning[/]: plugin {name} failed to load: {why}")


@click.command("validate")
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False), help="VM spec YAML file.")
@click.option("--backend", default=None, help="Also check the spec against this backend's capabilities.")
def validate_cmd(spec_path: str, backend: str | None) -> None:
    """Check a VM spec file (and optionally a backend's capabilities) without declaring anything."""
    from .errors import SpecError
    from .plugins import get_backend
    from .spec import load_spec_file

    specs = load_spec_file(spec_path)
    if backend:
        be = get_backend(backend)
        problems = []
        for s in specs:
            problems += [f"{s.name}: {p}" for p in be.unsupported(s)]
        if problems:
            from .errors import UnsupportedFeatureError

            raise UnsupportedFeatureError(backend, problems)
    click.echo(f"{spec_path}: {len(specs)} VM spec(s) valid" + (f" for backend {backend}" if backend else ""))


@click.command("plan")
@click.option("--backend", required=True, help="Backend name, or 'all' for every backend side by side.")
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False), help="VM spec YAML file.")
@click.option("--settings", "settings_path", type=click.Path(dir_okay=False), default=None,
              help="YAML file of backend settings: {aws: {...}, gcp: {...}} (what Pulumi config polyvm:<backend> holds).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan_cmd(backend: str, spec_path: str, settings_path: str | None, as_json: bool) -> None:
    """Render the resources a backend would declare, offline (Pulumi mock runtime; no credentials, no network)."""
    from .plan import plan as run_plan
    from .plugins import get_plugins
    from .spec import load_spec_file, load_yaml

    specs = load_spec_file(spec_path)
    plugins = get_plugins()
    all_settings: dict[str, Any] = {}
    if settings_path:
        data = load_yaml(settings_path) or {}
        if not isinstance(data, dict):
            from .errors import ConfigError

            raise ConfigError(f"{settings_path}: expected a mapping of backend name -> settings")
        all_settings = data
    names = list(plugins.backends()) if backend == "all" else [backend]
    results = []
    for name in names:
        be = plugins.get_backend(name)
        results.append(run_plan(be, specs, all_settings.get(name), backends=list(plugins.backends().values())))
    if as_json:
        click.echo(json.dumps({"offline": True, "plans": [p.to_dict() for p in results]}, indent=2, default=str))
        return
    _print_plans(results)


def _short(v: Any, limit: int = 70) -> str:
    s = json.dumps(v, default=str, separators=(",", ":")) if not isinstance(v, str) else v
    return s if len(s) <= limit else s[: limit - 1] + "…"


#: Inputs worth showing in the tree, per resource; everything is in --json.
_MAX_INPUTS = 8


def _print_plans(plans: list[Any]) -> None:
    from rich.console import Console
    from rich.tree import Tree

    from .plan import redact_secrets

    console = Console()
    console.print("[bold yellow]Offline rendering[/] under Pulumi's mock runtime: nothing was created, "
                  "no cloud was contacted; ids and addresses are made up.")
    for p in plans:
        tree = Tree(f"[bold]backend {p.backend}[/] ({len([r for r in p.resources if r.custom])} resources)")

        def add(node: Tree, res: Any) -> None:
            label = f"[cyan]{res.type}[/] [bold]{res.name}[/]"
            sub = node.add(label)
            shown = 0
            for k, v in sorted(redact_secrets(res.inputs).items()):
                if k.startswith("__") or v in (None, [], {}, "") or shown >= _MAX_INPUTS:
                    continue
                sub.add(f"[dim]{k}[/] = {_short(v)}")
                shown += 1
            for c in res.children:
                add(sub, c)

        for root in p.roots:
            add(tree, root)
        console.print(tree)
        for vm, outs in p.outputs.items():
            console.print(f"  outputs of {vm}: " + ", ".join(f"{k}={_short(v, 50)}" for k, v in outs.items()))


@hookimpl
def polyvm_register_commands(cli: click.Group) -> None:
    cli.add_command(backends_cmd)
    cli.add_command(validate_cmd)
    cli.add_command(plan_cmd)
