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
    if options.get("rotate_host_key") and options.get("host_key"):
        raise ConfigError("--rotate-host-key records the new key in known_hosts (--known-hosts); it cannot "
                          "update a --host-key pin given on the command line")
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
        click.option("--rotate-host-key", is_flag=True, default=None,
                     help="On the first verified connection, replace the host key the VM booted with by one "
                          "generated on it, and record that in known_hosts (docs/provisioners.md)."),
        click.option("--sudo/--no-sudo", default=None, help="Run through sudo -n (default: when user is not root)."),
        click.option("--deadline", type=float, default=None, help="Seconds to wait for hosts to come up (300)."),
        click.option("-p", "--parallel", type=click.IntRange(1, 512), default=64, show_default=True,  # fanout.DEFAULT_PARALLEL
                     help="Hosts handled at once (at most one per host; see docs/performance.md, \"Scale\")."),
        click.option("-q", "--quiet", is_flag=True, help="No progress display or summary table."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _options(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw.pop(k) for k in ("user", "private_key_path", "host_key", "known_hosts",
                                   "insecure_accept_any_host_key", "allow_legacy_algorithms", "bastion", "sudo",
                                   "deadline", "rotate_host_key")}


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
    """Run COMMAND (through the remote shell) on every host in parallel. A host where it fails shows the
    tails of its stdout and stderr; the exit status is the command's with one host, else 1 on any failure."""

    data = _read_stdin_file(stdin_file) if stdin_file else None
    conns = build_connections(hosts, inventory, _options(kw))
    text = " ".join(command)
    from .exec import tail

    result = _run_fanout(conns, [_exec_step(text, data, timeout)], parallel, quiet)
    one = len(result.hosts) == 1
    statuses: list[int] = []
    for name, hr in result.hosts.items():
        output = hr.results[0].output if hr.results else None
        if output is None:
            continue
        failed = output.exit_status != 0
        if failed:
            statuses.append(output.exit_status)
        # Successful hosts: all of stdout (it is the point of the command). Failed ones: the tails of
        # stdout and stderr, so the reason is on screen whatever stream the command wrote it to.
        out = tail(output.stdout, lines=EXEC_TAIL_LINES) if failed else output.stdout
        err = tail(output.stderr, lines=EXEC_TAIL_LINES) if failed else ""
        if one:
            if out:
                click.echo(out if out.endswith("\n") else out + ("\n" if failed else ""), nl=False)
            if err:
                click.echo(err, err=True)
        else:
            for line in out.splitlines():
                click.echo(f"{name} | {line}")
            for line in err.splitlines():
                click.echo(f"{name} ! {line}", err=True)
        if failed:
            click.echo(f"{'polyvm: error: ' if one else ''}{name}: {text!r} exited with status {output.exit_status}",
                       err=True)
    if not result.ok:
        raise FanoutError(result.failed)
    if statuses:
        bad = [n for n, hr in result.hosts.items() if hr.results and hr.results[0].output.exit_status != 0]
        if not one:
            click.echo(f"polyvm: error: {len(bad)} host(s) failed: {', '.join(bad)}", err=True)
        # One host: its own exit status (a script's `exit 3` stays 3); several: 1.
        sys.exit(statuses[0] if one and 0 < statuses[0] < 256 else 1)


#: Lines of a failed command's stdout and stderr shown per host.
EXEC_TAIL_LINES = 20


def _exec_step(command: str, stdin: bytes | None, timeout: float | None) -> Any:
    """`polyvm exec`'s command as a step: a non-zero exit is a result to report (with its output), not an
    exception."""
    from .steps import RunCommand, StepResult

    class ExecCommand(RunCommand):
        def apply(self, conn):  # noqa: ANN001, ANN201
            r = conn.run(self.command, stdin=self.stdin, timeout=self.timeout, name=self.name, check=False)
            return StepResult(self.name, r.exit_status == 0, f"exit {r.exit_status}", r)

        def combined(self, conn):  # noqa: ANN001, ANN201
            return None

    return ExecCommand(command, stdin=stdin, timeout=timeout, name=command[:80])


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
                 extra_inputs: Mapping[str, Any] | None = None, *, stamp: bool = True) -> None:
    """The body of ``polyvm apply`` (and of recipe commands such as ``polyvm nginx``). ``stamp``: skip hosts
    that match the stamp of their last successful run (``--full-run`` turns it off)."""
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
                        progress=not quiet and not as_json, raise_on_failure=False, stamp=stamp)
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


def verify_recipe(recipe_name: str | None, hosts: Sequence[str], inventory: str | None, parallel: int,
                  inputs_path: str | None, sets: Sequence[str], secrets_file: str | None, as_json: bool,
                  show_diff: bool, baseline: Mapping[str, Any], conn_opts: Mapping[str, Any], *,
                  extra_inputs: Mapping[str, Any] | None = None, tls_days: int = 30, source: str | None = None) -> None:
    """The body of ``polyvm verify`` (and ``polyvm postgres --check``): each host's drift from what the recipe
    would make it (``Recipe.drift``), changing nothing — secrets are read from ``secrets_file`` when it exists,
    never generated. Exit 0: no drift; 1: drift (listed); 2: bad input or a recipe without a drift check."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from polyvm.plugins import get_recipe

    if not recipe_name:
        raise ConfigError("polyvm verify needs --recipe NAME (polyvm recipes lists them)")
    from polyvm.recipe import Recipe

    recipe = get_recipe(recipe_name)
    if type(recipe).drift is Recipe.drift:
        raise ConfigError(f"recipe {recipe.name!r} has no drift check")
    data = load_inputs_file(inputs_path)
    data.update(extra_inputs or {})
    data.update(dict(_input_value(t) for t in sets))
    conns = build_connections(hosts, inventory, conn_opts)
    targets = [host_of(c, **baseline) for c in conns]
    inputs = recipe.parse_inputs(recipe.defaults_for(targets[0], data), source=source or inputs_path or "command line")
    path = Path(secrets_file or f"{recipe.name}-secrets.json")
    if recipe.secrets_needed(inputs) and path.is_file():
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise ConfigError(f"{path}: not a JSON file of secrets") from None
        inputs = recipe.with_secrets(inputs, {k: v for k, v in known.items() if isinstance(v, str)})

    def one(pair):  # noqa: ANN001, ANN202
        conn, host = pair
        with conn:
            return recipe.drift(inputs, host, conn, tls_days=tls_days)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(conns)))) as pool:
        results = list(pool.map(one, zip(conns, targets)))
    if any(r is None for r in results):
        raise ConfigError(f"recipe {recipe.name!r} has no drift check")
    names = [c.name or f"{c.user}@{c.host}" for c in conns]
    print_drift(dict(zip(names, results)), as_json=as_json, show_diff=show_diff)


def print_drift(results: Mapping[str, Sequence[Any]], *, as_json: bool, show_diff: bool) -> None:
    """Print each host's drift (text, or JSON ``{"drift": bool, "hosts": {NAME: {"drift": [...]}}}``) and exit
    1 when there is any."""
    import json

    drifted = any(results.values())
    if as_json:
        click.echo(json.dumps({"drift": drifted, "hosts": {n: {"drift": [d.as_dict() for d in r]}
                                                          for n, r in results.items()}}, indent=2))
    else:
        for n, r in results.items():
            click.echo(f"{n}: {'no drift' if not r else f'{len(r)} difference(s)'}")
            for d in r:
                click.echo(f"  - {d.kind}: {d.what}")
                if show_diff and d.diff:
                    click.echo("".join(f"      {line}\n" for line in d.diff.splitlines()), nl=False)
    if drifted:
        raise SystemExit(1)


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
@click.option("--full-run", is_flag=True,
              help="Apply every step even on a host that matches the stamp of its last successful run "
                   "(docs/provisioners.md, \"Run stamps\").")
def apply_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool, recipe_name: str | None,
              inputs_path: str | None, sets: tuple[str, ...], spec_path: str | None, disks: tuple[str, ...],
              guest_firewall: bool, secrets_file: str | None, as_json: bool, full_run: bool, **kw: Any) -> None:
    """The guest baseline (firewall, data disks from --spec), then a recipe, on every host; prints what changed."""
    conn_opts = _options(kw)
    apply_recipe(recipe_name, hosts, inventory, parallel, quiet, inputs_path, sets, secrets_file, as_json,
                 baseline_options(spec_path, disks, guest_firewall), conn_opts, stamp=not full_run)


@click.command("verify")
@_connection_options
@click.option("--recipe", "recipe_name", default=None, metavar="NAME",
              help="The recipe whose drift to report (default: the one a Pulumi.<stack>.yaml given as --spec "
                   "configures, with its inputs).")
@recipe_options
@click.option("--diff", "show_diff", is_flag=True, help="Show file differences as unified diffs.")
@click.option("--tls-days", type=click.IntRange(0, 3650), default=30, show_default=True,
              help="A certificate expiring within this many days is drift.")
def verify_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool, recipe_name: str,
               inputs_path: str | None, sets: tuple[str, ...], spec_path: str | None, disks: tuple[str, ...],
               guest_firewall: bool, secrets_file: str | None, as_json: bool, show_diff: bool, tls_days: int,
               **kw: Any) -> None:
    """Change nothing: report how each host differs from what the recipe (and the guest baseline from --spec)
    would make it. Exit 0: no drift; 1: drift, listed; 2: bad input."""
    conn_opts = _options(kw)
    extra: dict[str, Any] = {}
    if recipe_name is None and spec_path:
        recipe_name, extra = stack_recipe(spec_path)
    verify_recipe(recipe_name, hosts, inventory, parallel, inputs_path, sets, secrets_file, as_json, show_diff,
                  baseline_options(spec_path, disks, guest_firewall), conn_opts, tls_days=tls_days,
                  extra_inputs=extra, source=spec_path if extra else None)


def stack_recipe(path: str) -> tuple[str | None, dict[str, Any]]:
    """(recipe name, its inputs) that a Pulumi.<stack>.yaml configures (``polyvm:<recipe>``), so ``polyvm
    verify --spec Pulumi.<stack>.yaml`` needs no recipe flags; (None, {}) for a plain spec file. A stack
    configuring several recipes is refused: say which with --recipe."""
    from polyvm.plugins import list_recipes
    from polyvm.spec import load_yaml, stack_config

    stack = stack_config(load_yaml(path))
    if stack is None:
        return None, {}
    found = sorted(n for n in list_recipes() if n in stack)
    if len(found) > 1:
        raise ConfigError(f"{path} configures several recipes ({', '.join(found)}): choose one with --recipe")
    if not found:
        raise ConfigError(f"{path} configures no recipe (no polyvm:<recipe> key): give --recipe NAME")
    value = stack[found[0]]
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{path}: polyvm:{found[0]} must be a mapping of recipe inputs")
    return found[0], dict(value or {})


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
    cli.add_command(verify_cmd)
    cli.add_command(recipes_cmd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(exec_cmd())
