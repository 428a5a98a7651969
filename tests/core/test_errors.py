"""One error hierarchy; messages a person can act on."""

from __future__ import annotations

import pytest

from polyvm import errors as e
from polyvm.backend import Backend
from polyvm.plugins import get_backend


def test_everything_derives_from_polyvm_error():
    for name in dir(e):
        obj = getattr(e, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == e.__name__:
            assert issubclass(obj, e.PolyvmError), name


def test_spec_error_lists_every_problem():
    err = e.SpecError(["a: bad", "b: worse"], source="vm.yaml")
    assert str(err) == "invalid VM spec in vm.yaml (2 problems):\n  - a: bad\n  - b: worse"
    assert err.exit_code == 2


def test_unsupported_feature_names_backend_and_option():
    err = e.UnsupportedFeatureError("gcp", ["image.family 'rhel'"])
    assert err.problems == ["backend 'gcp' cannot honour image.family 'rhel'"]
    assert isinstance(err, e.SpecError)


def test_missing_sdk_gives_one_line_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pulumi_gcp", None)  # what an uninstalled package looks like to import
    be: Backend = get_backend("gcp")
    with pytest.raises(e.MissingDependencyError) as exc:
        be.require_sdk()
    assert str(exc.value) == "the gcp backend needs the Python package 'pulumi_gcp': pip install 'polyvm[gcp]'"
    assert "\n" not in str(exc.value)


def test_fanout_error_names_each_host_once():
    err = e.FanoutError({"h1": e.CommandError("root@h1: x failed"), "h2": ValueError("boom")})
    assert str(err) == "2 host(s) failed: h1, h2 (root@h1: x failed; h2: boom)"
