"""The local backend passes the contract suite (polyvm.testing) under Pulumi mocks."""

from polyvm.backends.local import LocalBackend
from polyvm.testing import BackendContract


class TestLocalContract(BackendContract):
    backend = LocalBackend()
