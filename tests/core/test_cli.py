"""The polyvm command line: plan offline, backends, validate; user errors are one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLE_VM = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "postgres-vm" /
                             "Pulumi.aws.yaml").read_text())["config"]["polyvm:vm"]


def polyvm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyvm.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture
def spec_file(tmp_path) -> Path:
    f = tmp_path / "vm.yaml"
    f.write_text(yaml.safe_dump(EXAMPLE_VM))
    return f


def test_plan_aws_prints_offline_tree(spec_file):
    r = polyvm("plan", "--backend", "aws", "--spec", str(spec_file))
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "Offline rendering" in out and "nothing was created" in out
    for token in ("polyvm:aws:VirtualMachine db1", "aws:ec2/securityGroup:SecurityGroup db1-sg",
                  "aws:ec2/instance:Instance db1-vm", "aws:ebs/volume:Volume db1-pgdata",
                  "aws:ec2/volumeAttachment:VolumeAttachment db1-pgdata-attach", "aws:ec2/keyPair:KeyPair db1-login"):
        assert token in out
    assert "PRIVATE KEY" not in r.stdout


def test_plan_json_is_complete_and_redacted(spec_file):
    r = polyvm("plan", "--backend", "aws", "--spec", str(spec_file), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["offline"] is True
    [p] = data["plans"]
    [root] = p["resources"]
    assert root["type"] == "polyvm:aws:VirtualMachine"
    kids = {c["type"]: c for c in root["children"]}
    inst = kids["aws:ec2/instance:Instance"]["inputs"]
    assert inst["instanceType"] == "t3.medium"
    assert inst["userData"] == "[secret]"
    assert "PRIVATE KEY" not in r.stdout
    assert p["outputs"]["db1"]["data_disk_devices"]["pgdata"].startswith(
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol")


def test_plan_bad_spec_lists_all_problems_exit_2_no_traceback(tmp_path):
    bad = dict(EXAMPLE_VM, name="Bad Name", ingress=[{"port": 22, "cidrs": ["0.0.0.0/0"]},
                                                     {"port": 5432, "cidrs": ["10.0.0.0/33"]}])
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    r = polyvm("plan", "--backend", "aws", "--spec", str(f))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "invalid VM spec" in r.stderr and "3 problems" in r.stderr
    assert "ingress[1].cidrs[0]: '10.0.0.0/33' is not a CIDR" in r.stderr


def test_plan_unknown_backend_and_missing_file(spec_file, tmp_path):
    r = polyvm("plan", "--backend", "nocloud", "--spec", str(spec_file))
    assert r.returncode == 2 and "unknown backend 'nocloud'" in r.stderr and "aws" in r.stderr
    r = polyvm("plan", "--backend", "aws", "--spec", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_plan_unsupported_option_names_backend_and_option(tmp_path):
    spec = dict(EXAMPLE_VM, data_disks=[{"name": f"d{i}", "size_gb": 1} for i in range(12)])
    f = tmp_path / "many.yaml"
    f.write_text(yaml.safe_dump(spec))
    r = polyvm("plan", "--backend", "aws", "--spec", str(f))
    assert r.returncode == 2
    assert "backend 'aws' cannot honour data_disks (12 asked, at most 11)" in r.stderr


def test_backends_lists_capabilities():
    r = polyvm("backends")
    assert r.returncode == 0, r.stderr
    assert "aws" in r.stdout and "host key at creation" in r.stdout
    r = polyvm("backends", "--json")
    aws = {b["name"]: b for b in json.loads(r.stdout)}["aws"]
    assert aws["capabilities"]["firewall"] == "cloud"
    assert aws["capabilities"]["host_key_at_creation"] is True


def test_validate(spec_file):
    r = polyvm("validate", "--spec", str(spec_file), "--backend", "aws")
    assert r.returncode == 0 and "1 VM spec(s) valid for backend aws" in r.stdout
