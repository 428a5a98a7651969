"""The GCP VirtualMachine component: thin Pulumi calls over the pure mapping in mapping.py."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from polyvm.cloudinit import host_key, render_user_data
from polyvm.component import VirtualMachine
from polyvm.spec import VmSpec

from . import GcpSettings
from . import mapping as m


class GcpVirtualMachine(VirtualMachine):
    def __init__(self, spec: VmSpec, settings: GcpSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gcp", spec, opts, settings)
        name = spec.name

        def named(suffix: str):  # names whose auto-name fits GCE's 63 characters
            return lambda vm: m.resource_name(m.base_name(vm), suffix)

        region, zone = m.placement(spec, settings.region, settings.zone)
        assert region and zone  # settings_problems() refused the spec otherwise
        project = {"project": settings.project}

        if settings.network:
            network: pulumi.Input[str] = settings.network
            subnetwork: pulumi.Input[str] | None = settings.subnetwork
        else:
            # A network of its own: the implied rules deny all ingress, so only polyvm's rules apply.
            net = gcp.compute.Network(*self.child(named("net"), ignore_changes=["description"]),
                                      auto_create_subnetworks=False, description=f"polyvm {name}", **project)
            sub = gcp.compute.Subnetwork(*self.child(named("subnet")), network=net.self_link, region=region,
                                         ip_cidr_range=settings.subnet_cidr, private_ip_google_access=True,
                                         **project)
            network, subnetwork = net.self_link, sub.self_link
            if not spec.public_ip:
                # Without an external address a VM has no way out (packages, time); Cloud NAT gives it one.
                router = gcp.compute.Router(*self.child(named("router")), network=net.self_link, region=region,
                                            **project)
                gcp.compute.RouterNat(*self.child(named("nat")), router=router.name, region=region, **m.NAT_ARGS,
                                      **project)

        for fw in m.firewall_args(spec, network):
            suffix = fw.pop("suffix")
            gcp.compute.Firewall(*self.child(named(suffix)), **fw, **project)

        nic: dict = {"network": network}
        if subnetwork is not None:
            nic["subnetwork"] = subnetwork
        address = None
        if spec.public_ip:
            address = gcp.compute.Address(*self.child(named("ip")), region=region, address_type="EXTERNAL",
                                          network_tier="PREMIUM", labels=m.labels(spec), **project)
            nic["access_configs"] = [{"nat_ip": address.address, "network_tier": "PREMIUM"}]

        attached, devices = [], {}
        for disk, args in zip(spec.data_disks, m.disk_args(spec, zone)):
            pd = gcp.compute.Disk(*self.child(named(disk.name), data=True), **args, **project)
            attached.append({"source": pd.self_link, "device_name": disk.name, "mode": "READ_WRITE"})
            devices[disk.name] = m.guest_device_path(disk.name)

        key = host_key(name, self, "gcp")
        user_data = pulumi.Output.secret(pulumi.Output.all(key.private_key_openssh, key.public_key_openssh).apply(
            lambda kv: render_user_data(spec, kv[0], kv[1].strip(), extra={"write_files": [m.GUEST_AGENT_CONFIG]})))

        # Everything under boot_disk forces a new instance: the boot disk's labels are set at creation
        # only, so a tag change does not replace the VM (the instance's own labels do follow the tags).
        vm_name, vm_opts = self.child(named("vm"), additional_secret_outputs=["metadata"], delete_before_replace=True,
                                      ignore_changes=["bootDisk.initializeParams.labels"])
        instance = gcp.compute.Instance(
            vm_name,
            name=name,  # the instance name is the spec's (its hostname in GCE's DNS)
            **m.instance_args(spec, zone),
            network_interfaces=[nic],
            attached_disks=attached,
            metadata={**m.static_metadata(spec), "user-data": user_data},
            **project,
            # A replacement must let go of the name and the read-write disks first (delete_before_replace).
            opts=vm_opts,
        )

        self.instance = instance  # a fleet's instance groups hold it (backends/gcp/fleet.py)
        self.finish(
            public_ip=address.address if address is not None else None,
            private_ip=instance.network_interfaces.apply(lambda ns: ns[0].network_ip if ns else None),
            ssh_user=spec.ssh.user,
            host_key=key.public_key_openssh.apply(lambda k: k.strip()),
            data_disk_devices=devices,
        )
