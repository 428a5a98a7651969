"""The wheel maps the flat repository layout to the polyvm namespace and ships no top-level `core`."""

from __future__ import annotations

import os
import re
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


def test_building_prints_no_setuptools_warning_about_this_project(tmp_path):
    """`sh scripts/setup` showed setuptools' warnings about our configuration (project.license as a
    table; template folders absent from `packages`). Build verbosely and look at everything it says."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    said = r.stdout + r.stderr
    assert "running bdist_wheel" in said  # the backend's own output is in what we look at
    warnings = [ln for ln in said.splitlines()
                if re.search(r"(Warning|DEPRECATED|deprecated|is absent from the `packages`)", ln)
                and "pip" not in ln.split(":")[0]]
    assert warnings == [], "\n".join(warnings)


def test_every_template_folder_is_listed_as_a_package():
    """A new recipe's or backend's templates/ must be in pyproject's packages and package-data."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {v: k for k, v in cfg["package-dir"].items()}
    for tdir in [p for p in ROOT.glob("**/templates") if ".venv" not in p.parts and "build" not in p.parts]:
        rel = tdir.relative_to(ROOT)
        parent = dirs.get(rel.parent.as_posix())
        assert parent, f"{rel}: its parent is not a mapped package"
        pkg = f"{parent}.{rel.name}"
        subs = [pkg] if not any(p.is_dir() for p in tdir.iterdir()) else \
            [f"{pkg}.{p.name}" for p in tdir.iterdir() if p.is_dir()]
        for sub in subs:
            assert sub in cfg["packages"] and sub in cfg["package-data"], f"{sub} ({rel}) not listed"
