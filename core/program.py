"""The Pulumi program body, shared by examples/postgres-vm, ``polyvm plan`` and the tests.

Reads ``polyvm:backend`` and ``polyvm:vm`` (one spec) or ``polyvm:vms`` (a list) or ``polyvm:fleet``
(one fleet, docs/fleets.md) from Pulumi config, validates everything before declaring anything, and
declares each VM (or the fleet) through the chosen backend.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import pulumi

from .backend import FLEET_OUTPUT_NAMES, OUTPUT_NAMES, Backend
from .errors import ConfigError, PolyvmError, SpecError
from .fleet import FleetSpec, fleet_from_config
from .plugins import get_backend
from .spec import VmSpec, specs_from_values

#: Hook for what runs after a VM is declared (the postgres example passes the recipe here).
AfterVm = Callable[[VmSpec, Any], None]


def specs_from_config(cfg: pulumi.Config) -> tuple[str, list[VmSpec], Mapping[str, Any]]:
    """(backend name, specs, backend settings) from the ``polyvm`` config namespace; all problems at once."""
    backend = cfg.get("backend")
    if not backend:
        raise ConfigError("Pulumi config polyvm:backend is not set: pulumi config set polyvm:backend aws")
    specs = specs_from_values(cfg.get_object("vm"), cfg.get_object("vms"), source="Pulumi config")
    return backend, specs, cfg.get_object(backend) or {}


def check(be: Backend, specs: Sequence[VmSpec], settings: Mapping[str, Any] | None) -> tuple[Any, list[str]]:
    """(parsed settings or None, every problem) of declaring ``specs`` through ``be`` with ``settings``:
    what :func:`declare` refuses, and what ``polyvm validate --backend`` reports."""
    problems: list[str] = []
    parsed = None
    try:
        parsed = be.parse_settings(settings)
    except SpecError as exc:
        problems += exc.problems
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"VM names must be unique; repeated: {', '.join(dup)}")
    for spec in specs:
        problems += [f"{spec.name}: {p}" for p in _unsupported(be, spec)]
        if parsed is not None:
            problems += [f"{spec.name}: {p}" for p in be.settings_problems(spec, parsed)]
    return parsed, problems


def declare(backend: Backend | str, specs: Sequence[VmSpec], settings: Mapping[str, Any] | None = None,
            *, after: AfterVm | None = None, export: bool = True) -> dict[str, Any]:
    """Validate every spec against the backend, then declare them. Returns {vm name: component}."""
    be = get_backend(backend) if isinstance(backend, str) else backend
    parsed, problems = check(be, specs, settings)
    if problems:
        raise SpecError(problems)
    vms = {}
    for spec in specs:
        vm = be.declare(spec, parsed)
        vms[spec.name] = vm
        if export:
            pulumi.export(spec.name, {k: getattr(vm, k) for k in OUTPUT_NAMES})
        if after is not None:
            after(spec, vm)
    return vms


def declare_fleet(backend: Backend | str, fleet: FleetSpec, settings: Mapping[str, Any] | None = None,
                  *, export: bool = True) -> Any:
    """Validate the fleet (its load balancer, the settings, every member) against the backend, then
    declare it as one ``polyvm:<backend>:Fleet`` component; exported under the fleet's name."""
    be = get_backend(backend) if isinstance(backend, str) else backend
    comp = be.declare_fleet(fleet, settings)
    if export:
        pulumi.export(fleet.name, {k: getattr(comp, k) for k in FLEET_OUTPUT_NAMES})
    return comp


def _unsupported(be: Backend, spec: VmSpec) -> list[str]:
    try:
        be.check(spec)
    except SpecError as exc:
        return exc.problems
    return []


def run(after: AfterVm | None = None) -> dict[str, Any]:
    """Entry point for a Pulumi program's __main__.py. A PolyvmError stops the run with its message only."""
    try:
        cfg = pulumi.Config("polyvm")
        if cfg.get_object("fleet") is not None:
            if cfg.get_object("vm") is not None or cfg.get_object("vms") is not None:
                raise ConfigError("Pulumi config has polyvm:fleet and polyvm:vm/vms: a stack declares either "
                                  "one fleet or its VMs; use one stack for each")
            backend, fleet, fleet_settings = fleet_from_config(cfg)
            return {fleet.name: declare_fleet(backend, fleet, fleet_settings)}
        backend, specs, settings = specs_from_config(cfg)
        return declare(backend, specs, settings, after=after)
    except PolyvmError as exc:
        # pulumi.RunError prints the message without a Python traceback.
        raise pulumi.RunError(str(exc)) from None
