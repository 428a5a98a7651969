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
        super().__init__("aws", spec, opts, settings)
        name = spec.name
        region = {"region": spec.region} if spec.region else {}

        query = m.ami_query(spec)
        root_gb: pulumi.Input[int] = m.root_volume_gb(spec, None)
        if query is None:
            ami_id: pulumi.Input[str] = spec.image.image_id["aws"]
        else:
            ami = aws.ec2.get_ami_output(**query, **region, opts=pulumi.InvokeOutputOptions(parent=self))
            ami_id = ami.id
            # The chosen AMI's own root snapshot size, known once it is looked up (before anything is created).
            root_gb = pulumi.Output.all(ami.block_device_mappings, ami.root_device_name).apply(
                lambda a: m.root_volume_gb(spec, m.snapshot_gb(a[0], a[1])))

        key = host_key(name, self, "aws")
        key_pair = aws.ec2.KeyPair(*self.child("login"), public_key=spec.ssh.public_key, tags=spec.all_tags(),
                                   **region)

        sg_name, sg_opts = self.child("sg")
        sg = aws.ec2.SecurityGroup(sg_name, **m.security_group_args(spec, settings.vpc_id), **region, opts=sg_opts)

        # One availability zone, chosen once, for the instance and its volumes: a volume taking the AZ
        # from the instance would be replaced (availability_zone is ForceNew) whenever the instance is.
        if spec.zone:
            zone: pulumi.Input[str] = spec.zone
        elif settings.subnet_id:
            zone = aws.ec2.get_subnet_output(id=settings.subnet_id, **region,
                                             opts=pulumi.InvokeOutputOptions(parent=self)).availability_zone
        else:
            zone = aws.get_availability_zones_output(state="available", **region,
                                                     opts=pulumi.InvokeOutputOptions(parent=self)).names[0]
        # The AMI (and a looked-up zone) are pinned once chosen: a newer image must not replace the
        # database instance on the next `pulumi up` unless the user asks (polyvm:aws.upgrade_image).
        pinned = ([] if spec.zone else ["availabilityZone"]) + ([] if settings.upgrade_image else ["ami"])
        vm_name, vm_opts = self.child("vm", depends_on=[sg], ignore_changes=pinned)
        instance = aws.ec2.Instance(
            vm_name,
            ami=ami_id,
            key_name=key_pair.key_name,
            vpc_security_group_ids=[sg.id],
            user_data=user_data_output(spec, key),
            **m.instance_args(spec, subnet_id=settings.subnet_id, zone=zone, root_gb=root_gb),
            **region,
            opts=vm_opts,
        )

        self.instance = instance  # a fleet's load balancer attaches it (backends/aws/fleet.py)
        devices: dict[str, pulumi.Output[str]] = {}
        for disk, vol_args, device_name in zip(spec.data_disks, m.volume_args(spec), m.ATTACH_DEVICE_NAMES):
            vol_name, vol_opts = self.child(disk.name, data=True,
                                            ignore_changes=[] if spec.zone else ["availabilityZone"])
            volume = aws.ebs.Volume(vol_name, availability_zone=zone,
                                    **vol_args, **region, opts=vol_opts)
            # Detaching from a running instance with a mounted filesystem risks the data: the provider
            # stops the instance first (replacement of the instance or the attachment).
            aws.ec2.VolumeAttachment(*self.child(f"{disk.name}-attach", delete_before_replace=True),
                                     device_name=device_name, volume_id=volume.id, instance_id=instance.id,
                                     stop_instance_before_detaching=True, **region)
            devices[disk.name] = volume.id.apply(m.guest_device_path)

        self.finish(
            public_ip=instance.public_ip if spec.public_ip else None,
            private_ip=instance.private_ip,
            ssh_user=spec.ssh.user,
            host_key=key.public_key_openssh.apply(lambda k: k.strip()),
            data_disk_devices=devices,
        )
