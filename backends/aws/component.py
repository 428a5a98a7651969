"""The AWS VirtualMachine component: thin Pulumi calls over the pure mapping in mapping.py."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from polyvm.cloudinit import host_key, user_data_output
from polyvm.component import VirtualMachine
from polyvm.spec import VmSpec

from . import AwsSettings
from . import mapping as m


class AwsVirtualMachine(VirtualMachine):
    def __init__(self, spec: VmSpec, settings: AwsSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("aws", spec, opts)
        name = spec.name
        region = {"region": spec.region} if spec.region else {}

        query = m.ami_query(spec)
        if query is None:
            ami_id: pulumi.Input[str] = spec.image.image_id["aws"]
        else:
            ami_id = aws.ec2.get_ami_output(
                **query, **region, opts=pulumi.InvokeOutputOptions(parent=self)).id

        key = host_key(name, self, "aws")
        key_pair = aws.ec2.KeyPair(f"{name}-login", public_key=spec.ssh.public_key, tags=spec.all_tags(),
                                   **region, opts=self.child_opts())

        sg = aws.ec2.SecurityGroup(f"{name}-sg", **m.security_group_args(spec, settings.vpc_id), **region,
                                   opts=self.child_opts())

        instance = aws.ec2.Instance(
            f"{name}-vm",
            ami=ami_id,
            key_name=key_pair.key_name,
            vpc_security_group_ids=[sg.id],
            user_data=user_data_output(spec, key),
            **m.instance_args(spec, subnet_id=settings.subnet_id),
            **region,
            opts=self.child_opts(depends_on=[sg]),
        )

        devices: dict[str, pulumi.Output[str]] = {}
        for disk, vol_args, device_name in zip(spec.data_disks, m.volume_args(spec), m.ATTACH_DEVICE_NAMES):
            # The volume must live in the instance's availability zone, whatever the zone ends up being.
            volume = aws.ebs.Volume(f"{name}-{disk.name}", availability_zone=instance.availability_zone,
                                    **vol_args, **region, opts=self.child_opts())
            aws.ec2.VolumeAttachment(f"{name}-{disk.name}-attach", device_name=device_name,
                                     volume_id=volume.id, instance_id=instance.id, **region,
                                     opts=self.child_opts(delete_before_replace=True))
            devices[disk.name] = volume.id.apply(m.guest_device_path)

        self.finish(
            public_ip=instance.public_ip if spec.public_ip else None,
            private_ip=instance.private_ip,
            ssh_user=spec.ssh.user,
            host_key=key.public_key_openssh.apply(lambda k: k.strip()),
            data_disk_devices=devices,
        )
