"""polyvm-motd: a message of the day on every host, as a polyvm recipe plugin."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from polyvm import hookimpl
from polyvm.provisioners.steps import CopyFile, RunCommand
from polyvm.recipe import Recipe

MOTD_PATH = "/etc/motd"


class MotdInputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str = Field(default="This host is managed by polyvm.", max_length=2000)
    show_hostname: bool = True

    @field_validator("message")
    @classmethod
    def _printable(cls, v: str) -> str:
        if any(ord(c) < 32 and c not in "\n\t" for c in v):
            raise ValueError("contains control characters")
        return v


def render(inputs: MotdInputs, host_label: str) -> str:
    head = f"{host_label}: " if inputs.show_hostname else ""
    return head + inputs.message.rstrip("\n") + "\n"


class Motd(Recipe):
    name = "motd"
    description = "a message of the day (/etc/motd) on every host (third-party example)"
    inputs_model = MotdInputs

    def steps(self, inputs: Any, host: Any, facts: Any) -> list:
        return [
            CopyFile(render(inputs, host.label), MOTD_PATH, mode=0o644, owner="root", group="root", name="motd"),
            # Read back what login shows; changes nothing.
            RunCommand(f"cat {MOTD_PATH}", name="check motd", changed_when="never"),
        ]

    def outputs(self, inputs: Any, host: Any) -> dict[str, Any]:
        return {"address": host.address, "motd": render(inputs, host.label)}


@hookimpl
def polyvm_register_recipes(register):
    register(Motd())
