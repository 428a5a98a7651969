"""``polyvm sandbox``: the whole product on this machine. Local hosts + the PostgreSQL recipe over SSH.

Everything lives in the local backend's state directory (default /var/lib/polyvm/local, mode 0700):
the hosts' records (``pvm-<i>/``) and ``sandbox/`` with the sandbox's own SSH key (``id_ed25519``), the
generated database passwords (``passwords.json``, 0600) and a ``known_hosts`` of the pinned host keys.
Sandbox hosts carry the label ``polyvm-sandbox=<vm name>``; ``down`` removes exactly those.
"""

from __future__ import annotations

import concurrent.futures
import importlib.resources
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from polyvm.errors import ConfigError, SandboxError
from polyvm.spec import VmSpec, parse_spec

from . import engine as eng
from . import mapping as m

LABEL = "polyvm-sandbox"
DEFAULT_USERS = [{"name": "app"}]
DEFAULT_DATABASES = [{"name": "app"}]

Progress = Callable[[str, str], None]  # (vm name, what is happening)


@dataclass
class SandboxVm:
    """One sandbox VM after ``up``: where it is and how to log in."""

    name: str
    host_id: str
    address: str
    ssh_user: str
    host_key: str
    disks: dict[str, str]
    pg_port: int
    db_user: str | None
    database: str | None
    created: bool                      # False when an existing host was reused
    recipe_changes: list[str] = field(default_factory=list)
    login_seconds: float | None = None  # from the start of `up` to a working database login
    note: str = ""

    @property
    def dsn(self) -> str | None:
        if not self.db_user:
            return None
        return f"postgresql://{self.db_user}@{self.address}:{self.pg_port}/{self.database}?sslmode=require"

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        d["dsn"] = self.dsn
        return d


class Sandbox:
    """The sandbox's files and hosts in one state directory."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.engine = eng.Engine(state_dir)
        self.state_dir = self.engine.state_dir
        self.dir = self.state_dir / "sandbox"
        self.key_path = self.dir / "id_ed25519"
        self.passwords_path = self.dir / "passwords.json"
        self.known_hosts_path = self.dir / "known_hosts"

    # --- files ---------------------------------------------------------------------------------------------
    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise SandboxError(f"polyvm sandbox needs root (its state in {self.state_dir} is root's, mode 0700); "
                               "run it with sudo")

    def public_key(self) -> str:
        """The sandbox's own login key (generated once, 0600), used to provision and for `sandbox ssh`."""
        pub = self.key_path.with_suffix(".pub")
        if not self.key_path.exists():
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            private, public = eng.generate_host_key("polyvm-sandbox")
            tmp = self.key_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(private)
            pub.write_text(public + " polyvm-sandbox\n")
            os.replace(tmp, self.key_path)
        return pub.read_text().strip()

    def _write_known_hosts(self) -> None:
        lines = [h.known_hosts_line for h in self.hosts() if h.host_key]
        if not self.dir.exists():
            return
        tmp = self.known_hosts_path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, self.known_hosts_path)

    def passwords(self) -> dict[str, str]:
        from polyvm.recipes.postgres.passwords import load_passwords

        return load_passwords(self.passwords_path)

    # --- hosts ----------------------------------------------------------------------------------------------
    def hosts(self) -> list[eng.Host]:
        self._require_root()
        return [h for h in self.engine.list() if LABEL in h.labels]

    def find(self, name: str) -> eng.Host | None:
        for h in self.hosts():
            if name in (h.labels.get(LABEL), h.id, h.name):
                return h
        return None

    def default_spec(self) -> VmSpec:
        """The built-in sample (templates/sandbox.yaml) for this machine's OS, with the sandbox's key."""
        import jinja2
        import yaml

        from . import HOST_FAMILY, HOST_VERSION

        if not (HOST_FAMILY and HOST_VERSION):
            raise SandboxError("this machine's OS (from /etc/os-release) is not one polyvm supports, and local "
                               "hosts are copies of it; supported: debian 12, ubuntu 22.04/24.04, rhel 9, "
                               "amazon-linux 2023")
        text = importlib.resources.files("polyvm.backends.local").joinpath("templates/sandbox.yaml").read_text()
        rendered = jinja2.Template(text, undefined=jinja2.StrictUndefined).render(
            family=HOST_FAMILY, version=HOST_VERSION, public_key=self.public_key())
        return parse_spec(yaml.safe_load(rendered), source="built-in sandbox spec")

    # --- up ---------------------------------------------------------------------------------------------
    def up(self, specs: Sequence[VmSpec] | None = None, *, count: int = 1,
           postgres: Mapping[str, Any] | None = None, progress: Progress | None = None,
           started: float | None = None) -> list[SandboxVm]:
        """Create (or reuse) the hosts, run the PostgreSQL recipe on each, check a database login.

        Running it again reuses running hosts (the recipe changes nothing the second time) and
        replaces hosts that died."""
        from . import LocalBackend

        started = time.monotonic() if started is None else started
        say = progress or (lambda _n, _s: None)
        eng.check_prerequisites()
        self._require_root()
        if count < 1:
            raise SandboxError("--count must be at least 1")
        backend = LocalBackend()
        for spec in specs or []:  # a user's specs are checked before anything is written
            self._check_spec(backend, spec)
        pub = self.public_key()
        if specs is None:
            specs = [self.default_spec()]
            self._check_spec(backend, specs[0])
        wanted: list[VmSpec] = []
        for spec in specs:
            for i in range(count):
                wanted.append(spec if count == 1 else spec.model_copy(update={"name": f"{spec.name}-{i + 1}"}))
        names = [s.name for s in wanted]
        if len(set(names)) != len(names):
            raise SandboxError(f"VM names must be unique: {', '.join(names)}")

        lock = threading.Lock()

        def one(spec: VmSpec) -> SandboxVm:
            return self._up_one(spec, pub, postgres or {}, say, started, lock)

        if len(wanted) == 1:
            vms = [one(wanted[0])]
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(wanted), 8)) as pool:
                futures = {s.name: pool.submit(one, s) for s in wanted}
                vms, failed = [], {}
                for name, fut in futures.items():
                    try:
                        vms.append(fut.result())
                    except Exception as exc:  # noqa: BLE001 - report every VM, then fail once
                        failed[name] = exc
                if failed:
                    raise SandboxError("; ".join(f"{n}: {e}" for n, e in failed.items())
                                       + " (the hosts stay up for inspection: polyvm sandbox status / ssh; "
                                         "remove them with polyvm sandbox down)")
        self._write_known_hosts()
        return vms

    @staticmethod
    def _check_spec(backend: Any, spec: VmSpec) -> None:
        backend.check(spec)
        if not _allows(spec, 22, eng.NETWORK):
            raise SandboxError(f"{spec.name}: the spec's ingress must allow SSH (22) from this machine's end "
                               f"of the link ({eng.NETWORK} or wider, e.g. 198.18.0.0/15) so the sandbox "
                               "can provision the host")

    def _host_for(self, spec: VmSpec, pub: str, say: Progress, lock: threading.Lock) -> tuple[eng.Host, bool, str]:
        from .provider import LocalHostProvider

        with lock:
            existing = [h for h in self.hosts() if h.labels.get(LABEL) == spec.name]
        lost = ""
        for h in existing:
            if self.engine.is_running(h) and self.engine.sshd_listening(h):
                say(spec.name, f"reusing {h.id} ({h.guest_ip})")
                return h, False, ""
            lost = f"replaced {h.id} ({h.guest_ip}): {self.engine.health(h).message}"
            say(spec.name, lost)
            self.engine.down(h)
        say(spec.name, "creating host")
        props = m.host_props(spec, pg="fresh")
        if pub.split()[:2] != spec.ssh.public_key.split()[:2]:
            props["authorized_keys"] = spec.ssh.public_key.strip() + "\n" + pub
        props["tags"] = {**props["tags"], LABEL: spec.name}
        props["state_dir"] = str(self.state_dir)
        created = LocalHostProvider(str(self.state_dir)).create(props)
        host = self.engine.get(created.id)
        assert host is not None
        return host, True, lost

    def postgres_inputs(self, spec: VmSpec, host: eng.Host, overrides: Mapping[str, Any]) -> Any:
        from polyvm.recipes.postgres import ensure_passwords, parse_inputs

        data: dict[str, Any] = {
            "allowed_cidrs": [f"{host.host_ip}/32"],
            "users": DEFAULT_USERS, "databases": DEFAULT_DATABASES,
            "memory_mb": max(128, int(spec.size.memory_gb * 1024)),
        }
        if spec.data_disks:
            disk = spec.data_disks[0]
            data["data_device"] = host.disks[0]
            if disk.mount_point:
                data["mount_point"] = disk.mount_point
        data.update(overrides)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        inputs, _generated = ensure_passwords(parse_inputs(data, source="sandbox postgres inputs"),
                                              self.passwords_path)
        return inputs

    def _up_one(self, spec: VmSpec, pub: str, overrides: Mapping[str, Any], say: Progress, started: float,
                lock: threading.Lock) -> SandboxVm:
        from polyvm.provisioners import Connection
        from polyvm.recipes.postgres import apply_postgres

        host, created, lost = self._host_for(spec, pub, say, lock)
        with lock:
            inputs = self.postgres_inputs(spec, host, overrides)
        say(spec.name, f"PostgreSQL recipe on {host.guest_ip}")
        with Connection(host.guest_ip, spec.ssh.user, private_key_path=self.key_path, host_key=host.host_key,
                        known_hosts=self.known_hosts_path, deadline=60, name=spec.name) as conn:
            result = apply_postgres(conn, inputs)
        vm = SandboxVm(name=spec.name, host_id=host.id, address=host.guest_ip, ssh_user=spec.ssh.user,
                       host_key=host.host_key, disks=dict(zip([d.name for d in spec.data_disks], host.disks)),
                       pg_port=inputs.port, db_user=None, database=None, created=created,
                       recipe_changes=result.changes, note=lost)
        target = inputs.verify_target()
        if target and not _allows(spec, inputs.port, host.host_ip):
            vm.db_user, vm.database = target
            vm.note += ("; " if vm.note else "") + (
                f"no login check from this machine: the spec's ingress does not open {inputs.port} to "
                f"{host.host_ip} (the recipe verified a login inside the host)")
        elif target:
            vm.db_user, vm.database = target
            say(spec.name, f"checking a login as {vm.db_user}")
            password = next(u.password for u in inputs.users if u.name == vm.db_user).get_secret_value()
            check_login(host.guest_ip, inputs.port, vm.db_user, vm.database, password)
            vm.login_seconds = time.monotonic() - started
        say(spec.name, "ready")
        return vm

    # --- down -------------------------------------------------------------------------------------------
    def down(self, names: Sequence[str] = ()) -> list[eng.Host]:
        """Remove the named sandbox VMs (all of them without names), also crashed or half-made ones.
        With none left, the sandbox's files go too (key, passwords, known_hosts)."""
        self._require_root()
        if not self.state_dir.exists():
            return []
        hosts = self.hosts()
        if names:
            unknown = [n for n in names if not any(n in (h.labels.get(LABEL), h.id, h.name) for h in hosts)]
            if unknown:
                raise SandboxError(f"no sandbox VM named {', '.join(unknown)} (see polyvm sandbox status)")
            hosts = [h for h in hosts if {h.labels.get(LABEL), h.id, h.name} & set(names)]
        for h in hosts:
            self.engine.down(h)
        if not self.hosts():
            shutil.rmtree(self.dir, ignore_errors=True)
            try:
                self.state_dir.rmdir()  # only when empty: other (Pulumi-managed) hosts keep it
                if self.state_dir == Path("/var/lib/polyvm/local"):
                    self.state_dir.parent.rmdir()  # /var/lib/polyvm, when nothing else is in it
            except OSError:
                pass
        else:
            self._write_known_hosts()
        return hosts

    # --- status / ssh -------------------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        if not self.state_dir.exists():
            return []
        out = []
        for h in self.hosts():
            running = self.engine.is_running(h)
            out.append({
                "name": h.labels.get(LABEL, h.name), "host_id": h.id, "address": h.guest_ip,
                "running": running,
                "sshd": running and self.engine.sshd_listening(h),
                "postgresql": running and h.pid is not None and eng._listening(h.pid, h.guest_ip, 5432),
                "disks": list(h.disks), "ssh_user": h.user, "host_key": h.host_key,
                "age_seconds": round(time.time() - h.created, 1),
            })
        return out

    def ssh_argv(self, name: str, command: Sequence[str] = ()) -> list[str]:
        host = self.find(name)
        if host is None:
            raise SandboxError(f"no sandbox VM named {name!r} (see polyvm sandbox status)")
        if not self.engine.is_running(host):
            raise SandboxError(f"sandbox VM {name!r} is not running; `polyvm sandbox up` replaces it")
        self._write_known_hosts()
        ssh = shutil.which("ssh")
        if ssh is None:
            raise SandboxError("ssh client not found: apt-get install -y openssh-client")
        return [ssh, "-i", str(self.key_path), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}", "-o", "GlobalKnownHostsFile=/dev/null",
                f"{host.user}@{host.guest_ip}", *command]


def _allows(spec: VmSpec, port: int, source: Any) -> bool:
    """Whether some TCP ingress rule of ``spec`` opens ``port`` to all of ``source`` (address or network)."""
    import ipaddress

    src = ipaddress.ip_network(str(source))
    for rule in spec.ingress:
        if rule.covers(port):
            for cidr in rule.cidrs:
                net = ipaddress.ip_network(cidr)
                if net.version == src.version and src.subnet_of(net):  # type: ignore[arg-type]
                    return True
    return False


def check_login(address: str, port: int, user: str, database: str, password: str, *, timeout: float = 10) -> None:
    """Log in over TCP with TLS and SCRAM (psycopg, or psql with a 0600 passfile); raise SandboxError if not."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            _login_once(address, port, user, database, password)
            return
        except SandboxError as exc:
            last = str(exc)
            time.sleep(0.2)
    raise SandboxError(f"cannot log in to PostgreSQL at {address}:{port} as {user}: {last}")


def _login_once(address: str, port: int, user: str, database: str, password: str) -> None:
    try:
        import psycopg
    except ImportError:
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None:
        try:
            with psycopg.connect(host=address, port=port, user=user, dbname=database, password=password,
                                 sslmode="require", connect_timeout=5) as conn:
                conn.execute("select 1").fetchone()
            return
        except psycopg.Error as exc:
            raise SandboxError(str(exc).replace(password, "********").strip().splitlines()[0]) from None
    psql = shutil.which("psql")
    if psql is None:
        raise SandboxError("neither psycopg nor psql is available to check the login "
                           "(pip install 'psycopg[binary]' or apt-get install -y postgresql-client)")
    with tempfile.NamedTemporaryFile("w", prefix="polyvm-pgpass-") as f:
        os.chmod(f.name, 0o600)
        esc = password.replace("\\", "\\\\").replace(":", "\\:")
        f.write(f"{address}:{port}:{database}:{user}:{esc}\n")
        f.flush()
        env = {"PATH": os.environ.get("PATH", ""), "PGPASSFILE": f.name, "PGSSLMODE": "require",
               "PGCONNECT_TIMEOUT": "5"}
        proc = subprocess.run([psql, "-h", address, "-p", str(port), "-U", user, "-d", database, "-w",
                               "-tAc", "select 1"], env=env, capture_output=True, text=True)
    if proc.returncode != 0 or proc.stdout.strip() != "1":
        raise SandboxError((proc.stderr.strip() or "login failed").splitlines()[0])


def load_postgres_overrides(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    from polyvm.spec import load_yaml

    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of PostgreSQL recipe inputs")
    return data


def json_dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
