"""fakecloud passes polyvm's backend contract suite: this one class is the whole test."""

from polyvm.testing import BackendContract
from polyvm_fakecloud import FakeCloudBackend


class TestFakeCloudContract(BackendContract):
    backend = FakeCloudBackend()
