"""Every built-in backend passes the contract suite (polyvm.testing) under Pulumi mocks."""

from polyvm.backends.aws import AwsBackend
from polyvm.backends.azure import AzureBackend
from polyvm.backends.gcp import GcpBackend
from polyvm.testing import BackendContract


class TestAwsContract(BackendContract):
    backend = AwsBackend()
    region = "eu-west-1"
    zone = "eu-west-1a"


class TestAzureContract(BackendContract):
    backend = AzureBackend()
    settings = {"location": "westeurope"}
    region = "northeurope"
    zone = "2"
    instance_type_override = "Standard_D4s_v5"
    image_id_override = "Canonical:ubuntu-24_04-lts:server:24.04.202401010"
    extra_unsupported = (
        ({"ssh": {"user": "admin", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBwHd0ks5e0m5gUj4k2Gx0m4c1QzYlqZ6j2l4vbm5y2B"}},
         "ssh.user 'admin'"),
        ({"zone": "westeurope-1"}, "zone 'westeurope-1'"),
    )


class TestGcpContract(BackendContract):
    backend = GcpBackend()
    settings = {"project": "polyvm-contract", "zone": "europe-west1-b"}
    region = "europe-west4"
    zone = "europe-west4-a"
    instance_type_override = "n2-standard-4"
    image_id_override = "projects/my-project/global/images/my-ubuntu"
    extra_unsupported = (
        ({"tags": {"Owner": "Data Team"}}, "tags.Owner"),
        ({"zone": "2"}, "zone '2'"),
    )
