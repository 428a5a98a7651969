"""The worked third-party recipe (examples/third-party-recipe) installs from outside the repository, is
discovered through the ``polyvm`` entry-point group, passes its own tests, and provisions a real host through
``polyvm apply --recipe motd`` and the generic Pulumi resource — with no SSH, fan-out or Pulumi code of its own.

The example is built and installed with pip into a temporary directory that only the subprocesses of these
tests see (PYTHONPATH): the main environment is never changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import install_example, run_subprocess, subprocess_env

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "third-party-recipe"


_env = subprocess_env
_run = run_subprocess


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(site dir holding the installed plugin, a copy of the example's source tree)."""
    return install_example(EXAMPLE, tmp_path_factory.mktemp("polyvm_motd"), "polyvm_motd")


def test_example_is_not_importable_in_the_main_environment():
    r = _run([sys.executable, "-c", "import polyvm_motd"], _env())
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


def test_polyvm_recipes_lists_the_plugin(installed):
    site, _src = installed
    r = _run([sys.executable, "-m", "polyvm.cli", "recipes", "--json"], _env(site))
    assert r.returncode == 0, r.stderr
    recipes = {x["name"]: x for x in json.loads(r.stdout)}
    assert {"motd", "postgres", "nginx"} <= set(recipes) and recipes["motd"]["plugin"] == "polyvm_motd"
    assert "failed to load" not in r.stderr


def test_the_examples_own_tests_pass(installed):
    site, src = installed
    r = _run([sys.executable, "-m", "pytest", "-q", str(src / "tests")], _env(site), cwd=src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout


def test_bad_inputs_exit_2_with_one_line(installed):
    site, _src = installed
    r = _run([sys.executable, "-m", "polyvm.cli", "apply", "--recipe", "motd", "-H", "198.51.100.7",
              "--set", "colour=red"], _env(site))
    assert r.returncode == 2 and "motd.colour" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.e2e
def test_apply_recipe_motd_on_a_real_host(installed, testhosts):
    site, _src = installed
    (host,) = testhosts.up()
    argv = [sys.executable, "-m", "polyvm.cli", "apply", "--recipe", "motd", "-H", f"{host.user}@{host.address}",
            "-k", str(host.private_key_path), "--host-key", host.host_key, "--set", "message=Maintained by ops",
            "--json"]
    r = _run(argv, _env(site))
    assert r.returncode == 0, r.stdout + r.stderr
    (out,) = json.loads(r.stdout)["hosts"].values()
    assert out["ok"] and out["changed"]
    assert testhosts.exec(host, ["cat", "/etc/motd"]).stdout.endswith("Maintained by ops\n")
    again = json.loads(_run(argv, _env(site)).stdout)
    assert not next(iter(again["hosts"].values()))["changed"]


def test_generic_pulumi_resource_declares_the_plugins_steps(installed):
    site, _src = installed
    code = r'''
import json
from polyvm.component import VirtualMachine
from polyvm.plan import run_mocked
from polyvm.provisioners.pulumi import RecipeResource
from polyvm.spec import parse_spec

spec = parse_spec({"name": "web1", "size": "small", "image": {"family": "debian", "version": "12"},
                   "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]}],
                   "ssh": {"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT x"}})

class Vm(VirtualMachine):
    def __init__(self):
        super().__init__("aws", spec)
        self.finish(public_ip="198.51.100.7", private_ip="10.0.0.7", ssh_user="polyvm", host_key=None,
                    data_disk_devices={})

def program():
    return RecipeResource("web1-motd", vm=Vm(), recipe="motd", inputs={"message": "hi"}, private_key="k").outputs

_v, mocks, _ = run_mocked(program, [])
print(json.dumps([[t, n, {k: v for k, v in i.items() if k in ("remote_path", "content", "create")}]
                  for t, n, i, _c, _id in mocks.resources], default=str))
'''
    r = _run([sys.executable, "-c", code], _env(site))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    names = [n for _t, n, _i in res]
    assert "web1-motd" in names and "web1-motd-00-motd-motd" in names and "web1-motd-01-check-motd" in names
    copy = next(i for _t, n, i in res if n == "web1-motd-00-motd-motd")
    assert copy["remote_path"] == "/etc/motd" and copy["content"] == "web1: hi\n"
