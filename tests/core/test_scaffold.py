"""`polyvm new`: a Pulumi project that plans offline for every backend and passes Pulumi's project-file checks.

There is no Pulumi CLI here. The checks it makes on Pulumi.yaml are reproduced from pulumi/pulumi (commit
1b5949891b3cefcb9974752b24a5ecef0acc86c8):
- tests/data/pulumi-project.schema.json is sdk/go/common/workspace/project.json, the JSON schema
  `ValidateProject` (sdk/go/common/workspace/project.go) validates every project file against;
- `Project.Validate` (same file): a config key not namespaced by the project (``configKeyIsNamespacedByProject``:
  it has a ':' and does not start with "<project>:") must not define a type or a default and must give a value;
- `tokens.ValidateProjectName` (sdk/go/common/tokens/project.go, names.go): [A-Za-z0-9_.-]+, at most 100.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from polyvm.plugins import get_plugins

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "data" / "pulumi-project.schema.json").read_text())
BACKENDS = sorted(get_plugins().backends())


def polyvm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyvm.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def pulumi_project_problems(project: dict) -> list[str]:
    """What the Pulumi CLI refuses in a Pulumi.yaml: ValidateProject's schema, then Project.Validate's rules."""
    problems = [f"{'/'.join(map(str, e.path))}: {e.message}"
                for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(project)]
    name = project.get("name", "")
    if not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name)):
        problems.append(f"name {name!r}: not a valid project name")
    config = project.get("config") or {}
    if isinstance(config, dict):
        for key, decl in config.items():
            decl = decl if isinstance(decl, dict) else {"value": decl}
            namespaced = ":" not in key or key.startswith(f"{name}:")
            if "default" in decl and "value" in decl:
                problems.append(f"config {key}: both default and value")
            if not namespaced:
                if "type" in decl or "items" in decl:
                    problems.append(f"Configuration key '{key}' is not namespaced by the project and should "
                                    "not define a type")
                if "default" in decl:
                    problems.append(f"Configuration key '{key}' is not namespaced by the project and should "
                                    "not define a default value")
                if "value" not in decl:
                    problems.append(f"Configuration key '{key}' is namespaced and must provide an attribute 'value'")
            elif decl.get("type") == "array" and "items" not in decl:
                problems.append(f"config {key}: an array without items")
    return problems


def test_the_checks_catch_what_the_pulumi_cli_refuses():
    """The reproduction itself fails on the project file Pulumi refuses (a typed polyvm:backend)."""
    bad = {"name": "mydb", "runtime": "python", "config": {"polyvm:backend": {"type": "string"}}}
    assert any("polyvm:backend" in p and "should not define a type" in p for p in pulumi_project_problems(bad))
    assert pulumi_project_problems({"name": "mydb", "runtime": {"name": "python", "bogus": 1}})
    assert pulumi_project_problems({"name": "my db", "runtime": "python"})
    assert not pulumi_project_problems({"name": "mydb", "runtime": "python",
                                        "config": {"mydb:size": {"type": "string"}, "aws:region": {"value": "x"}}})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("proj") / "my-db"
    r = polyvm("new", str(d), *[a for b in BACKENDS for a in ("--backend", b)])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return d


def test_new_writes_a_pulumi_project(project):
    names = sorted(p.name for p in project.iterdir())
    assert names == sorted([".gitignore", "Pulumi.yaml", "__main__.py", "requirements.txt",
                            *[f"Pulumi.{b}.yaml" for b in BACKENDS]])
    proj = yaml.safe_load((project / "Pulumi.yaml").read_text())
    assert proj["name"] == "my-db"
    assert proj["runtime"]["name"] == "python"
    assert pulumi_project_problems(proj) == []
    compile((project / "__main__.py").read_text(), "__main__.py", "exec")


def test_requirements_install_this_polyvm_by_path(project):
    lines = [ln for ln in (project / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1, lines
    m = re.fullmatch(r"polyvm\[([a-z,]+)\] @ (file://\S+)", lines[0])
    assert m, lines[0]
    assert {"aws", "azure", "gcp", "digitalocean", "vsphere", "postgres"} <= set(m.group(1).split(","))
    assert m.group(2) == ROOT.as_uri()  # this checkout (the test venv's editable install), not an index name


def test_requirements_resolve_to_this_checkout(project, tmp_path):
    """pip itself reads the file and resolves polyvm to this checkout (a dry run: nothing installed)."""
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation",
                        "--report", str(tmp_path / "report.json"), "-q", "-r", str(project / "requirements.txt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    [item] = json.loads((tmp_path / "report.json").read_text())["install"]
    assert item["metadata"]["name"] == "polyvm"
    assert item["download_info"]["url"] == ROOT.as_uri()


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_stack_file_plans_offline_as_written(project, backend):
    stack = project / f"Pulumi.{backend}.yaml"
    text = stack.read_text()
    assert text.startswith("#") and "pulumi stack init" in text
    config = yaml.safe_load(text)["config"]
    assert config["polyvm:backend"] == backend
    # Stack config values must be plain values: Pulumi.<stack>.yaml has no type declarations.
    assert all(":" in k for k in config)
    r = polyvm("validate", "--spec", str(stack))
    assert r.returncode == 0, r.stderr
    r = polyvm("plan", "--spec", str(stack), "--json")  # the backend comes from the stack file
    assert r.returncode == 0, r.stderr
    [p] = json.loads(r.stdout)["plans"]
    assert p["backend"] == backend
    assert [res["type"] for res in p["resources"]][0] == f"polyvm:{backend}:VirtualMachine"


def test_new_refuses_a_non_empty_directory_and_bad_input(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    r = polyvm("new", str(tmp_path / "taken"), "--backend", "aws")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not empty" in r.stderr
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["keep.txt"]
    for args, text in ((["--backend", "nosuch"], "nosuch"), (["--backend", "aws", "--name", "my db"], "project name"),
                       (["--backend", "aws", "--allow", "10.0.0.0/33"], "--allow"),
                       (["--backend", "aws", "--polyvm", str(tmp_path)], "not a polyvm checkout")):
        r = polyvm("new", str(tmp_path / "fresh"), *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and text in r.stderr, (args, r.stderr)
        assert not (tmp_path / "fresh").exists()
    (tmp_path / "empty").mkdir()
    assert polyvm("new", str(tmp_path / "empty"), "--backend", "aws").returncode == 0


def test_new_uses_the_given_key_and_cidrs_and_a_wheel(tmp_path):
    key = tmp_path / "id_ed25519.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT me@laptop\n")
    wheel = tmp_path / "polyvm-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    r = polyvm("new", str(tmp_path / "p"), "--backend", "aws", "--ssh-key", str(key), "--allow", "198.51.100.0/24",
               "--polyvm", str(wheel), "--no-postgres")
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((tmp_path / "p" / "Pulumi.aws.yaml").read_text())["config"]
    assert cfg["polyvm:vm"]["ssh"]["public_key"].endswith("me@laptop")
    assert {c for rule in cfg["polyvm:vm"]["ingress"] for c in rule["cidrs"]} == {"198.51.100.0/24"}
    assert "polyvm:postgres" not in cfg
    req = (tmp_path / "p" / "requirements.txt").read_text()
    assert f"polyvm[aws] @ {wheel.as_uri()}" in req
