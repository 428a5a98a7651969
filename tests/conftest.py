"""Shared fixtures: a client SSH key and real SSH test hosts on this machine.

``testhosts`` starts hosts with the local backend's engine (:mod:`polyvm.backends.local.engine`): each
is a network namespace with its own address in 198.19.0.0/16, an in-memory overlay of ``/``, its own
sshd and freshly generated ed25519 host key. Hosts are removed after the test, also when it fails.
Needs root and openssh-server; without them the tests using these fixtures are skipped, saying why.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pytest

from polyvm.backends.local import recipe_leftovers

from polyvm.backends.local import engine as local_engine


@dataclass(frozen=True)
class ClientKey:
    """The ed25519 key tests log in with. ``private_key_path`` is 0600 (OpenSSH format)."""

    private_key_path: Path
    public_key: str


@dataclass
class TestHost:
    """One running test host, as tests see it."""

    __test__ = False  # not a test class, even when imported into a test module

    name: str
    address: str
    host_key: str
    user: str
    private_key_path: Path
    disk: str | None
    known_hosts_line: str
    disks: list[str] = field(default_factory=list)
    port: int = 22
    record: Any = None  # the engine's Host record


def _prerequisite_problem() -> str | None:
    problems = local_engine.missing_prerequisites(firewall=False, disks=False, user=False)
    if problems:
        return ("real SSH test hosts unavailable: " + "; ".join(problems)
                + f" (as root: {local_engine.INSTALL_HINT})")
    return None


#: Test hosts' records live here (not in pytest's basetemp, which other pytest runs may rotate away
#: while hosts are up): one subdirectory per pytest process.
TEST_STATE_ROOT = Path(tempfile.gettempdir()) / "polyvm-test-hosts"


def _reap_orphans() -> None:
    """Remove hosts left by pytest runs that were killed before their teardown ran."""
    for run_dir in TEST_STATE_ROOT.glob("*"):
        owner = run_dir.name.split("-")[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        local_engine.Engine(run_dir).down_all()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    private, public = local_engine.generate_host_key("polyvm-tests")
    d = tmp_path_factory.mktemp("client-key")
    os.chmod(d, 0o700)
    path = d / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    (d / "id_ed25519.pub").write_text(public + "\n")
    return ClientKey(private_key_path=path, public_key=public)


@pytest.fixture(scope="session")
def _local_engine(tmp_path_factory: pytest.TempPathFactory):
    problem = _prerequisite_problem()
    if problem:
        pytest.skip(problem)
    _reap_orphans()
    TEST_STATE_ROOT.mkdir(mode=0o700, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=TEST_STATE_ROOT))
    eng = local_engine.Engine(state)
    yield eng
    eng.down_all()  # safety net; each test's hosts are already gone
    shutil.rmtree(state, ignore_errors=True)


class TestHosts:
    """Factory for real SSH hosts; every host it made is removed when the test ends."""

    __test__ = False

    def __init__(self, engine: local_engine.Engine, key: ClientKey) -> None:
        self.engine = engine
        self.key = key
        self.hosts: list[TestHost] = []

    def up(self, count: int = 1, *, disk_mb: int = 0, disks_mb: Sequence[int] = (), fresh: bool = False,
           sshd_delay: float = 0.0, user: str | None = None, firewall: Any = None,
           bastion: bool = False) -> list[TestHost]:
        """Start ``count`` hosts. ``firewall``: an nftables ruleset (str) or a list of IngressRule (or
        dicts of their fields), rendered by :func:`polyvm.firewall.render_nftables`: exactly those rules,
        everything else inbound dropped (include SSH if the test logs in). ``bastion``: the host's sshd
        allows local TCP forwarding (a jump host); otherwise it forwards nothing."""
        sizes = [disk_mb] if disk_mb else []
        sizes += list(disks_mb)
        if firewall is not None and not isinstance(firewall, str):
            from polyvm.firewall import render_nftables
            from polyvm.spec import IngressRule

            firewall = render_nftables([r if isinstance(r, IngressRule) else IngressRule.model_validate(r)
                                        for r in firewall])

        def one(_: int) -> TestHost:
            rec = self.engine.up(authorized_keys=self.key.public_key, user=user, disks_mb=sizes,
                                 scrub=recipe_leftovers() if fresh else (),
                                 sshd_delay=sshd_delay, firewall=firewall, bastion=bastion,
                                 labels={"owner": "pytest", "owner_pid": str(os.getpid())})
            th = TestHost(name=rec.name, address=rec.guest_ip, host_key=rec.host_key, user=rec.user,
                          private_key_path=self.key.private_key_path, disk=rec.disks[0] if rec.disks else None,
                          known_hosts_line=rec.known_hosts_line, disks=list(rec.disks), record=rec)
            self.hosts.append(th)
            return th

        if count == 1:
            return [one(0)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(count, 8)) as pool:
            futures = [pool.submit(one, i) for i in range(count)]
            results = []
            errors = []
            for f in futures:
                try:
                    results.append(f.result())
                except Exception as exc:  # keep the started ones for teardown, then fail
                    errors.append(exc)
            if errors:
                raise errors[0]
            return results

    def down(self, host: TestHost) -> None:
        """Stop a host like a VM that dies: sshd and open sessions are killed, everything is removed."""
        self.engine.down(host.record)

    def exec(self, host: TestHost, argv: Sequence[str] | str, *, input: str | None = None,
             check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a command as root inside the host, from this machine (text in, text out)."""
        return self.engine.exec(host.record, argv, input=input, check=check, timeout=timeout)

    def close(self) -> None:
        for h in self.hosts:
            self.engine.down(h.record)
        self.hosts.clear()


@pytest.fixture
def testhosts(_local_engine: local_engine.Engine, client_key: ClientKey):
    factory = TestHosts(_local_engine, client_key)
    try:
        yield factory
    finally:
        factory.close()


# --- worked plugin examples installed from outside the repository (tests/*/test_third_party_*.py) ------------
def subprocess_env(*paths: Path) -> dict[str, str]:
    """This environment with ``paths`` first on PYTHONPATH: only subprocesses see what is installed there."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_subprocess(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def install_example(example: Path, root: Path, module: str) -> tuple[Path, Path]:
    """Build ``example`` from a copy (nothing is left in the repository) and pip-install it into
    ``root/site``; returns (site dir, the copy of the source tree)."""
    import sys

    src = root / "src"
    shutil.copytree(example, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    r = run_subprocess([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "--target", str(site), str(src)], dict(os.environ))
    assert r.returncode == 0, f"pip install of {example.name} failed:\n{r.stdout}\n{r.stderr}"
    assert (site / module / "__init__.py").is_file()
    return site, src
