"""``polyvm nginx``: the nginx recipe from the command line (the same as ``polyvm apply --recipe nginx``,
with options for the common inputs), and the plugin that registers the recipe."""

from __future__ import annotations

from typing import Any

import click

from polyvm.hookspecs import hookimpl
from polyvm.provisioners.cli import connection_options, connection_settings, recipe_options


@click.command("nginx")
@connection_options
@click.option("--upstream", "upstreams", multiple=True, metavar="HOST:PORT",
              help="Application server to proxy to (repeatable); without any, a static site.")
@click.option("--server-name", "server_names", multiple=True, metavar="NAME",
              help="Name (DNS name or IP) the site answers to and the certificate is for (default: the host's address).")
@click.option("--https-port", type=int, default=None, help="HTTPS port (default 443).")
@recipe_options
def nginx_cmd(hosts: tuple[str, ...], inventory: str | None, parallel: int, quiet: bool,
              upstreams: tuple[str, ...], server_names: tuple[str, ...], https_port: int | None,
              inputs_path: str | None, sets: tuple[str, ...], spec_path: str | None, disks: tuple[str, ...],
              guest_firewall: bool, secrets_file: str | None, as_json: bool, **kw: Any) -> None:
    """An HTTPS site (static, or a reverse proxy to --upstream) on every host, with a generated certificate;
    idempotent (an unchanged run changes nothing and does not reload nginx)."""
    from polyvm.provisioners.cli import apply_recipe, baseline_options

    extra: dict[str, Any] = {}
    if upstreams:
        extra["upstreams"] = list(upstreams)
    if server_names:
        extra["server_names"] = list(server_names)
    if https_port is not None:
        extra["https_port"] = https_port
    apply_recipe("nginx", hosts, inventory, parallel, quiet, inputs_path, sets, secrets_file, as_json,
                 baseline_options(spec_path, disks, guest_firewall), connection_settings(kw), extra_inputs=extra)


@hookimpl
def polyvm_register_commands(cli: click.Group) -> None:
    cli.add_command(nginx_cmd)


@hookimpl
def polyvm_register_recipes(register) -> None:  # noqa: ANN001 - Callable[[Recipe], None]
    from .recipe import NginxRecipe

    register(NginxRecipe())
