"""docs/writing-a-backend.md's complete backend, as written: installed as a plugin (an entry point), it is
listed, plans, scaffolds a project and passes the contract suite. A plugin raising ImportError while
declaring is one error line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-a-backend.md"


def skeleton() -> str:
    m = re.search(r"<!-- skeleton: mycloud_backend.py -->\n```python\n(.*?)\n```", DOC.read_text(), re.S)
    assert m, "docs/writing-a-backend.md lost its skeleton block"
    return m.group(1) + "\n"


def install(site: Path, module: str, source: str, entry: str) -> dict[str, str]:
    """The module plus a dist-info naming it in the polyvm entry-point group, on PYTHONPATH."""
    (site / f"{module}.py").write_text(source)
    info = site / f"polyvm_{entry}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: polyvm-{entry}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[polyvm]\n{entry} = {module}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def polyvm(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyvm.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return install(tmp_path_factory.mktemp("site"), "mycloud_backend", skeleton(), "mycloud")


def test_the_doc_backend_is_listed_and_plans(env, tmp_path):
    r = polyvm("backends", "--json", env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "mycloud" in r.stdout
    r = polyvm("plan", "--backend", "mycloud", "--spec", str(ROOT / "examples" / "plan" / "vm.yaml"), env=env)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "polyvm:mycloud:VirtualMachine db1" in out and "random:index/randomId:RandomId db1-disk-pgdata" in out
    r = polyvm("new", str(tmp_path / "p"), "--backend", "mycloud", env=env)
    assert r.returncode == 0, r.stderr
    r = polyvm("plan", "--spec", str(tmp_path / "p" / "Pulumi.mycloud.yaml"), env=env)
    assert r.returncode == 0, r.stderr


def test_the_doc_backend_passes_the_contract_suite(env, tmp_path):
    (tmp_path / "test_contract.py").write_text(
        "from polyvm.testing import BackendContract\n"
        "from mycloud_backend import MyCloudBackend\n\n\n"
        "class TestMyCloud(BackendContract):\n    backend = MyCloudBackend()\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_contract.py")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout


def test_an_import_error_while_declaring_is_one_line(tmp_path):
    source = skeleton().replace("import pulumi_random as random", "import pulumi_randomm as random")
    env = install(tmp_path, "brokencloud_backend", source.replace('name = "mycloud"', 'name = "brokencloud"')
                  .replace('sdk_modules = ("pulumi_random",)', "sdk_modules = ()"), "brokencloud")
    r = polyvm("plan", "--backend", "brokencloud", "--spec", str(ROOT / "examples" / "plan" / "vm.yaml"), env=env)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("polyvm: error: ") and "pulumi_randomm" in line


def test_a_plugin_failing_to_import_is_one_warning_line(tmp_path):
    env = install(tmp_path, "typo_backend", "from polyvm.backend import Backendd\n", "typo")
    r = polyvm("backends", "--json", env=env)
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("polyvm: warning: polyvm plugin 'typo'"), r.stderr
