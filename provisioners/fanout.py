"""Run steps on many hosts at once: bounded parallelism, a live progress display, a per-host summary.

One host's failure never stops the others; when all are done, :class:`FanoutError` lists every host that
failed (with the whole :class:`FanoutResult` as its ``result``). :func:`run_recipe` is the one way to run a
recipe over SSH: per host, the guest baseline and then the recipe's steps, batched by apply_steps.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

from polyvm.errors import FanoutError

from .connection import Connection
from .steps import Step, StepResult, apply_steps

if TYPE_CHECKING:
    from pydantic import BaseModel

    from polyvm.host import Facts, Host
    from polyvm.recipe import Recipe

#: Hosts handled at once unless told otherwise. Each host's run is mostly waiting for round trips, so on a
#: slow link the number of waves decides the time: measured at 100 ms RTT (docs/performance.md, "Scale"),
#: 200 hosts take 12.0 s with 16 workers, 5.7 s with 64, 4.6 s with 128; 64 costs ~5 MiB more client
#: memory than 16 and is as fast on a fast link. Never more workers than hosts.
DEFAULT_PARALLEL = 64

StepsFor = Sequence[Step] | Callable[[Connection], Sequence[Step]]
T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, parallel: int = DEFAULT_PARALLEL,
                 names: Sequence[str] | None = None) -> tuple[dict[str, R], dict[str, BaseException]]:
    """``fn`` on every item, at most ``parallel`` at a time; one item's failure never stops the others.
    Returns (results, failures), both keyed by ``names`` (default: the items' str), in item order."""
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    keys = list(names) if names is not None else [str(i) for i in items]
    done: dict[str, R] = {}
    failed: dict[str, BaseException] = {}

    def one(key: str, item: T) -> None:
        try:
            done[key] = fn(item)
        except Exception as exc:  # noqa: BLE001 - collected and reported together
            failed[key] = exc

    if len(items) == 1:
        one(keys[0], items[0])
    else:
        with ThreadPoolExecutor(max_workers=min(parallel, max(1, len(items))),
                                thread_name_prefix="polyvm-fanout") as pool:
            list(pool.map(lambda ki: one(*ki), zip(keys, items)))
    return ({k: done[k] for k in keys if k in done}, {k: failed[k] for k in keys if k in failed})


@dataclass
class HostResult:
    host: str
    results: list[StepResult] = field(default_factory=list)
    error: BaseException | None = None
    duration: float = 0.0
    connection: Connection | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> int:
        return sum(1 for r in self.results if r.changed)


@dataclass
class FanoutResult:
    hosts: dict[str, HostResult]
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts.values())

    @property
    def failed(self) -> dict[str, BaseException]:
        return {name: h.error for name, h in self.hosts.items() if h.error is not None}

    def table(self):  # -> rich.table.Table
        from rich.table import Table

        t = Table(title=f"{len(self.hosts)} host(s), {len(self.failed)} failed, {self.duration:.1f}s")
        for col in ("host", "status", "steps", "changed", "time", "detail"):
            t.add_column(col, overflow="fold")
        for name, h in self.hosts.items():
            status = "[green]ok[/]" if h.ok else "[red]FAILED[/]"
            detail = "" if h.ok else _brief(h.error)
            t.add_row(name, status, str(len(h.results)), str(h.changed), f"{h.duration:.1f}s", detail)
        return t


def _brief(error: BaseException | None) -> str:
    """First line of an error, plus its last line when there are more (for a command: the stderr tail)."""
    lines = [ln for ln in str(error).splitlines() if ln.strip()] or [type(error).__name__]
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text[:300]


def _unique_names(targets: Sequence[Connection]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for c in targets:
        n = c.name
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return names


def fanout(targets: Sequence[Connection], steps: StepsFor, *, parallel: int = DEFAULT_PARALLEL, progress: bool = True,
           console=None, raise_on_failure: bool = True) -> FanoutResult:  # noqa: ANN001 - rich Console
    """Apply ``steps`` (a list, or a function of the connection returning one) on every target, at most
    ``parallel`` hosts at a time, each over its own single connection.

    Shows a live progress display and a per-host summary on ``console`` (stderr by default) when
    ``progress``; raises FanoutError after all hosts finished if any failed (unless ``raise_on_failure``).
    """
    names = _unique_names(targets)
    results: dict[str, HostResult] = {n: HostResult(n, connection=c) for n, c in zip(names, targets)}
    start = time.monotonic()

    live = None
    overall = None
    lock = threading.Lock()
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, \
            TimeElapsedColumn

        console = console or Console(stderr=True)
        live = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
        overall = live.add_task(f"{len(targets)} host(s)", total=len(targets))

    def one(item: tuple[str, Connection]) -> None:
        name, conn = item
        hr = results[name]
        t0 = time.monotonic()
        task = None
        try:
            todo = list(steps(conn) if callable(steps) else steps)
            if live is not None:
                with lock:
                    task = live.add_task(f"  {name}: connecting", total=len(todo) or 1)
            with conn:
                if live is not None and task is not None:
                    live.update(task, description=f"  {name}: running")
                for step, res in apply_steps(conn, todo):
                    hr.results.append(res)
                    if live is not None and task is not None:
                        live.update(task, description=f"  {name}: {step.name} done", advance=1)
        except BaseException as exc:
            hr.error = exc
            raise
        finally:
            hr.duration = time.monotonic() - t0
            if live is not None:
                with lock:
                    if task is not None:
                        live.remove_task(task)
                    live.advance(overall)  # type: ignore[arg-type]
                    mark = "[green]ok[/]" if hr.ok else "[red]FAILED[/]"
                    live.console.print(f"{mark} {name} ({hr.changed} changed, {hr.duration:.1f}s)")

    if live is not None:
        live.start()
    try:
        parallel_map(one, list(zip(names, targets)), parallel=parallel, names=names)
    finally:
        if live is not None:
            live.stop()
    result = FanoutResult(results, time.monotonic() - start)
    if progress and console is not None:
        console.print(result.table())
    if raise_on_failure and not result.ok:
        raise FanoutError(result.failed, result=result)
    return result


def detect_facts(conn: Connection) -> "Facts":
    """The host's OS (from /etc/os-release) and RAM, in one command."""
    from polyvm.host import FACTS_COMMAND, parse_facts

    return parse_facts(conn.run(FACTS_COMMAND, name="detect OS", sudo=False).stdout)


def merged_facts(known: "Facts | None", found: "Facts") -> "Facts":
    """The facts a run uses: those known without asking the host (a spec's), else the ``found`` ones; the RAM
    found on the host when the known facts lack it."""
    from dataclasses import replace

    facts = known or found
    return facts if facts.memory_mb is not None else replace(facts, memory_mb=found.memory_mb)


def recipe_steps(host: "Host", conn: Connection, recipe: "Recipe | None" = None, inputs: "BaseModel | None" = None,
                 *, source: str | None = None) -> list[Step]:
    """What provisioning ``host`` means: the guest baseline, then the recipe's steps (if a recipe is given).
    The OS facts come from the Host when known, else one command on ``conn``."""
    from .baseline import baseline_steps

    facts = host.facts
    if recipe is None and not host.disks:
        return baseline_steps(host, facts, source=source)  # the firewall needs no facts
    if facts is None or (recipe is not None and facts.memory_mb is None):
        facts = merged_facts(facts, detect_facts(conn))
    steps = baseline_steps(host, facts, source=source)
    if recipe is not None:
        steps += list(recipe.steps(inputs if inputs is not None else recipe.parse_inputs({}), host, facts))
    return steps


class _Stamped(Step):
    """A step the run stamp showed has nothing to do: reported unchanged, nothing sent."""

    def __init__(self, step: Step) -> None:
        self.name = step.name

    def apply(self, conn: Connection) -> StepResult:
        return StepResult(self.name, False, "unchanged: the host matches the stamp of the last successful run")


def stamped_steps(host: "Host", conn: Connection, recipe: "Recipe", inputs: "BaseModel | None", *,
                  source: str | None = None) -> list[Step] | None:
    """The run of ``recipe`` on ``host`` with a run stamp (:mod:`.stamp`), or None when the recipe keeps no
    stamp for these inputs. One command checks the stamp and returns the OS facts: when the host is as the last
    successful run left it, every step comes back as unchanged without being run; else the steps, then the
    step writing the new stamp."""
    from polyvm.host import parse_facts
    from polyvm.recipe import Recipe as _Recipe

    from . import stamp as _stamp
    from .baseline import baseline_probe

    if type(recipe).stamp_probe is _Recipe.stamp_probe:
        return None
    values = inputs if inputs is not None else recipe.parse_inputs({})
    known = host.facts if host.facts is not None and host.facts.memory_mb is not None else None
    probe = recipe.stamp_probe(values, host, known) if known is not None else None
    if known is not None and probe is None:
        return None
    digest = _stamp.run_digest(recipe, values, host)
    r = conn.run(_stamp.check_command(recipe.name, digest), name="check the run stamp")
    matched, facts_out = _stamp.parse_check(r.stdout)
    facts = merged_facts(host.facts, parse_facts(facts_out))
    if known is None:
        probe = recipe.stamp_probe(values, host, facts)
    steps = recipe_steps(host.with_facts(facts), conn, recipe, values, source=source)
    if probe is None:
        return steps
    script = _stamp.state_script(_stamp.copied_paths(steps), [baseline_probe(host), probe])
    steps.append(_stamp.StampWrite(recipe.name, digest, script))
    return [_Stamped(s) for s in steps] if matched else steps


def run_recipe(hosts: Sequence["Host"], recipe: "Recipe | None" = None,
               inputs: "BaseModel | Callable[[Host], BaseModel] | None" = None, *,
               credentials: Mapping[str, Any] | None = None, connections: Sequence[Connection] | None = None,
               source: str | None = None, parallel: int = DEFAULT_PARALLEL, progress: bool = True, console: Any = None,
               raise_on_failure: bool = True, stamp: bool = True) -> FanoutResult:
    """Provision ``hosts``: on each, the guest baseline then ``recipe``'s steps (``inputs``: validated inputs,
    or a function of the Host returning them), over one connection per host, batched, in parallel.

    ``credentials``: Connection settings added to each Host's own (private_key_path, known_hosts, bastion,
    deadline, ...); or give ready ``connections`` (one per host, same order). ``source``: the address the
    hosts see this machine connect from, for the guest firewall's lock-out check. ``stamp``: for a recipe
    with a :meth:`~polyvm.recipe.Recipe.stamp_probe`, skip a host that is as the last successful run left it
    (:func:`stamped_steps`); False applies every step (``polyvm apply --full-run``).
    """
    if connections is None:
        connections = [h.connect(**dict(credentials or {})) for h in hosts]
    if len(connections) != len(hosts):
        raise ValueError("run_recipe: one connection per host")
    by_conn = {id(c): h for c, h in zip(connections, hosts)}

    def steps(conn: Connection) -> list[Step]:
        host = by_conn[id(conn)]
        values = inputs(host) if callable(inputs) else inputs
        if stamp and recipe is not None:
            stamped = stamped_steps(host, conn, recipe, values, source=source)
            if stamped is not None:
                return stamped
        return recipe_steps(host, conn, recipe, values, source=source)

    return fanout(connections, steps, parallel=parallel, progress=progress, console=console,
                  raise_on_failure=raise_on_failure)
