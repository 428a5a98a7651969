"""The DigitalOcean VirtualMachine component: thin Pulumi calls over the pure mapping in mapping.py."""

from __future__ import annotations

import pulumi
import pulumi_digitalocean as do

from polyvm.cloudinit import host_key, user_data_output
from polyvm.component import VirtualMachine
from polyvm.spec import VmSpec

from . import DigitalOceanSettings
from . import mapping as m


class DigitalOceanVirtualMachine(VirtualMachine):
    def __init__(self, spec: VmSpec, settings: DigitalOceanSettings,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        region = m.region(spec, settings.region)  # before anything is declared
        super().__init__("digitalocean", spec, opts)
        name = spec.name

        key = host_key(name, self, "digitalocean")
        if settings.register_ssh_key:
            fingerprint = do.SshKey(f"{name}-login", name=f"polyvm-{name}", public_key=spec.ssh.public_key,
                                    opts=self.child_opts()).fingerprint
        else:
            fingerprint = m.ssh_key_fingerprint(spec.ssh.public_key)  # a key already on the account

        droplet = do.Droplet(
            f"{name}-vm",
            ssh_keys=[fingerprint],
            user_data=user_data_output(spec, key),
            **m.droplet_args(spec, region=region, vpc_uuid=settings.vpc_uuid),
            opts=self.child_opts(),
        )
        droplet_id = droplet.id.apply(int)

        do.Firewall(f"{name}-fw", droplet_ids=[droplet_id], **m.firewall_args(spec), opts=self.child_opts())

        devices: dict[str, str] = {}
        for disk, vol_args in zip(spec.data_disks, m.volume_args(spec, region=region)):
            volume = do.Volume(f"{name}-{disk.name}", **vol_args, opts=self.child_opts())
            do.VolumeAttachment(f"{name}-{disk.name}-attach", droplet_id=droplet_id, volume_id=volume.id,
                                opts=self.child_opts(delete_before_replace=True))
            devices[disk.name] = m.guest_device_path(vol_args["name"])

        self.finish(
            public_ip=droplet.ipv4_address if spec.public_ip else None,
            private_ip=droplet.ipv4_address_private,
            ssh_user=spec.ssh.user,
            host_key=key.public_key_openssh.apply(lambda k: k.strip()),
            data_disk_devices=devices,
        )
