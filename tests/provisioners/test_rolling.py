"""Rolling updates against a fake load balancer: order, bounds, stopping at the first failure."""

from __future__ import annotations

import pytest

from polyvm.errors import CommandError, ProvisionError
from polyvm.provisioners.rolling import CountsConnections, LoadBalancer, RollingUpdateError, rolling_update
from polyvm.provisioners.steps import Step, StepResult


class FakeConn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.opened = 0

    def __enter__(self):
        self.opened += 1
        return self

    def __exit__(self, *exc):
        return None


class FakeLB:
    """Records every call in one log; a member is healthy `rise` polls after it is enabled."""

    def __init__(self, log: list, *, rise: int = 2, never_healthy: set[str] = frozenset(),
                 busy: dict[str, int] | None = None) -> None:
        self.log = log
        self.state: dict[str, str] = {}
        self.rise = rise
        self.polls: dict[str, int] = {}
        self.never_healthy = set(never_healthy)
        self.busy = dict(busy or {})

    def drain(self, member: str) -> None:
        self.log.append(("drain", member))
        self.state[member] = "drain"

    def enable(self, member: str) -> None:
        self.log.append(("enable", member))
        self.state[member] = "ready"
        self.polls[member] = 0

    def healthy(self, member: str) -> bool:
        if self.state.get(member) != "ready" or member in self.never_healthy:
            return False
        self.polls[member] += 1
        ok = self.polls[member] >= self.rise
        if ok:
            self.log.append(("healthy", member))
        return ok


class CountingLB(FakeLB):
    def connections(self, member: str) -> int:
        left = self.busy.get(member, 0)
        if left:
            self.busy[member] = left - 1
        return left


class Record(Step):
    def __init__(self, log: list, fail_on: str | None = None) -> None:
        self.log = log
        self.fail_on = fail_on
        self.name = "record"

    def apply(self, conn) -> StepResult:
        if self.fail_on == conn.name:
            raise CommandError(f"{conn.name}: nginx -t failed (exit 1)", host=conn.name, exit_code=1)
        self.log.append(("steps", conn.name))
        return StepResult("record", True)


class Clock:
    """Fake time: sleep advances it, so bounded waits finish instantly and deterministically."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def members(n=3):
    return [(f"web-{i}", FakeConn(f"web-{i}")) for i in range(n)]


def test_one_at_a_time_drain_change_enable_healthy():
    log: list = []
    lb = FakeLB(log)
    clock = Clock()
    res = rolling_update(lb, members(), [Record(log)], clock=clock, sleep=clock.sleep)
    assert res.names == ["web-0", "web-1", "web-2"]
    expected = []
    for m in res.names:
        expected += [("drain", m), ("steps", m), ("enable", m), ("healthy", m)]
    assert log == expected
    assert isinstance(lb, LoadBalancer) and not isinstance(lb, CountsConnections)


def test_batches_of_k():
    log: list = []
    clock = Clock()
    rolling_update(FakeLB(log), members(5), [Record(log)], batch_size=2, clock=clock, sleep=clock.sleep)
    drains = [i for i, e in enumerate(log) if e[0] == "drain"]
    # web-0 and web-1 drained together before any steps; web-2 only after both are healthy
    assert log[:2] == [("drain", "web-0"), ("drain", "web-1")]
    assert log.index(("drain", "web-2")) > log.index(("healthy", "web-1"))
    assert len(drains) == 5


def test_waits_for_open_connections_when_the_lb_counts_them():
    log: list = []
    lb = CountingLB(log, busy={"web-1": 3})
    clock = Clock()
    res = rolling_update(lb, members(), [Record(log)], poll=0.5, clock=clock, sleep=clock.sleep)
    assert res.members[1].drain_s == pytest.approx(1.5)
    assert res.members[0].drain_s == 0


def test_connections_that_never_finish_stop_the_update_with_a_bounded_wait():
    log: list = []
    lb = CountingLB(log, busy={"web-1": 10**9})
    clock = Clock()
    with pytest.raises(RollingUpdateError) as exc:
        rolling_update(lb, members(), [Record(log)], drain_timeout=5, clock=clock, sleep=clock.sleep)
    e = exc.value
    assert (e.member, e.phase, e.done, e.untouched) == ("web-1", "drain", ["web-0"], ["web-2"])
    assert "web-1's open connections through the load balancer did not reach 0 within 5s" in str(e)
    assert ("steps", "web-1") not in log
    assert lb.state["web-1"] == "drain"
    assert "web-2" not in lb.state
    assert clock.now < 10


def test_failed_steps_stop_at_that_member_which_stays_drained():
    log: list = []
    lb = FakeLB(log)
    clock = Clock()
    with pytest.raises(RollingUpdateError) as exc:
        rolling_update(lb, members(), [Record(log, fail_on="web-1")], clock=clock, sleep=clock.sleep)
    e = exc.value
    assert isinstance(e, ProvisionError)
    assert (e.member, e.phase, e.done, e.untouched) == ("web-1", "steps", ["web-0"], ["web-2"])
    assert "nginx -t failed" in str(e) and "web-1 is left drained" in str(e)
    assert lb.state == {"web-0": "ready", "web-1": "drain"}
    assert not any(m == "web-2" for _, m in log)


def test_never_healthy_is_a_bounded_wait_naming_what_was_waited_for():
    log: list = []
    lb = FakeLB(log, never_healthy={"web-0"})
    clock = Clock()
    with pytest.raises(RollingUpdateError) as exc:
        rolling_update(lb, members(), [Record(log)], healthy_timeout=7, clock=clock, sleep=clock.sleep)
    e = exc.value
    assert e.phase == "healthy" and e.member == "web-0" and e.untouched == ["web-1", "web-2"]
    assert "the load balancer did not report web-0 healthy within 7s" in str(e)
    assert lb.state["web-0"] == "drain"  # taken out of rotation again
    assert 7 <= clock.now < 8


def test_a_failure_in_a_batch_puts_the_others_of_the_batch_back():
    log: list = []
    lb = FakeLB(log)
    clock = Clock()
    with pytest.raises(RollingUpdateError) as exc:
        rolling_update(lb, members(4), [Record(log, fail_on="web-0")], batch_size=2, clock=clock,
                       sleep=clock.sleep)
    assert lb.state == {"web-0": "drain", "web-1": "ready"}
    assert exc.value.untouched == ["web-1", "web-2", "web-3"]


def test_steps_may_depend_on_the_connection():
    log: list = []
    clock = Clock()
    seen = []

    def steps(conn):
        seen.append(conn.name)
        return [Record(log)]

    rolling_update(FakeLB(log), members(2), steps, clock=clock, sleep=clock.sleep)
    assert seen == ["web-0", "web-1"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        rolling_update(FakeLB([]), members(), [], batch_size=0)
    with pytest.raises(ValueError, match="repeated: web-0"):
        rolling_update(FakeLB([]), [("web-0", FakeConn("a")), ("web-0", FakeConn("b"))], [])
