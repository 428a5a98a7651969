"""The Pulumi dynamic provider behind ``polyvm:local:VirtualMachine``: create/read/diff/update/delete a
local host through :mod:`polyvm.backends.local.engine`.

Pulumi pickles the provider (dill) into the resource's state and unpickles it in its dynamic-provider
process, so it holds nothing but the state directory path and imports the engine inside each method.
"""

from __future__ import annotations

from typing import Any

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

#: Inputs that can change on a running host; any other change replaces it.
UPDATABLE = ("firewall", "tags")
#: Inputs whose change needs a new host.
REPLACING = ("hostname", "ssh_user", "authorized_keys", "disks", "root_mb", "scrub", "state_dir", "boot")
#: Inputs added after hosts were first recorded: their value in an older state (no spurious replacement).
_DEFAULTS = {"boot": "direct"}
#: Outputs the provider adds to the inputs.
OUTPUTS = ("host_id", "guest_ip", "host_ip", "host_key", "disk_devices")


def _engine(state_dir: str | None):
    from polyvm.backends.local.engine import Engine

    return Engine(state_dir or None)


def _outs(props: dict[str, Any], host: Any) -> dict[str, Any]:
    from polyvm.backends.local.mapping import device_map

    outs = {k: v for k, v in props.items() if not k.startswith("__")}
    outs.update(host_id=host.id, guest_ip=host.guest_ip, host_ip=host.host_ip, host_key=host.host_key,
                disk_devices=device_map(list(props.get("disks") or []), host.disks))
    return outs


class _StateDirProvider(ResourceProvider):
    """A provider holding only the engine's state directory (the resource's own ``state_dir`` wins)."""

    serialize_as_secret_always = False  # nothing secret inside: only a directory path

    def __init__(self, state_dir: str | None = None) -> None:
        super().__init__()
        self.state_dir = state_dir

    def _state_dir(self, props: dict[str, Any]) -> str | None:
        return props.get("state_dir") or self.state_dir


class LocalHostProvider(_StateDirProvider):
    """CRUD of one local host. The resource id is the host id (``pvm-<i>``)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        from polyvm.backends.local import start_host

        host = start_host(props, self._state_dir(props))
        return CreateResult(id_=host.id, outs=_outs(props, host))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        eng = _engine(self._state_dir(props))
        host = eng.get(id_)
        if host is None or not eng.is_running(host):
            return ReadResult(id_="", outs={})  # gone (e.g. after a reboot): Pulumi drops it from state
        return ReadResult(id_=id_, outs=_outs(props, host))

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in (*REPLACING, *UPDATABLE) if olds.get(k, _DEFAULTS.get(k)) != news.get(k, _DEFAULTS.get(k))]
        replaces = [k for k in changed if k in REPLACING]
        return DiffResult(changes=bool(changed), replaces=replaces, stables=list(OUTPUTS) if not replaces else [],
                          delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        eng = _engine(self._state_dir(news))
        host = eng.get(id_)
        if host is None:
            from polyvm.errors import SandboxError

            raise SandboxError(f"local host {id_} no longer exists; run `pulumi refresh`")
        if olds.get("firewall") != news.get("firewall"):
            eng.apply_firewall(host, news["firewall"])
        if olds.get("tags") != news.get("tags"):
            eng.set_labels(host, dict(news.get("tags") or {}))
        return UpdateResult(outs=_outs(news, host))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        eng = _engine(self._state_dir(props))
        host = eng.get(id_)
        if host is not None:  # already gone is fine: delete is idempotent
            eng.down(host)


#: Outputs the load balancer provider adds to its inputs.
LB_OUTPUTS = ("lb_id", "address")


def _load_balancer(state_dir: str | None, lb_id: str) -> Any:
    from polyvm.backends.local.loadbalancer import LocalLoadBalancer

    for lb in LocalLoadBalancer.list(_engine(state_dir)):
        if lb.record.id == lb_id:
            return lb
    return None


class LocalLoadBalancerProvider(_StateDirProvider):
    """CRUD of a fleet's HAProxy (``polyvm.backends.local.loadbalancer``) in front of its member hosts. The
    resource id is the load balancer's namespace (``pvlb-<i>``). Inputs: ``fleet`` (the FleetSpec as data),
    ``members`` ([{name, host_id}], in order), ``state_dir``. Any change makes a new one (the members' links
    and haproxy.cfg are made at start)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        from polyvm.backends.local.loadbalancer import LocalLoadBalancer
        from polyvm.errors import SandboxError
        from polyvm.fleet import parse_fleet

        eng = _engine(self._state_dir(props))
        fleet = parse_fleet(props["fleet"], source="local load balancer")
        hosts = [(m["name"], eng.get(m["host_id"])) for m in props["members"]]
        gone = [name for name, h in hosts if h is None]
        if gone:
            raise SandboxError(f"members {', '.join(gone)} have no local host; run `pulumi refresh`")
        lb = LocalLoadBalancer.create(eng, fleet)
        lb.start(hosts)  # downs the load balancer itself when it fails
        outs = {k: v for k, v in props.items() if not k.startswith("__")}
        outs.update(lb_id=lb.record.id, address=lb.address)
        return CreateResult(id_=lb.record.id, outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        lb = _load_balancer(self._state_dir(props), id_)
        if lb is None or not lb.socket_ready():
            return ReadResult(id_="", outs={})
        return ReadResult(id_=id_, outs={**props, "lb_id": id_, "address": lb.address})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("fleet", "members", "state_dir") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, stables=list(LB_OUTPUTS) if not changed else [],
                          delete_before_replace=True)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        lb = _load_balancer(self._state_dir(props), id_)
        if lb is not None:
            lb.down()
