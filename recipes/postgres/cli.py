"""``polyvm postgres``: the PostgreSQL recipe from the command line, on hosts given with ``-H`` or an inventory.

    polyvm postgres -H admin@198.51.100.7 -k ~/.ssh/id_ed25519 --host-key 'ssh-ed25519 AAAA…' \\
        --allow 10.0.0.0/16 --db-user app --database app --data-device /dev/nvme1n1

Recipe inputs come from ``--inputs FILE`` (YAML, the fields of docs/postgres.md) and/or the options; options
win. Passwords are never options: put them in the inputs file, or let the recipe generate them into
``--password-file`` (JSON, created 0600, re-used on later runs).
"""

from __future__ import annotations

from typing import Any

import click

from polyvm.errors import ConfigError
from polyvm.hookspecs import hookimpl

DEFAULT_PASSWORD_FILE = "postgres-passwords.json"


def _setting(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set expects NAME=VALUE, not {text!r}")
    name, _, value = text.partition("=")
    v: Any = value
    if value.isdigit():
        v = int(value)
    elif value.lower() in ("on", "off", "true", "false"):
        v = value.lower() in ("on", "true")
    return name.strip(), v


def gather_inputs(inputs_path: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The recipe's inputs as plain data: the YAML file, then the command-line options on top."""
    from polyvm.provisioners.cli import load_inputs_file

    data = load_inputs_file(inputs_path)
    if options.get("allowed_cidrs"):
        data["allowed_cidrs"] = list(options["allowed_cidrs"])
    if options.get("db_users"):
        have = {u.get("name"): u for u in data.get("users", []) if isinstance(u, dict)}
        data["users"] = list(data.get("users", [])) + [{"name": n} for n in options["db_users"] if n not in have]
    if options.get("databases"):
        dbs = []
        for d in options["databases"]:
            name, _, owner = d.partition(":")
            dbs.append({"name": name, **({"owner": owner} if owner else {})})
        data["databases"] = list(data.get("databases", [])) + dbs
    if options.get("settings"):
        data["settings"] = {**data.get("settings", {}), **dict(_setting(s) for s in options["settings"])}
    for key in ("version", "port", "memory_mb"):
        if options.get(key) is not None:
            data[key] = options[key]
    if options.get("data_device"):
        data["mount_point"] = options.get("mount_point") or "/srv/postgresql"
    return data


def baseline_of(inputs: Any, options: dict[str, Any]) -> dict[str, Any]:
    """What the guest baseline does on every host, from --data-device/--mount-point and --guest-firewall/--ssh-cidr."""
    from polyvm.host import HostDisk
    from polyvm.spec import SSH_PORT, IngressRule

    out: dict[str, Any] = {}
    if options.get("data_device"):
        out["disks"] = (HostDisk("data", options["data_device"], options.get("mount_point") or "/srv/postgresql"),)
    if options.get("guest_firewall"):
        rules = [inputs.ingress_rule()]
        if options.get("ssh_cidrs"):
            rules.append(IngressRule(protocol="tcp", port=SSH_PORT, cidrs=list(options["ssh_cidrs"]), description="ssh"))
        out["firewall"] = tuple(rules)
        out["ingress"] = tuple(rules)
    return out


def _secrets_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from polyvm.provisioners.cli import secrets_file_option

    return secrets_file_option(ctx, param, value)


def _connection_options(f):  # noqa: ANN001, ANN202
    from polyvm.provisioners.cli import _connection_options as provisioner_options

    return provisioner_options(f)


@click.group("postgres", invoke_without_command=True)
@_connection_options
@click.option("--inputs", "inputs_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML file of recipe inputs (docs/postgres.md); may hold passwords.")
@click.option("--allow", "allowed_cidrs", multiple=True, metavar="CIDR",
              help="Client network allowed to log in (hostssl + scram-sha-256); repeatable; required.")
@click.option("--db-user", "db_users", multiple=True, metavar="NAME",
              help="Login role; its password is generated into --password-file unless the inputs file has one.")
@click.option("--database", "databases", multiple=True, metavar="NAME[:OWNER]", help="Database (repeatable).")
@click.option("--data-device", default=None, help="Data disk device path (formatted only when blank).")
@click.option("--mount-point", default=None, help="Where the data disk is mounted (default /srv/postgresql).")
@click.option("--pg-version", "version", default=None, help="PostgreSQL major version (default: the distribution's).")
@click.option("--port", type=int, default=None, help="Server port (default 5432).")
@click.option("--memory-mb", type=int, default=None, help="RAM for memory defaults (default: read from the host).")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE", help="A postgresql.conf setting (repeatable).")
@click.option("--guest-firewall", is_flag=True, help="Apply an nftables firewall in the guest (no cloud firewall).")
@click.option("--ssh-cidr", "ssh_cidrs", multiple=True, metavar="CIDR", help="With --guest-firewall: who may SSH in.")
@click.option("--password-file", type=click.Path(dir_okay=False), default=DEFAULT_PASSWORD_FILE, show_default=True,
              callback=lambda ctx, param, value: _secrets_file(ctx, param, value), help="JSON file (0600) where generated passwords are kept.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--check", "check", is_flag=True,
              help="Change nothing: report every difference from what the recipe would make each host (exit 1).")
@click.option("--diff", "show_diff", is_flag=True, help="With --check: show file differences as unified diffs.")
@click.option("--tls-days", type=click.IntRange(0, 3650), default=30, show_default=True,
              help="With --check: a server certificate expiring within this many days is drift.")
@click.pass_context
def postgres_cmd(ctx: click.Context, hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool,
                 inputs_path: str | None, password_file: str, as_json: bool, check: bool, show_diff: bool,
                 tls_days: int, **kw: Any) -> None:
    """Turn each host into a locked-down PostgreSQL server (idempotent; prints what changed), or with --check
    report how each differs from that (exit 0: no drift, 1: drift, 2: bad input).

    Subcommands (docs/postgres-ha.md): restore, backup, status, promote."""
    if ctx.invoked_subcommand is not None:
        return
    from polyvm.errors import SpecError
    from polyvm.provisioners.baseline import lockout_problems
    from polyvm.provisioners.cli import _options, apply_recipe, verify_recipe

    from .inputs import parse_inputs

    conn_opts = _options(kw)
    data = gather_inputs(inputs_path, kw)
    inputs = parse_inputs(data, source=inputs_path or "command line")
    extra = baseline_of(inputs, kw)
    if extra.get("firewall"):
        problems = lockout_problems(extra["firewall"])
        if problems:
            raise SpecError([p + " (give --ssh-cidr)" for p in problems], source="--guest-firewall")
    if show_diff and not check:
        raise ConfigError("--diff goes with --check")
    if check:
        verify_recipe("postgres", hosts, inventory, parallel, None, (), password_file, as_json, show_diff, extra,
                      conn_opts, extra_inputs=data, tls_days=tls_days, source=inputs_path)
        return
    apply_recipe("postgres", hosts, inventory, parallel, quiet, None, (), password_file, as_json, extra, conn_opts,
                 extra_inputs=data)


from .ha_cli import register_subcommands  # noqa: E402 - needs postgres_cmd's options above

register_subcommands(postgres_cmd)


@hookimpl
def polyvm_register_commands(cli: click.Group) -> None:
    cli.add_command(postgres_cmd)


@hookimpl
def polyvm_register_recipes(register) -> None:  # noqa: ANN001 - Callable[[Recipe], None]
    from .recipe import PostgresRecipe

    register(PostgresRecipe())
