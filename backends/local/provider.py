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
REPLACING = ("hostname", "ssh_user", "authorized_keys", "disks", "root_mb", "scrub", "state_dir")
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


class LocalHostProvider(ResourceProvider):
    """CRUD of one local host. The resource id is the host id (``pvm-<i>``)."""

    serialize_as_secret_always = False  # nothing secret inside: only a directory path

    def __init__(self, state_dir: str | None = None) -> None:
        super().__init__()
        self.state_dir = state_dir

    def _state_dir(self, props: dict[str, Any]) -> str | None:
        return props.get("state_dir") or self.state_dir

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
        changed = [k for k in (*REPLACING, *UPDATABLE) if olds.get(k) != news.get(k)]
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
