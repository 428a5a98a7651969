"""The fakecloud VirtualMachine component: thin Pulumi calls over mapping.py."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from polyvm.component import VirtualMachine
from polyvm.spec import VmSpec

from . import FakeCloudSettings
from . import mapping as m


class FakeCloudVirtualMachine(VirtualMachine):
    def __init__(self, spec: VmSpec, settings: FakeCloudSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        # type token polyvm:fakecloud:VirtualMachine; settings give protect_data_disks and renames
        super().__init__("fakecloud", spec, opts, settings)
        name = spec.name

        # self.child(suffix) names a child "<vm>-<suffix>" and aliases it to its name under the VM's
        # previous name (polyvm:fakecloud.renamed); data=True protects data disks from deletion.
        instance = random.RandomPet(*self.child("vm"), prefix=name, keepers=m.instance_keepers(spec))
        octet = random.RandomInteger(*self.child("address"), min=10, max=250, keepers={"instance": instance.id})
        random.RandomUuid(*self.child("firewall"), keepers={"instance": instance.id, **m.firewall_keepers(spec)})
        devices = {}
        for disk, keepers in zip(spec.data_disks, m.disk_keepers(spec)):
            # A disk's keepers are its own: a replaced instance must not take its data disks with it.
            disk_id = random.RandomId(*self.child(disk.name, data=True), byte_length=8, keepers=keepers)
            devices[disk.name] = disk_id.hex.apply(m.device_path)

        self.finish(
            public_ip=octet.result.apply(lambda n: m.address(settings.public_network, n)) if spec.public_ip else None,
            private_ip=octet.result.apply(lambda n: m.address(settings.private_network, n)),
            ssh_user=spec.ssh.user,
            host_key=None,
            data_disk_devices=devices,
        )
