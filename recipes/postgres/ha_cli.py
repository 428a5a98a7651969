"""``polyvm postgres restore | backup | status``: the backup side of the recipe from the command line.

    polyvm postgres restore -H admin@203.0.113.9 --inputs pg.yaml --data-device /dev/vdb --repo-device /dev/vdc \\
        --target-time 2026-12-01T08:30:00+00:00
    polyvm postgres backup -H admin@198.51.100.7 --inputs pg.yaml --type full
    polyvm postgres status -H admin@198.51.100.7 -H admin@198.51.100.8 --inputs pg.yaml

The inputs file is the one the server was made with (its ``backup:`` section); secrets come from the same
``--password-file`` (the repository's cipher passphrase is in it).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from polyvm.errors import ConfigError, PolyvmError

from .replication import inputs_member


def _common(f):  # noqa: ANN001, ANN202 - click decorator stack
    from polyvm.provisioners.cli import _connection_options

    from .cli import DEFAULT_PASSWORD_FILE

    f = click.option("--password-file", type=click.Path(dir_okay=False), default=DEFAULT_PASSWORD_FILE,
                     show_default=True, help="JSON file (0600) of generated secrets (the repository's passphrase).")(f)
    f = click.option("--inputs", "inputs_path", type=click.Path(exists=True, dir_okay=False), required=True,
                     help="YAML file of the recipe's inputs, with its backup: section.")(f)
    return _connection_options(f)


def _inputs(inputs_path: str, password_file: str, extra: dict[str, Any] | None = None,
            section: str | None = "backup"):  # noqa: ANN202
    from polyvm.provisioners.cli import load_inputs_file

    from .inputs import parse_inputs
    from .passwords import load_passwords

    data = load_inputs_file(inputs_path)
    if section and not isinstance(data.get(section), dict):
        raise ConfigError(f"{inputs_path}: no {section}: section (docs/postgres-ha.md)")
    if extra:
        data["backup"] = {**data["backup"], **extra}
    inputs = parse_inputs(data, source=inputs_path)
    return inputs.with_passwords(load_passwords(password_file)), data


def register_subcommands(group: click.Group) -> None:
    group.add_command(restore_cmd)
    group.add_command(backup_cmd)
    group.add_command(status_cmd)
    group.add_command(promote_cmd)


@click.command("restore")
@_common
@click.option("--target-time", default=None, metavar="ISO-8601",
              help="Recover up to this moment (with a time zone); default: the latest archived WAL.")
@click.option("--data-device", default=None, help="The new host's data disk (formatted only when blank).")
@click.option("--mount-point", default=None, help="Where the data disk is mounted (default /srv/postgresql).")
@click.option("--repo-device", default=None,
              help="A disk holding the repository (moved from the lost host), mounted at backup.repo.path.")
@click.option("--force", is_flag=True, help="Also over a running server or a non-empty data directory "
              "(stops the server, overwrites its data); needs --confirm.")
@click.option("--confirm", "confirm", multiple=True, metavar="HOST",
              help="With --force: each -H value again, to say that its data may be overwritten.")
def restore_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool, inputs_path: str,
                password_file: str, target_time: str | None, data_device: str | None, mount_point: str | None,
                repo_device: str | None, force: bool, confirm: tuple[str, ...], **kw: Any) -> None:
    """Restore the latest backup, or a point in time, onto a new or emptied host; refuses a running server or
    a non-empty data directory unless --force --confirm HOST."""
    from polyvm.host import HostDisk
    from polyvm.provisioners.cli import _options, apply_recipe

    if force and (inventory or sorted(confirm) != sorted(hosts)):
        raise ConfigError("--force overwrites data: repeat every -H value with --confirm (no --inventory)")
    if target_time is not None:
        try:
            datetime.fromisoformat(target_time)
        except ValueError:
            raise ConfigError(f"--target-time {target_time!r} is not an ISO-8601 time") from None
    request = {"restore": {"target_time": target_time, "force": force}}
    inputs, data = _inputs(inputs_path, password_file, request)
    disks = []
    mp = mount_point or inputs.mount_point or "/srv/postgresql"
    if data_device:
        disks.append(HostDisk("data", data_device, mp))
        data["mount_point"] = mp
    if repo_device:
        assert inputs.backup is not None
        if inputs.backup.repo.type != "posix":
            raise ConfigError("--repo-device: the repository is not on a disk (backup.repo.type is "
                              f"{inputs.backup.repo.type})")
        disks.append(HostDisk("pgbackrest", repo_device, inputs.backup.repo.path))
    apply_recipe("postgres", hosts, inventory, parallel, quiet, None, (), password_file, False,
                 {"disks": tuple(disks)} if disks else {}, _options(kw), extra_inputs=data)


def _each(hosts: tuple[str, ...], inventory: str | None, kw: dict[str, Any]):  # noqa: ANN202
    from polyvm.provisioners.cli import _options, build_connections

    return build_connections(hosts, inventory, _options(kw))


@click.command("backup")
@_common
@click.option("--type", "kind", type=click.Choice(["full", "diff", "incr"]), default="full", show_default=True)
def backup_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool, inputs_path: str,
               password_file: str, kind: str, **kw: Any) -> None:
    """Take a base backup now (pgbackrest backup on each host, as postgres)."""
    from .backup import pgbackrest

    inputs, _ = _inputs(inputs_path, password_file)
    assert inputs.backup is not None
    for conn in _each(hosts, inventory, kw):
        with conn:
            conn.run(f"cd / && runuser -u postgres -- {pgbackrest(inputs.backup, f'--type={kind}', 'backup')}",
                     name=f"{kind} backup", timeout=24 * 3600)
        click.echo(f"{conn.host}: {kind} backup taken")


@click.command("status")
@_common
@click.option("--json", "as_json", is_flag=True, help="Machine-readable status.")
def status_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool, inputs_path: str,
               password_file: str, as_json: bool, **kw: Any) -> None:
    """Per host: role, replication lag, WAL archiving, last backup. Exits 1 when archiving has stopped."""
    from .status import host_status

    inputs, _ = _inputs(inputs_path, password_file, section=None)
    results = []
    for conn in _each(hosts, inventory, kw):
        with conn:
            results.append(host_status(conn, inputs))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2, default=str))
    else:
        for r in results:
            lag = ""
            if r.lag:
                lag = f", lag {r.lag.get('bytes')} bytes / {r.lag.get('seconds')} s"
            a = r.archiver
            click.echo(f"{r.host}: {r.role}{lag}; WAL archived {a.get('archived_count', 0)} "
                       f"(last {a.get('last_archived_wal') or '-'} at {a.get('last_archived_time') or '-'}), "
                       f"failed {a.get('failed_count', 0)}; last backup "
                       f"{(r.last_backup or {}).get('label') or 'none'} {(r.last_backup or {}).get('stopped') or ''}")
            for rep in r.replicas:
                click.echo(f"  replica {rep.get('name')} {rep.get('address')} {rep.get('state')} "
                           f"{rep.get('sync_state')}: lag {rep.get('lag_bytes')} bytes / {rep.get('lag_seconds')} s")
            for p in r.problems:
                click.echo(f"  PROBLEM: {p}", err=True)
    bad = [r for r in results if r.problems]
    if bad:
        raise PolyvmError(f"{len(bad)} host(s) with problems: " + "; ".join(f"{r.host}: {r.problems[0]}" for r in bad))


@click.command("promote")
@click.argument("member")
@_common
def promote_cmd(member: str, hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool,
                inputs_path: str, password_file: str, **kw: Any) -> None:
    """Promote the standby MEMBER (its name or address in replication.members) and re-point the others.

    The first -H is MEMBER's host; every further -H (the other reachable members) then follows it. Afterwards
    set replication.primary to MEMBER in the inputs file, so later runs keep it the primary."""
    from polyvm.provisioners.cli import _options, apply_recipe

    if inventory or not hosts:
        raise ConfigError("promote: give MEMBER's host as the first -H, then the other members' hosts (no --inventory)")
    inputs, data = _inputs(inputs_path, password_file, section="replication")
    name = inputs_member(inputs, member)
    data["replication"] = {**data["replication"], "primary": name}
    conn_opts = _options(kw)
    apply_recipe("postgres", hosts[:1], None, parallel, quiet, None, (), password_file, False, {}, conn_opts,
                 extra_inputs=data)
    if hosts[1:]:
        apply_recipe("postgres", hosts[1:], None, parallel, quiet, None, (), password_file, False, {}, conn_opts,
                     extra_inputs=data)
    click.echo(f"{name} is the primary now: set replication.primary: {name} in {inputs_path}", err=True)
