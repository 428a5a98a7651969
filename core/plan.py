"""Offline plan: run the Pulumi program under Pulumi's mock runtime and record the resource tree.

No credentials, no network, no Pulumi CLI. Outputs a cloud would compute (ids, addresses) are made up by
the mocks; backends contribute plausible ones through ``Backend.mock_outputs``/``mock_calls``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pulumi
from pulumi.runtime import mocks as _mocks

from .backend import Backend
from .spec import VmSpec

REDACTED = "[secret]"
_SECRET_MARKERS = ("PRIVATE KEY", "#cloud-config")


@dataclass
class PlannedResource:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    parent: str | None
    id: str | None = None
    children: list["PlannedResource"] = field(default_factory=list)

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        return {"type": self.type, "name": self.name,
                "inputs": redact_secrets(self.inputs) if redact else self.inputs,
                "children": [c.to_dict(redact) for c in self.children]}


def redact_secrets(value: Any) -> Any:
    """Replace Pulumi secrets and anything that carries key material or cloud-init user data."""
    from pulumi.runtime import rpc

    if isinstance(value, str):
        return REDACTED if any(m in value for m in _SECRET_MARKERS) else value
    if isinstance(value, Mapping):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return REDACTED
        return {k: redact_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    return value


def _urn_type(urn: str) -> str:
    """The resource's own type token from a URN (the last element of its type chain)."""
    return urn.split("::")[2].split("$")[-1]


def _fake_id(typ: str, name: str) -> str:
    return f"{name}-{hashlib.sha256(f'{typ}/{name}'.encode()).hexdigest()[:8]}"


_MOCK_ED25519_PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockHostKeyMockHostKeyMockHostKeyMockHost"

#: Outputs of the non-cloud resources core itself declares (the generated host key).
CORE_MOCK_OUTPUTS: dict[str, Callable[[str, dict], dict]] = {
    "tls:index/privateKey:PrivateKey": lambda name, inputs: {
        "public_key_openssh": f"{_MOCK_ED25519_PUB} {name}\n",
        "private_key_openssh": "-----BEGIN OPENSSH PRIVATE KEY-----\nmock\n-----END OPENSSH PRIVATE KEY-----\n",
        "public_key_fingerprint_sha256": "SHA256:mock",
    },
}


class PlanMocks(pulumi.runtime.Mocks):
    """Echo inputs as outputs, add backend-contributed outputs, record every resource and call."""

    def __init__(self, backends: Sequence[Backend] = ()) -> None:
        self.outputs: dict[str, Callable[[str, dict], dict]] = dict(CORE_MOCK_OUTPUTS)
        self.calls_by_token: dict[str, Callable[[dict], dict]] = {}
        for be in backends:
            self.outputs.update(getattr(be, "mock_outputs", {}) or {})
            self.calls_by_token.update(getattr(be, "mock_calls", {}) or {})
        self.resources: list[tuple[str, str, dict, bool, str]] = []
        self.calls: list[tuple[str, dict]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        rid = _fake_id(args.typ, args.name)
        state = dict(args.inputs)
        extra = self.outputs.get(args.typ)
        if extra is not None:
            more = dict(extra(args.name, dict(args.inputs)))
            rid = more.pop("id", rid)
            state.update(more)
        self.resources.append((args.typ, args.name, dict(args.inputs), bool(args.custom), rid))
        return (rid if args.custom else None), state

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        fn = self.calls_by_token.get(args.token)
        return fn(dict(args.args)) if fn else {}


class RecordingMonitor(_mocks.MockMonitor):
    """The mock monitor, also remembering each resource's URN and parent URN (for the tree)."""

    def __init__(self, mocks: PlanMocks) -> None:
        super().__init__(mocks)
        self.registered: list[tuple[str, str, str, str, bool]] = []  # urn, parent, type, name, custom

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append((resp.urn, request.parent, request.type, request.name, bool(request.custom)))
        return resp


@dataclass
class Plan:
    backend: str
    resources: list[PlannedResource]
    calls: list[tuple[str, dict]]
    outputs: dict[str, Any]

    @property
    def roots(self) -> list[PlannedResource]:
        return [r for r in self.resources if r.parent is None]

    def by_type(self, typ: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == typ]

    def children_of(self, parent: PlannedResource) -> list[PlannedResource]:
        return [r for r in self.resources if r.parent == parent.urn]

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "offline": True,
                "note": "offline rendering under Pulumi's mock runtime; ids and addresses are made up",
                "resources": [r.to_dict() for r in self.roots],
                "outputs": redact_secrets(self.outputs)}


def _drop_aliases(args: Any) -> Any:
    if args.opts.aliases:
        opts = copy.copy(args.opts)
        opts.aliases = None
        return pulumi.ResourceTransformationResult(args.props, opts)
    return None


def run_mocked(program: Callable[[], Any], backends: Sequence[Backend] = (), *, project: str = "polyvm",
               stack: str = "plan", config: Mapping[str, Any] | None = None) -> tuple[Any, PlanMocks,
                                                                                       RecordingMonitor]:
    """Run ``program`` under the mock runtime, wait for every registration, return what it returned."""
    from pulumi.runtime import settings as _settings
    from pulumi.runtime.config import set_all_config
    from pulumi.runtime.sync_await import _sync_await

    mocks = PlanMocks(backends)
    monitor = RecordingMonitor(mocks)
    # A fresh root stack for each run, so several plans can run in one process.
    _settings.set_root_resource(None)  # type: ignore[arg-type]
    set_all_config({f"{k}": v if isinstance(v, str) else json.dumps(v) for k, v in (config or {}).items()})
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)

    result: dict[str, Any] = {}

    def body() -> Any:
        # An offline plan has no prior state, so aliases mean nothing; azure-native gives every resource
        # ~37 of them and Pulumi turns each into Outputs: dropping them makes azure plans ~10x faster
        # (docs/performance.md) and changes no resource, input or output.
        pulumi.runtime.register_stack_transformation(_drop_aliases)
        result["value"] = program()

    _settings.SETTINGS.rpc_manager.clear()
    _settings.SETTINGS.outputs.clear()
    from pulumi.runtime.stack import run_pulumi_func

    _sync_await(run_pulumi_func(body))
    return result.get("value"), mocks, monitor


def _resolve(value: Any) -> Any:
    """Plain value of an Output (or nested structure of them) after a mocked run."""
    from pulumi.runtime.sync_await import _sync_await

    if isinstance(value, pulumi.Output):
        return _resolve(_sync_await(value.future()))
    if isinstance(value, Mapping):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolve(v) for v in value]
    return value


def plan(backend: Backend, specs: Sequence[VmSpec], settings: Mapping[str, Any] | None = None,
         backends: Sequence[Backend] = ()) -> Plan:
    """Declare ``specs`` through ``backend`` under mocks and return the recorded resource tree and outputs."""
    from .backend import OUTPUT_NAMES
    from .program import declare

    def program() -> Any:
        vms = declare(backend, specs, settings, export=False)
        return {name: {k: getattr(vm, k) for k in OUTPUT_NAMES} for name, vm in vms.items()}

    value, mocks, monitor = run_mocked(program, list(backends) or [backend])
    outputs = _resolve(value) or {}
    inputs = {(t, n): (i, rid) for t, n, i, _c, rid in mocks.resources}
    planned: list[PlannedResource] = []
    by_urn: dict[str, PlannedResource] = {}
    stack_urn_marker = "pulumi:pulumi:Stack"
    for urn, parent, typ, name, custom in monitor.registered:
        inp, rid = inputs.get((typ, name), ({}, None))
        parent_urn = parent if parent and _urn_type(parent) != stack_urn_marker else None
        res = PlannedResource(urn=urn, type=typ, name=name, inputs=inp, custom=custom, parent=parent_urn,
                              id=rid if custom else None)
        planned.append(res)
        by_urn[urn] = res
    for res in planned:
        if res.parent and res.parent in by_urn:
            by_urn[res.parent].children.append(res)
    return Plan(backend=backend.name, resources=planned, calls=mocks.calls, outputs=outputs)
