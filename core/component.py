"""The ComponentResource base every backend's VirtualMachine derives from."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pulumi

from .backend import OUTPUT_NAMES, BackendSettings
from .spec import VmSpec


class VirtualMachine(pulumi.ComponentResource):
    """One VM as one component, type ``polyvm:<backend>:VirtualMachine``.

    Subclasses create their children with :meth:`child` (or ``opts=self.child_opts()``) and end with
    :meth:`finish`, which sets the common outputs and calls ``register_outputs`` last.

    With ``settings.renamed`` naming this VM's previous name, the component and every child made with
    :meth:`child` carry a Pulumi alias to their name under the previous VM name, so a rename keeps
    their identity (no delete and create). Children marked ``data=True`` (data disks, or the resource
    holding them) are protected and retained on delete unless ``settings.protect_data_disks`` is false.
    """

    public_ip: pulumi.Output[Any]
    private_ip: pulumi.Output[Any]
    ssh_user: pulumi.Output[str]
    host_key: pulumi.Output[Any]
    data_disk_devices: pulumi.Output[Mapping[str, str]]

    def __init__(self, backend: str, spec: VmSpec, opts: pulumi.ResourceOptions | None = None,
                 settings: BackendSettings | None = None) -> None:
        self.settings = settings if settings is not None else BackendSettings()
        self.previous_name: str | None = self.settings.renamed.get(spec.name)
        if self.previous_name:
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                aliases=[pulumi.Alias(name=self.previous_name)]))
        super().__init__(f"polyvm:{backend}:VirtualMachine", spec.name, None, opts)
        self.spec = spec
        self.backend_name = backend

    def child_opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a child: parented to this component (and its provider, when one is set)."""
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def child(self, name: str | Callable[[str], str], *, data: bool = False,
              **kwargs: Any) -> tuple[str, pulumi.ResourceOptions]:
        """(resource name, options) for a child. ``name`` is a suffix (``"vm"`` -> ``"<vm>-vm"``) or a
        function of the VM name; the options alias the child to the name the same function gives for
        the VM's previous name, and protect a ``data`` child (see the class docstring)."""
        name_of = name if callable(name) else (lambda vm, _s=name: f"{vm}-{_s}")
        if self.previous_name:
            kwargs["aliases"] = [*kwargs.get("aliases", []), pulumi.Alias(name=name_of(self.previous_name))]
        if data and self.settings.protect_data_disks:
            kwargs.setdefault("protect", True)
            kwargs.setdefault("retain_on_delete", True)
        return name_of(self.spec.name), self.child_opts(**kwargs)

    def finish(self, *, public_ip: Any, private_ip: Any, ssh_user: Any, host_key: Any,
               data_disk_devices: Any) -> None:
        values = dict(public_ip=public_ip, private_ip=private_ip, ssh_user=ssh_user, host_key=host_key,
                      data_disk_devices=data_disk_devices)
        assert tuple(values) == OUTPUT_NAMES
        for k, v in values.items():
            setattr(self, k, pulumi.Output.from_input(v))
        self.register_outputs({k: getattr(self, k) for k in OUTPUT_NAMES})
