"""Helpers shared by the benchmark scripts: machine facts, medians, Markdown tables, test hosts.

Benchmarks are plain scripts (``python bench/provision.py``), not tests: they print tables and assert
nothing about time. Hosts come from the local backend's engine (:mod:`polyvm.backends.local.engine`,
198.19.x.x) or, with ``--hosts-from testhost``, from ../shared/testhost/testhost with host numbers
150-199 (198.18.150-199.2). Every host a script starts is brought down when it ends, also on Ctrl-C,
SIGTERM or an error.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

#: Where benchmarks keep their own files (ansible venv, host records, keys, payloads).
CACHE = Path(os.environ.get("POLYVM_BENCH_DIR", "/var/cache/polyvm-bench"))
REPO = Path(__file__).resolve().parent.parent
TESTHOST = REPO.parent / "shared" / "testhost" / "testhost"
TESTHOST_RANGE = range(150, 200)


# --- facts and formatting ------------------------------------------------------------------------------
def _cmd(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "n/a"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "n/a"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "n/a"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    info = {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": _cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "openssh": _cmd(["ssh", "-V"]),
    }
    from importlib import metadata

    for dist in ("paramiko", "cryptography", "pulumi"):
        with contextlib.suppress(Exception):
            info[dist] = metadata.version(dist)
    git = _cmd(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
    info["polyvm (git)"] = git
    # The tree is shared and often dirty: fingerprint the SSH layer's sources as measured.
    import hashlib

    h = hashlib.sha256()
    for f in sorted((REPO / "provisioners").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    info["provisioners/*.py sha256"] = h.hexdigest()[:12]
    return info


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "n/a"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def fmt_s(x: float | None) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:.3f}" if x < 10 else f"{x:.2f}"


def fmt_ratio(x: float | None) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:.2f}×"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def print_machine(extra: dict[str, str] | None = None) -> None:
    info = machine_info()
    info.update(extra or {})
    info["load average (start)"] = loadavg()
    print(markdown_table(["machine", "value"], list(info.items())))
    print()


# --- signals ------------------------------------------------------------------------------------------
def exit_on_signals() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks (host teardown) run."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


# --- client key ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientKey:
    private_key_path: Path
    public_key: str


def make_client_key(directory: Path) -> ClientKey:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = directory / "id_ed25519"
    for p in (path, path.with_suffix(".pub")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "polyvm-bench", "-f", str(path)],
                   check=True)
    return ClientKey(path, path.with_suffix(".pub").read_text().strip())


# --- hosts --------------------------------------------------------------------------------------------
@dataclass
class BenchHost:
    name: str
    address: str
    host_key: str          # "ssh-ed25519 AAAA..."
    log_path: Path | None  # the host's sshd log (sshd -e), to count logins
    record: object = None
    teardown_error: str = ""

    @property
    def known_hosts_line(self) -> str:
        return f"{self.address} {self.host_key}"

    def logins(self) -> int:
        """How many public-key logins this host's sshd has accepted so far."""
        if self.log_path is None:
            return -1
        try:
            return self.log_path.read_text(errors="replace").count("Accepted publickey")
        except OSError:
            return -1


class HostPool:
    """Starts test hosts and always removes them (context manager)."""

    def __init__(self, source: str, key: ClientKey, *, state_dir: Path | None = None, pg: str = "keep") -> None:
        if source not in ("engine", "testhost"):
            raise ValueError("source must be 'engine' or 'testhost'")
        self.source = source
        self.key = key
        self.state_dir = state_dir or CACHE / "hosts"   # the engine's records of the hosts this pool starts
        self.pg = pg   # engine hosts: "fresh" = PostgreSQL installed, no cluster (like a new Debian VM)
        self.hosts: list[BenchHost] = []
        self._engine = None

    # engine -------------------------------------------------------------------------------------------
    def _engine_obj(self):
        if self._engine is None:
            from polyvm.backends.local import engine

            problems = engine.missing_prerequisites(firewall=False, disks=False, user=False)
            if problems:
                sys.exit("cannot start test hosts: " + "; ".join(problems))
            self._engine = engine.Engine(self.state_dir)
            # Hosts left by a benchmark that was killed with SIGKILL: remove them.
            for h in self._engine.list():
                owner = h.labels.get("owner_pid", "")
                if h.labels.get("owner") == "polyvm-bench" and owner.isdigit() and not Path(f"/proc/{owner}").exists():
                    self._engine.down(h)
        return self._engine

    def _up_engine(self, count: int) -> list[BenchHost]:
        import concurrent.futures

        eng = self._engine_obj()

        def one(_: int) -> BenchHost:
            # pg="fresh": PostgreSQL installed but no cluster, as on a new VM (the recipe's own leftovers list).
            scrub = ("var/lib/postgresql/*/*", "etc/postgresql/*/*") if self.pg == "fresh" else ()
            rec = eng.up(authorized_keys=self.key.public_key, scrub=scrub,
                         labels={"owner": "polyvm-bench", "owner_pid": str(os.getpid())})
            h = BenchHost(rec.name, rec.guest_ip, rec.host_key, rec.log_path, rec)
            self.hosts.append(h)
            return h

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, range(count)))

    # testhost script ---------------------------------------------------------------------------------
    def _up_testhost(self, count: int) -> list[BenchHost]:
        if not TESTHOST.exists():
            sys.exit(f"cannot find {TESTHOST}")
        taken = set(subprocess.run([str(TESTHOST), "list"], capture_output=True, text=True).stdout.split())
        used = {int(h.name.split("-")[1]) for h in self.hosts}
        free = [n for n in TESTHOST_RANGE if f"pvt-{n}" not in taken and n not in used]
        if len(free) < count:
            sys.exit(f"need {count} free testhost numbers in 150-199, have {len(free)}")
        keyfile = CACHE / "keys" / "authorized_keys"
        keyfile.write_text(self.key.public_key + "\n")
        tdir = Path(os.environ.get("TESTHOST_DIR", "/tmp/testhost"))
        new = []
        for n in free[:count]:
            h = BenchHost(f"pvt-{n}", f"198.18.{n}.2", "", tdir / f"pvt-{n}" / "log")
            self.hosts.append(h)  # recorded before starting, so teardown covers a half-started host
            subprocess.run([str(TESTHOST), "up", str(n), str(keyfile)], check=True, capture_output=True)
            h.host_key = " ".join((tdir / f"pvt-{n}" / "host_key.pub").read_text().split()[:2])
            new.append(h)
        deadline = time.monotonic() + 20
        for h in new:  # `testhost up` returns before sshd listens
            while True:
                with contextlib.suppress(OSError), socket.create_connection((h.address, 22), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{h.name}: sshd not listening")
                time.sleep(0.02)
        return new

    def up(self, count: int) -> list[BenchHost]:
        return self._up_engine(count) if self.source == "engine" else self._up_testhost(count)

    def close(self) -> None:
        # Ignore further Ctrl-C while tearing down: a half-done teardown leaks namespaces.
        import concurrent.futures
        import threading

        main = threading.current_thread() is threading.main_thread()   # signals: main thread only
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None

        def down(h: BenchHost) -> BenchHost | None:
            """None when removed, else the host (for a second, sequential attempt)."""
            try:
                if self.source == "engine":
                    self._engine_obj().down(h.record)
                    return h if (h.record.dir / "host.json").exists() else None
                subprocess.run([str(TESTHOST), "down", h.name.split("-")[1]], capture_output=True)
                return None
            except Exception as exc:  # noqa: BLE001 - retried below
                h.teardown_error = f"{type(exc).__name__}: {exc}"
                return h

        try:
            # In parallel: a 200-host pool takes minutes to remove one by one. The engine's down() is not
            # fully thread-safe (it reaps its child processes from a shared table), so whatever the
            # parallel pass left is removed again one by one.
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
                left = [h for h in pool.map(down, list(self.hosts)) if h is not None]
            for h in left:
                if down(h) is not None:
                    print(f"could not remove test host {h.name}: {h.teardown_error}", file=sys.stderr)
            self.hosts.clear()
        finally:
            if main:
                signal.signal(signal.SIGINT, old)

    def __enter__(self) -> "HostPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    out: list[float] = []
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - t0)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        sys.exit(f"{name} not found")
    return path
