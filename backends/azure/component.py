"""The Azure VirtualMachine component: thin Pulumi calls over the pure mapping in mapping.py."""

from __future__ import annotations

import pulumi
import pulumi_azure_native as azure

from polyvm.cloudinit import host_key, user_data_output
from polyvm.component import VirtualMachine
from polyvm.spec import VmSpec

from . import AzureSettings
from . import mapping as m


class AzureVirtualMachine(VirtualMachine):
    def __init__(self, spec: VmSpec, settings: AzureSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("azure", spec, opts, settings)
        name = spec.name

        def named(suffix: str):  # resource names from the VM name, short enough for Azure's limits
            return lambda vm: f"{m.base_name(vm)}-{suffix}"

        tags = spec.all_tags()
        location = m.location(spec, settings.location)
        zones = {"zones": [spec.zone]} if spec.zone else {}

        if settings.resource_group:
            rg_name: pulumi.Input[str] = settings.resource_group
        else:
            rg = azure.resources.ResourceGroup(*self.child(named("rg")), location=location, tags=tags)
            rg_name = rg.name
        where = {"resource_group_name": rg_name, "location": location}

        if settings.subnet_id:
            subnet_id: pulumi.Input[str] = settings.subnet_id
        else:
            # The subnet is its own resource, never inline in the VNet (mixing both makes them fight).
            vnet = azure.network.VirtualNetwork(
                *self.child(named("vnet"), ignore_changes=["subnets"]), **where,
                address_space={"address_prefixes": [settings.address_space]}, tags=tags)
            subnet = azure.network.Subnet(
                *self.child(named("subnet")), resource_group_name=rg_name, virtual_network_name=vnet.name,
                address_prefix=settings.subnet_prefix,
                # New VNets default to private subnets (no implicit way out); polyvm documents all IPv4
                # egress, so a VM without a public IP keeps Azure's default outbound access explicitly.
                default_outbound_access=True)
            subnet_id = subnet.id

        nsg = azure.network.NetworkSecurityGroup(*self.child(named("nsg")), **where,
                                                 security_rules=m.security_rules(spec), tags=tags)

        ip_config: dict = {"name": "primary", "primary": True, "subnet": {"id": subnet_id},
                           "private_ip_allocation_method": "Dynamic"}
        public_ip = None
        if spec.public_ip:
            public_ip = azure.network.PublicIPAddress(*self.child(named("ip")), **where, **m.public_ip_args(spec))
            ip_config["public_ip_address"] = {"id": public_ip.id}
        nic = azure.network.NetworkInterface(*self.child(named("nic")), **where,
                                             ip_configurations=[ip_config], network_security_group={"id": nsg.id},
                                             tags=tags)

        attachments, devices = [], {}
        for lun, (disk, disk_args) in enumerate(zip(spec.data_disks, m.data_disk_args(spec, settings.storage_account_type))):
            managed = azure.compute.Disk(*self.child(named(disk.name), data=True),
                                         **where, **disk_args)
            attachments.append(m.data_disk_attachment(lun, managed.id, disk.size_gb))
            devices[disk.name] = m.guest_device_path(lun)

        key = host_key(name, self, "azure")
        os_profile = m.os_profile(spec)
        os_profile["custom_data"] = user_data_output(spec, key).apply(m.custom_data)

        vm_name, vm_opts = self.child(
            named("vm"),
            # Azure refuses to change customData in place: replace the VM instead (deleting first, since
            # the NIC and the data disks can belong to one VM at a time; the disks are only detached).
            additional_secret_outputs=["osProfile"], replace_on_changes=["osProfile.customData"],
            delete_before_replace=True)
        vm = azure.compute.VirtualMachine(
            vm_name,
            vm_name=name,  # the VM's own name is the spec's (Azure allows 64 characters for Linux VMs)
            **where,
            **zones,
            hardware_profile={"vm_size": m.vm_size(spec)},
            os_profile=os_profile,
            storage_profile=m.storage_profile(spec, settings.storage_account_type, attachments),
            # The NIC is a resource of its own: a replaced VM must leave it for its successor (Delete
            # would remove it with the old VM and the new one would point at a NIC that is gone).
            network_profile={"network_interfaces": [{"id": nic.id, "primary": True, "delete_option": "Detach"}]},
            tags=tags,
            opts=vm_opts,
        )

        self.finish(
            public_ip=public_ip.ip_address if public_ip is not None else None,
            private_ip=nic.ip_configurations.apply(lambda cs: cs[0].private_ip_address if cs else None),
            ssh_user=spec.ssh.user,
            host_key=key.public_key_openssh.apply(lambda k: k.strip()),
            data_disk_devices=devices,
        )
