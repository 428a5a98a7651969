"""The local VirtualMachine component: one dynamic resource (the host) under the common component."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi.dynamic

from polyvm.component import VirtualMachine
from polyvm.fleet_component import Fleet
from polyvm.spec import VmSpec

from . import LocalSettings, recipe_leftovers
from . import mapping as m
from .provider import LB_OUTPUTS, LocalHostProvider, LocalLoadBalancerProvider


class LocalHost(pulumi.dynamic.Resource, module="local", name="Host"):
    """A host on this machine (type ``pulumi-python:dynamic/local:Host``)."""

    host_id: pulumi.Output[str]
    guest_ip: pulumi.Output[str]
    host_ip: pulumi.Output[str]
    host_key: pulumi.Output[str]
    disk_devices: pulumi.Output[dict]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        outputs = {k: None for k in ("host_id", "guest_ip", "host_ip", "host_key", "disk_devices")}
        super().__init__(LocalHostProvider(props.get("state_dir")), name, {**props, **outputs}, opts)


class LocalVirtualMachine(VirtualMachine):
    def __init__(self, spec: VmSpec, settings: LocalSettings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("local", spec, opts)
        props = m.host_props(spec, scrub=recipe_leftovers() if settings.fresh else (), boot=settings.boot)
        if settings.state_dir:
            props["state_dir"] = settings.state_dir
        host = LocalHost(f"{spec.name}-host", props, opts=self.child_opts())
        self.host = host  # a fleet's load balancer links to it (LocalFleet)
        self.finish(
            public_ip=host.guest_ip if spec.public_ip else None,
            private_ip=host.guest_ip,
            ssh_user=spec.ssh.user,
            host_key=host.host_key,
            data_disk_devices=host.disk_devices,
        )


class LocalLoadBalancerResource(pulumi.dynamic.Resource, module="local", name="LoadBalancer"):
    """A fleet's HAProxy in its own network namespace (type ``pulumi-python:dynamic/local:LoadBalancer``)."""

    lb_id: pulumi.Output[str]
    address: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(LocalLoadBalancerProvider(props.get("state_dir")), name,
                         {**props, **{k: None for k in LB_OUTPUTS}}, opts)


class LocalFleet(Fleet):
    """Members (LocalVirtualMachine children) behind HAProxy, made once the member hosts exist."""

    settings: LocalSettings

    def declare_load_balancer(self) -> tuple[Any, Any]:
        props: dict[str, Any] = {
            "fleet": self.fleet.to_data(),
            "members": [{"name": name, "host_id": vm.host.host_id} for name, vm in self.vms.items()],
        }
        if self.settings.state_dir:
            props["state_dir"] = self.settings.state_dir
        lb = LocalLoadBalancerResource(f"{self.fleet.name}-lb", props,
                                       opts=self.child_opts(depends_on=[vm.host for vm in self.vms.values()]))
        return [lb.address], None
