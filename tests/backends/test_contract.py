"""Every built-in backend passes the contract suite (polyvm.testing) under Pulumi mocks."""

from polyvm.backends.aws import AwsBackend
from polyvm.testing import BackendContract


class TestAwsContract(BackendContract):
    backend = AwsBackend()
    region = "eu-west-1"
    zone = "eu-west-1a"
