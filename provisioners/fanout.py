"""Run steps on many hosts at once: bounded parallelism, a live progress display, a per-host summary.

One host's failure never stops the others; when all are done, :class:`FanoutError` lists every host that
failed (with the partial :class:`FanoutResult` attached as ``exc.result``).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from polyvm.errors import FanoutError

from .connection import Connection
from .steps import Step, StepResult, apply_steps

StepsFor = Sequence[Step] | Callable[[Connection], Sequence[Step]]


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


def fanout(targets: Sequence[Connection], steps: StepsFor, *, parallel: int = 16, progress: bool = True,
           console=None, raise_on_failure: bool = True) -> FanoutResult:  # noqa: ANN001 - rich Console
    """Apply ``steps`` (a list, or a function of the connection returning one) on every target, at most
    ``parallel`` hosts at a time, each over its own single connection.

    Shows a live progress display and a per-host summary on ``console`` (stderr by default) when
    ``progress``; raises FanoutError after all hosts finished if any failed (unless ``raise_on_failure``).
    """
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
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

    def one(name: str, conn: Connection) -> None:
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
        except Exception as exc:  # noqa: BLE001 - one host's failure must not stop the others
            hr.error = exc
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
        with ThreadPoolExecutor(max_workers=min(parallel, max(1, len(targets))),
                                thread_name_prefix="polyvm-fanout") as pool:
            list(pool.map(lambda nc: one(*nc), zip(names, targets)))
    finally:
        if live is not None:
            live.stop()
    result = FanoutResult(results, time.monotonic() - start)
    if progress and console is not None:
        console.print(result.table())
    if raise_on_failure and not result.ok:
        err = FanoutError(result.failed)
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result
