"""The wheel maps the flat repository layout to the polyvm namespace and ships no top-level `core`."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True, timeout=300)
    [whl] = out.glob("polyvm-*.whl")
    return whl


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("polyvm-")}
    assert tops == {"polyvm"}, f"unexpected top-level entries: {tops}"
    for mod in ("polyvm/spec.py", "polyvm/backends/aws/mapping.py", "polyvm/provisioners/__init__.py",
                "polyvm/recipes/postgres/__init__.py", "polyvm/testing.py"):
        assert mod in names
    assert not any(n.startswith(("core/", "tests/")) for n in names)
    templates = [n for n in names if n.startswith("polyvm/recipes/postgres/templates/")]
    assert templates, "recipe templates are not shipped as package data"


def test_wheel_installs_and_imports_outside_the_tree(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    code = ("import polyvm, polyvm.backends.aws, polyvm.provisioners, polyvm.recipes.postgres, importlib.util;"
            "assert polyvm.__file__.startswith(%r), polyvm.__file__;"
            "assert importlib.util.find_spec('core') is None;"
            "print(sorted(polyvm.list_backends()))") % str(target)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "aws" in r.stdout
