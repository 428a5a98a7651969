"""polyvm-fakecloud: a third-party polyvm backend, as a worked example (see docs/writing-a-backend.md).

This module is what the ``polyvm`` entry point names. It must import cheaply and must not import the
cloud SDK (pulumi-random here): polyvm imports every plugin to list backends, and users without the SDK
still get ``polyvm backends`` and a one-line install hint instead of a traceback.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from pydantic import Field, field_validator

from polyvm import hookimpl
from polyvm.backend import Backend, BackendSettings, Capabilities, Replacement
from polyvm.spec import VmSpec

from . import mapping as m


class FakeCloudSettings(BackendSettings):
    """Pulumi config ``polyvm:fakecloud`` (unknown keys are rejected by BackendSettings)."""

    public_network: str = Field(default="198.51.100.0/24", description="IPv4 /24 public addresses come from.")
    private_network: str = Field(default="10.77.0.0/24", description="IPv4 /24 private addresses come from.")

    @field_validator("public_network", "private_network")
    @classmethod
    def _slash24(cls, v: str) -> str:
        try:
            net = ipaddress.IPv4Network(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 network like 198.51.100.0/24") from None
        if net.prefixlen != 24:
            raise ValueError(f"{v!r} must be a /24")
        return v


def _hex(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


class FakeCloudBackend(Backend):
    name = "fakecloud"
    description = "Example third-party backend: a fake cloud made of pulumi-random resources"
    capabilities = Capabilities(
        firewall="cloud",
        egress="all",
        max_data_disks=4,
        public_ip=True,
        private_ip_only=True,
        host_key_at_creation=False,   # no cloud-init here: the first SSH connection trusts on first use
        os_families=frozenset({"ubuntu", "debian"}),
        instance_type_override=False,
        image_id_override=False,
        regions=False,
        zones=False,
        notes="An example, not a cloud: nothing boots.",
    )
    settings_model = FakeCloudSettings
    # The SDK, imported only when declaring; `extra` names the polyvm extra in the install hint
    # (polyvm[postgres] is the one that brings pulumi-random).
    sdk_modules = ("pulumi_random",)
    extra = "postgres"
    # Which inputs force a new resource (pulumi-random: every argument of these resources is ForceNew,
    # terraform-provider-random internal/provider/resource_*.go RequiresReplace), and which resources
    # are data disks (their replacement or deletion is flagged as data loss by `polyvm plan --against`).
    replacements = (
        Replacement("random:index/randomPet:RandomPet", ("keepers", "prefix", "length", "separator"),
                    "terraform-provider-random resource_pet.go"),
        Replacement("random:index/randomInteger:RandomInteger", ("keepers", "min", "max", "seed"),
                    "terraform-provider-random resource_integer.go"),
        Replacement("random:index/randomUuid:RandomUuid", ("keepers",), "terraform-provider-random resource_uuid.go"),
        Replacement("random:index/randomId:RandomId", ("keepers", "byteLength", "prefix"),
                    "terraform-provider-random resource_id.go"),
    )
    data_disk_types = frozenset({"random:index/randomId:RandomId"})
    # What the "cloud" would compute, for offline plans and the contract suite (inputs are camelCase).
    mock_outputs = {
        "random:index/randomPet:RandomPet": lambda name, inputs: {"id": f"{name}-mock-lemur"},
        "random:index/randomInteger:RandomInteger": lambda name, inputs: {
            "result": 10 + int(_hex(name), 16) % 240},
        "random:index/randomId:RandomId": lambda name, inputs: {"hex": _hex(name), "b64Url": _hex(name)},
        "random:index/randomUuid:RandomUuid": lambda name, inputs: {
            "result": "4b6f5c1e-0000-4000-8000-" + _hex(name)[:12]},
    }

    def create(self, spec: VmSpec, settings: BackendSettings, opts: Any = None) -> Any:
        from .component import FakeCloudVirtualMachine  # the SDK is imported here, not above

        assert isinstance(settings, FakeCloudSettings)
        return FakeCloudVirtualMachine(spec, settings, opts)

    # --- reading a plan back (the contract suite compares these with the spec) ----------------------
    def _one(self, plan: Any, typ: str) -> Any:
        (res,) = plan.by_type(typ)
        return res

    def planned_ingress(self, plan: Any) -> set:
        return m.parse_rules(self._one(plan, "random:index/randomUuid:RandomUuid").inputs["keepers"]["ingress"])

    def planned_egress(self, plan: Any) -> set:
        return m.parse_rules(self._one(plan, "random:index/randomUuid:RandomUuid").inputs["keepers"]["egress"])

    def planned_disks(self, plan: Any) -> dict[str, int]:
        return {r.inputs["keepers"]["disk"]: int(r.inputs["keepers"]["size_gb"])
                for r in plan.by_type("random:index/randomId:RandomId")}

    def planned_tags(self, plan: Any) -> dict[str, str]:
        return m.parse_tags(self._one(plan, "random:index/randomPet:RandomPet").inputs["keepers"])


@hookimpl
def polyvm_register_backends(register):
    register(FakeCloudBackend())
