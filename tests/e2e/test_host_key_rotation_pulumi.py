"""The Pulumi form of host-key rotation against a real host, without the Pulumi CLI (as in
test_postgres_pulumi_e2e.py): declare a RecipeResource (guest baseline) with ``rotate_host_key`` under the mock
runtime, run each dynamic provider's ``create`` in order, feeding RotateHostKey's real output into the next
declaration as the engine would, and check what a second ``pulumi up`` and a replaced VM would do."""

from __future__ import annotations

import pytest

pulumi = pytest.importorskip("pulumi")

from polyvm.component import VirtualMachine  # noqa: E402
from polyvm.errors import HostKeyError  # noqa: E402
from polyvm.plan import run_mocked  # noqa: E402
from polyvm.provisioners import Connection  # noqa: E402
from polyvm.provisioners.pulumi import (  # noqa: E402
    CopyFileProvider,
    RecipeResource,
    RemoteExecProvider,
    RotateHostKeyProvider,
)
from polyvm.spec import parse_spec  # noqa: E402

from test_postgres_pulumi_e2e import _plain  # noqa: E402  (same directory: the engine's view of inputs)

pytestmark = pytest.mark.e2e


ROTATE_TYPE = "pulumi-python:dynamic/polyvm:RotateHostKey"


class FakeVm(VirtualMachine):
    def __init__(self, spec, host, host_key):
        super().__init__("testhost", spec)
        self.finish(public_ip=host.address, private_ip=host.address, ssh_user=host.user, host_key=host_key,
                    data_disk_devices={})


def declared(host, key_text, injected, rotated=None):
    spec = parse_spec({"name": "rot1", "size": "small", "image": {"family": "debian", "version": "12"},
                       "ingress": [{"port": 22, "cidrs": [f"{host.record.host_ip}/32"]}],
                       "ssh": {"user": "polyvm", "public_key": host.host_key}})

    def program():
        vm = FakeVm(spec, host, injected)
        RecipeResource("rot1-baseline", vm=vm, spec=spec, private_key=key_text, guest_firewall=True,
                       rotate_host_key=True)

    class Mocks:  # what the engine hands later resources: the rotation's real output once it ran
        mock_outputs = {ROTATE_TYPE: lambda name, inputs: {"host_key": rotated}} if rotated else {}
        mock_calls: dict = {}

    _value, mocks, _ = run_mocked(program, [Mocks])
    steps = [(name, typ.rsplit(":", 1)[-1], _plain(inputs)) for typ, name, inputs, _c, _i in mocks.resources
             if typ.startswith("pulumi-python:dynamic/polyvm:")]
    return sorted(steps, key=lambda s: (s[1] != "RotateHostKey", s[0]))


def test_rotation_resource_feeds_every_later_step_and_a_second_up_changes_nothing(testhosts):
    [host] = testhosts.up(1)
    key_text = host.private_key_path.read_text()
    injected = host.host_key
    steps = declared(host, key_text, injected)
    assert steps[0][1] == "RotateHostKey" and len(steps) > 1
    rot_name, _kind, rot_inputs = steps[0]
    assert rot_inputs["connection"]["host_key"] == injected and rot_inputs["triggers"] == [injected]
    provider = RotateHostKeyProvider()
    checked = provider.check({}, rot_inputs)
    assert not checked.failures, checked.failures
    rot_state = provider.create(checked.inputs).outs
    new = rot_state["host_key"]
    assert new != injected and rot_state["rotated"] is True and rot_state["previous_host_key"] == injected

    # The engine now knows the rotated key: every later step's connection carries it, and works.
    steps = declared(host, key_text, injected, rotated=new)
    providers = {"CopyFile": CopyFileProvider(), "RemoteExec": RemoteExecProvider()}
    for name, kind, inputs in steps[1:]:
        assert inputs["connection"]["host_key"] == new, name
        checked = providers[kind].check({}, inputs)
        assert not checked.failures, (name, checked.failures)
        providers[kind].create(checked.inputs)
    with pytest.raises(HostKeyError):
        Connection(host.address, private_key=key_text, host_key=injected, deadline=30).connect()

    # A second `pulumi up`: same VM, same injected key -> the rotation resource does not change (no new
    # rotation, and the stored rotated key keeps feeding the steps).
    again = declared(host, key_text, injected, rotated=new)
    assert not provider.diff(rot_name, rot_state, provider.check(rot_state, again[0][2]).inputs).changes
    # A replaced VM (new injected key) replaces the rotation resource: the new VM is rotated as well.
    other = testhosts.up(1)[0]
    replaced = declared(host, key_text, other.host_key, rotated=new)
    diff = provider.diff(rot_name, rot_state, provider.check(rot_state, replaced[0][2]).inputs)
    assert diff.changes and "connection" in diff.replaces and "triggers" in diff.replaces


def test_rotation_resource_needs_the_injected_key():
    failures = RotateHostKeyProvider().check({}, {"connection": {"host": "198.51.100.7", "user": "root"}}).failures
    assert [f.property for f in failures] == ["connection"] and "host_key" in failures[0].reason
