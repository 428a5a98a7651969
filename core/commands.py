"""Built-in CLI commands (registered through the polyvm_register_commands hook like any plugin's)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
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


@dataclass
class PlanInputs:
    """What ``validate`` and ``plan`` read, the same way: the specs, each backend's settings, and (from a
    Pulumi.<stack>.yaml) the stack's backend and the rest of its ``polyvm`` config (e.g. a recipe's inputs)."""

    specs: Any  # list[VmSpec], or a FleetSpec for a fleet file
    settings: dict[str, Any]
    source: str
    stack_backend: str | None = None
    stack_config: dict[str, Any] = field(default_factory=dict)


#: Keys of a stack's ``polyvm`` namespace that are neither a backend's settings nor the spec.
_STACK_KEYS = ("backend", "vm", "vms")


def load_inputs(spec_path: str, settings_path: str | None) -> PlanInputs:
    """The specs of ``spec_path`` (a spec file, ``vms: [...]``, or a Pulumi.<stack>.yaml) and the backend
    settings of ``settings_path`` (or, without it, of the stack file)."""
    from .fleet import load_document
    from .spec import load_yaml, specs_from_values, stack_config

    stack = stack_config(load_yaml(spec_path))
    if stack is not None:
        specs = specs_from_values(stack.get("vm"), stack.get("vms"), source=spec_path)
        backend = stack.get("backend")
        own = {k: v for k, v in stack.items() if k not in _STACK_KEYS}
        settings = _settings_by_backend(settings_path) if settings_path else own
        return PlanInputs(specs, settings, spec_path, backend if isinstance(backend, str) else None, own)
    specs = load_document(spec_path)
    return PlanInputs(specs, _settings_by_backend(settings_path) if settings_path else {}, spec_path)


def _chosen_backends(backend: str | None, inputs: PlanInputs) -> list[Any]:
    from .plugins import get_plugins

    plugins = get_plugins()
    name = backend or inputs.stack_backend
    if not name:
        raise ConfigError(f"--backend is required ({inputs.source} names no polyvm:backend); "
                          "polyvm backends lists them, or --backend all")
    if name == "all":
        return list(plugins.backends().values())
    return [plugins.get_backend(name)]


def _check_all(chosen: list[Any], inputs: PlanInputs) -> dict[str, list[str]]:
    """Backend name -> every problem of declaring the inputs through it (empty: it accepts them)."""
    from .fleet import FleetSpec
    from .program import check

    if isinstance(inputs.specs, FleetSpec):
        return {be.name: be.fleet_check(inputs.specs, inputs.settings.get(be.name))[0] for be in chosen}
    return {be.name: check(be, inputs.specs, inputs.settings.get(be.name))[1] for be in chosen}


def _report_refusals(refused: dict[str, list[str]], total: int, source: str, allow_refusals: bool) -> None:
    """One block per refusing backend on stderr; a SpecError (exit 2) unless refusals are tolerated
    and at least one backend accepts."""
    for name, problems in refused.items():
        click.echo(f"backend {name} refuses {source}:", err=True)
        for prob in problems:
            click.echo(f"  - {prob}", err=True)
    if refused and (not allow_refusals or len(refused) == total):
        hint = "" if len(refused) == total else "; --allow-refusals accepts the others"
        raise ConfigError(f"{len(refused)} of {total} backends refuse {source} (reasons above){hint}")


_SPEC_HELP = "VM spec YAML file (one spec, or vms: [...]), or a Pulumi.<stack>.yaml (its polyvm:vm / polyvm:vms)."
_SETTINGS_HELP = ("Backend settings: a YAML file {aws: {...}, gcp: {...}}, or a Pulumi.<stack>.yaml (its "
                  "polyvm:<backend> values). Default: those of a stack file given as --spec.")
_BACKEND_HELP = ("Backend name, or 'all' for every backend. Default: the polyvm:backend of a stack file "
                 "given as --spec.")
_ALLOW_REFUSALS_HELP = "With --backend all: exit 0 when at least one backend accepts (the others' reasons are still printed)."


@click.command("validate")
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False), help=_SPEC_HELP)
@click.option("--backend", default=None, help="Also check against this backend (or 'all'): its capabilities, the "
                                              "limits its cloud enforces and its settings, exactly as plan does.")
@click.option("--settings", "settings_path", type=click.Path(dir_okay=False), default=None, help=_SETTINGS_HELP)
@click.option("--allow-refusals", is_flag=True, help=_ALLOW_REFUSALS_HELP)
def validate_cmd(spec_path: str, backend: str | None, settings_path: str | None, allow_refusals: bool) -> None:
    """Check a VM spec (and a backend's capabilities, cloud limits and settings) without declaring anything.
    Same inputs, same verdicts as plan."""
    from .fleet import FleetSpec

    inputs = load_inputs(spec_path, settings_path)
    if isinstance(inputs.specs, FleetSpec):
        _validate_fleet(spec_path, inputs.specs, backend, settings_path)
        return
    n = len(inputs.specs)
    if not (backend or inputs.stack_backend):
        click.echo(f"{spec_path}: {n} VM spec(s) valid (no backend checked: pass --backend B or all)")
        return
    chosen = _chosen_backends(backend, inputs)
    verdicts = _check_all(chosen, inputs)
    refused = {k: v for k, v in verdicts.items() if v}
    if len(chosen) == 1 and refused:
        raise SpecError(refused[chosen[0].name], source=spec_path)
    _report_refusals(refused, len(chosen), spec_path, allow_refusals)
    ok = [k for k, v in verdicts.items() if not v]
    click.echo(f"{spec_path}: {n} VM spec(s) valid for backend{'s' if len(ok) > 1 else ''} {', '.join(ok)}")


def _validate_fleet(spec_path: str, fleet: Any, backend: str | None, settings_path: str | None) -> None:
    """A fleet file: its own checks, and with --backend the backend's (settings only when --settings is given)."""
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
@click.option("--backend", default=None, help=_BACKEND_HELP)
@click.option("--spec", "spec_path", required=True, type=click.Path(dir_okay=False), help=_SPEC_HELP)
@click.option("--settings", "settings_path", type=click.Path(dir_okay=False), default=None, help=_SETTINGS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--against", "against_path", type=click.Path(dir_okay=False), default=None,
              help="The spec now deployed: print what changing it to --spec does to each resource "
                   "(create / update in place / REPLACE / delete) and refuse any data loss.")
@click.option("--allow-data-loss", is_flag=True, help="With --against: exit 0 even when a data disk (or the VM "
                                                       "holding one) would be replaced or deleted.")
@click.option("--allow-refusals", is_flag=True, help=_ALLOW_REFUSALS_HELP)
def plan_cmd(backend: str | None, spec_path: str, settings_path: str | None, as_json: bool,
             against_path: str | None, allow_data_loss: bool, allow_refusals: bool) -> None:
    """Render the resources a backend would declare, offline (Pulumi mock runtime; no credentials, no network)."""
    from .plan import close_event_loop

    try:
        _plan(backend, spec_path, settings_path, as_json, against_path, allow_data_loss, allow_refusals)
    finally:
        close_event_loop()


def _plan(backend: str | None, spec_path: str, settings_path: str | None, as_json: bool, against_path: str | None,
          allow_data_loss: bool, allow_refusals: bool) -> None:
    from .plan import plan_document as run_plan
    from .plugins import get_plugins

    inputs = load_inputs(spec_path, settings_path)
    chosen = _chosen_backends(backend, inputs)
    everything = list(get_plugins().backends().values())
    after = _recipe_after(inputs)
    if against_path:
        if len(chosen) != 1:
            raise ConfigError("--against compares two specs on one backend: name it with --backend")
        be = chosen[0]
        old_inputs = load_inputs(against_path, settings_path)
        for what, inp in ((against_path, old_inputs), (spec_path, inputs)):
            problems = _check_all([be], inp)[be.name]
            if problems:
                raise SpecError(problems, source=what)
        old = run_plan(be, old_inputs.specs, old_inputs.settings.get(be.name), backends=everything,
                       after=_recipe_after(old_inputs), config=_pulumi_config(old_inputs))
        new = run_plan(be, inputs.specs, inputs.settings.get(be.name), backends=everything, after=after,
                       config=_pulumi_config(inputs))
        _report_changes(be, against_path, spec_path, old, new, as_json=as_json, allow_data_loss=allow_data_loss)
        return
    # The same checks validate runs, before anything is declared: same inputs, same verdicts.
    verdicts = _check_all(chosen, inputs)
    refused = {k: v for k, v in verdicts.items() if v}
    if len(chosen) == 1 and refused:
        raise SpecError(refused[chosen[0].name], source=spec_path)
    results = [run_plan(be, inputs.specs, inputs.settings.get(be.name), backends=everything, after=after,
                        config=_pulumi_config(inputs)) for be in chosen if be.name not in refused]
    if as_json:
        click.echo(json.dumps({"offline": True, "plans": [p.to_dict() for p in results], "refused": refused},
                              indent=2, default=str, sort_keys=True))
    else:
        _print_plans(results)
    _report_refusals(refused, len(chosen), spec_path, allow_refusals)


def _pulumi_config(inputs: PlanInputs) -> dict[str, Any]:
    """The stack's polyvm config as the program reads it (``pulumi.Config("polyvm")``)."""
    return {f"polyvm:{k}": v for k, v in inputs.stack_config.items()}


def _recipe_after(inputs: PlanInputs) -> Any:
    """What a stack's program declares after each VM (the guest baseline and the recipe of its config,
    as examples/postgres-vm and `polyvm new` projects do), or None for a plain spec file."""
    if inputs.stack_backend is None and not inputs.stack_config:
        return None
    from .provisioners.pulumi import provision_vm

    return provision_vm


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
    from .spec import stack_config

    stack = stack_config(data)
    if stack is not None:
        return {k: v for k, v in stack.items() if k not in _STACK_KEYS}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of backend name -> settings")
    return data


def _value(v: Any) -> str:
    """A recorded input in full, on one line (rich wraps it; nothing is cut)."""
    return v if isinstance(v, str) else json.dumps(v, default=str, separators=(", ", ": "), sort_keys=True)


def _print_plans(plans: list[Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    from .plan import redact_secrets

    # Piped output keeps long values on one line instead of wrapping them at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 10_000, soft_wrap=not sys.stdout.isatty())
    console.print("[bold yellow]Offline rendering[/] under Pulumi's mock runtime: nothing was created, "
                  "no cloud was contacted; ids and addresses are made up.")
    for p in plans:
        tree = Tree(f"[bold]backend {p.backend}[/] ({len([r for r in p.resources if r.custom])} resources)")

        def add(node: Tree, res: Any) -> None:
            sub = node.add(f"[cyan]{escape(res.type)}[/] [bold]{escape(res.name)}[/]")
            for k, v in sorted(redact_secrets(res.inputs).items()):
                if k.startswith("__") or v in (None, [], {}, ""):
                    continue
                sub.add(f"[dim]{escape(k)}[/] = {escape(_value(v))}")
            for c in res.children:
                add(sub, c)

        for root in p.roots:
            add(tree, root)
        console.print(tree)
        for vm, outs in sorted(p.outputs.items()):
            console.print(escape(f"  outputs of {vm}: " + ", ".join(f"{k}={_value(v)}" for k, v in outs.items())))


@click.command("new")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--backend", "backends", multiple=True, required=True,
              help="A backend the project deploys to (repeatable): one Pulumi.<backend>.yaml stack file each.")
@click.option("--name", default=None, help="Pulumi project name (default: the directory's name).")
@click.option("--polyvm", "polyvm_path", default=None, type=click.Path(),
              help="The polyvm the project installs: a checkout or a wheel (default: where this polyvm was "
                   "installed from).")
@click.option("--ssh-key", default=None, type=click.Path(dir_okay=False),
              help="Public key for the VM's login user (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub).")
@click.option("--allow", "cidrs", multiple=True, metavar="CIDR",
              help="Who may reach SSH and PostgreSQL (repeatable; default: a documentation range to replace).")
@click.option("--no-postgres", is_flag=True, help="Declare the VMs only, without the PostgreSQL recipe.")
def new_cmd(directory: str, backends: tuple[str, ...], name: str | None, polyvm_path: str | None,
            ssh_key: str | None, cidrs: tuple[str, ...], no_postgres: bool) -> None:
    """Write a new Pulumi project (Pulumi.yaml, __main__.py, requirements.txt, one Pulumi.<backend>.yaml
    per backend) into DIRECTORY, which must not exist or be empty."""
    from .plugins import get_plugins
    from .scaffold import new_project

    plugins = get_plugins()
    chosen = [plugins.get_backend(b) for b in dict.fromkeys(backends)]
    files = new_project(directory, chosen, name=name, polyvm_path=polyvm_path, ssh_key=ssh_key, cidrs=cidrs,
                        postgres=not no_postgres)
    click.echo(f"wrote {', '.join(f.name for f in files)} in {directory}")
    first = chosen[0].name
    click.echo("next:")
    click.echo(f"  polyvm plan --spec {directory}/Pulumi.{first}.yaml     # offline: what pulumi up would declare")
    click.echo(f"  cd {directory} && pulumi stack init {first} && pulumi up")


@hookimpl
def polyvm_register_commands(cli: click.Group) -> None:
    cli.add_command(new_cmd)
    cli.add_command(backends_cmd)
    cli.add_command(validate_cmd)
    cli.add_command(plan_cmd)
