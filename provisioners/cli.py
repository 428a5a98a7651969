"""``polyvm exec`` and ``polyvm copy``: the SSH layer from the command line, on hosts given with ``-H`` or
in an inventory YAML file. Registered through the ``polyvm_register_commands`` hook like any plugin.

Inventory file::

    defaults:                      # any Connection setting, applied to every host
      user: admin
      private_key_path: ~/.ssh/id_ed25519
      known_hosts: ./known_hosts
    hosts:                         # a list of "[user@]host[:port]" strings or mappings ...
      - 198.51.100.7
      - {host: 198.51.100.8, host_key: "ssh-ed25519 AAAA...", bastion: {host: 198.51.100.1}}
    # ... or a mapping of display name -> settings:  hosts: {db1: {host: 10.0.0.5}}
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import click

from typing import TYPE_CHECKING

from polyvm.errors import ConfigError, FanoutError
from polyvm.hookspecs import hookimpl

if TYPE_CHECKING:
    from polyvm.host import Host


def parse_target(text: str) -> dict[str, Any]:
    """``[user@]host[:port]`` (IPv6 as ``[addr]:port``) as Connection settings."""
    out: dict[str, Any] = {}
    rest = text.strip()
    if not rest:
        raise ConfigError("empty host")
    if "@" in rest:
        out["user"], rest = rest.rsplit("@", 1)
        if not out["user"]:
            raise ConfigError(f"bad host {text!r}: empty user before '@'")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ConfigError(f"bad host {text!r}: missing ']'")
        out["host"], tail = rest[1:end], rest[end + 1:]
        if tail:
            if not tail.startswith(":") or not tail[1:].isdigit():
                raise ConfigError(f"bad host {text!r}: expected [address]:port")
            out["port"] = _port(tail[1:], text)
    elif rest.count(":") == 1:
        host, port = rest.split(":")
        if not port.isdigit():
            raise ConfigError(f"bad port in {text!r}")
        out["host"], out["port"] = host, _port(port, text)
    else:
        out["host"] = rest
    if not out["host"]:
        raise ConfigError(f"bad host {text!r}: no host name or address")
    return out


def _port(digits: str, text: str) -> int:
    port = int(digits)
    if not 1 <= port <= 65535:
        raise ConfigError(f"bad port in {text!r}: {port} is not 1-65535")
    return port


def host_of(conn: Any, **baseline: Any) -> "Host":
    """The Host a command-line target stands for (``baseline``: disks, firewall, ingress for the guest baseline)."""
    from polyvm.host import Host

    return Host(address=conn.host, user=conn.user, port=conn.port, host_key=None, name=conn.name, **baseline)


def load_inventory(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(defaults, [host settings, ...])`` from an inventory YAML file; ConfigError saying what is wrong."""
    from polyvm.spec import load_yaml

    p = Path(path)
    data = load_yaml(p, what="inventory")
    if not isinstance(data, Mapping) or "hosts" not in data:
        raise ConfigError(f"inventory {p} must be a mapping with a 'hosts' key (and optional 'defaults')")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"inventory {p}: 'defaults' must be a mapping")
    raw = data["hosts"]
    hosts: list[dict[str, Any]] = []
    items: list[tuple[str | None, Any]]
    if isinstance(raw, Mapping):
        items = [(str(k), v if v is not None else {"host": str(k)}) for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [(None, v) for v in raw]
    else:
        raise ConfigError(f"inventory {p}: 'hosts' must be a list or a mapping")
    for i, (name, entry) in enumerate(items):
        if isinstance(entry, str):
            entry = parse_target(entry)
        if not isinstance(entry, Mapping):
            raise ConfigError(f"inventory {p}: hosts entry {name or i} must be a string or a mapping")
        entry = dict(entry)
        if name is not None:
            entry.setdefault("host", name)
            entry.setdefault("name", name)
        if "host" not in entry:
            raise ConfigError(f"inventory {p}: hosts entry {name or i} has no 'host'")
        hosts.append(entry)
    if not hosts:
        raise ConfigError(f"inventory {p} lists no hosts")
    return dict(defaults), hosts


def build_connections(hosts: Sequence[str], inventory: str | None, options: Mapping[str, Any]) -> list:
    """Connections for ``-H`` targets and/or an inventory; command-line options override inventory defaults."""
    from .connection import Connection

    defaults: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    if inventory:
        defaults, entries = load_inventory(inventory)
    entries += [parse_target(h) for h in hosts]
    if not entries:
        raise ConfigError("no hosts: give -H/--host (repeatable) or -i/--inventory FILE")
    defaults.update({k: v for k, v in options.items() if v is not None})
    if defaults.get("host_key") and len(entries) > 1:
        raise ConfigError("--host-key pins one key; with several hosts put host_key in the inventory")
    if isinstance(defaults.get("bastion"), str):
        defaults["bastion"] = parse_target(defaults["bastion"])
    return [Connection.from_mapping(e, defaults) for e in entries]


#: The most ``--stdin-file`` sends (it is held in memory): 64 MiB.
MAX_STDIN_BYTES = 64 * 1024 * 1024
#: Private key files are a few KiB; anything larger is not one.
MAX_KEY_BYTES = 1024 * 1024


def _private_key_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``-k``: a regular text file holding a private key (checked here, before any host is contacted)."""
    if value is None:
        return None
    from polyvm.files import read_text

    try:
        text = read_text(value, what="private key file", limit=MAX_KEY_BYTES)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    if "PRIVATE KEY" not in text and "PuTTY-User-Key-File" not in text:
        raise click.BadParameter(f"{value} is not a private key file (no PRIVATE KEY block)", ctx, param)
    return value


def _known_hosts_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--known-hosts``: may not exist yet, but its directory must (polyvm creates no directories for it)."""
    return _file_to_write(value, ctx, param, "known_hosts file", make_parent=False)


def secrets_file_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback for a file of generated secrets (``--secrets-file``, ``--password-file``): refused
    before any host is contacted when it can never be written (under a file, in a missing directory tree)."""
    return _file_to_write(value, ctx, param, "secrets file", make_parent=True)


def _file_to_write(value: str | None, ctx: click.Context, param: click.Parameter, what: str, *,
                   make_parent: bool) -> str | None:
    if value is None:
        return None
    from polyvm.files import file_path

    path = Path(value).expanduser()
    if path.exists() and not path.is_file() and not path.is_dir():
        raise click.BadParameter(f"{value} is not a regular file", ctx, param)
    try:
        if make_parent and not path.parent.exists():
            # Only check here: the directory is made when the file is first written.
            file_path(path.parent, what=what)
        else:
            file_path(path, what=what)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _read_stdin_file(path: str) -> bytes:
    """``--stdin-file``: at most :data:`MAX_STDIN_BYTES` (a pipe or FIFO is fine; /dev/zero is not)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_STDIN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"--stdin-file {path}: {exc.strerror}") from None
    if len(data) > MAX_STDIN_BYTES:
        raise ConfigError(f"--stdin-file {path} is larger than {MAX_STDIN_BYTES // (1024 * 1024)} MiB")
    return data


_POSITIVE_SECONDS = click.FloatRange(min=0, min_open=True)


def _connection_options(f):  # noqa: ANN001, ANN202 - click decorator stack
    opts = [
        click.option("-H", "--host", "hosts", multiple=True, metavar="[USER@]HOST[:PORT]",
                     help="A target host (repeatable)."),
        click.option("-i", "--inventory", type=click.Path(dir_okay=False), help="Inventory YAML file."),
        click.option("-u", "--user", default=None, help="Login user (default root, or the inventory's)."),
        click.option("-k", "--private-key", "private_key_path", type=click.Path(exists=True, dir_okay=False),
                     default=None, callback=_private_key_file,
                     help="Private key file (ed25519, ecdsa, rsa). Default: ssh-agent, then ~/.ssh/id_*."),
        click.option("--host-key", default=None, help="Pinned host public key ('ssh-ed25519 AAAA...'), one host."),
        click.option("--known-hosts", type=click.Path(dir_okay=False), default=None, callback=_known_hosts_file,
                     help="known_hosts file for trust on first use (default ~/.config/polyvm/known_hosts)."),
        click.option("--insecure-accept-any-host-key", is_flag=True, default=None,
                     help="DANGEROUS: do not verify host keys at all (throw-away hosts only)."),
        click.option("-J", "--jump", "bastion", default=None, metavar="[USER@]HOST[:PORT]",
                     help="Jump host (bastion) to connect through."),
        click.option("--allow-legacy-algorithms", is_flag=True, default=None,
                     help="INSECURE: also accept CBC/3DES ciphers, MD5/SHA-1 MACs and SHA-1 key exchanges "
                          "(old hosts only; warns on every connection)."),
        click.option("--sudo/--no-sudo", default=None, help="Run through sudo -n (default: when user is not root)."),
        click.option("--deadline", type=float, default=None, help="Seconds to wait for hosts to come up (300)."),
        click.option("-p", "--parallel", type=click.IntRange(1, 512), default=16, show_default=True,
                     help="Hosts handled at once."),
        click.option("-q", "--quiet", is_flag=True, help="No progress display or summary table."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _options(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k) for k in ("user", "private_key_path", "host_key", "known_hosts",
                                   "insecure_accept_any_host_key", "allow_legacy_algorithms", "bastion", "sudo",
                                   "deadline")}


def _run_fanout(conns, steps, parallel: int, quiet: bool):  # noqa: ANN001, ANN202
    from .fanout import fanout

    return fanout(conns, steps, parallel=parallel, progress=not quiet, raise_on_failure=False)


@click.command("exec")
@_connection_options
@click.option("--timeout", type=_POSITIVE_SECONDS, default=None, help="Seconds the command may run on each host.")
@click.option("--stdin-file", type=click.Path(exists=True, dir_okay=False, allow_dash=True), default=None,
              help="Send this file (at most 64 MiB; '-': this command's stdin) to the command's stdin.")
@click.argument("command", nargs=-1, required=True)
def exec_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool, timeout: float | None,
             stdin_file: str | None, command: tuple[str, ...], **kw: Any) -> None:
    """Run COMMAND (through the remote shell) on every host in parallel; exit non-zero if any host fails."""
    from .steps import RunCommand

    data = _read_stdin_file(stdin_file) if stdin_file else None
    conns = build_connections(hosts, inventory, _options(kw))
    text = " ".join(command)
    result = _run_fanout(conns, [RunCommand(text, stdin=data, timeout=timeout, name=text[:80])], parallel, quiet)
    for name, hr in result.hosts.items():
        output = hr.results[0].output if hr.results else None
        if output is None or not output.stdout:
            continue
        if len(result.hosts) == 1:
            click.echo(output.stdout, nl=False)
        else:
            for line in output.stdout.splitlines():
                click.echo(f"{name} | {line}")
    if not result.ok:
        raise FanoutError(result.failed)



@click.command("copy")
@_connection_options
@click.option("--mode", default=None, help="Octal mode of the remote file(s) (default: 0644, dirs: local modes).")
@click.option("--owner", default=None, help="Remote owner.")
@click.option("--group", default=None, help="Remote group.")
@click.argument("source", type=click.Path(exists=True))
@click.argument("remote_path")
def copy_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool, mode: str | None,
             owner: str | None, group: str | None, source: str, remote_path: str, **kw: Any) -> None:
    """Copy SOURCE (a file or a directory tree) to REMOTE_PATH on every host; unchanged files are skipped."""
    from .steps import CopyDir, CopyFile

    try:
        mode_i = int(mode, 8) if mode else None
    except ValueError:
        raise ConfigError(f"--mode must be octal like 0644, not {mode!r}") from None
    if mode_i is not None and not 0 <= mode_i <= 0o7777:
        raise ConfigError(f"--mode {mode} is not a file mode (0000-7777)")
    src = Path(source)
    if not (src.is_dir() or src.is_file()):
        raise ConfigError(f"copy source {source} is not a regular file or a directory (a device, FIFO or socket)")
    if src.is_dir():  # a FIFO or device inside would block or never end the copy: refused before any host
        for root, _dirs, files in os.walk(src):
            special = next((Path(root) / f for f in sorted(files) if not (Path(root) / f).is_file()), None)
            if special is not None:
                raise ConfigError(f"copy source {source} holds {special}, which is not a regular file "
                                  "(a device, FIFO, socket or broken link)")
    conns = build_connections(hosts, inventory, _options(kw))
    if src.is_dir():
        step = CopyDir(src, remote_path, mode=mode_i, owner=owner, group=group)
    else:
        if remote_path.endswith("/"):
            remote_path += src.name
        step = CopyFile(src, remote_path, mode=mode_i if mode_i is not None else 0o644, owner=owner, group=group)
    result = _run_fanout(conns, [step], parallel, quiet)
    if quiet:
        for name, hr in result.hosts.items():
            if hr.ok:
                click.echo(f"{name}: {hr.results[0].detail}")
    if not result.ok:
        raise FanoutError(result.failed)


def _input_value(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` for ``--set``: VALUE parsed as YAML (numbers, true/false, [lists], {maps}), else text."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set expects NAME=VALUE, not {text!r}")
    name, _, value = text.partition("=")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return name.strip(), parsed


def load_inputs_file(path: str | None) -> dict[str, Any]:
    """A recipe's inputs from a YAML file (empty without one); ConfigError when it is not a mapping."""
    if not path:
        return {}
    from polyvm.spec import load_yaml

    loaded = load_yaml(path) or {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: expected a mapping of recipe inputs")
    return dict(loaded)


def baseline_options(spec_path: str | None, disks: Sequence[str], guest_firewall: bool) -> dict[str, Any]:
    """What the guest baseline does on every host: ``--spec`` gives the ingress rules (applied in the guest
    with ``--guest-firewall``) and the data disks' mount points; ``--disk NAME=DEVICE`` each disk's device."""
    from polyvm.host import HostDisk

    if not spec_path:
        if disks or guest_firewall:
            raise ConfigError("--disk and --guest-firewall need --spec (the VM spec with the disks and ingress rules)")
        return {}
    from polyvm.spec import load_spec_file

    specs = load_spec_file(spec_path)
    if len(specs) != 1:
        raise ConfigError(f"{spec_path}: --spec takes one VM spec, not {len(specs)}")
    spec = specs[0]
    devices = {}
    for d in disks:
        name, sep, dev = d.partition("=")
        if not sep or not dev.startswith("/dev/"):
            raise ConfigError(f"--disk expects NAME=/dev/DEVICE, not {d!r}")
        devices[name] = dev
    unknown = sorted(set(devices) - {d.name for d in spec.data_disks})
    if unknown:
        raise ConfigError(f"--disk {', '.join(unknown)}: not a data disk of {spec_path}")
    out: dict[str, Any] = {"ingress": tuple(spec.ingress),
                           "disks": tuple(HostDisk(d.name, devices[d.name], d.mount_point)
                                          for d in spec.data_disks if d.name in devices)}
    if guest_firewall:
        out["firewall"] = tuple(spec.ingress)
    return out


def apply_recipe(recipe_name: str | None, hosts: Sequence[str], inventory: str | None, parallel: int, quiet: bool,
                 inputs_path: str | None, sets: Sequence[str], secrets_file: str | None, as_json: bool,
                 baseline: Mapping[str, Any], conn_opts: Mapping[str, Any],
                 extra_inputs: Mapping[str, Any] | None = None) -> None:
    """The body of ``polyvm apply`` (and of recipe commands such as ``polyvm nginx``)."""
    import json

    from polyvm.plugins import get_recipe

    from .fanout import run_recipe

    recipe = get_recipe(recipe_name) if recipe_name else None
    data = load_inputs_file(inputs_path)
    data.update(extra_inputs or {})
    data.update(dict(_input_value(t) for t in sets))
    if recipe is None and data:
        raise ConfigError("recipe inputs (--inputs, --set) need --recipe")
    conns = build_connections(hosts, inventory, conn_opts)
    targets = [host_of(c, **baseline) for c in conns]
    generated: list[str] = []
    inputs = None
    path = None
    if recipe is not None:
        # Inputs are the same for every host; host-dependent defaults come from the first one.
        inputs = recipe.parse_inputs(recipe.defaults_for(targets[0], data), source=inputs_path or "command line")
        if recipe.secrets_needed(inputs):
            path = secrets_file or f"{recipe.name}-secrets.json"
            inputs, generated = recipe.ensure_secrets(inputs, path)
        if generated and not as_json:
            click.echo(f"generated password(s) for {', '.join(generated)} in {Path(path).resolve()} (0600)", err=True)
    result = run_recipe(targets, recipe, inputs, connections=conns, parallel=parallel,
                        progress=not quiet and not as_json, raise_on_failure=False)
    if as_json:
        out = {name: {"ok": hr.ok, "changed": any(r.changed for r in hr.results),
                      "changes": [f"{r.name}: {r.detail}" for r in hr.results if r.changed],
                      "error": str(hr.error) if hr.error else None, "duration": round(hr.duration, 2),
                      "outputs": recipe.outputs(inputs, t) if recipe is not None and hr.ok else {}}
               for (name, hr), t in zip(result.hosts.items(), targets)}
        extra = {"secrets_file": str(Path(path).resolve())} if path else {}
        click.echo(json.dumps({"hosts": out, "generated": generated, **extra}, indent=2, default=str))
    else:
        for (name, hr), t in zip(result.hosts.items(), targets):
            if not hr.ok:
                continue
            changed = [r for r in hr.results if r.changed]
            click.echo(f"{name}: {'changed' if changed else 'no change'} ({hr.duration:.1f}s)")
            for r in changed:
                click.echo(f"  - {r.name}: {r.detail or 'changed'}")
            if recipe is not None:
                for k, v in recipe.outputs(inputs, t).items():
                    click.echo(f"  {k}: {v}")
    if not result.ok:
        raise FanoutError(result.failed)


def recipe_options(f):  # noqa: ANN001, ANN202 - click decorator stack
    opts = [
        click.option("--inputs", "inputs_path", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="YAML file of the recipe's inputs."),
        click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
                     help="One recipe input (VALUE as YAML: 8080, true, [a, b]); repeatable; wins over --inputs."),
        click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="The VM spec: its ingress rules and data disks for the guest baseline."),
        click.option("--disk", "disks", multiple=True, metavar="NAME=DEVICE",
                     help="Device of a data disk of --spec (formatted only when blank, mounted at its mount_point)."),
        click.option("--guest-firewall", is_flag=True,
                     help="Apply --spec's ingress rules as an nftables firewall in the guest (no cloud firewall)."),
        click.option("--secrets-file", type=click.Path(dir_okay=False), default=None, callback=secrets_file_option,
                     help="JSON file (0600) where generated secrets are kept (default: <recipe>-secrets.json)."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable result."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.command("apply")
@_connection_options
@click.option("--recipe", "recipe_name", default=None, metavar="NAME",
              help="The recipe to apply (polyvm recipes lists them); without it, the guest baseline only.")
@recipe_options
def apply_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool, recipe_name: str | None,
              inputs_path: str | None, sets: tuple[str, ...], spec_path: str | None, disks: tuple[str, ...],
              guest_firewall: bool, secrets_file: str | None, as_json: bool, **kw: Any) -> None:
    """The guest baseline (firewall, data disks from --spec), then a recipe, on every host; prints what changed."""
    conn_opts = _options(kw)
    apply_recipe(recipe_name, hosts, inventory, parallel, quiet, inputs_path, sets, secrets_file, as_json,
                 baseline_options(spec_path, disks, guest_firewall), conn_opts)


@click.command("recipes")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def recipes_cmd(as_json: bool) -> None:
    """List the registered recipes (built-in and plugins)."""
    import json

    from polyvm.plugins import list_recipes

    rows = [{"name": r.name, "description": r.description, "plugin": type(r).__module__}
            for r in list_recipes().values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<12} {r['description']}")


#: Public names for other plugins' commands that take the same connection options (recipe commands).
connection_options = _connection_options
connection_settings = _options


@hookimpl
def polyvm_register_commands(cli: click.Group) -> None:
    cli.add_command(exec_cmd)
    cli.add_command(copy_cmd)
    cli.add_command(apply_cmd)
    cli.add_command(recipes_cmd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(exec_cmd())
