"""The vSphere backend passes the contract suite (polyvm.testing) under Pulumi mocks."""

from polyvm.backends.vsphere import VsphereBackend
from polyvm.testing import BackendContract


class TestVsphereContract(BackendContract):
    backend = VsphereBackend()
    settings = {"datacenter": "dc1", "datastore": "ds1", "cluster": "cluster1", "network": "VM Network",
                "template": "ubuntu-2404-cloudinit"}
    extra_unsupported = (({"tags": {"note": "two\nlines"}}, "tags.note"),)
