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
        super().__init__("fakecloud", spec, opts)  # type token polyvm:fakecloud:VirtualMachine
        name = spec.name

        instance = random.RandomPet(f"{name}-vm", prefix=name, keepers=m.instance_keepers(spec),
                                    opts=self.child_opts())
        octet = random.RandomInteger(f"{name}-address", min=10, max=250, keepers={"instance": instance.id},
                                     opts=self.child_opts())
        random.RandomUuid(f"{name}-firewall", keepers={"instance": instance.id, **m.firewall_keepers(spec)},
                          opts=self.child_opts())
        devices = {}
        for disk, keepers in zip(spec.data_disks, m.disk_keepers(spec)):
            disk_id = random.RandomId(f"{name}-{disk.name}", byte_length=8,
                                      keepers={"instance": instance.id, **keepers}, opts=self.child_opts())
            devices[disk.name] = disk_id.hex.apply(m.device_path)

        self.finish(
            public_ip=octet.result.apply(lambda n: m.address(settings.public_network, n)) if spec.public_ip else None,
            private_ip=octet.result.apply(lambda n: m.address(settings.private_network, n)),
            ssh_user=spec.ssh.user,
            host_key=None,
            data_disk_devices=devices,
        )
