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
        super().__init__("digitalocean", spec, opts, settings)
        name = spec.name

        key = host_key(name, self, "digitalocean")
        if settings.register_ssh_key:
            fingerprint = do.SshKey(*self.child("login"), name=f"polyvm-{name}",
                                    public_key=spec.ssh.public_key).fingerprint
        else:
            fingerprint = m.ssh_key_fingerprint(spec.ssh.public_key)  # a key already on the account

        # The firewall first, bound to a tag the Droplet carries from its creation: sshd is never open
        # to the internet, not even while the Droplet boots.
        tag = m.firewall_tag(spec, f"{pulumi.get_project()}/{pulumi.get_stack()}")
        firewall = do.Firewall(*self.child("fw"), **m.firewall_args(spec, tag))

        droplet = do.Droplet(
            *self.child("vm", depends_on=[firewall],
                        # Both force a new Droplet (see replacements): a key rotation or a renamed host
                        # must not replace the database VM; documented in the capability notes.
                        ignore_changes=["userData", "sshKeys"]),
            ssh_keys=[fingerprint],
            user_data=user_data_output(spec, key),
            **m.droplet_args(spec, region=region, vpc_uuid=settings.vpc_uuid, firewall_tag=tag),
        )
        droplet_id = droplet.id.apply(int)

        devices: dict[str, pulumi.Output[str]] = {}
        for disk, vol_args in zip(spec.data_disks, m.volume_args(spec, region=region)):
            # name and description force a new volume: a renamed VM keeps its volumes' names (the guest
            # path follows the volume's actual name).
            volume = do.Volume(*self.child(disk.name, data=True, ignore_changes=["name", "description"]), **vol_args)
            do.VolumeAttachment(*self.child(f"{disk.name}-attach", delete_before_replace=True),
                                droplet_id=droplet_id, volume_id=volume.id)
            devices[disk.name] = volume.name.apply(m.guest_device_path)

        self.finish(
            public_ip=droplet.ipv4_address if spec.public_ip else None,
            private_ip=droplet.ipv4_address_private,
            ssh_user=spec.ssh.user,
            host_key=key.public_key_openssh.apply(lambda k: k.strip()),
            data_disk_devices=devices,
        )
