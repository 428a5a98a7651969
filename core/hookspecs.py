"""polyvm's hook specifications (pluggy). Every hook is documented in docs/plugins.md; a test checks it.

Plugins implement hooks with ``@polyvm.hookimpl`` and arrive either as built-ins (``DEFAULT_PLUGINS``)
or through the ``polyvm`` entry-point group. Built-ins use exactly the same hooks as third parties.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .recipe import Recipe

PROJECT = "polyvm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def polyvm_register_backends(register: Callable[["Backend"], None]) -> None:
    """Register backends.

    Called once, when the plugin manager first needs the list of backends.

    :param register: call it with a :class:`polyvm.backend.Backend` instance for each backend the plugin
        provides; one plugin may register several. Registering two backends with the same name is an error.
    """


@hookspec
def polyvm_register_commands(cli: Any) -> None:
    """Add commands to the ``polyvm`` command line.

    Called once when the CLI starts.

    :param cli: the top-level :class:`click.Group`; call ``cli.add_command(...)`` or use ``@cli.command()``.
    """


@hookspec
def polyvm_register_recipes(register: Callable[["Recipe"], None]) -> None:
    """Register recipes (what turns a VM into a server: PostgreSQL, nginx, ...).

    Called once, when the plugin manager first needs the list of recipes.

    :param register: call it with a :class:`polyvm.recipe.Recipe` instance (or subclass) for each recipe the
        plugin provides; one plugin may register several. Registering two recipes with the same name is an
        error.
    """
