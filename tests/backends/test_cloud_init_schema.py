"""Every cloud backend's rendered user data passes the real `cloud-init schema` validator (Debian's
cloud-init package, installed by scripts/setup), not just our own idea of cloud-config."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from polyvm.backends.aws import AwsBackend
from polyvm.backends.azure import AzureBackend
from polyvm.backends.digitalocean import DigitalOceanBackend
from polyvm.backends.gcp import GcpBackend
from polyvm.backends.vsphere import VsphereBackend
from polyvm.plan import plan, reveal
from polyvm.spec import parse_spec
from polyvm.testing import sample_spec_data, the_one

CLOUD_INIT = shutil.which("cloud-init")
pytestmark = pytest.mark.skipif(CLOUD_INIT is None, reason="cloud-init is not installed (scripts/setup installs it)")


def _aws(p: Any) -> str:
    return reveal(the_one(p, "aws:ec2/instance:Instance").inputs)["userData"]


def _azure(p: Any) -> str:
    data = reveal(the_one(p, "azure-native:compute:VirtualMachine").inputs)["osProfile"]["customData"]
    return base64.b64decode(data).decode()


def _gcp(p: Any) -> str:
    return reveal(the_one(p, "gcp:compute/instance:Instance").inputs)["metadata"]["user-data"]


def _digitalocean(p: Any) -> str:
    return reveal(the_one(p, "digitalocean:index/droplet:Droplet").inputs)["userData"]


def _vsphere(p: Any) -> str:
    extra = reveal(the_one(p, "vsphere:index/virtualMachine:VirtualMachine").inputs)["extraConfig"]
    return base64.b64decode(extra["guestinfo.userdata"]).decode()


CASES: list[tuple[Any, dict[str, Any] | None, Callable[[Any], str]]] = [
    (AwsBackend(), None, _aws),
    (AzureBackend(), {"location": "westeurope"}, _azure),
    (GcpBackend(), {"project": "polyvm-contract", "zone": "europe-west1-b"}, _gcp),
    (DigitalOceanBackend(), {"region": "fra1"}, _digitalocean),
    (VsphereBackend(), {"datacenter": "dc1", "datastore": "ds1", "cluster": "c1", "network": "VM Network",
                        "template": "ubuntu-2404-cloudinit"}, _vsphere),
]


def cloud_init_schema(path: Path) -> subprocess.CompletedProcess:
    # cloud-init 22.4 (Debian 12): `cloud-init schema -c FILE`; newer releases also take `--config-file`.
    return subprocess.run([CLOUD_INIT, "schema", "-c", str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("backend, settings, user_data", CASES, ids=[c[0].name for c in CASES])
def test_user_data_passes_cloud_init_schema(backend, settings, user_data, tmp_path):
    spec = parse_spec(sample_spec_data(backend.capabilities, "full"))
    text = user_data(plan(backend, [spec], settings))
    assert text.startswith("#cloud-config\n")
    f = tmp_path / "user-data.yaml"
    f.write_text(text)
    out = cloud_init_schema(f)
    assert out.returncode == 0 and "Valid cloud-config" in out.stdout, out.stdout + out.stderr


def test_the_validator_is_real(tmp_path):
    """The old `ssh_genkeytypes: []` (cloud-init status: degraded on every cloud) is refused."""
    f = tmp_path / "bad.yaml"
    f.write_text("#cloud-config\nssh_genkeytypes: []\n")
    out = cloud_init_schema(f)
    assert out.returncode != 0 and "ssh_genkeytypes" in out.stdout + out.stderr
