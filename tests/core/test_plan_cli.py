"""validate and plan agree; plan --backend all fails on refusals; plans are deterministic and complete;
stack files are specs; usage errors are one line; no stray event-loop traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def polyvm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyvm.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def _spec(tmp_path: Path, **changes) -> Path:
    spec = yaml.safe_load((EXAMPLES / "plan" / "vm.yaml").read_text())
    spec.update(changes)
    f = tmp_path / "vm.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


BAD_SETTINGS = {"gcp": {"project": "p", "zone": "us-central1-a", "region": "europe-west1", "bogus": 1},
                "vsphere": {"datacenter": "dc1"}, "azure": {"location": "westeurope"},
                "digitalocean": {}, "aws": {}, "local": {}}


@pytest.mark.parametrize("case", ["no-settings", "bad-settings", "good-settings", "bad-spec-for-backend"])
@pytest.mark.parametrize("backend", ["gcp", "vsphere", "digitalocean"])
def test_validate_and_plan_give_the_same_verdict(tmp_path, backend, case):
    spec = _spec(tmp_path, data_disks=[{"name": f"d{i}", "size_gb": 10} for i in range(20)]) \
        if case == "bad-spec-for-backend" else _spec(tmp_path)
    args = ["--spec", str(spec), "--backend", backend]
    if case == "bad-settings":
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(BAD_SETTINGS))
        args += ["--settings", str(tmp_path / "s.yaml")]
    elif case in ("good-settings", "bad-spec-for-backend"):
        args += ["--settings", str(EXAMPLES / "plan" / "settings.yaml")]
    v, p = polyvm("validate", *args), polyvm("plan", *args)
    assert v.returncode == p.returncode, (v.stderr, p.stderr)
    if case == "good-settings":
        assert v.returncode == 0, v.stderr
    else:
        assert v.returncode == 2
        assert v.stderr == p.stderr  # the same problems, word for word
        assert "Traceback" not in v.stderr + p.stderr


def test_validate_and_plan_agree_for_all_backends(tmp_path):
    args = ["--spec", str(_spec(tmp_path)), "--backend", "all", "--settings", str(EXAMPLES / "plan" / "settings.yaml")]
    v, p = polyvm("validate", *args), polyvm("plan", *args)
    assert v.returncode == p.returncode == 2  # local refuses ubuntu
    assert "backend local refuses" in v.stderr and "backend local refuses" in p.stderr
    assert v.stderr.splitlines()[-1] == p.stderr.splitlines()[-1]
    assert "1 of 6 backends refuse" in p.stderr and "--allow-refusals" in p.stderr
    v, p = polyvm("validate", *args, "--allow-refusals"), polyvm("plan", *args, "--allow-refusals", "--json")
    assert v.returncode == p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert sorted(pl["backend"] for pl in out["plans"]) == ["aws", "azure", "digitalocean", "gcp", "vsphere"]
    assert list(out["refused"]) == ["local"]


def test_plan_all_exits_2_when_any_backend_refuses_and_when_all_do(tmp_path):
    spec = _spec(tmp_path)
    r = polyvm("plan", "--spec", str(spec), "--backend", "all")
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1].startswith("polyvm: error: 5 of 6 backends refuse")
    r = polyvm("plan", "--spec", str(spec), "--backend", "all", "--allow-refusals")
    assert r.returncode == 0 and "backend aws" in r.stdout
    bad = _spec(tmp_path, image={"family": "amazon-linux", "version": "2023"}, data_disks=[
        {"name": f"d{i}", "size_gb": 10} for i in range(30)])
    r = polyvm("plan", "--spec", str(bad), "--backend", "all", "--allow-refusals")
    assert r.returncode == 2 and "6 of 6 backends refuse" in r.stderr


def test_plans_are_byte_identical_across_runs():
    args = ["plan", "--spec", str(EXAMPLES / "plan" / "vm.yaml"), "--backend", "all",
            "--settings", str(EXAMPLES / "plan" / "settings.yaml"), "--allow-refusals"]
    runs = [polyvm(*args) for _ in range(2)] + [polyvm(*args, "--json") for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    assert runs[2].stdout == runs[3].stdout
    assert runs[0].stderr == runs[1].stderr


def test_plan_never_cuts_rule_text(tmp_path):
    long = "app servers in the eu-west data centre, rack 14 to 19, behind the second pair of load balancers"
    spec = _spec(tmp_path, ingress=[{"port": 5432, "cidrs": [f"10.{i}.0.0/16" for i in range(12)],
                                     "description": long}, {"port": 22, "cidrs": ["203.0.113.0/24"]}])
    r = polyvm("plan", "--spec", str(spec), "--backend", "aws")
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    assert long in r.stdout and "10.11.0.0/16" in r.stdout


def test_stack_files_are_specs_everywhere(tmp_path):
    stack = EXAMPLES / "postgres-vm" / "Pulumi.gcp.yaml"
    for cmd in (["validate"], ["plan"], ["plan", "--backend", "gcp"], ["validate", "--backend", "gcp"]):
        r = polyvm(*cmd, "--spec", str(stack))
        assert r.returncode == 0, (cmd, r.stderr)
    # --against takes stack files too.
    r = polyvm("plan", "--spec", str(stack), "--against", str(stack))
    assert r.returncode == 0 and "no changes" in r.stdout, r.stderr
    # The stack's settings are its own unless --settings says otherwise.
    cfg = yaml.safe_load(stack.read_text())
    del cfg["config"]["polyvm:gcp"]["project"]
    (tmp_path / "Pulumi.gcp.yaml").write_text(yaml.safe_dump(cfg))
    for cmd in ("validate", "plan"):
        r = polyvm(cmd, "--spec", str(tmp_path / "Pulumi.gcp.yaml"))
        assert r.returncode == 2 and "polyvm:gcp.project: is required" in r.stderr
    r = polyvm("plan", "--spec", str(tmp_path / "Pulumi.gcp.yaml"), "--settings", str(EXAMPLES / "plan" / "settings.yaml"))
    assert r.returncode == 0, r.stderr
    # A spec error inside a stack file names its key.
    cfg["config"]["polyvm:vm"]["size"] = {"cpus": 0, "memory_gb": 4}
    (tmp_path / "Pulumi.gcp.yaml").write_text(yaml.safe_dump(cfg))
    r = polyvm("validate", "--spec", str(tmp_path / "Pulumi.gcp.yaml"))
    assert r.returncode == 2 and "polyvm:vm.size.cpus" in r.stderr


def test_a_spec_file_needs_a_backend_for_plan(tmp_path):
    r = polyvm("plan", "--spec", str(_spec(tmp_path)))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--backend is required" in r.stderr


@pytest.mark.parametrize("args", [["plan", "--bogus"], ["nosuch"], ["plan"], ["validate", "--spec"],
                                  ["plan", "--spec", "x.yaml", "--backend"]])
def test_usage_errors_are_one_line_exit_2(args):
    r = polyvm(*args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("polyvm: error: "), r.stderr
    assert "--help" in r.stderr and r.stdout == ""


def test_help_and_version_still_work():
    assert polyvm("--help").returncode == 0
    assert polyvm("plan", "-h").stdout.startswith("Usage: polyvm plan")
    assert polyvm("--version").stdout.strip() == "polyvm, version 0.1.0"
    r = polyvm()
    assert r.returncode == 0 and "Commands:" in r.stdout


def test_plan_closes_its_event_loop():
    """Pulumi's _sync_await leaves an open asyncio loop behind; collected at interpreter exit, its
    BaseEventLoop.__del__ can print a traceback. After a plan command the loop is closed."""
    code = ("import asyncio, warnings\n"
            "from polyvm.cli import main\n"
            f"rc = main(['plan', '--backend', 'aws', '--spec', {str(EXAMPLES / 'plan' / 'vm.yaml')!r}])\n"
            "assert rc == 0, rc\n"
            "assert asyncio.get_event_loop_policy()._local._loop is None\n"
            "print('closed')\n")
    r = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-X", "dev", "-c", code],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("closed")
    assert "BaseEventLoop" not in r.stderr and "unclosed event loop" not in r.stderr, r.stderr


def test_a_plan_in_process_after_the_cli_closed_its_loop():
    """The CLI closes the loop after a plan; Pulumi code running later in the same process (a test, a
    second command) still gets a loop."""
    from polyvm.cli import main
    from polyvm.plan import plan
    from polyvm.plugins import get_backend
    from polyvm.spec import load_spec_file

    spec = str(EXAMPLES / "plan" / "vm.yaml")
    assert main(["plan", "--backend", "aws", "--spec", spec]) == 0
    p = plan(get_backend("aws"), load_spec_file(spec))
    assert p.by_type("aws:ec2/instance:Instance")
    assert main(["plan", "--backend", "aws", "--spec", spec]) == 0


def test_every_spec_loader_takes_a_stack_file():
    """load_spec_file is what sandbox up --spec, apply --spec and the recipe commands read: stack files too."""
    from polyvm.errors import SpecError
    from polyvm.spec import load_spec_file

    for b in ("aws", "gcp", "local"):
        assert [s.name for s in load_spec_file(EXAMPLES / "postgres-vm" / f"Pulumi.{b}.yaml")] == ["db1"]
    r = polyvm("sandbox", "up", "--spec", str(EXAMPLES / "postgres-vm" / "Pulumi.aws.yaml"), "--help")
    assert r.returncode == 0
    with pytest.raises(SpecError, match=r"polyvm:vm\.name"):
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write("config:\n  polyvm:vm: {size: small}\n")
            f.flush()
            load_spec_file(f.name)
