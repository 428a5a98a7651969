"""Offline plan: run the Pulumi program under Pulumi's mock runtime and record the resource tree.

No credentials, no network, no Pulumi CLI. Outputs a cloud would compute (ids, addresses) are made up by
the mocks; backends contribute plausible ones through ``Backend.mock_outputs``/``mock_calls``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pulumi
from pulumi.runtime import mocks as _mocks

from .backend import Backend
from .spec import VmSpec

if TYPE_CHECKING:
    from .fleet import FleetSpec

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
    #: Resource options as registered: protect, retain_on_delete, delete_before_replace (bools),
    #: ignore_changes, replace_on_changes, aliases (names given as pulumi.Alias(name=...)), depends_on (URNs).
    options: dict[str, Any] = field(default_factory=dict)
    #: Input name -> URNs of the resources its value came from (Pulumi's property dependencies).
    dependencies: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        return {"type": self.type, "name": self.name,
                "inputs": redact_secrets(self.inputs) if redact else self.inputs,
                "children": [c.to_dict(redact) for c in self.children]}


def is_secret(value: Any) -> bool:
    """Whether a recorded (serialized) value is a Pulumi secret."""
    from pulumi.runtime import rpc

    return isinstance(value, Mapping) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def reveal(value: Any) -> Any:
    """A recorded value with every Pulumi secret replaced by its plain value (for comparing plans)."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, Mapping):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [reveal(v) for v in value]
    return value


def redact_secrets(value: Any) -> Any:
    """Replace Pulumi secrets and anything that carries key material or cloud-init user data."""
    if isinstance(value, str):
        return REDACTED if any(m in value for m in _SECRET_MARKERS) else value
    if isinstance(value, Mapping):
        if is_secret(value):
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


#: asyncio loops made for the mock monitor's executor threads (closed by close_event_loop).
_WORKER_LOOPS: list[Any] = []
_WORKER_LOCK = threading.Lock()


def _worker_loop() -> None:
    """Give a mock-monitor executor thread an event loop that close_event_loop() will close."""
    import asyncio

    if threading.current_thread() is threading.main_thread():
        return
    try:
        asyncio.get_event_loop_policy().get_event_loop()
        return
    except RuntimeError:
        pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with _WORKER_LOCK:
        _WORKER_LOOPS.append(loop)


class RecordingMonitor(_mocks.MockMonitor):
    """The mock monitor, also remembering each resource's URN and parent URN (for the tree)."""

    def __init__(self, mocks: PlanMocks) -> None:
        super().__init__(mocks)
        self.registered: list[tuple[str, str, str, str, bool]] = []  # urn, parent, type, name, custom
        self.options: dict[str, dict[str, Any]] = {}  # urn -> resource options
        self.dependencies: dict[str, dict[str, list[str]]] = {}  # urn -> input -> urns
        #: (type, name) -> alias names, recorded by the stack transformation before it drops them.
        self.aliases: dict[tuple[str, str], list[str]] = {}

    # Pulumi's MockMonitor gives each executor thread its own asyncio loop (_ensure_event_loop) and never
    # closes it: make that loop here instead, so close_event_loop() can close it after the plan.
    def Invoke(self, request):
        _worker_loop()
        return super().Invoke(request)

    def ReadResource(self, request):
        _worker_loop()
        return super().ReadResource(request)

    def RegisterResource(self, request):
        _worker_loop()
        resp = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append((resp.urn, request.parent, request.type, request.name, bool(request.custom)))
            self.options[resp.urn] = {
                "protect": bool(request.protect), "retain_on_delete": bool(request.retainOnDelete),
                "delete_before_replace": bool(request.deleteBeforeReplace),
                "ignore_changes": list(request.ignoreChanges), "replace_on_changes": list(request.replaceOnChanges),
                "aliases": list(self.aliases.get((request.type, request.name), [])),
                "depends_on": list(request.dependencies),
            }
            self.dependencies[resp.urn] = {k: list(v.urns) for k, v in request.propertyDependencies.items()}
        return resp


@dataclass
class Plan:
    backend: str
    resources: list[PlannedResource]
    calls: list[tuple[str, dict]]
    outputs: dict[str, Any]

    @property
    def roots(self) -> list[PlannedResource]:
        return sorted((r for r in self.resources if r.parent is None), key=lambda r: (r.name, r.type))

    def by_type(self, typ: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == typ]

    def children_of(self, parent: PlannedResource) -> list[PlannedResource]:
        return [r for r in self.resources if r.parent == parent.urn]

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "offline": True,
                "note": "offline rendering under Pulumi's mock runtime; ids and addresses are made up",
                "resources": [r.to_dict() for r in self.roots],
                "outputs": redact_secrets(self.outputs)}


def _alias_dropper(monitor: RecordingMonitor) -> Callable[[Any], Any]:
    def drop(args: Any) -> Any:
        if args.opts.aliases:
            names = [a.name for a in args.opts.aliases if isinstance(a, pulumi.Alias) and isinstance(a.name, str)]
            if names:
                monitor.aliases[(args.type_, args.name)] = names
            opts = copy.copy(args.opts)
            opts.aliases = None
            return pulumi.ResourceTransformationResult(args.props, opts)
        return None

    return drop


def run_mocked(program: Callable[[], Any], backends: Sequence[Backend] = (), *, project: str = "polyvm",
               stack: str = "plan", config: Mapping[str, Any] | None = None,
               calls: Mapping[str, Any] | None = None) -> tuple[Any, PlanMocks, RecordingMonitor]:
    """Run ``program`` under the mock runtime, wait for every registration, return what it returned.
    ``calls`` overrides the backends' invoke mocks (token -> function of the arguments)."""
    from pulumi.runtime import settings as _settings
    from pulumi.runtime.config import set_all_config
    from pulumi.runtime.sync_await import _sync_await

    mocks = PlanMocks(backends)
    mocks.calls_by_token.update(calls or {})
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
        pulumi.runtime.register_stack_transformation(_alias_dropper(monitor))
        result["value"] = program()

    _settings.SETTINGS.rpc_manager.clear()
    _settings.SETTINGS.outputs.clear()
    from pulumi.runtime.stack import run_pulumi_func

    _sync_await(run_pulumi_func(body))
    return result.get("value"), mocks, monitor


def close_event_loop() -> None:
    """Close the asyncio loops the mock runtime ran on: the main thread's (Pulumi's ``_sync_await`` makes one
    and never closes it) and one per executor thread of the mock monitor (Pulumi's MockMonitor makes those,
    :func:`_worker_loop` here). Left open, they are collected at interpreter exit and
    ``BaseEventLoop.__del__`` warns "unclosed event loop" -- a traceback on stderr when that runs while the
    interpreter is tearing modules down. The next plan in the same process gets new loops."""
    import asyncio
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            return
    if loop.is_running() or loop.is_closed():
        return
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    # Joins the executor threads the mock monitor ran in; then their loops can go too.
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
    asyncio.set_event_loop(None)
    # As before the first plan: the next asyncio.get_event_loop() in the main thread (Pulumi's own code
    # calls it) makes a new loop instead of raising "There is no current event loop".
    policy = asyncio.get_event_loop_policy()
    if hasattr(getattr(policy, "_local", None), "_set_called"):
        policy._local._set_called = False  # type: ignore[attr-defined]
    with _WORKER_LOCK:
        while _WORKER_LOOPS:
            _WORKER_LOOPS.pop().close()


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
         backends: Sequence[Backend] = (), *, calls: Mapping[str, Any] | None = None,
         after: Callable[[VmSpec, Any], None] | None = None, config: Mapping[str, Any] | None = None) -> Plan:
    """Declare ``specs`` through ``backend`` under mocks and return the recorded resource tree and outputs.
    ``calls`` overrides invoke results (e.g. a lookup answering with a newer image); ``after`` is what the
    program declares after each VM (``polyvm.program.declare(after=...)``, e.g. a recipe's resources), and
    ``config`` the Pulumi config it reads ("polyvm:postgres" -> value).
    Resources are in URN order and children in (name, type) order: two plans of the same inputs are equal."""
    from .backend import OUTPUT_NAMES
    from .program import declare

    def program() -> Any:
        vms = declare(backend, specs, settings, export=False, after=after)
        return {name: {k: getattr(vm, k) for k in OUTPUT_NAMES} for name, vm in vms.items()}

    return _recorded(backend, *run_mocked(program, list(backends) or [backend], calls=calls, config=config))


def plan_fleet(backend: Backend, fleet: "FleetSpec", settings: Mapping[str, Any] | None = None,
               backends: Sequence[Backend] = (), *, calls: Mapping[str, Any] | None = None,
               config: Mapping[str, Any] | None = None) -> Plan:
    """Declare ``fleet`` through ``backend`` under mocks (as the Pulumi program does for ``polyvm:fleet``);
    outputs: {fleet name: {members, lb_addresses, lb_dns_name}}."""
    from .backend import FLEET_OUTPUT_NAMES
    from .program import declare_fleet

    def program() -> Any:
        comp = declare_fleet(backend, fleet, settings, export=False)
        return {fleet.name: {k: getattr(comp, k) for k in FLEET_OUTPUT_NAMES}}

    return _recorded(backend, *run_mocked(program, list(backends) or [backend], calls=calls, config=config))


def plan_document(backend: Backend, document: "Sequence[VmSpec] | FleetSpec",
                  settings: Mapping[str, Any] | None = None, backends: Sequence[Backend] = (), *,
                  calls: Mapping[str, Any] | None = None, after: Callable[[VmSpec, Any], None] | None = None,
                  config: Mapping[str, Any] | None = None) -> Plan:
    """:func:`plan_fleet` for a FleetSpec, :func:`plan` for VM specs (what ``load_document`` returns);
    ``after`` applies to VM specs only (a fleet's members are provisioned by the fleet's own path)."""
    from .fleet import FleetSpec

    if isinstance(document, FleetSpec):
        return plan_fleet(backend, document, settings, backends, calls=calls, config=config)
    return plan(backend, document, settings, backends, calls=calls, after=after, config=config)


def _recorded(backend: Backend, value: Any, mocks: PlanMocks, monitor: RecordingMonitor) -> Plan:
    outputs = _resolve(value) or {}
    inputs = {(t, n): (i, rid) for t, n, i, _c, rid in mocks.resources}
    planned: list[PlannedResource] = []
    by_urn: dict[str, PlannedResource] = {}
    stack_urn_marker = "pulumi:pulumi:Stack"
    # Registration order depends on when each Output resolves: sort, so plans are deterministic.
    for urn, parent, typ, name, custom in sorted(monitor.registered, key=lambda r: r[0]):
        inp, rid = inputs.get((typ, name), ({}, None))
        parent_urn = parent if parent and _urn_type(parent) != stack_urn_marker else None
        res = PlannedResource(urn=urn, type=typ, name=name, inputs=inp, custom=custom, parent=parent_urn,
                              id=rid if custom else None, options=monitor.options.get(urn, {}),
                              dependencies=monitor.dependencies.get(urn, {}))
        planned.append(res)
        by_urn[urn] = res
    for res in planned:
        if res.parent and res.parent in by_urn:
            by_urn[res.parent].children.append(res)
    for res in planned:
        res.children.sort(key=lambda c: (c.name, c.type))
    return Plan(backend=backend.name, resources=planned, calls=mocks.calls, outputs=outputs)


# --- comparing two plans (polyvm plan --against) --------------------------------------------------------
CREATE, UPDATE, REPLACE, DELETE = "create", "update in place", "REPLACE", "delete"
#: Only inputs under ignore_changes differ: `pulumi up` leaves the resource as it is (e.g. a newer image
#: pinned away, a vSphere template change); listed so the user sees what is not applied.
IGNORED = "no change (ignored)"


@dataclass
class Change:
    """What ``pulumi up`` would do to one cloud resource going from one plan to another."""

    action: str
    type: str
    name: str
    #: The changed inputs; for a replacement the ones forcing it ("ami", "instanceId (from replaced x)").
    inputs: list[str] = field(default_factory=list)
    #: The resource is (or holds) a data disk and is replaced or deleted: its data is gone.
    data_loss: bool = False
    #: The resource is protected: Pulumi refuses this replacement or deletion until protect is lifted.
    protected: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "type": self.type, "name": self.name, "inputs": self.inputs,
                "data_loss": self.data_loss, "protected": self.protected}


def _segments(path: str) -> list[str]:
    """Pulumi property path -> keys: 'a.b' -> [a, b]; 'extraConfig["guestinfo.userdata"]' -> [extraConfig, guestinfo.userdata]."""
    return [quoted or plain for quoted, plain in re.findall(r'\["([^"]+)"\]|([^.\[\]]+)', path)]


def _get(value: Any, path: str | list[str]) -> Any:
    """The value at a property path of recorded inputs; through a list, the list of each item's value."""
    segs = _segments(path) if isinstance(path, str) else path
    for i, seg in enumerate(segs):
        if isinstance(value, list):
            return [_get(v, segs[i:]) for v in value]
        if not isinstance(value, Mapping):
            return None
        value = value.get(seg)
    return value


def _without(value: Any, path: str | list[str]) -> Any:
    """``value`` with the property path removed (ignore_changes), through lists item by item."""
    segs = _segments(path) if isinstance(path, str) else path
    if isinstance(value, list):
        return [_without(v, segs) for v in value]
    if not segs or not isinstance(value, Mapping) or segs[0] not in value:
        return value
    out = dict(value)
    if len(segs) > 1:
        out[segs[0]] = _without(out[segs[0]], segs[1:])
    else:
        del out[segs[0]]
    return out


def _aliased_urn(urn: str, alias: str) -> str:
    return urn.rsplit("::", 1)[0] + "::" + alias


def diff(backend: Backend, old: Plan, new: Plan) -> list[Change]:
    """Per cloud resource: create / update in place / REPLACE / delete going from ``old`` to ``new``.

    Resources are matched by URN or by an alias of the new one. A changed input listed in the backend's
    :attr:`~polyvm.backend.Backend.replacements` (or in replace_on_changes) replaces the resource, unless
    ignore_changes covers it; a replacement cascades into resources whose forcing input takes a value
    from a replaced one. Resources without changes are not listed."""
    old_by_urn = {r.urn: r for r in old.resources if r.custom}
    pairs: dict[str, tuple[PlannedResource, PlannedResource]] = {}
    created: list[PlannedResource] = []
    for res in (r for r in new.resources if r.custom):
        prev = old_by_urn.get(res.urn)
        for alias in res.options.get("aliases", []):
            prev = prev or old_by_urn.get(_aliased_urn(res.urn, alias))
        if prev is None or any(prev is p for p, _n in pairs.values()):
            created.append(res)
        else:
            pairs[res.urn] = (prev, res)
    changes: dict[str, Change] = {}
    replaced: set[str] = set()
    kept = set(pairs)  # resources that keep their state (and so their outputs), until found replaced
    ignored_by: dict[str, list[str]] = {}
    for urn, (prev, res) in pairs.items():
        o, n = reveal(prev.inputs), reveal(res.inputs)
        for path in res.options.get("ignore_changes", []):
            if _get(o, path) != _get(n, path):
                ignored_by.setdefault(urn, []).append(path)
            o, n = _without(o, path), _without(n, path)
        # An input taken from a kept resource's outputs keeps that resource's state value (e.g. an
        # autoname preserved through an alias), whatever the mock made up this time.
        for inp, deps in res.dependencies.items():
            if deps and all(d in kept for d in deps) and inp in o and inp in n:
                n[inp] = o[inp]
        changed = sorted(k for k in set(o) | set(n) if not k.startswith("__") and o.get(k) != n.get(k))
        forcing = [p for p in (*(backend.replacement_inputs(res.type) or ()), *res.options.get("replace_on_changes", []))
                   if _get(o, p) != _get(n, p)]
        if forcing:
            changes[urn] = Change(REPLACE, res.type, res.name, forcing)
            replaced.add(urn)
        elif changed:
            changes[urn] = Change(UPDATE, res.type, res.name, changed)
    names = {r.urn: r.name for r in new.resources}
    grew = True
    while grew:  # a replaced resource gets a new id: inputs taking it change, forcing ones replace
        grew = False
        for urn, (prev, res) in pairs.items():
            if urn in replaced:
                continue
            ignored = res.options.get("ignore_changes", [])
            forcing_tops = {_segments(p)[0] for p in (backend.replacement_inputs(res.type) or ())}
            for inp, deps in res.dependencies.items():
                hit = [d for d in deps if d in replaced]
                if not hit or inp in ignored:
                    continue
                why = f"{inp} (from replaced {names.get(hit[0], hit[0])})"
                if inp in forcing_tops:
                    changes[urn] = Change(REPLACE, res.type, res.name, [why])
                    replaced.add(urn)
                    grew = True
                    break
                ch = changes.setdefault(urn, Change(UPDATE, res.type, res.name, []))
                if why not in ch.inputs:
                    ch.inputs.append(why)
    out = [Change(CREATE, r.type, r.name) for r in created]
    for urn, (prev, res) in pairs.items():
        ch = changes.get(urn)
        if ch is None:
            if urn in ignored_by:
                out.append(Change(IGNORED, res.type, res.name, ignored_by[urn]))
            continue
        if ch.action == REPLACE:
            ch.data_loss = backend.holds_data(res.type, reveal(prev.inputs))
            ch.protected = bool(prev.options.get("protect"))
        out.append(ch)
    matched_old = {id(p) for p, _n in pairs.values()}
    for prev in old_by_urn.values():
        if id(prev) not in matched_old:
            out.append(Change(DELETE, prev.type, prev.name, data_loss=backend.holds_data(prev.type, reveal(prev.inputs)),
                              protected=bool(prev.options.get("protect"))))
    return out
