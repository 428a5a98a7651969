"""The ``polyvm`` command line. Commands come from plugins (built-ins included) via polyvm_register_commands."""

from __future__ import annotations

import sys
import warnings

import click

from . import __version__
from .errors import PolyvmError


class _Group(click.Group):
    """Turns PolyvmError into one line on stderr and its exit code; no traceback for user errors."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except PolyvmError as exc:
            click.echo(f"polyvm: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _warning_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    click.echo(f"polyvm: warning: {message}", err=True)


def build_cli() -> click.Group:
    @click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="polyvm")
    def cli() -> None:
        """Describe a VM once; get it on any cloud or your own Linux box; provision it over SSH."""

    from .plugins import get_plugins

    warnings.showwarning = _warning_line
    get_plugins().register_commands(cli)
    return cli


def main(argv: list[str] | None = None) -> int:
    try:
        cli = build_cli()
    except PolyvmError as exc:
        click.echo(f"polyvm: error: {exc}", err=True)
        return exc.exit_code
    try:
        cli.main(args=argv, prog_name="polyvm", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
