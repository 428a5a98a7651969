"""Plugin discovery: built-ins and third parties through the same hooks; broken plugins isolated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from polyvm import hookspecs
from polyvm.backend import Backend, Capabilities
from polyvm.errors import PluginError, UnknownBackendError
from polyvm.hookspecs import hookimpl
from polyvm.plugins import DEFAULT_PLUGINS, PluginLoadWarning, Plugins

ROOT = Path(__file__).resolve().parents[2]


class _Fake(Backend):
    name = "fake"
    capabilities = Capabilities(firewall="cloud", egress="none", max_data_disks=0, public_ip=True,
                                private_ip_only=False, host_key_at_creation=False)

    def create(self, spec, settings, opts=None):  # pragma: no cover - not declared in these tests
        raise NotImplementedError


def test_builtin_backends_register_through_the_public_hook():
    plugins = Plugins(entry_point_group=None)
    names = set(plugins.backends())
    assert "aws" in names
    # The aws module is registered as a plugin and answers the same hook a third party would implement.
    impls = {plugins.pm.get_name(i.plugin) for i in plugins.pm.hook.polyvm_register_backends.get_hookimpls()}
    assert "polyvm.backends.aws" in impls
    assert set(DEFAULT_PLUGINS) >= impls


def test_unknown_backend_lists_available():
    plugins = Plugins(entry_point_group=None)
    with pytest.raises(UnknownBackendError) as exc:
        plugins.get_backend("ibm")
    assert "unknown backend 'ibm'" in str(exc.value)
    assert "aws" in str(exc.value)
    assert exc.value.exit_code == 2


def test_registering_an_object_plugin_and_duplicates():
    plugins = Plugins(default_plugins=(), entry_point_group=None)

    class One:
        @hookimpl
        def polyvm_register_backends(self, register):
            register(_Fake)  # a class is instantiated

    plugins.register(One(), "one")
    assert isinstance(plugins.get_backend("fake"), _Fake)

    class Two:
        @hookimpl
        def polyvm_register_backends(self, register):
            register(_Fake())

    plugins.register(Two(), "two")
    with pytest.raises(PluginError, match="registered twice"):
        plugins.backends()


def test_registering_something_that_is_not_a_backend():
    plugins = Plugins(default_plugins=(), entry_point_group=None)

    class Bad:
        @hookimpl
        def polyvm_register_backends(self, register):
            register("aws")

    plugins.register(Bad(), "bad")
    with pytest.raises(PluginError, match="not a polyvm Backend"):
        plugins.backends()


def test_broken_builtin_module_is_a_warning_not_a_crash(tmp_path, monkeypatch):
    (tmp_path / "polyvm_broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = Plugins(default_plugins=("polyvm_broken_plugin", "polyvm.backends.aws"), entry_point_group=None)
    with pytest.warns(PluginLoadWarning, match="polyvm_broken_plugin.*boom at import"):
        names = plugins.backends()
    assert "aws" in names
    assert "polyvm_broken_plugin" in plugins.failed


def test_plugin_whose_hook_raises_is_isolated():
    plugins = Plugins(default_plugins=("polyvm.backends.aws",), entry_point_group=None)

    class Raises:
        @hookimpl
        def polyvm_register_backends(self, register):
            raise ValueError("cloud SDK exploded")

    plugins.register(Raises(), "raises")
    with pytest.warns(PluginLoadWarning, match="raises.*cloud SDK exploded"):
        assert "aws" in plugins.backends()


def _make_dist(root: Path, name: str, module: str, body: str) -> Path:
    d = root / name
    d.mkdir()
    (d / f"{module}.py").write_text(textwrap.dedent(body))
    (d / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{name}"
        version = "0.0.1"
        [project.entry-points.polyvm]
        {name} = "{module}"
        [tool.setuptools]
        py-modules = ["{module}"]
    """))
    return d


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory) -> Path:
    """Two small distributions built and installed here: a working backend and a broken plugin."""
    root = tmp_path_factory.mktemp("dists")
    good = _make_dist(root, "polyvm-fakecloud", "polyvm_fakecloud", '''
        from polyvm import hookimpl
        from polyvm.backend import Backend, Capabilities

        class FakeCloud(Backend):
            name = "fakecloud"
            description = "a third-party test backend"
            capabilities = Capabilities(firewall="cloud", egress="all", max_data_disks=1, public_ip=True,
                                        private_ip_only=False, host_key_at_creation=False)
            def create(self, spec, settings, opts=None):
                raise NotImplementedError

        @hookimpl
        def polyvm_register_backends(register):
            register(FakeCloud())
    ''')
    broken = _make_dist(root, "polyvm-broken", "polyvm_broken", '''
        import a_module_that_does_not_exist  # noqa
    ''')
    typo = _make_dist(root, "polyvm-typo", "polyvm_typo", '''
        from polyvm import hookimpl
        @hookimpl
        def polyvm_register_backend(register):  # typo: missing 's'
            pass
    ''')
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(good), str(broken), str(typo)], check=True,
                   capture_output=True, text=True)
    return site


def _polyvm(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "polyvm.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_third_party_backend_via_entry_point(third_party_site):
    r = _polyvm(third_party_site, "backends", "--json")
    assert r.returncode == 0, r.stderr
    names = [b["name"] for b in json.loads(r.stdout)]
    assert "fakecloud" in names and "aws" in names
    # The broken plugin and the one with a hook typo are named in warnings; everything else works.
    assert "polyvm-broken" in r.stderr and "a_module_that_does_not_exist" in r.stderr
    assert "polyvm-typo" in r.stderr and "polyvm_register_backend" in r.stderr
    assert "Traceback" not in r.stderr


def test_every_hookspec_is_documented_and_implemented():
    """datasette-style: a hook without docs or without a built-in implementation fails here."""
    docs = (ROOT / "docs" / "plugins.md").read_text()
    plugins = Plugins(entry_point_group=None)
    plugins.load()
    names = [n for n in dir(hookspecs) if n.startswith("polyvm_")]
    assert names, "no hookspecs found"
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    for name in names:
        assert f"def test_{name}(" in tests, f"{name} has no test named test_{name}"
        assert f"`{name}" in docs, f"{name} is not documented in docs/plugins.md"
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
        assert getattr(plugins.pm.hook, name).get_hookimpls(), f"no built-in plugin implements {name}"


def test_loading_every_plugin_imports_no_cloud_sdk():
    """Cloud SDKs are imported inside their backend, only when a VM is declared."""
    code = ("import sys; from polyvm.cli import build_cli; build_cli(); import polyvm;"
            "assert len(polyvm.list_backends()) >= 6;"
            "print(sorted(m for m in sys.modules if m.startswith(('pulumi_', 'azure', 'google', 'boto'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_polyvm_register_backends():
    plugins = Plugins(default_plugins=(), entry_point_group=None)

    class P:
        @hookimpl
        def polyvm_register_backends(self, register):
            register(_Fake())

    plugins.register(P(), "p")
    assert list(plugins.backends()) == ["fake"]


def test_polyvm_register_commands():
    import click

    plugins = Plugins(default_plugins=(), entry_point_group=None)

    class P:
        @hookimpl
        def polyvm_register_commands(self, cli):
            cli.add_command(click.Command("hello", callback=lambda: None))

    plugins.register(P(), "p")
    group = click.Group("polyvm")
    plugins.register_commands(group)
    assert "hello" in group.commands


def test_polyvm_register_recipes():
    from pydantic import BaseModel

    from polyvm.errors import UnknownRecipeError
    from polyvm.recipe import Recipe

    class Inputs(BaseModel):
        text: str = "hi"

    class Motd(Recipe):
        name = "motd"
        inputs_model = Inputs

        def steps(self, inputs, host, facts):
            return []

    plugins = Plugins(default_plugins=(), entry_point_group=None)

    class P:
        @hookimpl
        def polyvm_register_recipes(self, register):
            register(Motd)  # a class is instantiated

    plugins.register(P(), "p")
    assert isinstance(plugins.get_recipe("motd"), Motd)
    with pytest.raises(UnknownRecipeError, match="unknown recipe 'nope'; available recipes: motd") as ei:
        plugins.get_recipe("nope")
    assert ei.value.exit_code == 2

    class Twice:
        @hookimpl
        def polyvm_register_recipes(self, register):
            register(Motd())

    plugins.register(Twice(), "twice")
    with pytest.raises(PluginError, match="recipe 'motd' is registered twice"):
        plugins.recipes()

    class NotARecipe:
        @hookimpl
        def polyvm_register_recipes(self, register):
            register(object())

    bad = Plugins(default_plugins=(), entry_point_group=None)
    bad.register(NotARecipe(), "bad")
    with pytest.raises(PluginError, match="not a polyvm Recipe"):
        bad.recipes()


def test_builtin_recipes_register_through_the_public_hook():
    plugins = Plugins(entry_point_group=None)
    assert {"postgres", "nginx"} <= set(plugins.recipes())
