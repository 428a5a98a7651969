"""``polyvm sandbox up / status / ssh / down``: a recipe (default: PostgreSQL) on a fresh local host in seconds."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from .engine import DEFAULT_STATE_DIR

def _state_dir(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a state dir that can never be one (under a file, /proc, ...) before anything is done."""
    from pathlib import Path

    path = Path(value)
    if not value.strip():
        raise click.BadParameter("must not be empty", ctx, param)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{value} is not a directory", ctx, param)
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise click.BadParameter(f"{value} cannot be a directory: {ancestor} is not one", ctx, param)
    return value


_STATE_OPTION = click.option(
    "--state-dir", envvar="POLYVM_LOCAL_STATE_DIR", default=str(DEFAULT_STATE_DIR), show_default=True,
    type=click.Path(file_okay=False), callback=_state_dir,
    help="Where hosts, the sandbox key and passwords live (mode 0700).")


def _sandbox(state_dir: str):
    from .sandbox import Sandbox

    return Sandbox(state_dir)


@click.group("sandbox")
def sandbox_group() -> None:
    """A recipe (default postgres) on a fresh local host (network namespace + own sshd), no cloud account.
    Needs root."""


@sandbox_group.command("up")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False),
              help="VM spec YAML (one VM or vms: [...]); default: a small built-in sample.")
@click.option("--count", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Hosts per spec (named <name>-1..N when more than one).")
@click.option("--recipe", "recipe", default="postgres", show_default=True, metavar="NAME",
              help="The recipe to apply (polyvm recipes lists them); 'none': the guest baseline only.")
@click.option("--inputs", "inputs_path", type=click.Path(exists=True, dir_okay=False),
              help="Recipe inputs YAML overriding the sandbox defaults (postgres: user and database 'app').")
@click.option("--load-balancer", "load_balancer", is_flag=True,
              help="With --count N: one fleet of N members behind HAProxy (own network namespace) forwarding "
                   "the recipe's ports; running up again rolls the change through the members.")
@click.option("--fleet", "fleet_path", type=click.Path(exists=True, dir_okay=False),
              help="A fleet spec YAML (docs/fleets.md) with its load_balancer, instead of --spec/--count.")
@click.option("--rolling", "rolling", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Fleets: members changed at a time when up runs again (each drained, re-provisioned, "
                   "back in once healthy).")
@click.option("--show-password", is_flag=True, help="Print the generated database password.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (no progress display).")
@_STATE_OPTION
def up_cmd(spec_path: str | None, count: int, recipe: str, inputs_path: str | None, load_balancer: bool,
           fleet_path: str | None, rolling: int, show_password: bool, as_json: bool, state_dir: str) -> None:
    """Create the host(s), apply the guest baseline and the recipe over SSH, use the service once from this
    machine (a database login, an HTTPS request), print how to connect.

    Running it again reuses the running hosts (nothing changes) and replaces hosts that died. With
    --load-balancer (or --fleet), the hosts are one fleet behind HAProxy and running it again is a
    rolling update, --rolling members at a time."""
    from rich.console import Console

    from polyvm.spec import load_spec_file

    from .sandbox import json_dump, load_inputs

    started = time.monotonic()
    sb = _sandbox(state_dir)
    specs = load_spec_file(spec_path) if spec_path else None
    overrides = load_inputs(inputs_path)
    the_recipe = None if recipe == "none" else recipe
    if load_balancer or fleet_path:
        _up_fleet(sb, specs, count, the_recipe, overrides, fleet_path, rolling, as_json, started)
        return
    err = Console(stderr=True)
    if as_json or not err.is_terminal:
        def say(name: str, what: str) -> None:
            if not as_json:
                err.print(f"[dim]{time.monotonic() - started:5.1f}s[/] {name}: {what}")
        vms = sb.up(specs, count=count, recipe=the_recipe, inputs=overrides, progress=say, started=started,
                    inputs_source=inputs_path)
    else:
        with err.status("starting") as status:
            def say(name: str, what: str) -> None:
                status.update(f"{name}: {what}")
                err.print(f"[dim]{time.monotonic() - started:5.1f}s[/] {name}: {what}")
            vms = sb.up(specs, count=count, recipe=the_recipe, inputs=overrides, progress=say, started=started,
                        inputs_source=inputs_path)
    total = time.monotonic() - started
    passwords = sb.passwords()
    if as_json:
        out: dict[str, Any] = {"vms": [v.to_json() for v in vms], "seconds": round(total, 3),
                               "passwords_file": str(sb.passwords_path), "state_dir": str(sb.state_dir)}
        if show_password:
            out["passwords"] = passwords
        click.echo(json_dump(out))
        return
    _print_up(vms, total, sb, passwords if show_password else None)


def _up_fleet(sb: Any, specs: Any, count: int, recipe: str | None, overrides: dict, fleet_path: str | None,
              rolling: int, as_json: bool, started: float) -> None:
    from rich.console import Console

    from polyvm.errors import ConfigError
    from polyvm.fleet import load_fleet_file
    from polyvm.plugins import get_recipe

    from .sandbox import json_dump
    from .sandbox_fleet import FleetSandbox, sandbox_fleet

    if fleet_path:
        if specs is not None or count != 1:
            raise ConfigError("--fleet FILE describes the members: without --spec and --count")
        fleet = load_fleet_file(fleet_path)
    else:
        if count < 2:
            raise ConfigError("--load-balancer needs --count 2 or more (members behind one load balancer)")
        if specs is not None and len(specs) != 1:
            raise ConfigError("--load-balancer takes one VM spec (the members' copy), not vms: [...]")
        the_recipe = get_recipe(recipe) if recipe else None
        vm = specs[0] if specs else sb.default_spec()
        fleet = sandbox_fleet(vm, count, the_recipe, overrides)
    err = Console(stderr=True)

    def say(name: str, what: str) -> None:
        if not as_json:
            err.print(f"[dim]{time.monotonic() - started:5.1f}s[/] {name}: {what}")

    result = FleetSandbox(sb).up(fleet, recipe=recipe, inputs=overrides, batch=rolling, progress=say,
                                 started=started)
    if as_json:
        click.echo(json_dump(result.to_json()))
        return
    for v in result.members:
        changes = f", changed: {'; '.join(v.recipe_changes)}" if v.recipe_changes and not result.created else ""
        click.echo(f"{v.name}: {v.address} ({'created' if result.created else 'updated'}{changes})")
        click.echo(f"  ssh:        polyvm sandbox ssh {v.name}")
    click.echo(f"load balancer: {result.address} (HAProxy, ports {', '.join(map(str, result.ports))}; "
               f"members {', '.join(v.name for v in result.members)} healthy)")
    for url in result.urls:
        # Each member has its own self-signed certificate for its own address: -k (no verification).
        click.echo(f"  try:        curl -k {url}" if url.startswith("https:") else f"  try:        curl {url}")
    if not result.urls:
        click.echo(f"  try:        nc -vz {result.address} {result.ports[0]}")
    what = (f"rolled through {', '.join(result.rolled)} {rolling} at a time" if not result.created
            else f"{len(result.members)} members created")
    click.echo(f"fleet {result.name} ready ({what}) in {result.seconds:.1f}s; polyvm sandbox down removes it")
def _state_dir_arg(sb: Any) -> str:
    """`` --state-dir D`` when the sandbox is not in the default place, for commands printed as hints."""
    import shlex

    return "" if Path(sb.state_dir) == Path(DEFAULT_STATE_DIR) else f" --state-dir {shlex.quote(str(sb.state_dir))}"


def _print_up(vms: list, total: float, sb: Any, passwords: dict[str, str] | None) -> None:
    # Plain lines, never wrapped or truncated: people copy these.
    for v in vms:
        used = f", {v.checked} after {v.login_seconds:.1f}s" if v.login_seconds is not None else ""
        click.echo(f"{v.name}: {v.address} ({'created' if v.created else 'reused'}{used})")
        click.echo(f"  ssh:        polyvm sandbox ssh{_state_dir_arg(sb)} {v.name}")
        for key in ("dsn", "url"):
            if v.outputs.get(key):
                click.echo(f"  {v.recipe + ':':<11} {v.outputs[key]}")
        if v.outputs.get("ca_file"):
            click.echo(f"  CA:         {v.outputs['ca_file']} (the server's certificate authority: sslrootcert)")
        if v.outputs.get("pgpass"):
            click.echo(f"  pgpass:     {v.outputs['pgpass']}  (the password in place of *, in ~/.pgpass, mode 0600)")
        if v.note:
            click.echo(f"  note:       {v.note}")
    for name in sorted(sb.passwords()):
        if passwords is not None:
            click.echo(f"password of {name}: {passwords.get(name)}")
        else:
            click.echo(f"password of {name}: in {sb.passwords_path} (mode 0600; --show-password prints it)")
    if sb.passwords() and passwords is None:
        click.echo(f"  (polyvm sandbox up{_state_dir_arg(sb)} --show-password prints them; it changes nothing)")
    created = sum(1 for v in vms if v.created)
    click.echo(f"{len(vms)} sandbox VM(s) ready ({created} created, {len(vms) - created} reused) in {total:.1f}s")


@sandbox_group.command("verify")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False),
              help="The VM spec given to up (default: the built-in sample).")
@click.option("--recipe", "recipe", default="postgres", show_default=True, metavar="NAME",
              help="The recipe given to up.")
@click.option("--inputs", "inputs_path", type=click.Path(exists=True, dir_okay=False),
              help="The recipe inputs given to up.")
@click.option("--diff", "show_diff", is_flag=True, help="Show file differences as unified diffs.")
@click.option("--tls-days", type=click.IntRange(0, 3650), default=30, show_default=True,
              help="A certificate expiring within this many days is drift.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_STATE_OPTION
def verify_cmd(spec_path: str | None, recipe: str, inputs_path: str | None, show_diff: bool, tls_days: int,
               as_json: bool, state_dir: str) -> None:
    """Change nothing: report how each sandbox VM differs from what up would make it (exit 0: no drift,
    1: drift, listed; 2: bad input)."""
    from polyvm.spec import load_spec_file

    from .sandbox import load_inputs

    sb = _sandbox(state_dir)
    specs = load_spec_file(spec_path) if spec_path else None
    from polyvm.provisioners.cli import print_drift

    print_drift(sb.verify(specs, recipe=recipe, inputs=load_inputs(inputs_path), tls_days=tls_days),
                as_json=as_json, show_diff=show_diff)


@sandbox_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_STATE_OPTION
def status_cmd(as_json: bool, state_dir: str) -> None:
    """List the sandbox VMs and whether sshd and the recipe's service answer."""
    from rich.console import Console
    from rich.table import Table

    from .sandbox import json_dump

    rows = _sandbox(state_dir).status()
    if as_json:
        click.echo(json_dump(rows))
        return
    if not rows:
        click.echo("no sandbox VMs (polyvm sandbox up creates one)")
        return
    table = Table(show_edge=False, box=None, pad_edge=False)
    for col in ("name", "host", "address", "running", "sshd", "recipe", "service", "disks"):
        table.add_column(col)
    yes = {True: "yes", False: "no", None: "-"}
    for r in rows:
        table.add_row(r["name"], r["host_id"], r["address"], yes[r["running"]], yes[bool(r["sshd"])],
                      r["recipe"] or "-", yes[r["service"]], ", ".join(r["disks"]) or "-")
    Console().print(table)


@sandbox_group.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_STATE_OPTION
def ssh_cmd(name: str, command: tuple[str, ...], state_dir: str) -> None:
    """Open an SSH session to sandbox VM NAME (host key pinned), or run COMMAND there."""
    argv = _sandbox(state_dir).ssh_argv(name, command)
    sys.stdout.flush()
    os.execv(argv[0], argv)


@sandbox_group.command("down")
@click.argument("names", nargs=-1)
@_STATE_OPTION
def down_cmd(names: tuple[str, ...], state_dir: str) -> None:
    """Remove sandbox VMs (all without NAMES), also crashed or interrupted ones: processes, namespaces,
    mounts, loop devices and files."""
    started = time.monotonic()
    gone = _sandbox(state_dir).down(names)
    click.echo(f"removed {len(gone)} sandbox VM(s){': ' + ', '.join(h.labels.get('polyvm-sandbox', h.name) for h in gone) if gone else ''}"
               f" in {time.monotonic() - started:.1f}s")
