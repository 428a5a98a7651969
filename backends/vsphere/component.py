"""The vSphere VirtualMachine component: lookups by name, then one cloned VM (thin over mapping.py)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_vsphere as vsphere

from polyvm.cloudinit import host_key, user_data_output
from polyvm.component import VirtualMachine
from polyvm.spec import VmSpec

from . import VsphereSettings
from . import mapping as m


class VsphereVirtualMachine(VirtualMachine):
    def __init__(self, spec: VmSpec, settings: VsphereSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vsphere", spec, opts, settings)
        name = spec.name
        look = pulumi.InvokeOutputOptions(parent=self)

        dc = vsphere.get_datacenter_output(name=settings.datacenter, opts=look)
        datastore = vsphere.get_datastore_output(name=settings.datastore, datacenter_id=dc.id, opts=look)
        if settings.cluster:
            pool_id = vsphere.get_compute_cluster_output(name=settings.cluster, datacenter_id=dc.id,
                                                         opts=look).resource_pool_id
        else:
            pool_id = vsphere.get_resource_pool_output(name=settings.resource_pool, datacenter_id=dc.id,
                                                       opts=look).id
        network = vsphere.get_network_output(name=settings.network, datacenter_id=dc.id, opts=look)
        template = vsphere.get_virtual_machine_output(name=m.template_name(spec, settings.template),
                                                      datacenter_id=dc.id, opts=look)

        key = host_key(name, self, "vsphere")
        user_data = user_data_output(spec, key)

        def root_disk(tdisks: Any) -> dict[str, Any]:
            first = tdisks[0] if tdisks else None
            size = getattr(first, "size", None)
            return {"size": m.root_disk_size(spec, size, linked_clone=settings.linked_clone),
                    "thin_provisioned": getattr(first, "thin_provisioned", True),
                    "eagerly_scrub": getattr(first, "eagerly_scrub", False)}

        clone: dict[str, Any] = {"template_uuid": template.id, "linked_clone": settings.linked_clone}
        if settings.customize:
            clone["customize"] = m.customize(spec, settings.domain, settings.dns_servers)

        ignored = [] if settings.reclone else ["clone"]
        # Once read, cloud-init redacts the user data in the guest (see guestinfo_plain): not a change to undo.
        ignored += ['extraConfig["guestinfo.userdata"]', 'extraConfig["guestinfo.userdata.encoding"]']
        vm_name, vm_opts = self.child("vm", data=bool(spec.data_disks), additional_secret_outputs=["extra_config"],
                                      ignore_changes=ignored)
        vm = vsphere.VirtualMachine(
            vm_name,
            resource_pool_id=pool_id,
            datastore_id=datastore.id,
            guest_id=template.guest_id,
            scsi_type=template.scsi_type,
            firmware=template.firmware,
            network_interfaces=[{
                "network_id": network.id,
                "adapter_type": template.network_interface_types.apply(lambda t: t[0] if t else "vmxnet3"),
            }],
            disks=template.disks.apply(lambda tdisks: m.disks(spec, root_disk(tdisks),
                                                              keep_data=settings.protect_data_disks)),
            clone=clone,
            extra_config={**m.guestinfo_plain(spec),
                          "guestinfo.userdata": pulumi.Output.secret(user_data.apply(m.guestinfo_userdata))},
            **m.vm_args(spec, folder=settings.folder),
            opts=vm_opts,
        )

        labels = {m.disk_label(disk.name): disk.name for disk in spec.data_disks}

        def devices(vm_disks: Any) -> dict[str, str]:
            out = {}
            for d in vm_disks or []:
                label = d["label"] if isinstance(d, dict) else d.label
                uuid = d["uuid"] if isinstance(d, dict) else d.uuid
                if label in labels and uuid:
                    out[labels[label]] = m.guest_device_path(uuid)
            return out

        address = vm.default_ip_address
        self.finish(
            public_ip=address if spec.public_ip else None,
            private_ip=address,
            ssh_user=spec.ssh.user,
            host_key=key.public_key_openssh.apply(lambda k: k.strip()),
            data_disk_devices=vm.disks.apply(devices),
        )
