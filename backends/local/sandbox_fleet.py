"""A fleet in the sandbox: N local hosts running a recipe behind HAProxy (``polyvm sandbox up --count N
--load-balancer`` or ``--fleet FILE``).

The first ``up`` creates the load balancer (its own network namespace, :mod:`.loadbalancer`), then the
members in parallel (each exactly a sandbox VM: host, guest baseline, recipe; their firewall admits the load
balancer's block on the listener and health-check ports because their specs say so), then starts HAProxy
in front of them and waits until it reports every member healthy. Running ``up`` again with the fleet in
place is a rolling update (:func:`polyvm.provisioners.rolling.rolling_update`): ``batch`` members at a
time are drained, re-provisioned (baseline and recipe, with the inputs given now) and put back once
healthy, so a configuration change drops no request. A fleet whose load balancer or a member is gone is
rebuilt. ``polyvm sandbox down`` removes the load balancer with the members.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from polyvm.errors import ConfigError, SandboxError
from polyvm.fleet import FleetSpec, parse_fleet
from polyvm.spec import VmSpec

from . import engine as eng
from .loadbalancer import LocalLoadBalancer
from .loadbalancer import problems as lb_problems
from .sandbox import FLEET_TAG, LABEL, Progress, Sandbox, SandboxVm

#: Every local load balancer address is inside this range (its front link), as is this machine's end.
CLIENTS = "198.18.0.0/15"
HEALTHY_TIMEOUT = 60.0


@dataclass
class SandboxFleet:
    """A fleet after ``up``: the load balancer, its members, and what a rolling update changed."""

    name: str
    address: str                   # where clients connect (HAProxy)
    ports: list[int]
    members: list[SandboxVm]
    created: bool                  # False: the fleet was in place (rolling update)
    urls: list[str] = field(default_factory=list)
    rolled: list[str] = field(default_factory=list)   # members updated one batch at a time, in order
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "ports": self.ports, "urls": self.urls,
                "created": self.created, "rolled": self.rolled, "seconds": round(self.seconds, 3),
                "members": [m.to_json() for m in self.members]}


def sandbox_fleet(vm: VmSpec, count: int, recipe: Any, inputs: Mapping[str, Any] | None = None) -> FleetSpec:
    """The fleet ``--count N --load-balancer`` means: ``count`` copies of ``vm`` named ``<vm name>-<i>``,
    HAProxy forwarding each of the recipe's ports (tcp: TLS passes through to the members), a TCP health
    check every second (out after 2 failures, back after 2 passes), reachable from this machine."""
    from .sandbox import _ports_only

    if recipe is None:
        raise ConfigError("--load-balancer needs a recipe that serves something (--recipe NAME)")
    ports = [p for p in recipe.ports(recipe.parse_inputs(_ports_only(recipe, inputs or {}))) if p != 22]
    if not ports:
        raise ConfigError(f"recipe {recipe.name} listens on no port for a load balancer to forward")
    data = vm.model_dump(exclude_unset=True)
    data.pop("name", None)
    return parse_fleet({
        "name": vm.name, "count": count, "vm": data,
        "load_balancer": {
            "allowed_cidrs": [CLIENTS],
            "listeners": [{"protocol": "tcp", "port": p} for p in ports],
            "health_check": {"protocol": "tcp", "interval_s": 1, "timeout_s": 1, "healthy_threshold": 2,
                             "unhealthy_threshold": 2},
        },
    }, source="sandbox fleet")


class FleetSandbox:
    """Fleets in one sandbox state directory."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.engine = sandbox.engine

    def load_balancer(self, fleet: str) -> LocalLoadBalancer | None:
        for lb in LocalLoadBalancer.list(self.engine):
            if lb.record.fleet == fleet:
                return lb
        return None

    def up(self, fleet: FleetSpec, *, recipe: str | None, inputs: Mapping[str, Any] | None = None,
           batch: int = 1, progress: Progress | None = None, started: float | None = None) -> SandboxFleet:
        from polyvm.plugins import get_backend, get_recipe

        started = time.monotonic() if started is None else started
        say = progress or (lambda _n, _s: None)
        eng.check_prerequisites()
        self.sb._require_root()
        if batch < 1:
            raise ConfigError("--rolling must be at least 1")
        if fleet.load_balancer is None:
            raise ConfigError(f"fleet {fleet.name} has no load_balancer; without one use --count N")
        backend = get_backend("local")
        the_recipe = get_recipe(recipe) if recipe else None
        problems = lb_problems(fleet)
        if problems:
            raise ConfigError("the local load balancer cannot honour " + "; ".join(problems))
        for spec in fleet.member_specs():  # checked before anything is made
            self.sb._check_spec(backend, spec)
        taken = {h.labels.get(LABEL) for h in self.sb.hosts() if h.labels.get(FLEET_TAG) != fleet.name}
        clash = sorted(set(fleet.member_names) & taken)
        if clash:
            raise SandboxError(f"sandbox VMs named {', '.join(clash)} exist outside fleet {fleet.name}; "
                               "remove them (polyvm sandbox down NAME) or name the fleet differently")
        lb = self.load_balancer(fleet.name)
        if lb is not None and self._intact(lb, fleet):
            result = self._roll(lb, fleet, backend, the_recipe, inputs or {}, batch, say)
        else:
            if lb is not None:
                say(fleet.name, f"rebuilding: load balancer {lb.record.id} or a member is gone")
                lb.down()
            result = self._create(fleet, backend, the_recipe, inputs or {}, say, started)
        result.seconds = time.monotonic() - started
        return result

    # --- first up -------------------------------------------------------------------------------------
    def _create(self, fleet: FleetSpec, backend: Any, recipe: Any, overrides: Mapping[str, Any], say: Progress,
                started: float) -> SandboxFleet:
        from polyvm.provisioners.fanout import parallel_map

        say(fleet.name, "creating the load balancer")
        lb = LocalLoadBalancer.create(self.engine, fleet)
        try:
            specs = fleet.member_specs(lb.sources)
            pub = self.sb.public_key()
            lock = threading.Lock()
            done, failed = parallel_map(
                lambda spec: self.sb._up_one(backend, spec, pub, recipe, overrides, say, started, lock),
                specs, parallel=8, names=[s.name for s in specs])
            if failed:
                raise SandboxError("; ".join(f"{n}: {e}" for n, e in failed.items())
                                   + " (the members stay up for inspection: polyvm sandbox status / ssh; "
                                     "remove them with polyvm sandbox down)")
            self.sb._write_known_hosts()
            records = []
            for spec in specs:
                record = self.engine.get(done[spec.name].host_id)
                if record is None:
                    raise SandboxError(f"{spec.name}: its host vanished while the fleet was created")
                records.append((spec.name, record))
            say(fleet.name, f"starting HAProxy on {lb.address}")
            lb.start(records)
            self._wait_healthy(lb, fleet, say)
        except BaseException:
            lb.down()
            raise
        return SandboxFleet(name=fleet.name, address=lb.address, ports=list(lb.record.ports),
                            members=[done[s.name] for s in specs], created=True, urls=self._urls(lb, done.values()))

    # --- up again: a rolling update ----------------------------------------------------------------------
    def _intact(self, lb: LocalLoadBalancer, fleet: FleetSpec) -> bool:
        """The load balancer answers and holds exactly the fleet's members, each running with sshd up."""
        if not lb.socket_ready() or [m.name for m in lb.record.members] != fleet.member_names:
            return False
        for m in lb.record.members:
            host = self.engine.get(m.host_id)
            if host is None or host.labels.get(LABEL) != m.name or not (
                    self.engine.is_running(host) and self.engine.sshd_listening(host)):
                return False
        return True

    def _roll(self, lb: LocalLoadBalancer, fleet: FleetSpec, backend: Any, recipe: Any,
              overrides: Mapping[str, Any], batch: int, say: Progress) -> SandboxFleet:
        from polyvm.provisioners.fanout import recipe_steps
        from polyvm.provisioners.rolling import RollingUpdateError, rolling_update

        from . import host_of

        specs = {s.name: s for s in fleet.member_specs(lb.sources)}
        lock = threading.Lock()
        members, hosts, values, records = [], {}, {}, {}
        for m in lb.record.members:
            record = self.engine.get(m.host_id)
            assert record is not None  # _intact checked it
            host = host_of(record, specs[m.name])
            records[m.name] = record
            values[m.name] = self.sb.recipe_inputs(recipe, host, record, overrides, lock) if recipe else None
            conn = host.connect(private_key_path=str(self.sb.key_path), known_hosts=str(self.sb.known_hosts_path),
                                deadline=60)
            hosts[id(conn)] = (m.name, host, record)
            members.append((m.name, conn))

        def steps(conn: Any) -> list[Any]:
            name, host, record = hosts[id(conn)]
            return recipe_steps(host, conn, recipe, values[name], source=record.host_ip)

        say(fleet.name, f"rolling update, {batch} member(s) at a time, through {lb.address}")
        try:
            result = rolling_update(lb, members, steps, batch_size=batch, drain_timeout=30,
                                    healthy_timeout=HEALTHY_TIMEOUT, on_event=say)
        except RollingUpdateError as exc:
            raise SandboxError(str(exc)) from None
        finally:
            for _name, conn in members:
                conn.close()
        vms = []
        for upd in result.members:
            record, spec = records[upd.member], specs[upd.member]
            vm = SandboxVm(name=upd.member, host_id=record.id, address=record.guest_ip, ssh_user=spec.ssh.user,
                           host_key=record.host_key, disks=host_of(record, spec).data_disk_devices,
                           recipe=recipe.name if recipe else "", created=False,
                           recipe_changes=[f"{r.name}: {r.detail or 'changed'}" for r in upd.results if r.changed])
            if recipe is not None:
                vm.outputs = recipe.outputs(values[upd.member], host_of(record, spec))
            vms.append(vm)
        return SandboxFleet(name=fleet.name, address=lb.address, ports=list(lb.record.ports), members=vms,
                            created=False, urls=self._urls(lb, vms), rolled=result.names)

    # --- helpers ------------------------------------------------------------------------------------------
    def _wait_healthy(self, lb: LocalLoadBalancer, fleet: FleetSpec, say: Progress) -> None:
        deadline = time.monotonic() + HEALTHY_TIMEOUT
        while True:
            sick = [n for n in fleet.member_names if not lb.healthy(n)]
            if not sick:
                say(fleet.name, f"HAProxy reports {', '.join(fleet.member_names)} healthy")
                return
            if time.monotonic() > deadline:
                raise SandboxError(f"HAProxy did not report {', '.join(sick)} healthy within {HEALTHY_TIMEOUT:g}s "
                                   f"(status: {', '.join(lb.status(n) for n in sick)}; log: {lb.record.dir}/haproxy.log)")
            time.sleep(0.2)

    @staticmethod
    def _urls(lb: LocalLoadBalancer, members: Any) -> list[str]:
        """The members' URLs (the recipe's ``url`` output) with the load balancer's address instead."""
        out = []
        for vm in members:
            url = vm.outputs.get("url")
            if url and vm.address in url:
                out.append(url.replace(vm.address, lb.address))
                break
        return out

    def down(self, fleet: str | None = None) -> list[str]:
        """Remove the load balancers (of ``fleet``); the members are sandbox VMs, removed by Sandbox.down."""
        return LocalLoadBalancer.down_all(self.engine, fleet=fleet)
