"""`polyvm sandbox up --recipe nginx --count 3 --load-balancer` end to end through the CLI: 3 real hosts
running the nginx recipe behind HAProxy; re-running `up` with changed recipe inputs and `--rolling 1` rolls
the change through the members while clients keep requesting: ≥ 1000 requests during the rolling changes,
0 failures, answers from all 3 members; `sandbox down` leaves nothing (hosts, load balancer namespace,
front veth, HAProxy, files)."""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from polyvm.backends.local import engine as local_engine
from polyvm.backends.local.loadbalancer import LocalLoadBalancer, _alive
from polyvm.backends.local.sandbox import Sandbox

pytestmark = pytest.mark.e2e
MIN_REQUESTS = 1000
MEMBERS = ["sandbox-0", "sandbox-1", "sandbox-2"]


def polyvm(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, POLYVM_LOCAL_STATE_DIR=str(state_dir))
    return subprocess.run([sys.executable, "-m", "polyvm.cli", "sandbox", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        pytest.fail(f"polyvm exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


class Clients:
    """Threads doing sequential HTTPS GETs through the load balancer (a fresh connection each; each member
    has its own self-signed certificate, so no verification), counting answers per member."""

    def __init__(self, address: str, n: int = 2, max_seconds: float = 600) -> None:
        self.address = address
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.failures: list[str] = []
        self.total = 0
        self.counting = False
        self.during = 0  # requests completed while a rolling update ran
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        end = time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self._run, args=(end,), daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, end: float) -> None:
        while not self.stop.is_set() and time.monotonic() < end:
            counting = self.counting
            conn = http.client.HTTPSConnection(self.address, 443, timeout=5, context=self.ctx)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                if resp.status != 200:
                    outcome = f"HTTP {resp.status}"
                else:
                    m = re.search(r"polyvm nginx on ([a-z0-9-]+)", body)
                    outcome = m.group(1) if m else f"unexpected body {body[:80]!r}"
            except OSError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
            with self.lock:
                self.total += 1
                if counting and self.counting:
                    self.during += 1
                if outcome in MEMBERS:
                    self.seen[outcome] += 1
                else:
                    self.failures.append(outcome)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture
def fleet_dir(_local_engine, tmp_path):
    if local_engine.which("haproxy") is None or local_engine.which("nginx") is None:
        pytest.skip("haproxy and nginx are needed (scripts/setup installs them)")
    state = tmp_path / "fleet-state"
    yield state
    if state.exists():
        Sandbox(state).down()


def test_fleet_up_rolling_change_under_load_then_down_leaves_nothing(fleet_dir, tmp_path):
    first = json.loads(ok(polyvm(fleet_dir, "up", "--recipe", "nginx", "--count", "3", "--load-balancer",
                                 "--json")).stdout)
    assert first["created"] and [m["name"] for m in first["members"]] == MEMBERS
    address = first["address"]
    assert first["ports"] == [80, 443] and first["urls"] == [f"https://{address}/"]
    (lb,) = LocalLoadBalancer.list(local_engine.Engine(fleet_dir))
    record = lb.record
    hosts = [local_engine.Engine(fleet_dir).get(m["host_id"]) for m in first["members"]]

    # The members answer only through the load balancer: their firewall admits its block, not this machine.
    for m in first["members"]:
        with pytest.raises(OSError):
            http.client.HTTPSConnection(m["address"], 443, timeout=2, context=ssl._create_unverified_context()
                                        ).request("GET", "/")

    clients = Clients(address)
    try:
        rounds = []
        sizes = iter(f"{n}m" for n in range(11, 200))
        deadline = time.monotonic() + 400
        while clients.during < MIN_REQUESTS and time.monotonic() < deadline:
            inputs = tmp_path / "nginx.yaml"
            inputs.write_text(f"client_max_body_size: {next(sizes)}\n")  # a configuration change on every member
            clients.counting = True
            out = json.loads(ok(polyvm(fleet_dir, "up", "--recipe", "nginx", "--count", "3", "--load-balancer",
                                       "--inputs", str(inputs), "--rolling", "1", "--json")).stdout)
            clients.counting = False
            rounds.append(out)
            assert not out["created"] and out["rolled"] == MEMBERS
            for m in out["members"]:
                assert any("polyvm.conf" in c for c in m["recipe_changes"]), m["recipe_changes"]
            assert out["address"] == address
    finally:
        clients.close()
    assert clients.during >= MIN_REQUESTS, (f"only {clients.during} requests during {len(rounds)} rolling "
                                            "updates within the bound")
    assert not clients.failures, f"{len(clients.failures)} of {clients.total} requests failed: {clients.failures[:5]}"
    assert set(clients.seen) == set(MEMBERS), f"answers came from {dict(clients.seen)}"
    print(f"{clients.during} requests during {len(rounds)} rolling updates ({clients.total} in all), "
          f"0 failures, per member {dict(clients.seen)}")

    down = ok(polyvm(fleet_dir, "down"))
    assert "removed 3 sandbox VM(s)" in down.stdout
    assert not [x for h in hosts for x in local_engine.leftovers(h)]
    assert lb.leftovers() == [], lb.leftovers()
    assert not Path(f"/run/netns/{record.id}").exists() or lb._owned_netns() is None
    assert not fleet_dir.exists(), sorted(str(p) for p in fleet_dir.rglob("*"))


def test_bad_fleet_input_is_one_line_and_creates_nothing(fleet_dir):
    proc = polyvm(fleet_dir, "up", "--recipe", "nginx", "--load-balancer")
    assert proc.returncode == 2 and "--count 2 or more" in proc.stderr and "Traceback" not in proc.stderr
    proc = polyvm(fleet_dir, "up", "--recipe", "none", "--count", "2", "--load-balancer")
    assert proc.returncode == 2 and "needs a recipe" in proc.stderr, proc.stderr
    assert not LocalLoadBalancer.list(local_engine.Engine(fleet_dir))
    assert not (fleet_dir.exists() and any(fleet_dir.glob("pvm-*")))


def test_a_fleet_with_a_member_gone_is_rebuilt_and_down_by_fleet_name_removes_it(fleet_dir):
    first = json.loads(ok(polyvm(fleet_dir, "up", "--recipe", "nginx", "--count", "3", "--load-balancer",
                                 "--json")).stdout)
    engine = local_engine.Engine(fleet_dir)
    (old_lb,) = LocalLoadBalancer.list(engine)
    engine.down(engine.get(first["members"][1]["host_id"]))  # a member dies
    again = json.loads(ok(polyvm(fleet_dir, "up", "--recipe", "nginx", "--count", "3", "--load-balancer",
                                 "--json")).stdout)
    assert again["created"] and [m["name"] for m in again["members"]] == MEMBERS
    (lb,) = LocalLoadBalancer.list(engine)
    # The old HAProxy was stopped and its namespace replaced (a new one, whatever its name).
    assert lb.record.pid != old_lb.record.pid and not _alive(old_lb.record.pid)
    assert lb.record.netns_inode != old_lb.record.netns_inode
    clients = Clients(again["address"], n=1)
    try:
        end = time.monotonic() + 60
        while len(clients.seen) < 3 and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        clients.close()
    assert set(clients.seen) == set(MEMBERS) and not clients.failures, (dict(clients.seen), clients.failures[:3])
    hosts = [engine.get(m["host_id"]) for m in again["members"]]
    down = ok(polyvm(fleet_dir, "down", "sandbox"))  # the fleet's name
    assert "removed 3 sandbox VM(s)" in down.stdout
    assert lb.leftovers() == [] and not [x for h in hosts for x in local_engine.leftovers(h)]
    assert not LocalLoadBalancer.list(engine)
