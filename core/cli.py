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
        except ImportError as exc:
            # A plugin's code importing what is not installed (or misspelt) while it runs: say what.
            where = f" (from {exc.name})" if exc.name and exc.name not in str(exc) else ""
            click.echo(f"polyvm: error: {type(exc).__name__}: {exc}{where}; a plugin needs a package that is not "
                       "installed", err=True)
            ctx.exit(1)


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


#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status. Ctrl-C at any point (plugin loading included) prints one line
    and exits 130; commands clean up what they had half-made before it gets here."""
    newline = "\n"  # closes the terminal's "^C" echo (click writes it itself for interrupts in a command)
    try:
        try:
            cli = build_cli()
        except PolyvmError as exc:
            click.echo(f"polyvm: error: {exc}", err=True)
            return exc.exit_code
        try:
            # Not standalone: click's own usage error is three lines (usage, hint, error), ours is one; and
            # click would turn Ctrl-C into "Aborted!" and exit 1.
            rv = cli.main(args=argv, prog_name="polyvm", standalone_mode=False)
        except SystemExit as exc:
            return int(exc.code or 0) if not isinstance(exc.code, str) else 1
        except click.exceptions.Abort:
            newline = ""
            raise KeyboardInterrupt from None
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # plain `polyvm`: its help (click >= 8.2)
                click.echo(exc.format_message())
                return 0
            where = f" (see {exc.ctx.command_path if exc.ctx is not None else 'polyvm'} --help)"
            click.echo(f"polyvm: error: {exc.format_message().rstrip('.')}{where}", err=True)
            return exc.exit_code
        except click.ClickException as exc:
            click.echo(f"polyvm: error: {exc.format_message()}", err=True)
            return exc.exit_code
        except click.exceptions.Exit as exc:
            return int(exc.exit_code or 0)
        return rv if isinstance(rv, int) else 0
    except KeyboardInterrupt:
        try:
            click.echo(f"{newline}polyvm: interrupted", err=True)
        except Exception:  # noqa: BLE001 - stderr may be gone; the exit status still says it
            pass
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
