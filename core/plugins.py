"""A small typed facade over pluggy's PluginManager (after tox 4 and llm).

Built-in plugins are a plain tuple of module names registered through the same hooks third parties use;
third-party plugins arrive through the ``polyvm`` entry-point group. Loading is deferred until first use.
A plugin that fails to import is reported by name as a warning; the others keep working.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownBackendError, UnknownRecipeError

if TYPE_CHECKING:
    import click

    from .backend import Backend
    from .recipe import Recipe

ENTRY_POINT_GROUP = "polyvm"

#: Built-in plugins, loaded before entry points, through the same hooks.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "polyvm.backends.aws",
    "polyvm.backends.azure",
    "polyvm.backends.gcp",
    "polyvm.backends.digitalocean",
    "polyvm.backends.vsphere",
    "polyvm.backends.local",
    "polyvm.commands",
    "polyvm.provisioners.cli",
    "polyvm.recipes.postgres.cli",
    "polyvm.recipes.nginx.cli",
)


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded; polyvm goes on without it."""


class Plugins:
    """The plugin manager polyvm uses. Nothing else touches ``pm.hook`` directly."""

    def __init__(self, default_plugins: Iterable[str] = DEFAULT_PLUGINS, *, entry_point_group: str | None =
                 ENTRY_POINT_GROUP) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._default_plugins = tuple(default_plugins)
        self._group = entry_point_group
        self._loaded = False
        self._backends: dict[str, Backend] | None = None
        self._recipes: dict[str, Recipe] | None = None
        self.failed: dict[str, str] = {}

    # --- loading -------------------------------------------------------------------------------------
    def _warn(self, name: str, exc: BaseException) -> None:
        msg = f"polyvm plugin {name!r} failed to load and is skipped: {type(exc).__name__}: {exc}"
        self.failed[name] = f"{type(exc).__name__}: {exc}"
        warnings.warn(msg, PluginLoadWarning, stacklevel=3)

    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for modname in self._default_plugins:
            try:
                mod = importlib.import_module(modname)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the rest
                self._warn(modname, exc)
                continue
            self.pm.register(mod, modname)
        if self._group:
            for ep in entry_points(group=self._group):
                if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                    continue
                try:
                    plugin = ep.load()
                    self.pm.register(plugin, ep.name)
                    # A hookimpl whose name matches no hookspec is a typo: reject that plugin, keep the rest.
                    self.pm.check_pending()
                except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the rest
                    if self.pm.get_plugin(ep.name) is not None:
                        self.pm.unregister(name=ep.name)
                    self._warn(ep.name, exc)
        self.pm.check_pending()

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object (used by tests and embedding applications)."""
        self.load()
        self.pm.register(plugin, name)
        self.pm.check_pending()
        self._backends = None
        self._recipes = None

    # --- backends and recipes ---------------------------------------------------------------------------
    def _collect(self, hook: Any, base: type, kind: str) -> dict[str, Any]:
        """Call a ``register``-style hook on every plugin; each registered object must be a ``base``."""
        found: dict[str, Any] = {}
        for impl in hook.get_hookimpls():
            plugin_name = self.pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(obj: Any, _plugin: str = plugin_name) -> None:
                if isinstance(obj, type) and issubclass(obj, base):
                    obj = obj()
                if not isinstance(obj, base):
                    raise PluginError(f"plugin {_plugin!r} registered {obj!r}, which is not a polyvm {base.__name__}")
                if not getattr(obj, "name", ""):
                    raise PluginError(f"plugin {_plugin!r} registered a {kind} without a name ({obj!r})")
                if obj.name in found:
                    raise PluginError(f"{kind} {obj.name!r} is registered twice (again by {_plugin!r})")
                found[obj.name] = obj

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                self._warn(plugin_name, exc)
        return dict(sorted(found.items()))

    def _collect_backends(self) -> dict[str, "Backend"]:
        from .backend import Backend

        return self._collect(self.pm.hook.polyvm_register_backends, Backend, "backend")

    def backends(self) -> dict[str, "Backend"]:
        """All registered backends by name."""
        self.load()
        if self._backends is None:
            self._backends = self._collect_backends()
        return self._backends

    def get_backend(self, name: str) -> "Backend":
        """The backend called ``name``, or UnknownBackendError listing the available ones."""
        backends = self.backends()
        try:
            return backends[name]
        except KeyError:
            raise UnknownBackendError(name, backends) from None

    def recipes(self) -> dict[str, "Recipe"]:
        """All registered recipes by name."""
        from .recipe import Recipe

        self.load()
        if self._recipes is None:
            self._recipes = self._collect(self.pm.hook.polyvm_register_recipes, Recipe, "recipe")
        return self._recipes

    def get_recipe(self, name: str) -> "Recipe":
        """The recipe called ``name``, or UnknownRecipeError listing the available ones."""
        recipes = self.recipes()
        try:
            return recipes[name]
        except KeyError:
            raise UnknownRecipeError(name, recipes) from None

    # --- other hooks -----------------------------------------------------------------------------------
    def register_commands(self, cli: "click.Group") -> None:
        self.load()
        self.pm.hook.polyvm_register_commands(cli=cli)


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin manager, created on first use."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
    return _plugins


def reset_plugins() -> None:
    """Forget the process-wide plugin manager (tests)."""
    global _plugins
    _plugins = None


def get_backend(name: str) -> "Backend":
    return get_plugins().get_backend(name)


def list_backends() -> dict[str, "Backend"]:
    return get_plugins().backends()


def get_recipe(name: str) -> "Recipe":
    return get_plugins().get_recipe(name)


def list_recipes() -> dict[str, "Recipe"]:
    return get_plugins().recipes()
