"""Rolling updates: change a fleet's members a few at a time without dropping a request.

For each batch of ``batch_size`` members (one by default): take them out of the load balancer
(:meth:`LoadBalancer.drain`), wait (bounded) until their open connections are done, run the steps on each
of them, put them back (:meth:`LoadBalancer.enable`) and wait (bounded) until the load balancer reports
them healthy; then the next batch. The first failure stops the update: that member stays drained (out
of rotation, so users never reach a half-changed server) and the members after it are not touched.

The load balancer is anything with ``drain``/``enable``/``healthy`` (:class:`LoadBalancer`); the local
backend's HAProxy (:mod:`polyvm.backends.local.loadbalancer`) is one, cloud load balancers can be others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

from polyvm.errors import ProvisionError

from . import Connection, Step, StepResult, run_steps

StepsFor = Sequence[Step] | Callable[[Connection], Sequence[Step]]


@runtime_checkable
class LoadBalancer(Protocol):
    """What a rolling update needs of a load balancer; members are named as in the fleet (``web-0``)."""

    def drain(self, member: str) -> None:
        """Send no new connections to ``member``; connections already open may finish."""

    def enable(self, member: str) -> None:
        """Send ``member`` traffic again once its health check passes."""

    def healthy(self, member: str) -> bool:
        """Whether ``member`` is in rotation and passes its health check now."""


@runtime_checkable
class CountsConnections(Protocol):
    """Optional: a load balancer that knows how many connections a member still serves."""

    def connections(self, member: str) -> int:
        """Connections to ``member`` still open through the load balancer."""


class RollingUpdateError(ProvisionError):
    """A rolling update stopped at a member; the members after it were not touched."""

    def __init__(self, message: str, *, member: str, done: Sequence[str], untouched: Sequence[str],
                 phase: str) -> None:
        self.member = member
        self.done = list(done)
        self.untouched = list(untouched)
        self.phase = phase
        super().__init__(message)


@dataclass
class MemberUpdate:
    member: str
    results: list[StepResult] = field(default_factory=list)
    drain_s: float = 0.0
    steps_s: float = 0.0
    healthy_s: float = 0.0


@dataclass
class RollingResult:
    members: list[MemberUpdate]

    @property
    def names(self) -> list[str]:
        return [m.member for m in self.members]


def _wait(what: str, predicate: Callable[[], bool], timeout: float, poll: float,
          clock: Callable[[], float], sleep: Callable[[float], None]) -> float:
    start = clock()
    while True:
        if predicate():
            return clock() - start
        if clock() - start >= timeout:
            raise TimeoutError(f"{what} within {timeout:g}s")
        sleep(poll)


def rolling_update(lb: LoadBalancer, members: Sequence[tuple[str, Connection]], steps: StepsFor, *,
                   batch_size: int = 1, drain_timeout: float = 30.0, healthy_timeout: float = 60.0,
                   poll: float = 0.2, on_event: Callable[[str, str], None] | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> RollingResult:
    """Update ``members`` ((fleet member name, connection) pairs, in order) ``batch_size`` at a time.

    ``steps``: a list, or a function of the connection returning one (run with
    :func:`polyvm.provisioners.run_steps`). ``drain_timeout`` bounds the wait for open connections (when
    the load balancer counts them; otherwise the members are drained and the steps start at once);
    ``healthy_timeout`` bounds the wait for the health check after enabling. Raises RollingUpdateError
    naming the member, the phase and what was waited for; that member is left drained.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    names = [m for m, _ in members]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"members must be unique; repeated: {', '.join(dup)}")
    say = on_event or (lambda member, event: None)
    done: list[MemberUpdate] = []

    for start in range(0, len(members), batch_size):
        batch = list(members[start:start + batch_size])
        later = names[start + len(batch):]
        updates = {m: MemberUpdate(m) for m, _ in batch}
        changed: list[str] = []

        def fail(member: str, phase: str, message: str) -> RollingUpdateError:
            # The failed member stays drained; the others of its batch go back into rotation (unchanged,
            # or changed by steps that succeeded), so the fleet keeps its capacity.
            for other, _ in batch:
                if other != member:
                    try:
                        lb.enable(other)
                    except Exception:  # noqa: BLE001 - the first failure is the one to report
                        pass
            untouched = [m for m, _ in batch if m != member and m not in changed] + later
            return RollingUpdateError(
                f"rolling update stopped at {member} ({phase}): {message}; {member} is left drained; "
                f"updated: {', '.join([m.member for m in done] + [m for m in changed if m != member]) or 'none'}; "
                f"not touched: {', '.join(untouched) or 'none'}",
                member=member, done=[m.member for m in done], untouched=untouched, phase=phase)

        for member, _ in batch:
            try:
                lb.drain(member)
            except Exception as exc:  # noqa: BLE001 - reported with the member and phase
                raise fail(member, "drain", str(exc)) from exc
            say(member, "drained")
        if isinstance(lb, CountsConnections):
            for member, _ in batch:
                try:
                    updates[member].drain_s = _wait(
                        f"{member}'s open connections through the load balancer did not reach 0",
                        lambda m=member: lb.connections(m) == 0, drain_timeout, poll, clock, sleep)
                except TimeoutError as exc:
                    raise fail(member, "drain", str(exc)) from None
        for member, conn in batch:
            t0 = clock()
            try:
                todo = list(steps(conn) if callable(steps) else steps)
                updates[member].results = run_steps(conn, todo)
            except Exception as exc:  # noqa: BLE001 - the member stays drained
                raise fail(member, "steps", str(exc)) from exc
            updates[member].steps_s = clock() - t0
            changed.append(member)
            say(member, "changed")
        for member, _ in batch:
            try:
                lb.enable(member)
            except Exception as exc:  # noqa: BLE001
                raise fail(member, "enable", str(exc)) from exc
        for member, _ in batch:
            try:
                updates[member].healthy_s = _wait(
                    f"the load balancer did not report {member} healthy",
                    lambda m=member: lb.healthy(m), healthy_timeout, poll, clock, sleep)
            except TimeoutError as exc:
                try:
                    lb.drain(member)  # never leave a member that fails its check in rotation
                except Exception:  # noqa: BLE001 - the timeout is the error to report
                    pass
                raise fail(member, "healthy", str(exc)) from None
            say(member, "healthy")
        done.extend(updates[m] for m, _ in batch)
    return RollingResult(done)
