"""The DigitalOcean backend passes the contract suite (polyvm.testing) under Pulumi mocks."""

from polyvm.backends.digitalocean import DigitalOceanBackend
from polyvm.testing import BackendContract


class TestDigitalOceanContract(BackendContract):
    backend = DigitalOceanBackend()
    settings = {"region": "nyc3", "vpc_uuid": "8d3c1e2a-0b4f-4c8e-9a1d-2f6b7c8d9e0f", "private_egress": True}
    region = "fra1"
    extra_unsupported = (
        ({"tags": {"cost:center": "x"}}, "tags.cost:center"),
        ({"tags": {"owner": "a b"}}, "tags.owner"),
        ({"data_disks": [{"name": "big", "size_gb": 20000}]}, "data_disks[0].size_gb"),
    )
