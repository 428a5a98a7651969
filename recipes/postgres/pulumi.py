"""The Pulumi form of the PostgreSQL recipe: one component that takes a VM component's outputs and declares
the recipe's steps as the SSH layer's ``CopyFile`` / ``RemoteExec`` dynamic resources.

    from polyvm.recipes.postgres.pulumi import PostgresServer

    db = PostgresServer("db", vm=vm, settings={"allowed_cidrs": ["10.0.0.0/16"],
                                               "users": [{"name": "app"}], "databases": [{"name": "app"}]},
                        private_key=cfg.require_secret("sshPrivateKey"))
    pulumi.export("db_passwords", db.passwords)   # secret

The OS family, version and RAM come from the VM's spec; the data disk's device path from the VM's
``data_disk_devices`` output; the guest firewall is applied when the VM's backend has
``capabilities.firewall == "guest"``. Users without a password get a ``pulumi_random.RandomPassword``
(secret). Each resource runs only when its own inputs change, so a second ``pulumi up`` runs nothing; a
changed setting re-copies the drop-in and re-runs the server step, which reloads or restarts as needed.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import pulumi

from polyvm.errors import MissingDependencyError, SpecError
from polyvm.provisioners.pulumi import CopyFile, RemoteExec
from polyvm.spec import VmSpec

from .inputs import PostgresInputs, parse_inputs
from .recipe import FilesStep, RolesStep, ScriptStep, build_steps
from .platform import layout_for
from .render import pgpass_line, render_datadisk_script
from .roles import roles_sql

#: Stands for the data disk's device path until the VM's output is known.
_DEVICE_PLACEHOLDER = "/dev/polyvm-data-disk-placeholder"
_PLACEHOLDER_PASSWORD = "polyvm-placeholder-password"


def _random_password(name: str, parent: pulumi.Resource) -> pulumi.Output[str]:
    try:
        import pulumi_random
    except ImportError:
        raise MissingDependencyError("generated PostgreSQL passwords", "postgres", "pulumi_random") from None
    pw = pulumi_random.RandomPassword(name, length=32, special=False,
                                      opts=pulumi.ResourceOptions(parent=parent))
    return pw.result


class PostgresServer(pulumi.ComponentResource):
    """PostgreSQL on one VM, type ``polyvm:postgres:PostgresServer``.

    :param vm: a ``polyvm:<backend>:VirtualMachine`` component (has ``spec``, ``backend_name`` and the
        outputs public_ip, private_ip, ssh_user, host_key, data_disk_devices).
    :param settings: the recipe's inputs (a mapping of :class:`PostgresInputs` fields, e.g. Pulumi config
        ``polyvm:postgres``, or a PostgresInputs); passwords in it may be Pulumi secrets' plain values.
    :param private_key: the SSH private key (OpenSSH/PEM text; made secret) for ``vm.ssh_user``.
    :param passwords: user name -> password (str or Output, e.g. ``cfg.require_secret(...)``) for users
        whose password should not be generated.
    :param data_disk: which of the spec's data disks holds the data (default: the first, if any).
    :param connection: extra connection settings (bastion, port, known_hosts, ...).
    """

    passwords: pulumi.Output[Mapping[str, str]]
    host: pulumi.Output[str]
    port: int

    def __init__(self, name: str, *, vm: Any, settings: Mapping[str, Any] | PostgresInputs,
                 private_key: Any = None, private_key_path: str | None = None, spec: VmSpec | None = None,
                 passwords: Mapping[str, Any] | None = None, data_disk: str | None = None,
                 guest_firewall: bool | None = None, connection: Mapping[str, Any] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("polyvm:postgres:PostgresServer", name, None, opts)
        spec = spec or vm.spec
        inputs = settings if isinstance(settings, PostgresInputs) else parse_inputs(
            with_spec_defaults(settings, spec), source=f"{name} settings")
        disk = None
        if spec.data_disks:
            disk = next((d for d in spec.data_disks if d.name == data_disk), None) if data_disk else spec.data_disks[0]
            if disk is None:
                raise SpecError([f"data_disk {data_disk!r} is not one of the spec's data disks "
                                 f"({', '.join(d.name for d in spec.data_disks)})"])
        if guest_firewall is None:
            guest_firewall = _backend_firewall(vm) == "guest"
        update: dict[str, Any] = {"memory_mb": inputs.memory_mb or int(spec.size.memory_gb * 1024)}
        if disk is not None:
            update["data_device"] = _DEVICE_PLACEHOLDER
            if disk.mount_point:
                update["mount_point"] = disk.mount_point
        if guest_firewall:
            update["guest_firewall"] = True
            update["ingress"] = list(spec.ingress) or inputs.ingress
        # Validate the combination (e.g. a guest firewall must keep SSH open) before declaring anything.
        inputs = PostgresInputs.model_validate({**inputs.model_dump(), **update})

        # Passwords: given > passed as Outputs > generated (RandomPassword, secret).
        pw_outputs: dict[str, pulumi.Output[str]] = {}
        for u in inputs.users:
            if u.password is not None:
                pw_outputs[u.name] = pulumi.Output.secret(u.password.get_secret_value())
            elif passwords and u.name in passwords:
                pw_outputs[u.name] = pulumi.Output.secret(passwords[u.name])
            else:
                pw_outputs[u.name] = pulumi.Output.secret(_random_password(f"{name}-{u.name}-password", self))
        self.passwords = pulumi.Output.secret(pulumi.Output.all(**pw_outputs)) if pw_outputs else pulumi.Output.secret({})

        layout = layout_for(spec.image.family, spec.image.version, inputs.version,
                            data_mount=inputs.mount_point if disk is not None else None)
        # Steps are built once with placeholder passwords; secrets are filled in per resource below.
        shape = inputs.with_passwords({u.name: _PLACEHOLDER_PASSWORD for u in inputs.users})
        steps = build_steps(shape, layout)

        self.host = pulumi.Output.all(vm.public_ip, vm.private_ip).apply(lambda a: a[0] or a[1])
        conn = pulumi.Output.all(public=vm.public_ip, private=vm.private_ip, user=vm.ssh_user,
                                 host_key=vm.host_key).apply(
            lambda o: {k: v for k, v in {
                "host": o["public"] or o["private"], "user": o["user"], "host_key": o["host_key"],
                "private_key_path": private_key_path, **dict(connection or {})}.items() if v is not None})
        if private_key is not None:
            conn = pulumi.Output.all(conn, pulumi.Output.secret(private_key)).apply(
                lambda cp: {**cp[0], "private_key": cp[1]})
        self.port = inputs.port

        prev: list[pulumi.Resource] = []
        config_hashes: list[str] = []
        devices = pulumi.Output.from_input(vm.data_disk_devices)
        for i, step in enumerate(steps):
            slug = f"{name}-{i:02d}-{step.name.replace(' ', '-').lower()}"
            ropts = pulumi.ResourceOptions(parent=self, depends_on=list(prev))
            if isinstance(step, FilesStep):
                made = []
                for f in step.files:
                    cf = CopyFile(f"{slug}-{f.remote_path.rsplit('/', 1)[-1]}", connection=conn,
                                  remote_path=f.remote_path, content=f.content, mode=f.mode, owner=f.owner,
                                  group=f.group, opts=ropts)
                    made.append(cf)
                    config_hashes.append(hashlib.sha256(f.content.encode()).hexdigest())
                prev = made
                continue
            if isinstance(step, RolesStep):
                sql = pulumi.Output.all(**pw_outputs).apply(
                    lambda pws: roles_sql(inputs.with_passwords({k: v or "" for k, v in pws.items()}), None,
                                          plaintext=True)[0])
                prev = [RemoteExec(slug, connection=conn, name=step.name,
                                   create=("cd / && runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 "
                                           f"-h /var/run/postgresql -p {inputs.port} -d postgres -f -"),
                                   stdin=pulumi.Output.secret(sql), opts=ropts)]
                continue
            assert isinstance(step, ScriptStep)
            if step.name == "data disk":
                disk_name = disk.name if disk is not None else ""
                script = devices.apply(lambda devs, _dn=disk_name: render_datadisk_script(
                    inputs.model_copy(update={"data_device": _device(devs, _dn)}), layout))
                cmd = step.declared_command()
                stdin: Any = script
            elif step.name == "verify" and step.stdin is not None:
                user, db = inputs.verify_target()  # type: ignore[misc]
                cmd = step.declared_command()
                stdin = pulumi.Output.secret(pw_outputs[user].apply(
                    lambda pw, _s=step.script, _u=user, _d=db: _s + pgpass_line("127.0.0.1", inputs.port, _d, _u, pw or "")))
            else:
                cmd = step.declared_command()
                stdin = step.script
            # The server step re-runs (reload or restart) whenever a configuration file changes.
            triggers = list(config_hashes) if step.name in ("server", "verify") else None
            prev = [RemoteExec(slug, connection=conn, name=step.name, create=cmd, stdin=stdin,
                               triggers=triggers, opts=ropts)]
        self.register_outputs({"passwords": self.passwords, "host": self.host, "port": self.port})


def _device(devices: Mapping[str, str] | None, disk_name: str) -> str:
    devs = dict(devices or {})
    if disk_name not in devs:
        raise SpecError([f"the VM reports no device for data disk {disk_name!r} (data_disk_devices: {sorted(devs)})"])
    return devs[disk_name]


def _backend_firewall(vm: Any) -> str | None:
    name = getattr(vm, "backend_name", None)
    if not name:
        return None
    try:
        from polyvm.plugins import get_backend

        return get_backend(name).capabilities.firewall
    except Exception:  # noqa: BLE001 - an unknown backend simply has no guest firewall to ask for
        return None


def with_spec_defaults(settings: Mapping[str, Any], spec: VmSpec) -> dict[str, Any]:
    """``settings`` where a missing ``allowed_cidrs`` comes from the spec's ingress rules for the PostgreSQL
    port (never a world default: a spec rule open to the world needs allow_public there and here)."""
    out = dict(settings or {})
    if "allowed_cidrs" not in out:
        port = int(out.get("port", 5432))
        cidrs = [c for r in spec.ingress if r.covers(port) for c in r.cidrs]
        if cidrs:
            out["allowed_cidrs"] = list(dict.fromkeys(cidrs))
    return out


def after_vm(spec: VmSpec, vm: Any) -> PostgresServer | None:
    """For :func:`polyvm.program.run` (examples/postgres-vm): declare PostgreSQL on ``vm`` when Pulumi config
    ``polyvm:postgres`` is set. The SSH private key comes from ``polyvm:sshPrivateKey`` (secret) or the file
    named by ``polyvm:sshPrivateKeyPath``. Exports ``<vm>-postgres``: host, port and the passwords (secret)."""
    cfg = pulumi.Config("polyvm")
    settings = cfg.get_object("postgres")
    if settings is None:
        return None
    key = cfg.get_secret("sshPrivateKey")
    key_path = cfg.get("sshPrivateKeyPath")
    db = PostgresServer(f"{spec.name}-postgres", vm=vm, spec=spec, settings=settings, private_key=key,
                        private_key_path=key_path, opts=pulumi.ResourceOptions(depends_on=[vm]))
    pulumi.export(f"{spec.name}-postgres", {"host": db.host, "port": db.port, "passwords": db.passwords})
    return db
