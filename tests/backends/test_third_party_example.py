"""The worked third-party backend (examples/third-party-backend) installs, is discovered through the
``polyvm`` entry-point group, plans offline and passes its own one-line contract test; a broken
third-party plugin is reported by name while everything else keeps working.

The example is built and installed with pip into a temporary directory that only the subprocesses of
these tests see (PYTHONPATH): the main environment is never changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import install_example, run_subprocess, subprocess_env
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "third-party-backend"


_env = subprocess_env
_run = run_subprocess


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(site dir holding the installed plugin, a copy of the example's source tree)."""
    return install_example(EXAMPLE, tmp_path_factory.mktemp("polyvm_fakecloud"), "polyvm_fakecloud")


def test_example_is_not_importable_in_the_main_environment():
    # The guard for "no permanent pollution": only the subprocesses below see the plugin.
    r = _run([sys.executable, "-c", "import polyvm_fakecloud"], _env())
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


def test_polyvm_backends_lists_the_plugin(installed):
    site, _src = installed
    r = _run([sys.executable, "-m", "polyvm.cli", "backends", "--json"], _env(site))
    assert r.returncode == 0, r.stderr
    backends = {b["name"]: b for b in json.loads(r.stdout)}
    assert "fakecloud" in backends
    assert backends["fakecloud"]["capabilities"]["firewall"] == "cloud"
    assert {"aws", "digitalocean", "vsphere"} <= set(backends)  # built-ins unaffected
    assert "failed to load" not in r.stderr
    r = _run([sys.executable, "-m", "polyvm.cli", "backends", "--markdown"], _env(site))
    assert r.returncode == 0 and "fakecloud" in r.stdout.splitlines()[0]


def test_plan_renders_the_plugin_offline(installed, tmp_path):
    site, _src = installed
    spec = {"name": "demo", "size": "small", "image": {"family": "ubuntu", "version": "24.04"},
            "ssh": {"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT x"},
            "data_disks": [{"name": "data", "size_gb": 5}],
            "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"]}]}
    f = tmp_path / "vm.yaml"
    f.write_text(yaml.safe_dump(spec))
    r = _run([sys.executable, "-m", "polyvm.cli", "plan", "--backend", "fakecloud", "--spec", str(f), "--json"],
             _env(site))
    assert r.returncode == 0, r.stderr
    (p,) = json.loads(r.stdout)["plans"]
    (comp,) = p["resources"]
    assert comp["type"] == "polyvm:fakecloud:VirtualMachine"
    assert sorted(c["type"] for c in comp["children"]) == [
        "random:index/randomId:RandomId", "random:index/randomInteger:RandomInteger",
        "random:index/randomPet:RandomPet", "random:index/randomUuid:RandomUuid"]
    out = p["outputs"]["demo"]
    assert out["public_ip"].startswith("198.51.100.") and out["host_key"] is None
    assert out["data_disk_devices"]["data"].startswith("/dev/disk/by-id/fakecloud-")


def test_the_plugins_own_contract_test_passes(installed):
    site, src = installed
    r = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], _env(site), cwd=src)
    assert r.returncode == 0, f"the example's tests failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    # every contract test ran (none skipped or deselected) plus the example's own mapping tests
    from polyvm.testing import BackendContract

    n_contract = len([n for n in dir(BackendContract) if n.startswith("test_")])
    summary = r.stdout.strip().splitlines()[-1]
    assert f"{n_contract + 3} passed" in summary, summary


def _broken_plugin(root: Path, name: str, body: str) -> Path:
    """A minimal installed distribution (dist-info + module) exposing ``name`` in the polyvm group."""
    site = root / f"site-{name}"
    dist = site / f"polyvm_{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: polyvm-{name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[polyvm]\n{name} = polyvm_{name}\n")
    (site / f"polyvm_{name}.py").write_text(body)
    return site


@pytest.mark.parametrize("name,body", [
    ("brokenimport", "raise RuntimeError('this plugin is broken on purpose')\n"),
    ("brokenhook", "from polyvm import hookimpl\n\n@hookimpl\ndef polyvm_register_backends(register):\n"
                   "    raise ValueError('hook blew up')\n"),
])
def test_a_broken_plugin_is_named_and_the_rest_keep_working(installed, tmp_path, name, body):
    site, _src = installed
    broken = _broken_plugin(tmp_path, name, body)
    r = _run([sys.executable, "-m", "polyvm.cli", "backends", "--json"], _env(site, broken))
    assert r.returncode == 0, r.stderr
    assert f"'{name}'" in r.stderr and "failed to load" in r.stderr, r.stderr
    names = {b["name"] for b in json.loads(r.stdout)}
    assert {"aws", "azure", "gcp", "digitalocean", "vsphere", "local", "fakecloud"} <= names
