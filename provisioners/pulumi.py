"""Pulumi dynamic resources on the SSH layer: ``CopyFile`` (a file on a host) and ``RemoteExec`` (a command).

Both take ``connection`` inputs (host, port, user, private_key (made secret), host_key, bastion, ...; see
:meth:`polyvm.provisioners.connection.ConnectionArgs.from_mapping`), ``triggers`` (any value; a change forces a re-run),
and re-run on update when their content or commands change. ``RemoteExec`` exposes the tails of stdout and
stderr, secret whenever any command, stdin or environment input was secret.

The providers keep no state and capture no live client, so Pulumi can pickle them (it uses dill).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

from .connection import Connection, ConnectionArgs
from .exec import tail

OUTPUT_TAIL_CHARS = 4096
#: Connection settings whose change means "another machine": the resource is replaced, not updated.
_IDENTITY_KEYS = ("host", "port", "user")
_CONNECTION_KEYS = ConnectionArgs.keys()


# --------------------------------------------------------------------------------------------------------
# helpers shared by both providers (pure; the providers' own methods stay small)
# --------------------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """Pulumi hands numbers over as floats; make whole floats ints again, recursively."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def connection_from_props(props: Mapping[str, Any]) -> Connection:
    conn = _plain(dict(props.get("connection") or {}))
    return Connection.from_mapping({k: v for k, v in conn.items() if v is not None})


def _connection_failures(props: Mapping[str, Any]) -> list[CheckFailure]:
    conn = props.get("connection")
    if not isinstance(conn, Mapping):
        return [CheckFailure("connection", "connection settings are required (host, user, private_key, ...)")]
    failures = []
    if not conn.get("host"):
        failures.append(CheckFailure("connection", "connection.host is required"))
    unknown = sorted(set(conn) - set(_CONNECTION_KEYS))
    if unknown:
        failures.append(CheckFailure("connection", f"unknown connection setting(s): {', '.join(unknown)}"))
    return failures


def _identity(props: Mapping[str, Any]) -> tuple:
    conn = _plain(dict(props.get("connection") or {}))
    bastion = conn.get("bastion") or {}
    return tuple(conn.get(k) for k in _IDENTITY_KEYS) + (bastion.get("host") if isinstance(bastion, Mapping)
                                                          else None,)


def _mode(value: Any) -> int:
    if isinstance(value, str):
        return int(value, 8)
    return int(value if value is not None else 0o644)


def _content_bytes(props: Mapping[str, Any]) -> bytes:
    if props.get("content") is not None:
        return str(props["content"]).encode()
    return Path(str(props["source"])).expanduser().read_bytes()


def _secret_connection(connection: Any) -> Any:
    """Make the private key (and the bastion's) secret, whatever form the connection input has."""
    if isinstance(connection, Mapping):
        conn = dict(connection)
        for k in ("private_key", "private_key_password"):
            if conn.get(k) is not None:
                conn[k] = pulumi.Output.secret(conn[k])
        if isinstance(conn.get("bastion"), Mapping):
            conn["bastion"] = _secret_connection(conn["bastion"])
        return conn
    return pulumi.Output.secret(connection)


def _secretness_of(*inputs: Any) -> pulumi.Output:
    """An empty placeholder that is secret exactly when one of ``inputs`` is: the Pulumi engine marks an
    output secret when the input of the same name was (dynamic providers cannot mark outputs themselves)."""
    return pulumi.Output.all(*[i for i in inputs if i is not None]).apply(lambda _: "")


# --------------------------------------------------------------------------------------------------------
# CopyFile
# --------------------------------------------------------------------------------------------------------

class CopyFileProvider(ResourceProvider):
    """A file on a remote host. Inputs: connection, remote_path, content | source, mode, owner, group,
    triggers, remove_on_delete. Outputs add ``sha256`` and ``size``."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = _connection_failures(news)
        if not news.get("remote_path"):
            failures.append(CheckFailure("remote_path", "remote_path is required"))
        has_content, has_source = news.get("content") is not None, news.get("source") is not None
        if has_content == has_source:
            failures.append(CheckFailure("content", "give exactly one of content or source"))
        elif has_source and not Path(str(news["source"])).expanduser().is_file():
            failures.append(CheckFailure("source", f"local file {news['source']} does not exist"))
        try:
            _mode(news.get("mode"))
        except (TypeError, ValueError):
            failures.append(CheckFailure("mode", f"mode must be an int or an octal string, not {news.get('mode')!r}"))
        checked = dict(news)
        if not failures:
            checked["sha256"] = hashlib.sha256(_content_bytes(news)).hexdigest()
        return CheckResult(checked, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = ["connection"] if _identity(olds) != _identity(news) else []
        if olds.get("remote_path") != news.get("remote_path"):
            replaces.append("remote_path")
        news_sha = news.get("sha256") or hashlib.sha256(_content_bytes(news)).hexdigest()
        changed = [k for k in ("mode", "owner", "group", "triggers", "remove_on_delete")
                   if _plain(olds.get(k)) != _plain(news.get(k))]
        if olds.get("sha256") != news_sha:
            changed.append("content")
        if _plain(olds.get("connection")) != _plain(news.get("connection")) and "connection" not in replaces:
            changed.append("connection")
        return DiffResult(changes=bool(replaces or changed), replaces=replaces, stables=[],
                          delete_before_replace=False)

    def _copy(self, props: dict[str, Any]) -> dict[str, Any]:
        data = _content_bytes(props)
        with connection_from_props(props) as conn:
            conn.put(data, str(props["remote_path"]), mode=_mode(props.get("mode")), owner=props.get("owner"),
                     group=props.get("group"))
        outs = dict(props)
        outs["sha256"] = hashlib.sha256(data).hexdigest()
        outs["size"] = len(data)
        return outs

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._copy(props)
        conn = _plain(props["connection"])
        return CreateResult(f"{conn.get('host')}:{props['remote_path']}", outs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._copy(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if not props.get("remove_on_delete"):
            return
        with connection_from_props(props) as conn:
            conn.run(f"rm -f -- {_q(props['remote_path'])}", name=f"remove {props['remote_path']}")


class CopyFile(pulumi.dynamic.Resource, module="polyvm", name="CopyFile"):
    """Copy ``content`` (text) or ``source`` (a local file) to ``remote_path`` on the host in ``connection``."""

    sha256: pulumi.Output[str]
    size: pulumi.Output[int]

    def __init__(self, resource_name: str, *, connection: Any, remote_path: Any, content: Any = None,
                 source: Any = None, mode: Any = 0o644, owner: Any = None, group: Any = None,
                 triggers: Any = None, remove_on_delete: bool = False,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "connection": _secret_connection(connection), "remote_path": remote_path, "content": content,
            "source": source, "mode": mode, "owner": owner, "group": group, "triggers": triggers,
            "remove_on_delete": remove_on_delete,
            "sha256": _secretness_of(content), "size": None,
        }
        super().__init__(CopyFileProvider(), resource_name, props, opts)


# --------------------------------------------------------------------------------------------------------
# RemoteExec
# --------------------------------------------------------------------------------------------------------

_RERUN_KEYS = ("create", "update", "stdin", "environment", "triggers", "sudo")


class RemoteExecProvider(ResourceProvider):
    """A command on a remote host: ``create`` runs on create, ``update`` (default: ``create``) when the
    commands, stdin, environment or triggers change, ``delete`` (optional) on destroy."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = _connection_failures(news)
        if not news.get("create"):
            failures.append(CheckFailure("create", "create (the command to run) is required"))
        env = news.get("environment")
        if env is not None and not isinstance(env, Mapping):
            failures.append(CheckFailure("environment", "environment must be a mapping of names to values"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = ["connection"] if _identity(olds) != _identity(news) else []
        changed = [k for k in (*_RERUN_KEYS, "delete", "timeout") if _plain(olds.get(k)) != _plain(news.get(k))]
        if _plain(olds.get("connection")) != _plain(news.get("connection")):
            changed.append("connection")
        return DiffResult(changes=bool(replaces or changed), replaces=replaces, stables=[],
                          delete_before_replace=False)

    def _run(self, props: dict[str, Any], command: str) -> dict[str, Any]:
        env = {str(k): str(v) for k, v in (props.get("environment") or {}).items()}
        timeout = props.get("timeout")
        with connection_from_props(props) as conn:
            r = conn.run(command, stdin=props.get("stdin"), env=env or None,
                         timeout=float(timeout) if timeout else None, sudo=props.get("sudo"),
                         name=props.get("name") or None)
        outs = dict(props)
        outs["stdout"] = tail(r.stdout, lines=10_000, chars=OUTPUT_TAIL_CHARS)
        outs["stderr"] = tail(r.stderr, lines=10_000, chars=OUTPUT_TAIL_CHARS)
        return outs

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._run(props, str(props["create"]))
        conn = _plain(props["connection"])
        digest = hashlib.sha256(str(props["create"]).encode()).hexdigest()[:12]
        return CreateResult(f"{conn.get('host')}:{digest}", outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if all(_plain(olds.get(k)) == _plain(news.get(k)) for k in _RERUN_KEYS):
            # only the delete command, timeout or connection details changed: nothing to re-run
            outs = dict(news)
            outs["stdout"], outs["stderr"] = olds.get("stdout", ""), olds.get("stderr", "")
            return UpdateResult(outs)
        return UpdateResult(self._run(news, str(news.get("update") or news["create"])))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("delete"):
            self._run(props, str(props["delete"]))


class RemoteExec(pulumi.dynamic.Resource, module="polyvm", name="RemoteExec"):
    """Run ``create`` on the host in ``connection``; re-run ``update`` (default ``create``) on change."""

    stdout: pulumi.Output[str]
    stderr: pulumi.Output[str]

    def __init__(self, resource_name: str, *, connection: Any, create: Any, update: Any = None,
                 delete: Any = None, stdin: Any = None, environment: Any = None, triggers: Any = None,
                 sudo: Any = None, timeout: Any = None, name: Any = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        placeholder = _secretness_of(create, update, delete, stdin, environment)
        props = {
            "connection": _secret_connection(connection), "create": create, "update": update, "delete": delete,
            "stdin": stdin, "environment": environment, "triggers": triggers, "sudo": sudo, "timeout": timeout,
            "name": name, "stdout": placeholder, "stderr": placeholder,
        }
        super().__init__(RemoteExecProvider(), resource_name, props, opts)


# --------------------------------------------------------------------------------------------------------
# RotateHostKey
# --------------------------------------------------------------------------------------------------------

class RotateHostKeyProvider(ResourceProvider):
    """Replace the host key a VM booted with (``connection.host_key``: the key injected through user data)
    by one generated on the VM (:meth:`Connection.rotate_host_key`); output ``host_key``: the new key.

    Created once per VM: a later ``pulumi up`` changes nothing here and every step keeps connecting with the
    stored ``host_key``. A new VM (another address, injected key or ``triggers``, e.g. the VM's id) replaces
    the resource, so the new VM is rotated too. Deleting it changes nothing on the host."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = _connection_failures(news)
        conn = news.get("connection")
        if isinstance(conn, Mapping) and not conn.get("host_key"):
            failures.append(CheckFailure("connection", "connection.host_key (the key the VM booted with) is "
                                                       "required: a rotation needs a verified first connection"))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        old_conn, new_conn = _plain(olds.get("connection") or {}), _plain(news.get("connection") or {})
        replaces = ["connection"] if (_identity(olds) != _identity(news)
                                      or old_conn.get("host_key") != new_conn.get("host_key")) else []
        if _plain(olds.get("triggers")) != _plain(news.get("triggers")):
            replaces.append("triggers")
        return DiffResult(changes=bool(replaces), replaces=replaces, stables=[] if replaces else ["host_key"],
                          delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        with connection_from_props(props) as conn:
            rotation = conn.rotate_host_key()
        outs = dict(props)
        outs.update(host_key=rotation.host_key, previous_host_key=rotation.previous, rotated=rotation.changed)
        conn_props = _plain(props["connection"])
        return CreateResult(f"{conn_props.get('host')}:{rotation.fingerprint}", outs)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        return None  # the host keeps its own key; there is nothing to undo


class RotateHostKey(pulumi.dynamic.Resource, module="polyvm", name="RotateHostKey"):
    """The VM's host key generated on the VM, replacing the injected one; ``host_key`` feeds later steps."""

    host_key: pulumi.Output[str]
    previous_host_key: pulumi.Output[str]

    def __init__(self, resource_name: str, *, connection: Any, triggers: Any = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"connection": _secret_connection(connection), "triggers": triggers, "host_key": None,
                 "previous_host_key": None, "rotated": None}
        super().__init__(RotateHostKeyProvider(), resource_name, props, opts)


def rotated_connection(name: str, connection: Any, *, triggers: Any = None,
                       opts: pulumi.ResourceOptions | None = None) -> tuple[Any, RotateHostKey]:
    """``connection`` (an Output of a mapping) with ``host_key`` replaced by a :class:`RotateHostKey`'s output,
    so that every resource using it connects to the rotated key and runs after the rotation."""
    rot = RotateHostKey(name, connection=connection, triggers=triggers, opts=opts)
    return pulumi.Output.all(connection, rot.host_key).apply(
        lambda cr: {**cr[0], "host_key": cr[1] or cr[0].get("host_key")}), rot


def _q(path: Any) -> str:
    import shlex

    return shlex.quote(str(path))


__all__: Sequence[str] = ["CopyFile", "CopyFileProvider", "RemoteExec", "RemoteExecProvider", "RotateHostKey",
                          "RotateHostKeyProvider", "connection_from_props", "rotated_connection"]


# --------------------------------------------------------------------------------------------------------
# Any steps (the guest baseline, a recipe) as resources
# --------------------------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "step"


def _declared_value(steps: Sequence[Any], index: int, part: int | None) -> tuple[Any, Any]:
    """(content or command, stdin) of step ``index`` (upload ``part`` of a copy step) in ``steps``."""
    from .steps import DeclaredExec

    d = steps[index].declared()
    if isinstance(d, DeclaredExec):
        return d.command, d.stdin
    up = d[part or 0]
    return up.data().decode(), None


def _placeholder_secret(name: str) -> str:
    return "polyvm-pending-" + hashlib.sha256(name.encode()).hexdigest()[:20]


class RecipeResource(pulumi.ComponentResource):
    """The guest baseline and a recipe on one VM, as resources: type ``polyvm:provisioners:Recipe``.

    Every step becomes resources the same way, whatever the recipe: copy steps one ``CopyFile`` per file,
    command and script steps one ``RemoteExec`` (re-run when an earlier file of this component changes).
    Values known only after the VM exists (data disk devices) or secret (generated passwords) are filled in
    by building the same steps again inside an ``apply`` with the real values.

    :param vm: a ``polyvm:<backend>:VirtualMachine`` component.
    :param recipe: a recipe name (``polyvm_register_recipes``), a Recipe, or None for the baseline only.
    :param inputs: the recipe's inputs (a mapping, e.g. Pulumi config, or the inputs model).
    :param private_key: the SSH private key (made secret); or ``private_key_path``.
    :param secrets: values (str or Output) for secrets the recipe needs (:meth:`Recipe.secrets_needed`);
        missing ones are generated (``pulumi_random.RandomPassword``, secret).
    :param connection: extra connection settings (bastion, known_hosts, ...).
    :param rotate_host_key: first replace the host key the VM booted with (injected through user data) by one
        generated on the VM (a :class:`RotateHostKey` child); every step then connects to the new key.
    """

    outputs: pulumi.Output[Mapping[str, Any]]
    secrets: pulumi.Output[Mapping[str, str]]
    host: pulumi.Output[Any]

    def __init__(self, name: str, *, vm: Any, recipe: Any = None, inputs: Any = None, private_key: Any = None,
                 private_key_path: str | None = None, secrets: Mapping[str, Any] | None = None,
                 connection: Mapping[str, Any] | None = None, spec: Any = None, guest_firewall: bool | None = None,
                 rotate_host_key: bool = False, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("polyvm:provisioners:Recipe", name, None, opts)
        from polyvm.host import Host, guest_firewall_of, host_output
        from polyvm.plugins import get_recipe

        from .baseline import baseline_steps

        spec = spec or vm.spec
        if isinstance(recipe, str):
            recipe = get_recipe(recipe)
        if guest_firewall is None:
            guest_firewall = guest_firewall_of(vm)
        pending = {d.name: f"/dev/polyvm-pending-{d.name}" for d in spec.data_disks}
        pending_address = "polyvm-pending-address"
        static_host = Host.from_spec(spec, address=pending_address, data_disk_devices=pending,
                                     guest_firewall=guest_firewall)
        parsed = None
        if recipe is not None:
            data = inputs if not isinstance(inputs, Mapping) else recipe.defaults_for(static_host, inputs)
            parsed = recipe.parse_inputs(data, source=f"{name} inputs")
        self.recipe = recipe
        self.inputs = parsed

        # Secrets: given > generated (secret).
        secret_outputs: dict[str, pulumi.Output[str]] = {}
        for n in (recipe.secrets_needed(parsed) if recipe is not None else []):
            given = (secrets or {}).get(n)
            secret_outputs[n] = pulumi.Output.secret(given if given is not None else _random(f"{name}-{n}-password", self))
        self.secrets = pulumi.Output.secret(pulumi.Output.all(**secret_outputs) if secret_outputs else {})

        def build(host: Any, values: Mapping[str, str]) -> list[Any]:
            facts = host.facts
            steps = baseline_steps(host, facts)
            if recipe is not None:
                filled = recipe.with_secrets(parsed, values) if values else parsed
                steps += list(recipe.steps(filled, host, facts))
            return steps

        tokens = {n: _placeholder_secret(f"{name}/{n}") for n in secret_outputs}
        static = build(static_host, tokens)
        markers = [pending_address, *pending.values(), *tokens.values()]
        host_out = host_output(vm, spec=spec, guest_firewall=guest_firewall)
        self.host = host_out
        live = pulumi.Output.all(host_out, pulumi.Output.all(**secret_outputs) if secret_outputs else {})

        no_secrets = pulumi.Output.all(host_out, {})

        def value(index: int, part: int | None, which: int, text: Any, secret: bool) -> Any:
            if text is None or not any(m in text for m in markers):
                return pulumi.Output.secret(text) if secret and text is not None else text
            uses_secret = any(t in text for t in tokens.values())

            def pick(a: list[Any]) -> Any:
                # (a mock runtime may leave a generated secret unknown: None)
                steps = build(a[0], {k: v or "" for k, v in a[1].items()} if uses_secret else tokens)
                if len(steps) != len(static):
                    raise RuntimeError(f"{name}: the steps changed shape once the VM's values were known")
                return _declared_value(steps, index, part)[which]

            # Only values that hold a secret depend on the secrets (a dependency on them makes an output secret).
            out = (live if uses_secret else no_secrets).apply(pick)
            return pulumi.Output.secret(out) if secret or uses_secret else out

        conn = host_out.apply(lambda h: {**h.connection_settings(), "private_key_path": private_key_path,
                                         **dict(connection or {})})
        conn = conn.apply(lambda c: {k: v for k, v in c.items() if v is not None and k != "name"})
        if private_key is not None:
            conn = pulumi.Output.all(conn, pulumi.Output.secret(private_key)).apply(
                lambda cp: {**cp[0], "private_key": cp[1]})
        self.rotation: RotateHostKey | None = None
        if rotate_host_key:
            # The injected key (user data) identifies the VM for this one connection only; every step below
            # connects to the key generated on the VM. Triggers: the injected key itself (a new VM has a new one).
            conn, self.rotation = rotated_connection(
                f"{name}-host-key", conn, triggers=host_out.apply(lambda h: [h.host_key]),
                opts=pulumi.ResourceOptions(parent=self))

        from .steps import DeclaredExec

        prev: list[pulumi.Resource] = []
        file_hashes: list[str] = []
        for i, step in enumerate(static):
            slug = f"{name}-{i:02d}-{_slug(step.name)}"
            ropts = pulumi.ResourceOptions(parent=self, depends_on=list(prev))
            declared = step.declared()
            if isinstance(declared, DeclaredExec):
                prev = [RemoteExec(slug, connection=conn, name=step.name,
                                   create=value(i, None, 0, declared.command, False),
                                   stdin=value(i, None, 1, declared.stdin, declared.secret),
                                   triggers=(list(file_hashes) or None) if declared.follows_files else None,
                                   opts=ropts)]
                continue
            made = []
            for k, up in enumerate(declared):
                text = up.data().decode()
                made.append(CopyFile(f"{slug}-{_slug(up.remote_path.rsplit('/', 1)[-1])}", connection=conn,
                                     remote_path=up.remote_path, content=value(i, k, 0, text, False), mode=up.mode,
                                     owner=up.owner, group=up.group, opts=ropts))
                file_hashes.append(hashlib.sha256(text.encode()).hexdigest())
            prev = made
        outputs = host_out.apply(lambda h: recipe.outputs(parsed, h) if recipe is not None
                                 else {"address": h.address})
        # Public files a client needs (Recipe.client_files, e.g. the server's CA certificate), read from
        # the host after the steps, as the outputs' client_files: {file name: content}.
        files = recipe.client_files(parsed, static_host) if recipe is not None else {}
        if files:
            reads = {fname: RemoteExec(f"{name}-client-{_slug(fname)}", connection=conn, name=f"read {fname}",
                                       create=f"cat {_q(remote)}",
                                       opts=pulumi.ResourceOptions(parent=self, depends_on=list(prev))).stdout
                     for fname, remote in files.items()}
            outputs = pulumi.Output.all(outputs, pulumi.Output.all(**reads)).apply(
                lambda oc: {**oc[0], "client_files": {k: (v or "") + ("\n" if v and not v.endswith("\n") else "")
                                                      for k, v in oc[1].items()}})
        self.outputs = outputs
        self.register_outputs({"outputs": self.outputs, "secrets": self.secrets})


def _random(name: str, parent: pulumi.Resource) -> pulumi.Output[str]:
    try:
        import pulumi_random
    except ImportError:
        from polyvm.errors import MissingDependencyError

        raise MissingDependencyError("generated recipe secrets", "recipes", "pulumi_random") from None
    return pulumi_random.RandomPassword(name, length=32, special=False,
                                        opts=pulumi.ResourceOptions(parent=parent)).result


__all__ = [*__all__, "RecipeResource"]


def provision_vm(spec: Any, vm: Any) -> "RecipeResource | None":
    """For :func:`polyvm.program.run` (examples/postgres-vm): the guest baseline on every VM that needs it
    (a guest-firewall backend, or data disks with a mount point), and the recipe named in Pulumi config.

    Config: the recipe's inputs in ``polyvm:<recipe name>`` (``polyvm:recipe`` names the recipe when several
    have inputs, or one without inputs); the SSH private key in ``polyvm:sshPrivateKey``
    (secret) or the file ``polyvm:sshPrivateKeyPath``. ``polyvm:rotateHostKey`` (default: true where the
    backend injects the host key) replaces the injected host key first (:class:`RotateHostKey`). Exports ``<vm>-<recipe>``: the recipe's outputs and
    its secrets (secret)."""
    from polyvm.errors import ConfigError
    from polyvm.host import guest_firewall_of
    from polyvm.plugins import list_recipes

    cfg = pulumi.Config("polyvm")
    recipes = list_recipes()
    name = cfg.get("recipe")
    if name is None:
        configured = [n for n in recipes if cfg.get_object(n) is not None]
        if len(configured) > 1:
            raise ConfigError(f"Pulumi config has inputs for several recipes ({', '.join(configured)}); "
                              "choose one with polyvm:recipe")
        name = configured[0] if configured else None
    guest_firewall = guest_firewall_of(vm)
    needs_baseline = guest_firewall or any(d.mount_point for d in spec.data_disks)
    if name is None and not needs_baseline:
        return None
    key = cfg.get_secret("sshPrivateKey")
    key_path = cfg.get("sshPrivateKeyPath")
    if key is None and key_path is None:
        why = f"recipe {name!r}" if name else ("the guest firewall" if guest_firewall else "mounting the data disks")
        raise ConfigError(f"{spec.name}: {why} needs SSH: set polyvm:sshPrivateKeyPath (or the secret "
                          "polyvm:sshPrivateKey) to the private half of polyvm:vm.ssh.public_key")
    label = name or "baseline"
    # The key the VM booted with travelled in user data; replace it first where the backend injects one
    # (polyvm:rotateHostKey false keeps it).
    rotate = cfg.get_bool("rotateHostKey")
    if rotate is None:
        from polyvm.plugins import get_backend

        rotate = get_backend(vm.backend_name).capabilities.host_key_at_creation
    res = RecipeResource(f"{spec.name}-{label}", vm=vm, spec=spec, recipe=name,
                         inputs=cfg.get_object(name) if name else None, private_key=key,
                         private_key_path=key_path, guest_firewall=guest_firewall, rotate_host_key=rotate,
                         opts=pulumi.ResourceOptions(depends_on=[vm]))
    pulumi.export(f"{spec.name}-{label}", {"outputs": res.outputs, "secrets": res.secrets})
    return res


__all__ = [*__all__, "provision_vm"]
