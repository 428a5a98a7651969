"""The local VirtualMachine component: one dynamic resource (the host) under the common component."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi.dynamic

from polyvm.component import VirtualMachine
from polyvm.spec import VmSpec

from . import LocalSettings, recipe_leftovers
from . import mapping as m
from .provider import LocalHostProvider


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
        props = m.host_props(spec, scrub=recipe_leftovers() if settings.fresh else ())
        if settings.state_dir:
            props["state_dir"] = settings.state_dir
        host = LocalHost(f"{spec.name}-host", props, opts=self.child_opts())
        self.finish(
            public_ip=host.guest_ip if spec.public_ip else None,
            private_ip=host.guest_ip,
            ssh_user=spec.ssh.user,
            host_key=host.host_key,
            data_disk_devices=host.disk_devices,
        )
