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
        super().__init__("gcp", spec, opts)
        name, base = spec.name, m.base_name(spec.name)
        region, zone = m.placement(spec, settings.region, settings.zone)
        assert region and zone  # settings_problems() refused the spec otherwise
        project = {"project": settings.project}

        if settings.network:
            network: pulumi.Input[str] = settings.network
            subnetwork: pulumi.Input[str] | None = settings.subnetwork
        else:
            # A network of its own: the implied rules deny all ingress, so only polyvm's rules apply.
            net = gcp.compute.Network(f"{base}-net", auto_create_subnetworks=False,
                                      description=f"polyvm {name}", **project, opts=self.child_opts())
            sub = gcp.compute.Subnetwork(f"{base}-subnet", network=net.self_link, region=region,
                                         ip_cidr_range=settings.subnet_cidr, private_ip_google_access=True,
                                         **project, opts=self.child_opts())
            network, subnetwork = net.self_link, sub.self_link
            if not spec.public_ip:
                # Without an external address a VM has no way out (packages, time); Cloud NAT gives it one.
                router = gcp.compute.Router(f"{base}-router", network=net.self_link, region=region, **project,
                                            opts=self.child_opts())
                gcp.compute.RouterNat(f"{base}-nat", router=router.name, region=region, **m.NAT_ARGS, **project,
                                      opts=self.child_opts())

        for fw in m.firewall_args(spec, network):
            suffix = fw.pop("suffix")
            gcp.compute.Firewall(f"{base}-{suffix}", **fw, **project, opts=self.child_opts())

        nic: dict = {"network": network}
        if subnetwork is not None:
            nic["subnetwork"] = subnetwork
        address = None
        if spec.public_ip:
            address = gcp.compute.Address(f"{base}-ip", region=region, address_type="EXTERNAL",
                                          network_tier="PREMIUM", labels=m.labels(spec), **project,
                                          opts=self.child_opts())
            nic["access_configs"] = [{"nat_ip": address.address, "network_tier": "PREMIUM"}]

        attached, devices = [], {}
        for disk, args in zip(spec.data_disks, m.disk_args(spec, zone)):
            pd = gcp.compute.Disk(f"{base}-{disk.name}", **args, **project, opts=self.child_opts())
            attached.append({"source": pd.self_link, "device_name": disk.name, "mode": "READ_WRITE"})
            devices[disk.name] = m.guest_device_path(disk.name)

        key = host_key(name, self, "gcp")
        user_data = pulumi.Output.secret(pulumi.Output.all(key.private_key_openssh, key.public_key_openssh).apply(
            lambda kv: render_user_data(spec, kv[0], kv[1].strip(), extra={"write_files": [m.GUEST_AGENT_CONFIG]})))

        instance = gcp.compute.Instance(
            f"{base}-vm",
            name=name,  # the instance name is the spec's (its hostname in GCE's DNS)
            **m.instance_args(spec, zone),
            network_interfaces=[nic],
            attached_disks=attached,
            metadata={**m.static_metadata(spec), "user-data": user_data},
            **project,
            # A replacement must let go of the name and the read-write disks first.
            opts=self.child_opts(additional_secret_outputs=["metadata"], delete_before_replace=True),
        )

        self.finish(
            public_ip=address.address if address is not None else None,
            private_ip=instance.network_interfaces.apply(lambda ns: ns[0].network_ip if ns else None),
            ssh_user=spec.ssh.user,
            host_key=key.public_key_openssh.apply(lambda k: k.strip()),
            data_disk_devices=devices,
        )
