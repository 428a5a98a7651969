"""The ComponentResource base every backend's VirtualMachine derives from."""

from __future__ import annotations

from typing import Any, Mapping

import pulumi

from .backend import OUTPUT_NAMES
from .spec import VmSpec


class VirtualMachine(pulumi.ComponentResource):
    """One VM as one component, type ``polyvm:<backend>:VirtualMachine``.

    Subclasses create their children with ``opts=self.child_opts()`` and end with :meth:`finish`, which
    sets the common outputs and calls ``register_outputs`` last.
    """

    public_ip: pulumi.Output[Any]
    private_ip: pulumi.Output[Any]
    ssh_user: pulumi.Output[str]
    host_key: pulumi.Output[Any]
    data_disk_devices: pulumi.Output[Mapping[str, str]]

    def __init__(self, backend: str, spec: VmSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"polyvm:{backend}:VirtualMachine", spec.name, None, opts)
        self.spec = spec
        self.backend_name = backend

    def child_opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a child: parented to this component (and its provider, when one is set)."""
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def finish(self, *, public_ip: Any, private_ip: Any, ssh_user: Any, host_key: Any,
               data_disk_devices: Any) -> None:
        values = dict(public_ip=public_ip, private_ip=private_ip, ssh_user=ssh_user, host_key=host_key,
                      data_disk_devices=data_disk_devices)
        assert tuple(values) == OUTPUT_NAMES
        for k, v in values.items():
            setattr(self, k, pulumi.Output.from_input(v))
        self.register_outputs({k: getattr(self, k) for k in OUTPUT_NAMES})
