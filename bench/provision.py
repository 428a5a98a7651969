#!/usr/bin/env python3
"""Provisioning benchmark: polyvm's fan-out against Ansible, OpenSSH, minimal paramiko and the handshake floor.

Work per host: copy a directory of 3 small files, then run a short script that reads them (it writes the
sha256 of their concatenation to /root/bench-<contender>.sum, which the benchmark checks afterwards on
every host, so a contender that is fast but wrong is caught). Each contender is measured on a fresh host
state ("fresh": the directory does not exist) and on an unchanged re-run ("re-run": same files already
there). Contenders run in the same invocation on the same hosts, interleaved round by round, and every
measured run starts cold: no SSH connection, ControlMaster socket or ControlPersist master survives from
an earlier run. Prints Markdown tables: median wall time, spread, logins per host (counted in each host's
sshd log) and polyvm's ratio to each contender.

    python bench/provision.py                      # N = 1, 10, 50; 5 runs each
    python bench/provision.py --hosts 10 --runs 9  # one size
    python bench/provision.py --only polyvm,floor --profile /tmp/prof

Needs root (network namespaces). Ansible is installed on first use into its own virtual environment
(/var/cache/polyvm-bench/ansible-venv); --no-install skips Ansible when it is not there yet.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import cProfile
import hashlib
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import BenchHost, CACHE, ClientKey  # noqa: E402

ANSIBLE_VENV = CACHE / "ansible-venv"
ANSIBLE_REQ = "ansible-core>=2.17,<2.20"
FILES = {"a.txt": 1024, "b.conf": 2048, "c.json": 4096}  # name -> size in bytes
RUN_TIMEOUT = 600.0


def payload_bytes(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).hexdigest().encode()
    return (seed * (size // len(seed) + 1))[:size - 1] + b"\n"


EXPECTED_SUM = hashlib.sha256(b"".join(payload_bytes(n, s) for n, s in FILES.items())).hexdigest()


def remote_dir(contender: str) -> str:
    return f"/root/bench-{contender}"


def script_for(contender: str) -> str:
    """The short script every contender runs: reads the 3 files, records their checksum."""
    d = remote_dir(contender)
    files = " ".join(f'"$d/{n}"' for n in FILES)
    return (f"set -e\nd={d}\n"
            f"test -r \"$d/{next(iter(FILES))}\"\n"
            f"cat {files} | sha256sum | cut -d' ' -f1 > \"$d.sum.tmp\"\n"
            f"mv \"$d.sum.tmp\" \"$d.sum\"\n")


_PAYLOAD_LOCK = threading.Lock()


# --- run context ---------------------------------------------------------------------------------------
@dataclass
class Ctx:
    key: ClientKey
    workdir: Path          # per invocation: payload dirs, known_hosts, ssh config, ansible files
    known_hosts: Path
    ssh_config: Path
    sockdir: Path          # short path under /tmp: Unix socket paths are limited to 108 bytes
    run_no: int = 0

    def payload_dir(self, contender: str) -> Path:
        """Local copy of the directory, named like its remote target (so `scp -r DIR host:/root/` fits)."""
        d = self.workdir / "payload" / f"bench-{contender}"
        with _PAYLOAD_LOCK:   # called from one thread per host
            if not d.exists():
                d.mkdir(parents=True)
                for n, s in FILES.items():
                    (d / n).write_bytes(payload_bytes(n, s))
        return d

    def fresh_dir(self, prefix: str, *, sockets: bool = False) -> Path:
        self.run_no += 1
        d = (self.sockdir if sockets else self.workdir) / f"{prefix}{self.run_no}"
        d.mkdir(mode=0o700)
        return d


def ssh_base(ctx: Ctx) -> list[str]:
    return ["ssh", "-F", str(ctx.ssh_config)]


def run_parallel(argvs: list[list[str]], *, stdin: bytes | None = None, timeout: float = RUN_TIMEOUT) -> list[subprocess.CompletedProcess]:
    """Start every command at once, wait for all (like `cmd & ... wait` in a shell script)."""
    procs = [subprocess.Popen(a, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in argvs]
    out = []
    for a, p in zip(argvs, procs):
        o, e = p.communicate(stdin, timeout=timeout)
        out.append(subprocess.CompletedProcess(a, p.returncode, o, e))
    return out


def check_all(results: list[subprocess.CompletedProcess], what: str) -> None:
    bad = [r for r in results if r.returncode != 0]
    if bad:
        r = bad[0]
        raise RuntimeError(f"{what}: {len(bad)} failed; first: {' '.join(map(str, r.args))[:200]}: "
                           f"exit {r.returncode}: {r.stderr.decode(errors='replace')[-400:]}")


def close_masters(ctx: Ctx, control_paths: list[Path]) -> None:
    """End ControlPersist masters (outside the timing), so the next run starts cold."""
    socks = [p for p in control_paths if p.exists()]
    if socks:
        run_parallel([ssh_base(ctx) + ["-o", f"ControlPath={s}", "-O", "exit", "bench-dummy"] for s in socks],
                     timeout=30)


# --- contenders --------------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    does: str                       # what it does, for the table
    run: Callable[[Ctx, list[BenchHost], bool], None]   # (ctx, hosts, rerun)
    setup: Callable[[Ctx], str | None] | None = None     # returns a reason it cannot run, or None
    skip: str | None = None
    version: str = ""


def run_floor(ctx: Ctx, hosts: list[BenchHost], rerun: bool, kex: list[str] = ()) -> None:
    res = run_parallel([ssh_base(ctx) + ["-o", "ControlMaster=no", *kex, f"root@{h.address}", "true"]
                        for h in hosts])
    check_all(res, "ssh true")


def run_floor_c25519(ctx: Ctx, hosts: list[BenchHost], rerun: bool) -> None:
    # OpenSSH 9.2 prefers sntrup761x25519 (post-quantum hybrid), which costs ~70 ms more CPU per handshake
    # here than curve25519, the key exchange paramiko (and so polyvm) negotiates with this server.
    run_floor(ctx, hosts, rerun, ["-o", "KexAlgorithms=curve25519-sha256"])


def _ossh_host(ctx: Ctx, h: BenchHost, cp: str, script: bytes) -> None:
    mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={cp}", "-o", "ControlPersist=60"]
    d = ctx.payload_dir("openssh")
    r = subprocess.run(["scp", "-q", "-r", "-F", str(ctx.ssh_config), *mux, str(d), f"root@{h.address}:/root/"],
                       capture_output=True, timeout=RUN_TIMEOUT)
    check_all([r], "scp")
    r = subprocess.run(ssh_base(ctx) + mux + [f"root@{h.address}", "sh", "-s"], input=script,
                       capture_output=True, timeout=RUN_TIMEOUT)
    check_all([r], "ssh sh -s")


def run_openssh(ctx: Ctx, hosts: list[BenchHost], rerun: bool) -> None:
    cpdir = ctx.fresh_dir("o", sockets=True)
    script = script_for("openssh").encode()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(lambda h: _ossh_host(ctx, h, str(cpdir / f"{h.address}"), script), hosts))
    finally:
        close_masters(ctx, [cpdir / h.address for h in hosts])
        shutil.rmtree(cpdir, ignore_errors=True)


def run_paramiko(ctx: Ctx, hosts: list[BenchHost], rerun: bool) -> None:
    """The minimal hand-written script: one connection per host, mkdir, SFTP put, exec; one thread per host."""
    import paramiko

    pkey = paramiko.Ed25519Key.from_private_key_file(str(ctx.key.private_key_path))
    d = ctx.payload_dir("paramiko")
    rdir = remote_dir("paramiko")
    script = script_for("paramiko").encode()

    def exec_(client: paramiko.SSHClient, cmd: str, stdin: bytes | None = None) -> None:
        chan = client.get_transport().open_session()
        chan.exec_command(cmd)
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        rc = chan.recv_exit_status()
        err = chan.recv_stderr(65536)
        chan.close()
        if rc != 0:
            raise RuntimeError(f"{cmd}: exit {rc}: {err!r}")

    def one(h: BenchHost) -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(str(ctx.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(h.address, username="root", pkey=pkey, look_for_keys=False, allow_agent=False,
                       timeout=10)
        try:
            exec_(client, f"mkdir -p {rdir}")
            sftp = client.open_sftp()
            for n in FILES:
                sftp.put(str(d / n), f"{rdir}/{n}")
            sftp.close()
            exec_(client, "sh -s", script)
        finally:
            client.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(one, hosts))


POLYVM_PARALLEL: int | None = None  # None: one worker per host (like Ansible forks = N)


def polyvm_work(ctx: Ctx, name: str = "polyvm") -> list:
    from polyvm.provisioners import CopyDir, Script

    steps = [CopyDir(ctx.payload_dir(name), remote_dir(name)),
             Script(script_for(name), name="read-files")]
    return steps


def run_polyvm(ctx: Ctx, hosts: list[BenchHost], rerun: bool) -> None:
    from polyvm.provisioners import Connection, fanout

    steps = polyvm_work(ctx)
    targets = [Connection(h.address, "root", private_key_path=str(ctx.key.private_key_path),
                          host_key=h.host_key, connect_timeout=10) for h in hosts]
    res = fanout(targets, steps, parallel=POLYVM_PARALLEL or len(hosts), progress=False)
    stats = [h.connection.stats for h in res.hosts.values() if getattr(h, "connection", None) is not None]
    if stats:
        n = len(stats)
        POLYVM_STATS[(len(hosts), rerun)] = (
            f"{sum(s.handshakes for s in stats) / n:.1f} handshakes, {sum(s.channels for s in stats) / n:.1f} exec "
            f"channels, {sum(s.files_uploaded for s in stats) / n:.1f} files / "
            f"{sum(s.bytes_uploaded for s in stats) / n:.0f} bytes sent per host")


POLYVM_STATS: dict[tuple[int, bool], str] = {}


def run_polyvm_prestart(ctx: Ctx, hosts: list[BenchHost], rerun: bool) -> None:
    """Experiment (not polyvm's fanout): the same Connection + steps per host, but every worker thread is
    started before any of them connects, then all are released at once. Tests whether starting threads
    while earlier workers hold the GIL (Thread.start waits for the new thread to run) costs time."""
    import threading

    from polyvm.provisioners import Connection, run_steps

    steps = polyvm_work(ctx, "polyvm-prestart")
    go = threading.Event()
    errors: list[BaseException] = []

    def one(h: BenchHost) -> None:
        go.wait()
        try:
            run_steps(Connection(h.address, "root", private_key_path=str(ctx.key.private_key_path),
                                 host_key=h.host_key, connect_timeout=10), steps)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in hosts]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def setup_polyvm(ctx: Ctx) -> str | None:
    try:
        from polyvm.provisioners import Connection, CopyDir, Script, fanout  # noqa: F401
    except ImportError as exc:
        return f"polyvm.provisioners not available yet ({exc})"
    return None


# Ansible ------------------------------------------------------------------------------------------------
ANSIBLE_INSTALL = True


def setup_ansible(ctx: Ctx) -> str | None:
    bin_ = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not bin_.exists():
        if not ANSIBLE_INSTALL:
            return f"ansible-core not installed in {ANSIBLE_VENV} (run without --no-install)"
        print(f"installing {ANSIBLE_REQ} into {ANSIBLE_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", ANSIBLE_REQ], check=True)
    return None


def ansible_version() -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run([str(ANSIBLE_VENV / "bin" / "ansible-playbook"), "--version"],
                             capture_output=True, text=True, env=dict(os.environ, LANG="C.UTF-8")).stdout
        return out.splitlines()[0].replace("ansible-playbook ", "ansible-core ").replace("[core ", "").rstrip("]")
    return "n/a"


def run_ansible(ctx: Ctx, hosts: list[BenchHost], rerun: bool) -> None:
    rd = ctx.fresh_dir("ansible")
    cp = ctx.fresh_dir("a", sockets=True)
    inv = ["[bench]"] + [f"h{i} ansible_host={h.address}" for i, h in enumerate(hosts)]
    inv += ["", "[bench:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={ctx.key.private_key_path}",
            "ansible_python_interpreter=/usr/bin/python3"]
    (rd / "inventory.ini").write_text("\n".join(inv) + "\n")
    ssh_args = (f"-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={ctx.known_hosts} "
                "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")
    (rd / "ansible.cfg").write_text(
        "[defaults]\n"
        f"forks = {len(hosts)}\n"
        "host_key_checking = True\n"
        "gathering = explicit\n"
        "retry_files_enabled = False\n"
        "interpreter_python = /usr/bin/python3\n"
        f"local_tmp = {rd}/tmp\n"
        "[ssh_connection]\n"
        "pipelining = True\n"
        f"ssh_args = {ssh_args}\n"
        f"control_path_dir = {cp}\n"
        "control_path = %(directory)s/%%C\n")
    script = script_for("ansible")
    play = (
        "- hosts: bench\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: copy the directory\n"
        f"      ansible.builtin.copy: {{src: '{ctx.payload_dir('ansible')}', dest: /root/}}\n"
        "    - name: run the script that reads the files\n"
        "      ansible.builtin.shell: |\n"
        + "".join(f"        {line}\n" for line in script.splitlines())
    )
    (rd / "play.yml").write_text(play)
    env = dict(os.environ, ANSIBLE_CONFIG=str(rd / "ansible.cfg"), LANG="C.UTF-8", LC_ALL="C.UTF-8",
               ANSIBLE_NOCOLOR="1")
    try:
        r = subprocess.run([str(ANSIBLE_VENV / "bin" / "ansible-playbook"), "-i", str(rd / "inventory.ini"),
                            str(rd / "play.yml")], capture_output=True, env=env, timeout=RUN_TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError(f"ansible-playbook exit {r.returncode}: {r.stdout.decode(errors='replace')[-1500:]}")
    finally:
        close_masters(ctx, list(cp.iterdir()))
        shutil.rmtree(rd, ignore_errors=True)
        shutil.rmtree(cp, ignore_errors=True)


CONTENDERS = [
    Contender("polyvm", "fanout(Connection…, [CopyDir, Script]), parallel = N, in-process", run_polyvm, setup_polyvm),
    Contender("ansible", "ansible-playbook: copy (dir) + shell; forks = N, pipelining, ControlPersist, "
                         "no fact gathering, interpreter pinned", run_ansible, setup_ansible),
    Contender("openssh", "per host in parallel: scp -r DIR, then ssh sh -s < script; ControlMaster "
                         "shares one connection (cold master each run)", run_openssh),
    Contender("paramiko", "minimal script: 1 connection/host (threads): exec mkdir, SFTP put ×3, exec sh -s",
              run_paramiko),
    Contender("polyvm-prestart", "experiment: polyvm Connection + run_steps per host, all worker threads started "
                                 "before any connects (not polyvm's fanout; only with --only)", run_polyvm_prestart,
              setup_polyvm),
    Contender("floor", "handshake floor: ssh host true, all hosts in parallel, no ControlMaster "
                       "(OpenSSH default kex sntrup761x25519)", run_floor),
    Contender("floor-c25519", "same floor with KexAlgorithms=curve25519-sha256 (the kex paramiko/polyvm use)",
              run_floor_c25519),
]


# --- verification / reset (outside the timing) --------------------------------------------------------
def verify_and_reset(ctx: Ctx, c: Contender, hosts: list[BenchHost], *, remove_dir: bool) -> None:
    """Check every host has the expected checksum file, then remove it (and the directory if asked)."""
    if c.name.startswith("floor"):
        return
    d = remote_dir(c.name)
    cmd = f"cat {d}.sum; rm -f {d}.sum" + (f"; rm -rf {d}" if remove_dir else "")
    res = run_parallel([ssh_base(ctx) + ["-o", "ControlMaster=no", f"root@{h.address}", cmd] for h in hosts],
                       timeout=120)
    bad = [h.address for h, r in zip(hosts, res) if r.stdout.decode().strip() != EXPECTED_SUM]
    if bad:
        raise RuntimeError(f"{c.name}: wrong or missing result on {len(bad)} host(s), e.g. {bad[0]}")


#: The test hosts are overlays of this machine's /, so root's ~/.bashrc is this machine's, which runs
#: `pyenv init` (~100 ms, ~80 processes). bash sources ~/.bashrc for every SSH exec and subsystem
#: (it detects sshd), so every session would pay it. A fresh cloud VM has Debian's stock root .bashrc;
#: give the hosts that (inside the host's in-memory overlay only), unless --keep-bashrc.
STOCK_BASHRC = "/usr/share/base-files/dot.bashrc"


def clean_root_shell(ctx: Ctx, hosts: list[BenchHost]) -> None:
    res = run_parallel([ssh_base(ctx) + ["-o", "ControlMaster=no", f"root@{h.address}",
                                         f"cp {STOCK_BASHRC} /root/.bashrc"] for h in hosts], timeout=120)
    check_all(res, "stock .bashrc")


def reset_hosts(ctx: Ctx, hosts: list[BenchHost]) -> None:
    res = run_parallel([ssh_base(ctx) + ["-o", "ControlMaster=no", f"root@{h.address}",
                                         "rm -rf /root/bench-*"] for h in hosts], timeout=120)
    check_all(res, "reset")


# --- measurement -------------------------------------------------------------------------------------
@dataclass
class Series:
    times: list[float] = field(default_factory=list)
    logins: list[float] = field(default_factory=list)   # per host, per run
    error: str | None = None


def measure(ctx: Ctx, c: Contender, hosts: list[BenchHost], rerun: bool, s: Series,
            profile_dir: Path | None = None) -> None:
    before = sum(h.logins() for h in hosts)
    prof = cProfile.Profile() if profile_dir is not None else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    try:
        c.run(ctx, hosts, rerun)
    finally:
        if prof:
            prof.disable()
    dt = time.perf_counter() - t0
    after = sum(h.logins() for h in hosts)
    if prof:
        name = f"{c.name}-n{len(hosts)}-{'rerun' if rerun else 'fresh'}"
        prof.dump_stats(str(profile_dir / f"{name}.prof"))
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        (profile_dir / f"{name}.txt").write_text(buf.getvalue())
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
        with open(profile_dir / f"{name}.txt", "a") as f:
            f.write(buf.getvalue())
    s.times.append(dt)
    if before >= 0:
        s.logins.append((after - before) / len(hosts))


def bench_size(ctx: Ctx, contenders: list[Contender], hosts: list[BenchHost], runs: int,
               profile_dir: Path | None) -> dict[tuple[str, bool], Series]:
    results = {(c.name, rr): Series() for c in contenders for rr in (False, True)}
    reset_hosts(ctx, hosts)
    for r in range(runs):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]  # rotate: spread drift
        for c in order:
            for rerun in (False, True):
                s = results[(c.name, rerun)]
                if s.error:
                    continue
                try:
                    measure(ctx, c, hosts, rerun, s)
                    verify_and_reset(ctx, c, hosts, remove_dir=rerun)
                except Exception as exc:  # a failing contender is reported, the others go on
                    s.error = f"{type(exc).__name__}: {str(exc)[:300]}"
                    traceback.print_exc(file=sys.stderr)
                    with contextlib.suppress(Exception):
                        reset_hosts(ctx, hosts)
                    break
        print(f"  N={len(hosts)} round {r + 1}/{runs} done (load {benchlib.loadavg()})", file=sys.stderr)
    if profile_dir is not None:
        for c in contenders:
            if c.name != "polyvm" or results[(c.name, False)].error:
                continue
            for rerun in (False, True):
                with contextlib.suppress(Exception):
                    measure(ctx, c, hosts, rerun, Series(), profile_dir)
                    verify_and_reset(ctx, c, hosts, remove_dir=rerun)
    return results


def report(n: int, contenders: list[Contender], res: dict[tuple[str, bool], Series], runs: int) -> str:
    pv = {rr: benchlib.median(res[("polyvm", rr)].times) if ("polyvm", rr) in res and not res[("polyvm", rr)].error
          else None for rr in (False, True)}
    rows = []
    for c in contenders:
        row = [c.name]
        for rr in (False, True):
            s = res[(c.name, rr)]
            if c.skip or s.error or not s.times:
                row += ["—", "—", "—", "—"]
                continue
            m = benchlib.median(s.times)
            row += [benchlib.fmt_s(m), f"{benchlib.fmt_s(min(s.times))}–{benchlib.fmt_s(max(s.times))}",
                    f"{benchlib.median(s.logins):.1f}" if s.logins else "?",
                    benchlib.fmt_ratio(pv[rr] / m) if pv[rr] else "—"]
        rows.append(row)
    head = ["contender", "fresh median s", "fresh min–max", "logins/host", "polyvm ÷ this",
            "re-run median s", "re-run min–max", "logins/host", "polyvm ÷ this"]
    out = [f"### N = {n} hosts ({runs} runs each, median)", "", benchlib.markdown_table(head, rows), ""]
    notes = [f"- {c.name}: {c.skip or res[(c.name, False)].error or res[(c.name, True)].error}" for c in contenders
             if c.skip or res[(c.name, False)].error or res[(c.name, True)].error]
    if notes:
        out += ["Not measured / failed:", *notes, ""]
    for rr in (False, True):
        if (n, rr) in POLYVM_STATS:
            out.append(f"polyvm {'re-run' if rr else 'fresh'} (ConnectionStats, last run): {POLYVM_STATS[(n, rr)]}")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    global POLYVM_PARALLEL, ANSIBLE_INSTALL
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", default="1,10,50", help="comma-separated host counts (default 1,10,50)")
    ap.add_argument("--runs", type=int, default=5, help="measured runs per contender and size (median)")
    ap.add_argument("--only", default="", help="comma-separated contenders (polyvm,ansible,openssh,paramiko,floor,floor-c25519)")
    ap.add_argument("--hosts-from", choices=["engine", "testhost"], default="engine",
                    help="polyvm's local engine (198.19.x.x) or ../shared/testhost (numbers 150-199)")
    ap.add_argument("--polyvm-parallel", type=int, default=None, help="fanout(parallel=) (default: N)")
    ap.add_argument("--profile", type=Path, default=None, help="also run polyvm once more under cProfile, stats here")
    ap.add_argument("--keep-bashrc", action="store_true",
                    help="keep this machine's root ~/.bashrc in the hosts (pyenv init: ~0.1 s per SSH session)")
    ap.add_argument("--no-install", action="store_true", help="do not install ansible-core; skip it if missing")
    args = ap.parse_args(argv)
    POLYVM_PARALLEL = args.polyvm_parallel
    ANSIBLE_INSTALL = not args.no_install
    sizes = [int(x) for x in args.hosts.split(",") if x]
    if args.hosts_from == "testhost" and max(sizes) > len(benchlib.TESTHOST_RANGE):
        ap.error("testhost numbers 150-199 give at most 50 hosts")
    if os.geteuid() != 0:
        ap.error("needs root (test hosts are network namespaces)")
    only = set(args.only.split(",")) if args.only else None
    contenders = [c for c in CONTENDERS if (only is None and c.name != "polyvm-prestart")
                  or (only is not None and c.name in only)]
    benchlib.exit_on_signals()

    CACHE.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="provision-", dir=CACHE))
    os.chmod(workdir, 0o700)
    key = benchlib.make_client_key(workdir / "key")
    sockdir = Path(tempfile.mkdtemp(prefix="pvb", dir="/tmp"))
    ctx = Ctx(key, workdir, workdir / "known_hosts", workdir / "ssh_config", sockdir)
    ctx.ssh_config.write_text(
        "Host *\n  User root\n"
        f"  IdentityFile {key.private_key_path}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {ctx.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n")
    for c in contenders:
        if c.setup:
            c.skip = c.setup(ctx)
    for c in contenders:
        if c.name == "ansible" and not c.skip:
            c.version = ansible_version()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    extra = {"ansible": next((c.version for c in contenders if c.name == "ansible" and c.version), "not run"),
             "hosts from": args.hosts_from, "runs": str(args.runs),
             "root ~/.bashrc in hosts": "this machine's (pyenv init)" if args.keep_bashrc else "Debian stock"}
    print("## Provisioning benchmark\n")
    benchlib.print_machine(extra)
    print(benchlib.markdown_table(["contender", "what it does"], [[c.name, c.skip and f"({c.skip})" or c.does]
                                                                   for c in contenders]))
    print()
    medians: dict[int, dict[tuple[str, bool], float]] = {}
    try:
        with benchlib.HostPool(args.hosts_from, key) as pool:
            hosts: list[BenchHost] = []
            for n in sorted(sizes):
                if len(hosts) < n:
                    new = pool.up(n - len(hosts))
                    hosts += new
                    ctx.known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in hosts))
                    if not args.keep_bashrc:
                        clean_root_shell(ctx, new)
                sub = hosts[:n]
                print(f"N={n}: measuring (load {benchlib.loadavg()})", file=sys.stderr)
                res = bench_size(ctx, [c for c in contenders if not c.skip] or contenders, sub, args.runs,
                                 args.profile)
                for c in contenders:
                    res.setdefault((c.name, False), Series())
                    res.setdefault((c.name, True), Series())
                print(report(n, contenders, res, args.runs))
                print(f"load average after N={n}: {benchlib.loadavg()}\n", flush=True)
                medians[n] = {k: benchlib.median(v.times) for k, v in res.items() if v.times and not v.error}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(sockdir, ignore_errors=True)
    if len(medians) > 1:
        ns = sorted(medians)
        rows = []
        for c in contenders:
            for rr in (False, True):
                vals = [medians[n].get((c.name, rr)) for n in ns]
                rows.append([c.name + (" re-run" if rr else "")]
                            + [f"{benchlib.fmt_s(v)} ({benchlib.fmt_s(v / n * 1000)} ms/host)" if v else "—"
                               for v, n in zip(vals, ns)])
        print("### Scaling (median s, and per host)\n")
        print(benchlib.markdown_table(["contender"] + [f"N={n}" for n in ns], rows))
        print()
    print(targets(medians))
    return 0


def targets(medians: dict[int, dict[tuple[str, bool], float]]) -> str:
    """The issue's targets, checked against the medians just measured."""
    rows = []

    def get(n: int, name: str, rr: bool = False) -> float | None:
        return medians.get(n, {}).get((name, rr))

    for rr in (False, True):
        tag = " (re-run)" if rr else ""
        if (pv := get(10, "polyvm", rr)) is not None:
            for fl in ("floor", "floor-c25519"):
                if (f := get(10, fl, rr)) is not None:
                    rows.append([f"N=10{tag}: polyvm ≤ 1.3 × {fl}", f"{pv / f:.2f}×", "yes" if pv <= 1.3 * f else "NO"])
            if (pm := get(10, "paramiko", rr)) is not None:
                rows.append([f"N=10{tag}: polyvm < minimal paramiko", f"{pv / pm:.2f}×", "yes" if pv < pm else "NO"])
            if (an := get(10, "ansible", rr)) is not None:
                rows.append([f"N=10{tag}: Ansible ≥ 15 × polyvm", f"{an / pv:.1f}×", "yes" if an >= 15 * pv else "NO"])
        if (p50 := get(50, "polyvm", rr)) is not None and (p10 := get(10, "polyvm", rr)) is not None:
            rows.append([f"N=50{tag}: no worse than linear (time/host vs N=10)", f"{p50 / 50 / (p10 / 10):.2f}×",
                         "yes" if p50 / 50 <= p10 / 10 * 1.05 else "NO"])
        if (p50 := get(50, "polyvm", rr)) is not None:
            others = {k[0]: v for k, v in medians.get(50, {}).items() if k[1] == rr and k[0] != "polyvm"}
            if others:
                best = min(others, key=others.get)
                rows.append([f"N=50{tag}: polyvm ahead of every contender (best other: {best})",
                             f"{p50 / others[best]:.2f}×", "yes" if p50 < others[best] else "NO"])
    if not rows:
        return ""
    return "### Targets (issue 8)\n\n" + benchlib.markdown_table(["target", "measured", "met"], rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
