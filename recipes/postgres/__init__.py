"""PostgreSQL recipe: turn a VM into a locked-down PostgreSQL server over SSH.

Public API:

* :class:`PostgresInputs` (and :func:`parse_inputs`): what to set up.
* :func:`apply_postgres(conn, inputs)`: detect the OS, run every step over one SSH connection, verify,
  return a :class:`RecipeResult` saying what changed.
* :func:`build_steps(inputs, layout)`: the steps for a known OS (pure), with :func:`layout_for`.
* :class:`PostgresRecipe`: the recipe as a plugin (``polyvm_register_recipes``), which is how the sandbox,
  ``polyvm apply --recipe postgres``, ``run_recipe`` and the generic Pulumi ``RecipeResource`` use it.
* :func:`ensure_passwords(inputs, path)`: generate missing passwords into a 0600 file.
* ``polyvm.recipes.postgres.pulumi.PostgresServer``: the Pulumi form (imports Pulumi; not imported here).
* ``polyvm postgres`` on the command line (``cli.py``).
"""

from .inputs import Database, DbUser, PostgresInputs, default_memory_settings, parse_inputs
from .passwords import ensure_passwords
from .platform import Layout, OsRelease, layout_for, parse_os_release
from .recipe import PostgresRecipe, RecipeResult, apply_postgres, build_steps, layout_for_inputs

__all__ = [
    "Database", "DbUser", "Layout", "OsRelease", "PostgresInputs", "RecipeResult",
    "apply_postgres", "build_steps", "default_memory_settings", "ensure_passwords", "layout_for",
    "layout_for_inputs", "parse_inputs", "parse_os_release", "PostgresRecipe",
]
