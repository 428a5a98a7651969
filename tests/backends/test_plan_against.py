"""`polyvm plan --against`: what a spec change does to each resource, and data loss refused (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"


def polyvm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyvm.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=EXAMPLES)


@pytest.mark.parametrize("backend", ["aws", "azure", "gcp", "digitalocean", "vsphere"])
def test_an_everyday_change_replaces_no_data_disk(backend):
    out = polyvm("plan", "--backend", backend, "--spec", "vm-next.yaml", "--against", "vm.yaml",
                 "--settings", "settings.yaml", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["data_loss"] is False
    actions = {(c["type"], c["action"]) for c in report["changes"]}
    assert any(a == "update in place" for _t, a in actions), report["changes"]  # it saw the change


def test_removing_a_data_disk_is_refused_naming_it(tmp_path):
    spec = (EXAMPLES / "vm-next.yaml").read_text().replace("{name: pgdata, size_gb: 50, mount_point: /var/lib/postgresql}",
                                                          "{name: scratch, size_gb: 50}")
    (tmp_path / "new.yaml").write_text(spec)
    out = polyvm("plan", "--backend", "aws", "--spec", str(tmp_path / "new.yaml"), "--against", "vm.yaml",
                 "--settings", "settings.yaml")
    assert out.returncode == 2
    assert "delete" in out.stdout and "aws:ebs/volume:Volume db1-pgdata" in out.stdout and "DATA LOSS" in out.stdout
    assert "db1-pgdata: deleted" in out.stderr and "Traceback" not in out.stderr
    allowed = polyvm("plan", "--backend", "aws", "--spec", str(tmp_path / "new.yaml"), "--against", "vm.yaml",
                     "--settings", "settings.yaml", "--allow-data-loss")
    assert allowed.returncode == 0, allowed.stderr


def test_a_newer_ami_with_upgrade_image_would_replace_the_instance_but_not_the_volume():
    from polyvm.backends.aws import AwsBackend
    from polyvm.plan import REPLACE, diff, plan
    from polyvm.spec import load_spec_file

    be = AwsBackend()
    specs = load_spec_file(EXAMPLES / "vm.yaml")
    for upgrade, replaced in ((False, False), (True, True)):
        old = plan(be, specs, {"upgrade_image": upgrade})
        new = plan(be, specs, {"upgrade_image": upgrade}, calls=be.newer_image_calls)
        changes = {c.type: c for c in diff(be, old, new)}
        inst = changes.get("aws:ec2/instance:Instance")
        assert (inst is not None and inst.action == REPLACE and "ami" in inst.inputs) is replaced
        assert not any(c.data_loss for c in changes.values())
        if replaced:  # the attachment follows the instance; the volume itself stays
            assert changes["aws:ec2/volumeAttachment:VolumeAttachment"].action == REPLACE


def test_renaming_without_renamed_is_data_loss_and_with_it_is_not(tmp_path):
    (tmp_path / "new.yaml").write_text((EXAMPLES / "vm.yaml").read_text().replace("name: db1", "name: db2"))
    (tmp_path / "settings.yaml").write_text("gcp: {project: my-project-123, zone: europe-west1-b, renamed: {db2: db1}}\n")
    blind = polyvm("plan", "--backend", "gcp", "--spec", str(tmp_path / "new.yaml"), "--against", "vm.yaml",
                   "--settings", "settings.yaml")
    assert blind.returncode == 2 and "DATA LOSS" in blind.stdout
    aliased = polyvm("plan", "--backend", "gcp", "--spec", str(tmp_path / "new.yaml"), "--against", "vm.yaml",
                     "--settings", str(tmp_path / "settings.yaml"), "--json")
    assert aliased.returncode == 0, aliased.stdout + aliased.stderr
    assert json.loads(aliased.stdout)["data_loss"] is False


def test_validate_refuses_every_cloud_limit_at_once(tmp_path):
    spec = (EXAMPLES / "vm.yaml").read_text().replace(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=").replace(
        "{name: pgdata, size_gb: 50, mount_point: /var/lib/postgresql}", "{name: pgdata, size_gb: 20000}")
    (tmp_path / "vm.yaml").write_text(spec)
    out = polyvm("validate", "--spec", str(tmp_path / "vm.yaml"), "--backend", "aws")
    assert out.returncode == 2
    assert "ssh.public_key of type ecdsa-sha2-nistp256" in out.stderr and "data_disks[0].size_gb 20000" in out.stderr
    assert "Traceback" not in out.stderr


def test_validate_with_settings_checks_them_too(tmp_path):
    (tmp_path / "s.yaml").write_text("aws: {vpc_id: vpc-0123}\n")
    out = polyvm("validate", "--spec", "vm.yaml", "--backend", "aws", "--settings", str(tmp_path / "s.yaml"))
    assert out.returncode == 2 and "vpc_id needs subnet_id" in out.stderr
