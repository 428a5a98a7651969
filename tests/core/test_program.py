"""The example Pulumi program (examples/postgres-vm) and polyvm.program under Pulumi's mock runtime."""

from __future__ import annotations

import runpy
from pathlib import Path

import pulumi
import pytest
import yaml

from polyvm.errors import ConfigError, SpecError
from polyvm.plan import run_mocked
from polyvm.plugins import list_backends

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "postgres-vm"
STACKS = sorted(EXAMPLE.glob("Pulumi.*.yaml"))


def _stack_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["config"]


def test_project_file_is_a_python_pulumi_project():
    project = yaml.safe_load((EXAMPLE / "Pulumi.yaml").read_text())
    assert project["name"] == "postgres-vm"
    assert project["runtime"]["name"] == "python"
    assert (EXAMPLE / "__main__.py").exists()


def test_project_file_types_only_its_own_config_keys():
    """The Pulumi CLI refuses a project file whose config gives a type (or any schema) to a key outside
    the project's namespace: "Configuration key 'polyvm:backend' is not namespaced by the project and
    should not define a type" (pulumi/pulumi sdk/go/common/workspace/project.go). Such keys may only have
    a plain default value."""
    project = yaml.safe_load((EXAMPLE / "Pulumi.yaml").read_text())
    for key, value in (project.get("config") or {}).items():
        namespaced = ":" not in key or key.split(":", 1)[0] == project["name"]
        assert namespaced or not isinstance(value, dict), f"{key} is not in the project's namespace: no type here"


def test_requirements_install_polyvm_from_the_checkout_not_the_index():
    lines = [ln.strip() for ln in (EXAMPLE / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    # A bare name (polyvm, polyvm[all]) would be fetched from the package index, where it is not ours.
    assert lines and all(ln.startswith(("-e ../..", "../..", "./")) for ln in lines), lines
    assert (EXAMPLE / "../../pyproject.toml").resolve().exists()


@pytest.mark.parametrize("stack", STACKS, ids=[p.stem.split(".", 1)[1] for p in STACKS])
def test_example_stack_declares_one_vm_component(stack):
    cfg = _stack_config(stack)
    backend = cfg["polyvm:backend"]
    assert backend in list_backends(), f"{stack.name} names an unknown backend"
    _value, mocks, monitor = run_mocked(lambda: runpy.run_path(str(EXAMPLE / "__main__.py")),
                                        list(list_backends().values()), config=cfg)
    types = [t for _u, _p, t, _n, _c in monitor.registered]
    n_vms = len(cfg.get("polyvm:vms", [])) + ("polyvm:vm" in cfg)
    assert types.count(f"polyvm:{backend}:VirtualMachine") == n_vms
    # With polyvm:postgres set, each VM also gets the recipe, as SSH steps after the VM exists.
    assert "polyvm:postgres" in cfg
    assert types.count("polyvm:provisioners:Recipe") == n_vms
    assert "pulumi-python:dynamic/polyvm:RemoteExec" in types


def _run_with(config: dict):
    from polyvm.program import run

    return run_mocked(run, list(list_backends().values()), config=config)


def test_missing_backend_config_is_a_clear_run_error():
    with pytest.raises(pulumi.RunError) as exc:
        _run_with({"polyvm:vm": {"name": "x"}})
    assert "polyvm:backend is not set" in str(exc.value)


def test_bad_spec_in_config_lists_all_problems_and_declares_nothing():
    cfg = _stack_config(EXAMPLE / "Pulumi.aws.yaml")
    vm = dict(cfg["polyvm:vm"])
    vm["ingress"] = [{"port": 22, "cidrs": ["0.0.0.0/0"]}, {"port": 5432, "cidrs": ["10.0.0.0/33"]}]
    with pytest.raises(pulumi.RunError) as exc:
        _run_with({**cfg, "polyvm:vm": vm})
    msg = str(exc.value)
    assert "polyvm:vm.ingress[0]" in msg and "polyvm:vm.ingress[1].cidrs[0]" in msg


def test_unknown_backend_setting_is_rejected():
    cfg = _stack_config(EXAMPLE / "Pulumi.aws.yaml")
    with pytest.raises(pulumi.RunError) as exc:
        _run_with({**cfg, "polyvm:aws": {"subnet": "subnet-1"}})
    assert "polyvm:aws.subnet" in str(exc.value)


def test_specs_from_config_errors():
    from polyvm.program import specs_from_config

    class Cfg:
        def __init__(self, **kv):
            self.kv = kv

        def get(self, k):
            return self.kv.get(k)

        def get_object(self, k):
            return self.kv.get(k)

    with pytest.raises(ConfigError, match="neither polyvm:vm"):
        specs_from_config(Cfg(backend="aws"))
    with pytest.raises(SpecError) as exc:
        specs_from_config(Cfg(backend="aws", vms=[{"name": "a"}, {"name": "B"}]))
    assert any(p.startswith("polyvm:vms[1].name") for p in exc.value.problems)
