"""Built-in CLI commands (registered through the polyvm_register_commands hook like any plugin's)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import ConfigError, SpecError
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
    # Piped output (a file, a pager, a test) keeps the whole matrix instead of wrapping it to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 240)
    console.print(table)
    for n, b in backends.items():
        console.print(f"[bold]{n}[/]: {b.description}" + (f" — {b.capabilities.notes}" if b.capabilities.notes else ""))
    for name, why in plugins.failed.items():
        console.print(f"[yellow]warning[/]: plugin {name} failed to load: {why}")


@click.command("validate")
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False), help="VM spec YAML file.")
@click.option("--backend", default=None, help="Also check the spec against this backend's capabilities and "
                                               "the limits its cloud enforces.")
@click.option("--settings", "settings_path", type=click.Path(dir_okay=False), default=None,
              help="Backend settings (as for plan), checked together with the spec.")
def validate_cmd(spec_path: str, backend: str | None, settings_path: str | None) -> None:
    """Check a VM spec file (and optionally a backend's capabilities and cloud limits) without declaring anything."""
    from .fleet import FleetSpec, load_document
    from .plugins import get_backend

    specs = load_document(spec_path)
    if isinstance(specs, FleetSpec):
        _validate_fleet(spec_path, specs, backend, settings_path)
        return
    if backend:
        be = get_backend(backend)
        problems = []
        for s in specs:
            problems += [f"{s.name}: {p}" for p in be.unsupported(s)]
        if problems:
            from .errors import UnsupportedFeatureError

            raise UnsupportedFeatureError(backend, problems)
        if settings_path:
            settings = be.parse_settings(_settings_by_backend(settings_path).get(backend))
            problems = [f"{s.name}: {p}" for s in specs for p in be.settings_problems(s, settings)]
            if problems:
                raise SpecError(problems, source=f"{settings_path} ({backend})")
    click.echo(f"{spec_path}: {len(specs)} VM spec(s) valid" + (f" for backend {backend}" if backend else ""))


def _validate_fleet(spec_path: str, fleet: Any, backend: str | None, settings_path: str | None) -> None:
    from .plugins import get_backend

    if backend:
        be = get_backend(backend)
        settings = _settings_by_backend(settings_path).get(backend) if settings_path else None
        problems, _parsed = be.fleet_check(fleet, settings, check_settings=bool(settings_path))
        if problems:
            raise SpecError(problems, source=f"{spec_path} ({backend})")
    click.echo(f"{spec_path}: fleet {fleet.name} ({fleet.count} members"
               + (", load balancer" if fleet.load_balancer else "") + ") valid"
               + (f" for backend {backend}" if backend else ""))


@click.command("plan")
@click.option("--backend", required=True, help="Backend name, or 'all' for every backend side by side.")
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False), help="VM spec YAML file.")
@click.option("--settings", "settings_path", type=click.Path(dir_okay=False), default=None,
              help="Backend settings: a YAML file {aws: {...}, gcp: {...}}, or a Pulumi.<stack>.yaml "
                   "(its polyvm:<backend> values).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--against", "against_path", type=click.Path(dir_okay=False), default=None,
              help="The spec now deployed: print what changing it to --spec does to each resource "
                   "(create / update in place / REPLACE / delete) and refuse any data loss.")
@click.option("--allow-data-loss", is_flag=True, help="With --against: exit 0 even when a data disk (or the VM "
                                                       "holding one) would be replaced or deleted.")
def plan_cmd(backend: str, spec_path: str, settings_path: str | None, as_json: bool, against_path: str | None,
             allow_data_loss: bool) -> None:
    """Render the resources a backend would declare, offline (Pulumi mock runtime; no credentials, no network)."""
    from .fleet import load_document
    from .plan import plan_document as run_plan
    from .plugins import get_plugins

    specs = load_document(spec_path)
    plugins = get_plugins()
    all_settings = _settings_by_backend(settings_path) if settings_path else {}
    everything = list(plugins.backends().values())
    if against_path:
        if backend == "all":
            raise ConfigError("--against compares two specs on one backend: name it with --backend")
        be = plugins.get_backend(backend)
        old = run_plan(be, load_document(against_path), all_settings.get(backend), backends=everything)
        new = run_plan(be, specs, all_settings.get(backend), backends=everything)
        _report_changes(be, against_path, spec_path, old, new, as_json=as_json, allow_data_loss=allow_data_loss)
        return
    if backend != "all":
        be = plugins.get_backend(backend)
        results = [run_plan(be, specs, all_settings.get(backend), backends=everything)]
        refused: dict[str, list[str]] = {}
    else:
        # Side by side: render every backend that accepts the spec, and say why each other one refuses.
        results, refused = [], {}
        for be in everything:
            try:
                results.append(run_plan(be, specs, all_settings.get(be.name), backends=everything))
            except SpecError as exc:
                refused[be.name] = exc.problems
    if as_json:
        click.echo(json.dumps({"offline": True, "plans": [p.to_dict() for p in results], "refused": refused},
                              indent=2, default=str))
    else:
        _print_plans(results)
        for name, problems in refused.items():
            click.echo(f"backend {name} refuses this spec:", err=True)
            for prob in problems:
                click.echo(f"  - {prob}", err=True)
    if not results:
        raise SpecError([f"{n}: {p}" for n, probs in refused.items() for p in probs])


def _report_changes(be: Any, old_path: str, new_path: str, old: Any, new: Any, *, as_json: bool,
                    allow_data_loss: bool) -> None:
    from .plan import REPLACE, diff

    changes = diff(be, old, new)
    loss = [c for c in changes if c.data_loss]
    if as_json:
        click.echo(json.dumps({"offline": True, "backend": be.name, "from": old_path, "to": new_path,
                               "changes": [c.to_dict() for c in changes], "data_loss": bool(loss)}, indent=2))
    else:
        click.echo(f"backend {be.name}: {old_path} -> {new_path} (offline, from the provider's replacement rules)")
        if not changes:
            click.echo("  no changes")
        for c in changes:
            flag = "  DATA LOSS" if c.data_loss else ""
            prot = " (protected: pulumi up refuses until protect_data_disks is false)" if c.protected else ""
            why = f" [{', '.join(c.inputs)}]" if c.inputs else ""
            click.echo(f"  {c.action:<19} {c.type} {c.name}{why}{flag}{prot}")
    if loss and not allow_data_loss:
        raise SpecError([f"{c.type} {c.name}: {c.action.lower() if c.action == REPLACE else c.action}d "
                         f"({', '.join(c.inputs) or 'removed from the spec'}): its data disk's contents would be lost"
                         for c in loss] + ["pass --allow-data-loss if that is intended"],
                        source=f"{old_path} -> {new_path}")


def _settings_by_backend(path: str) -> dict[str, Any]:
    """Backend settings from a YAML file: {aws: {...}, gcp: {...}}, or a Pulumi.<stack>.yaml (polyvm:<backend>)."""
    from .spec import load_yaml

    data = load_yaml(path) or {}
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        return {k.split(":", 1)[1]: v for k, v in data["config"].items()
                if k.startswith("polyvm:") and k not in ("polyvm:backend", "polyvm:vm", "polyvm:vms")}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of backend name -> settings")
    return data


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
