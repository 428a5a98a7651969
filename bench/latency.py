#!/usr/bin/env python3
"""Latency benchmark: every contender of bench/provision.py, and the PostgreSQL recipe, across added network
delay (0, 20, 100 ms RTT), with the round trips each one needs per host counted by a delaying relay.

    python bench/latency.py                                   # 10 hosts, RTT 0,20,100 ms, 3 runs
    python bench/latency.py --hosts 50 --rtt 100 --runs 3
    python bench/latency.py --hosts 50 --rtt 100 --only polyvm --parallel 16,32,64,128
    python bench/latency.py --hosts 200 --rtt 0,100 --only polyvm,floor-c25519 --memory
    python bench/latency.py --hosts 1 --rtt 100 --only polyvm,pg --trace /tmp/trace   # per-turn relay log

This kernel has no netem: bench/relay.py (one relay process for all hosts) sits between the client and
each host's sshd, delays each direction by RTT/2 (the TCP handshake too), preserves byte order and
counts, per connection, request/response turns and the round trips on the critical path. Every
contender talks to the relay's address for a host (127.77.x.y:22, loopback), with the host's key
pinned for that address; checks and resets between runs go to the hosts directly (outside the timing).

Contenders (from bench/provision.py unless said): floor (`ssh host true`, OpenSSH default kex),
floor-c25519 (same, curve25519 as paramiko/polyvm negotiate), paramiko (minimal script), openssh (scp -r +
ssh sh -s, one ControlMaster connection), ansible (copy + shell, pipelining, ControlPersist), polyvm
(fanout: CopyDir + Script), pg (here: the PostgreSQL recipe through fanout(conns, steps_for(inputs)) as
`polyvm postgres` runs it: "pg first" on hosts with PostgreSQL installed but no cluster, then "pg re-run"
unchanged; the cluster is wiped after each pair, outside the timing).

Hosts come from the local engine with their own state directory (--state-dir, default
/tmp/polyvm-bench-latency/hosts) and are always removed at the end, also on Ctrl-C, SIGTERM or an error.
Every wait is bounded (per run: --run-timeout). Not a test: asserts nothing about time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
import provision  # noqa: E402
from benchlib import BenchHost  # noqa: E402
from relay import RelayProcess  # noqa: E402

BENCH_DIR = Path(os.environ.get("POLYVM_BENCH_DIR", "/tmp/polyvm-bench-latency"))
PG_PASSWORD = "bench-only-password-9f1c"   # a throw-away host's role password, never used elsewhere
PG_INPUTS = {"allowed_cidrs": ["198.19.0.0/16"], "users": [{"name": "app", "password": PG_PASSWORD}],
             "databases": [{"name": "app"}], "memory_mb": 256}
# What pg="fresh" leaves on an engine host: PostgreSQL installed, no cluster. Run inside the host.
PG_WIPE = ("for d in /var/lib/postgresql/*/main; do [ -f \"$d/postmaster.pid\" ] && "
           "runuser -u postgres -- /usr/lib/postgresql/*/bin/pg_ctl stop -m immediate -w -t 30 -D \"$d\" "
           ">/dev/null 2>&1; done; pkill -9 -u postgres 2>/dev/null; sleep 0.2; "
           "rm -rf /var/lib/postgresql/*/* /etc/postgresql/*/* /var/log/postgresql/* /var/lib/polyvm/stamps; true")
ORDER = ["floor", "floor-c25519", "paramiko", "openssh", "ansible", "polyvm", "pg"]


def relay_address(i: int) -> str:
    """Loopback address (port 22) of host ``i``'s relay listener."""
    return f"127.77.{i // 250}.{i % 250 + 1}"


# --- one run -----------------------------------------------------------------------------------------
@dataclass
class Sample:
    seconds: float
    conns: float        # TCP connections per host
    turns: float        # request/response turns per host (sum over its connections)
    rtts: float         # round trips on the critical path per host (sum over its connections)
    turns_max: int = 0  # the host with the most turns
    extra: str = ""


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    def med(self, attr: str) -> float:
        return benchlib.median([getattr(s, attr) for s in self.samples])


def relay_counts(relay: RelayProcess, relayed: list[BenchHost], settle: float) -> tuple[float, float, float, int]:
    """Per-host averages of connections, turns and critical-path round trips since the last reset."""
    time.sleep(settle)   # the last delayed bytes (EOF, close) are still on their way
    allc = relay.all_connections()
    per = []
    for h in relayed:
        cs = allc.get((h.address, 22), [])
        per.append((len(cs), sum(c.turns for c in cs), sum(c.round_trips for c in cs)))
    n = len(per) or 1
    return (sum(p[0] for p in per) / n, sum(p[1] for p in per) / n, sum(p[2] for p in per) / n,
            max((p[1] for p in per), default=0))


def run_pg(hosts: list[BenchHost], key: benchlib.ClientKey, parallel: int, *, rerun: bool) -> str:
    """The PostgreSQL recipe as ``polyvm apply --recipe postgres`` runs it: run_recipe over Hosts without
    known facts (so the OS is detected on the host, one command), guest baseline without firewall/disks."""
    from polyvm.host import Host
    from polyvm.plugins import get_recipe
    from polyvm.provisioners import Connection
    from polyvm.provisioners.fanout import run_recipe

    recipe = get_recipe("postgres")
    conns = [Connection(h.address, "root", private_key_path=str(key.private_key_path), host_key=h.host_key,
                        connect_timeout=15, deadline=60) for h in hosts]
    targets = [Host(address=c.host, user=c.user, port=c.port, host_key=None, name=c.name) for c in conns]
    inputs = recipe.parse_inputs(PG_INPUTS)
    res = run_recipe(targets, recipe, inputs, connections=conns, parallel=parallel, progress=False,
                     raise_on_failure=False)
    if not res.ok:
        name, exc = next(iter(res.failed.items()))
        raise RuntimeError(f"pg {'re-run' if rerun else 'first run'}: {len(res.failed)} host(s) failed, {name}: {exc}")
    changed = sum(1 for hr in res.hosts.values() if any(r.changed for r in hr.results))
    if rerun and changed:
        raise RuntimeError(f"pg re-run changed {changed} host(s): not an unchanged re-run")
    if not rerun and changed != len(hosts):
        raise RuntimeError(f"pg first run changed only {changed} of {len(hosts)} hosts: not a first run")
    stats = [c.stats for c in conns]
    n = len(stats)
    return (f"{sum(s.handshakes for s in stats) / n:.1f} handshakes, "
            f"{sum(s.channels for s in stats) / n:.1f} exec channels per host")


def pg_wipe(pool: benchlib.HostPool, direct: list[BenchHost]) -> None:
    eng = pool._engine_obj()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        list(ex.map(lambda h: eng.exec(h.record, PG_WIPE, check=False, timeout=120), direct))


# --- memory sampling (client process and the hosts' processes) -------------------------------------------
class MemorySampler:
    """Peak sum of PSS (KiB) of every process in the hosts' network namespaces, sampled in a thread."""

    def __init__(self, direct: list[BenchHost], interval: float = 0.5) -> None:
        from polyvm.backends.local import engine

        self._nets = {tuple(h.record.netns_inode) for h in direct if h.record and h.record.netns_inode}
        self._engine = engine
        self.interval = interval
        self.peak_kib = 0
        self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> tuple[int, int]:
        total = procs = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{pid}/ns/net")
                if (st.st_dev, st.st_ino) not in self._nets:
                    continue
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        procs += 1
                        break
            except (OSError, ValueError):
                continue
        return total, procs

    def _loop(self) -> None:
        while not self._stop.is_set():
            kib, procs = self._sample()
            if kib > self.peak_kib:
                self.peak_kib, self.peak_procs = kib, procs
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


POLYVM_CHILD = """
import json, resource, sys, time
from polyvm.provisioners import Connection, CopyDir, Script, fanout
a = json.load(sys.stdin)
steps = [CopyDir(a["payload"], a["remote"]), Script(a["script"], name="read-files")]
conns = [Connection(h, "root", private_key_path=a["key"], host_key=k, connect_timeout=15) for h, k in a["targets"]]
t0 = time.perf_counter()
res = fanout(conns, steps, parallel=a["parallel"], progress=False, raise_on_failure=False)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "failed": {k: str(v) for k, v in res.failed.items()},
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_polyvm_child(ctx: provision.Ctx, relayed: list[BenchHost], parallel: int, timeout: float) -> dict:
    """polyvm copy+run in a fresh process of its own: its peak RSS is the client's memory."""
    arg = {"payload": str(ctx.payload_dir("polyvm")), "remote": provision.remote_dir("polyvm"),
           "script": provision.script_for("polyvm"), "key": str(ctx.key.private_key_path), "parallel": parallel,
           "targets": [[h.address, h.host_key] for h in relayed]}
    p = subprocess.run([sys.executable, "-c", POLYVM_CHILD], input=json.dumps(arg), capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"polyvm child exit {p.returncode}: {p.stderr[-800:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if out["failed"]:
        name, err = next(iter(out["failed"].items()))
        raise RuntimeError(f"polyvm: {len(out['failed'])} host(s) failed, {name}: {err}")
    return out


# --- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--rtt", default="0,20,100", help="comma-separated RTTs in ms (default 0,20,100)")
    ap.add_argument("--runs", type=int, default=3, help="measured runs per contender and RTT (median)")
    ap.add_argument("--only", default="", help="comma-separated contenders: " + ",".join(ORDER))
    ap.add_argument("--parallel", default="", help="comma-separated fanout(parallel=) values for polyvm and pg "
                                                   "(default: one worker per host)")
    ap.add_argument("--memory", action="store_true", help="run polyvm in a child process and report peak memory "
                                                          "(client RSS, PSS of the hosts' processes)")
    ap.add_argument("--trace", type=Path, default=None, help="write the relay's per-chunk log per contender here")
    ap.add_argument("--state-dir", type=Path, default=BENCH_DIR / "hosts", help="the engine's host records")
    ap.add_argument("--run-timeout", type=float, default=900.0, help="bound on one measured run, seconds")
    ap.add_argument("--no-install", action="store_true", help="skip Ansible if it is not installed yet")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root (test hosts are network namespaces)")
    if not 1 <= args.hosts <= 250:
        ap.error("--hosts must be 1..250 (never more than ~250 namespaces at once)")
    rtts = [float(x) for x in args.rtt.split(",") if x]
    only = [c for c in ORDER if not args.only or c in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(ORDER) - {""}
    if unknown:
        ap.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    parallels = [int(x) for x in args.parallel.split(",") if x] or [args.hosts]
    if args.trace is not None:   # polyvm's own debug log (one line per command), to match the relay's turns
        import logging

        args.trace.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(args.trace / "polyvm-debug.log")
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(threadName)s %(message)s", "%H:%M:%S"))
        logging.getLogger("polyvm").addHandler(handler)
        logging.getLogger("polyvm").setLevel(logging.DEBUG)
    provision.RUN_TIMEOUT = args.run_timeout
    provision.ANSIBLE_INSTALL = not args.no_install
    benchlib.exit_on_signals()

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="latency-", dir=BENCH_DIR))
    sockdir = Path(tempfile.mkdtemp(prefix="pvl", dir="/tmp"))
    key = benchlib.make_client_key(workdir / "key")

    def make_ctx(tag: str) -> provision.Ctx:
        c = provision.Ctx(key, workdir, workdir / f"known_hosts-{tag}", workdir / f"ssh_config-{tag}", sockdir)
        c.ssh_config.write_text(
            "Host *\n  User root\n"
            f"  IdentityFile {key.private_key_path}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {c.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 30\n  LogLevel ERROR\n")
        return c

    ctx, admin = make_ctx("relayed"), make_ctx("direct")
    by_name = {c.name: c for c in provision.CONTENDERS}
    skip: dict[str, str] = {}
    if "ansible" in only:
        reason = provision.setup_ansible(ctx)
        if reason:
            skip["ansible"] = reason
    if "polyvm" in only or "pg" in only:
        reason = provision.setup_polyvm(ctx)
        if reason:
            skip["polyvm"] = skip["pg"] = reason
    contenders = [c for c in only if c not in skip]

    print(f"## Latency benchmark: {args.hosts} hosts, RTT {', '.join(f'{r:g}' for r in rtts)} ms\n")
    benchlib.print_machine({"ansible": provision.ansible_version() if "ansible" in contenders else "not run",
                            "hosts": str(args.hosts), "runs": str(args.runs),
                            "parallel (polyvm, pg)": ",".join(map(str, parallels))})
    rows_rt: dict[tuple[str, float, int], Series] = {}
    mem: dict[tuple[float, int], list[tuple[float, int, int]]] = {}
    trace_done: set[tuple[str, float]] = set()
    relay = RelayProcess(0.0, log=args.trace is not None)
    try:
        with benchlib.HostPool("engine", key, state_dir=args.state_dir,
                               pg="fresh" if "pg" in contenders else "keep") as pool:
            t0 = time.monotonic()
            direct = pool.up(args.hosts)
            print(f"{args.hosts} hosts up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
            relayed = []
            for i, h in enumerate(direct):
                addr = relay_address(i)
                relay.add(h.address, 22, listen=addr)
                relayed.append(BenchHost(h.name, addr, h.host_key, h.log_path, h.record))
            admin.known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in direct))
            ctx.known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in relayed))
            provision.clean_root_shell(admin, direct)
            provision.reset_hosts(admin, direct)
            if "pg" in contenders:
                pg_wipe(pool, direct)

            def measure(name: str, rtt: float, par: int, fn, *, check=None, rerun: bool = False) -> None:  # noqa: ANN001
                s = rows_rt.setdefault((name, rtt, par), Series())
                if s.error:
                    return
                relay.reset()
                before = time.perf_counter()
                # An in-process contender cannot be interrupted: past --run-timeout, remove every host
                # (which ends any hung SSH session), stop the relay and exit.
                watchdog = threading.Timer(args.run_timeout, give_up, (pool, relay, f"{name} at {rtt:g} ms"))
                watchdog.daemon = True
                watchdog.start()
                try:
                    extra = fn() or ""
                    dt = time.perf_counter() - before
                    conns, turns, rts, tmax = relay_counts(relay, relayed, settle=rtt / 1000 + 0.3)
                    if isinstance(extra, dict):   # the child-process polyvm run: its own clock, its memory
                        dt = extra["seconds"]
                        extra = f"client RSS {extra['maxrss_kib'] / 1024:.0f} MiB"
                    s.samples.append(Sample(dt, conns, turns, rts, tmax, extra))
                    if args.trace is not None and (name, rtt) not in trace_done:
                        trace_done.add((name, rtt))
                        write_trace(args.trace, name, rtt, relay.connections(relayed[0].address))
                    if check:
                        check()
                except Exception as exc:  # noqa: BLE001 - a failing contender is reported, the others go on
                    s.error = f"{type(exc).__name__}: {str(exc)[:300]}"
                    traceback.print_exc(file=sys.stderr)
                    with contextlib.suppress(Exception):
                        provision.reset_hosts(admin, direct)
                finally:
                    watchdog.cancel()

            for rtt in rtts:
                relay.set_rtt(rtt / 1000)
                for r in range(args.runs):
                    order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
                    for name in order:
                        if name == "pg":
                            for par in parallels:
                                measure("pg first", rtt, par, lambda: run_pg(relayed, key, par, rerun=False))
                                measure("pg re-run", rtt, par, lambda: run_pg(relayed, key, par, rerun=True))
                                pg_wipe(pool, direct)
                            continue
                        c = by_name[name]
                        verify = (lambda c=c: provision.verify_and_reset(admin, c, direct, remove_dir=True))
                        if name == "polyvm":
                            for par in parallels:
                                if args.memory:
                                    with MemorySampler(direct) as ms:
                                        measure(name, rtt, par, lambda: run_polyvm_child(
                                            ctx, relayed, par, args.run_timeout), check=verify)
                                    mem.setdefault((rtt, par), []).append(
                                        (rows_rt[(name, rtt, par)].samples[-1].seconds
                                         if rows_rt[(name, rtt, par)].samples else float("nan"),
                                         ms.peak_kib, ms.peak_procs))
                                else:
                                    provision.POLYVM_PARALLEL = par
                                    provision.POLYVM_STATS.clear()
                                    measure(name, rtt, par, lambda: (c.run(ctx, relayed, False),
                                                                     provision.POLYVM_STATS.get((len(relayed), False),
                                                                                                ""))[1],
                                            check=verify)
                        else:
                            measure(name, rtt, args.hosts, lambda c=c: c.run(ctx, relayed, False), check=verify)
                    print(f"  RTT {rtt:g} ms round {r + 1}/{args.runs} done (load {benchlib.loadavg()})",
                          file=sys.stderr, flush=True)
    finally:
        relay.close()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(sockdir, ignore_errors=True)
    print(report(args.hosts, rtts, rows_rt, parallels, mem))
    return 0


def give_up(pool: benchlib.HostPool, relay: RelayProcess, what: str) -> None:
    print(f"\n{what}: no result within --run-timeout; removing the hosts and stopping", file=sys.stderr, flush=True)
    try:
        pool.close()
        relay.close()
    finally:
        os._exit(3)


def write_trace(d: Path, name: str, rtt: float, conns) -> None:  # noqa: ANN001 - list[ConnStats]
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{name.replace(' ', '-')}-{rtt:g}ms.txt", "w") as f:
        for i, c in enumerate(conns):
            f.write(f"# connection {i}: {c.turns} turns, {c.round_trips:g} critical-path RTTs, "
                    f"{c.bytes_up} B up / {c.bytes_down} B down\n")
            for t, direction, n, turn, hops in c.log or []:
                f.write(f"{t * 1000:9.1f} ms  {direction}  {n:6d} B  turn {turn:3d}  hop {hops}\n")


def report(n: int, rtts: list[float], rows: dict[tuple[str, float, int], Series], parallels: list[int],
           mem: dict[tuple[float, int], list[tuple[float, int, int]]]) -> str:
    out: list[str] = []
    names = []
    for (name, _rtt, par) in rows:
        if (name, par) not in names:
            names.append((name, par))

    def label(name: str, par: int) -> str:
        return name + (f" (parallel {par})" if par != n and name in ("polyvm", "pg first", "pg re-run") else "")

    def get(name: str, rtt: float, par: int | None = None) -> Series | None:
        s = rows.get((name, rtt, par if par is not None else n))
        if s is None and name in ("polyvm", "pg first", "pg re-run"):
            s = rows.get((name, rtt, parallels[0]))
        return s

    # time per RTT
    head = ["contender"] + [f"{r:g} ms median s" for r in rtts] + [f"{r:g} ms ÷ floor" for r in rtts]
    if len(rtts) > 1:
        head.append(f"≈ RTTs from time ({rtts[-1]:g} − {rtts[0]:g} ms)")
    body = []
    for name, par in names:
        row = [label(name, par)]
        meds = []
        for r in rtts:
            s = rows.get((name, r, par))
            meds.append(s.med("seconds") if s and s.samples and not s.error else None)
            row.append(benchlib.fmt_s(meds[-1]) if meds[-1] is not None else ("failed" if s and s.error else "—"))
        for r, m in zip(rtts, meds):
            f = get("floor", r)
            fm = f.med("seconds") if f and f.samples else None
            row.append(benchlib.fmt_ratio(m / fm) if m is not None and fm else "—")
        if len(rtts) > 1:
            lo, hi = meds[0], meds[-1]
            row.append(f"{(hi - lo) / ((rtts[-1] - rtts[0]) / 1000):.1f}" if lo is not None and hi is not None else "—")
        body.append(row)
    out += [f"### {n} hosts: wall time (median of runs)", "", benchlib.markdown_table(head, body), ""]

    # round trips (from the largest RTT, where they are deterministic)
    rt = max(rtts)
    head = ["contender", "TCP conns/host", "turns/host (median)", "turns, worst host", "RTTs waited/host (critical path)",
            "notes (last run)"]
    body = []
    for name, par in names:
        s = rows.get((name, rt, par))
        if not s or not s.samples:
            body.append([label(name, par), "—", "—", "—", "—", (s.error if s else "")[:120]])
            continue
        body.append([label(name, par), f"{s.med('conns'):.1f}", f"{s.med('turns'):.1f}",
                     str(max(x.turns_max for x in s.samples)), f"{s.med('rtts'):.1f}", s.samples[-1].extra])
    out += [f"### {n} hosts: round trips per host, counted by the relay at {rt:g} ms", "",
            benchlib.markdown_table(head, body), ""]
    errors = [f"- {label(nm, p)} at {r:g} ms: {s.error}" for (nm, r, p), s in rows.items() if s.error]
    if errors:
        out += ["Failed:", *errors, ""]
    if mem:
        head = ["RTT ms", "parallel", "polyvm median s", "ms/host", "client peak RSS MiB", "hosts' peak PSS MiB",
                "hosts' processes at peak"]
        body = []
        for (r, p), vals in sorted(mem.items()):
            s = rows.get(("polyvm", r, p))
            rss = max((int(x.extra.split()[2]) for x in s.samples if x.extra.startswith("client RSS")), default=0) \
                if s else 0
            med = s.med("seconds") if s and s.samples else float("nan")
            body.append([f"{r:g}", str(p), benchlib.fmt_s(med), f"{med / n * 1000:.1f}", str(rss),
                         f"{max(v[1] for v in vals) / 1024:.0f}", str(max(v[2] for v in vals))])
        out += [f"### {n} hosts: polyvm in a process of its own, memory", "", benchlib.markdown_table(head, body), ""]
    out += [budgets(n, rows, rtts, parallels)]
    return "\n".join(out)


def budgets(n: int, rows: dict[tuple[str, float, int], Series], rtts: list[float], parallels: list[int]) -> str:
    """The issue's budgets at the largest RTT measured (the issue: 100 ms)."""
    rt = max(rtts)
    lo = min(rtts)
    rtt_s = rt / 1000

    def s(name: str, r: float = rt) -> Series | None:
        for key in ((name, r, n), (name, r, parallels[0])):
            v = rows.get(key)
            if v and v.samples and not v.error:
                return v
        return None

    out = []
    floor, floor_c, pv, pgf, pgr, an = (s(x) for x in ("floor", "floor-c25519", "polyvm", "pg first", "pg re-run",
                                                        "ansible"))
    for fl_name, fl in (("floor", floor), ("floor-c25519", floor_c)):
        if pv and fl:
            ratio = pv.med("seconds") / fl.med("seconds")
            out.append([f"polyvm copy+run ≤ 1.2 × {fl_name} (time)", f"{ratio:.2f}×", "yes" if ratio <= 1.2 else "NO"])
            out.append([f"  same, in round trips (critical path per host)",
                        f"{pv.med('rtts'):.1f} vs {fl.med('rtts'):.1f}", ""])
    if pgr and floor_c:
        budget = floor_c.med("seconds") + 2 * rtt_s
        out.append(["pg re-run ≤ handshake+no-op (floor-c25519) + 2 RTT (time)",
                    f"{pgr.med('seconds'):.2f} s vs {budget:.2f} s", "yes" if pgr.med("seconds") <= budget else "NO"])
        fl_rt = floor_c.med("rtts")
        out.append(["pg re-run ≤ handshake+no-op + 2 RTT (round trips)", f"{pgr.med('rtts'):.1f} vs {fl_rt + 2:.1f}",
                    "yes" if pgr.med("rtts") <= fl_rt + 2 else "NO"])
    if pgf and floor_c:
        fl_rt = floor_c.med("rtts")
        out.append(["pg first run ≤ handshake+no-op + 8 RTT + work (round trips)",
                    f"{pgf.med('rtts'):.1f} vs {fl_rt + 8:.1f}", "yes" if pgf.med("rtts") <= fl_rt + 8 else "NO"])
        pg0, fl0 = s("pg first", lo), s("floor-c25519", lo)
        if pg0 and fl0 and lo != rt:
            work = pg0.med("seconds") - fl0.med("seconds")
            budget = floor_c.med("seconds") + 8 * rtt_s + work
            out.append([f"pg first run ≤ floor-c25519 + 8 RTT + work (work = pg first − floor at {lo:g} ms) (time)",
                        f"{pgf.med('seconds'):.2f} s vs {budget:.2f} s",
                        "yes" if pgf.med("seconds") <= budget else "NO"])
    if an and pv:
        ratio = an.med("seconds") / pv.med("seconds")
        out.append(["Ansible ≥ 20 × polyvm (same work)", f"{ratio:.1f}×", "yes" if ratio >= 20 else "NO"])
    if not out:
        return ""
    return (f"### {n} hosts: budgets at {rt:g} ms RTT (issue 19)\n\n"
            + benchlib.markdown_table(["budget", "measured", "met"], out) + "\n")


if __name__ == "__main__":
    sys.exit(main())
