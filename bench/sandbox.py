#!/usr/bin/env python3
"""Sandbox benchmark: time from `polyvm sandbox up` to a working PostgreSQL login, split by phase.

The phases are observed from outside, so they do not depend on what the command prints: a watcher thread
polls the local backend's state directory (a private one, via POLYVM_LOCAL_STATE_DIR) every 5 ms and
notes when

1. the host record appears (the engine allocated a host),
2. its sshd listens (host status "up" and port 22 open in its namespace),
3. the first SSH login is accepted (the host's sshd log),
4. PostgreSQL listens on 5432 inside the host (recipe applied, server started),
5. `polyvm sandbox up` exits (it has checked a login itself),
6. a login of our own works (psycopg over TCP, with the details the command printed), when those can be
   found in its output.

Each output line of the command is also time-stamped (--show-output prints them). Then `polyvm sandbox
up` is run again on the same host (the idempotent re-run) and `polyvm sandbox down` is timed.

    python bench/sandbox.py            # 3 runs
    python bench/sandbox.py --runs 5 --show-output
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

STATE = benchlib.CACHE / "sandbox-state"
PHASES = ["host record", "sshd listening", "first SSH login", "PostgreSQL listening", "up exits",
          "own login works"]


def _listening(pid: int, port: int) -> bool:
    with contextlib.suppress(OSError, StopIteration):
        for name in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and parts[1].endswith(f":{port:04X}"):
                        return True
    return False


class Watcher(threading.Thread):
    """Notes when each phase is first seen (seconds since t0)."""

    def __init__(self, state_dir: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.state_dir = state_dir
        self.t0 = t0
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def mark(self, phase: str) -> None:
        self.seen.setdefault(phase, time.perf_counter() - self.t0)

    def run(self) -> None:
        while not self.stop.is_set():
            for hj in self.state_dir.glob("pvm-*/host.json"):
                self.mark("host record")
                with contextlib.suppress(Exception):
                    rec = json.loads(hj.read_text())
                    pid = rec.get("pid")
                    if pid and _listening(pid, 22):
                        self.mark("sshd listening")
                    log = hj.parent / "log"
                    if "first SSH login" not in self.seen and log.exists() and \
                            "Accepted publickey" in log.read_text(errors="replace"):
                        self.mark("first SSH login")
                    if pid and _listening(pid, 5432):
                        self.mark("PostgreSQL listening")
                break  # the first host is enough
            self.stop.wait(0.005)


def find_login(text: str) -> dict | None:
    """Connection details from the command's output: a postgres URI, or host/port/user/password-file hints."""
    m = re.search(r"postgres(?:ql)?://[^\s'\"]+", text)
    info: dict = {}
    if m:
        from urllib.parse import unquote, urlparse

        u = urlparse(m.group(0))
        info.update(host=u.hostname, port=u.port or 5432, user=unquote(u.username or "") or None,
                    dbname=(u.path or "/").lstrip("/") or "postgres")
        if u.password:
            info["password"] = unquote(u.password)
    if "host" not in info:
        for word in re.findall(r"\b198\.1[89]\.\d+\.\d+\b", text):
            if ipaddress.ip_address(word) in ipaddress.ip_network("198.18.0.0/15"):
                info["host"] = word
                break
    pf = re.search(r"(/[\w./-]*(?:password|passwd|pgpass)[\w./-]*)", text)
    if pf and Path(pf.group(1)).is_file() and "password" not in info:
        content = Path(pf.group(1)).read_text().strip()
        if pf.group(1).endswith("pgpass") or content.count(":") >= 4:
            parts = content.splitlines()[0].split(":")
            info.setdefault("host", parts[0])
            info.setdefault("port", int(parts[1]) if parts[1].isdigit() else 5432)
            info.setdefault("user", parts[3])
            info["password"] = parts[4]
        else:
            info["password"] = content
    user = re.search(r"\buser(?:name)?\s*[:=]\s*(\w+)", text, re.I)
    if user:
        info.setdefault("user", user.group(1))
    if "host" in info and "password" in info:
        info.setdefault("port", 5432)
        info.setdefault("user", "postgres")
        info.setdefault("dbname", "postgres")
        return info
    return None


def login_from_json(text: str) -> tuple[dict | None, dict]:
    """(psycopg parameters, the command's own figures) from `polyvm sandbox up --json` output."""
    try:
        data = json.loads(text[text.index("{"):])
    except ValueError:
        return None, {}
    own = {k: data.get(k) for k in ("seconds",)}
    vms = data.get("vms") or []
    if not vms:
        return None, own
    vm = vms[0]
    own["login_seconds"] = vm.get("login_seconds")
    from urllib.parse import parse_qs, unquote, urlparse

    u = urlparse(vm.get("dsn", ""))
    user = vm.get("db_user") or unquote(u.username or "")
    try:
        pw = json.loads(Path(data["passwords_file"]).read_text())
    except (KeyError, OSError, ValueError):
        return None, own
    password = pw.get(user) or pw.get(vm.get("database", "")) or (next(iter(pw.values())) if len(pw) == 1 else None)
    if not password:
        return None, own
    info = {"host": u.hostname or vm.get("address"), "port": u.port or vm.get("pg_port", 5432), "user": user,
            "dbname": (u.path or "/").lstrip("/") or vm.get("database", "postgres"), "password": password,
            "sslmode": parse_qs(u.query).get("sslmode", ["prefer"])[0]}
    return info, own


def own_login(info: dict) -> float | None:
    try:
        import psycopg
    except ImportError:
        return None
    t = time.perf_counter()
    with psycopg.connect(host=info["host"], port=info["port"], user=info["user"], password=info["password"],
                         dbname=info.get("dbname", "postgres"), connect_timeout=10,
                         sslmode=info.get("sslmode", "prefer")) as c:
        c.execute("select 1").fetchone()
    return time.perf_counter() - t


def run_cmd(argv: list[str], env: dict, t0: float, show: bool) -> tuple[int, list[tuple[float, str]]]:
    lines: list[tuple[float, str]] = []
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    for raw in p.stdout:  # type: ignore[union-attr]
        line = raw.decode(errors="replace").rstrip()
        lines.append((time.perf_counter() - t0, line))
        if show:
            print(f"    {lines[-1][0]:7.3f}  {line}", file=sys.stderr)
    return p.wait(), lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--show-output", action="store_true", help="print the command's time-stamped output")
    ap.add_argument("--spec", default=None, help="passed to `polyvm sandbox up --spec`")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root")
    polyvm = shutil.which("polyvm")
    if not polyvm:
        ap.error("polyvm is not installed (pip install -e .)")
    probe = subprocess.run([polyvm, "sandbox", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        print("## Sandbox benchmark\n\n`polyvm sandbox` is not available in this checkout yet "
              f"({(probe.stderr or probe.stdout).strip().splitlines()[-1:]}); nothing measured.")
        return 2
    benchlib.exit_on_signals()
    env = dict(os.environ, POLYVM_LOCAL_STATE_DIR=str(STATE))
    has_state_dir = "--state-dir" in subprocess.run([polyvm, "sandbox", "up", "--help"], capture_output=True,
                                                    text=True).stdout
    sd = ["--state-dir", str(STATE)] if has_state_dir else []
    up = [polyvm, "sandbox", "up", "--json", *sd] + (["--spec", args.spec] if args.spec else [])
    down = [polyvm, "sandbox", "down", *sd]

    print("## Sandbox benchmark (`polyvm sandbox up` to a working login)\n")
    benchlib.print_machine({"runs": str(args.runs), "state dir": str(STATE)})
    rows, reruns, downs, notes, reported = [], [], [], [], []
    try:
        for r in range(args.runs):
            with contextlib.suppress(Exception):  # leftovers of an interrupted run, then a first-time state dir
                from polyvm.backends.local import engine

                engine.Engine(STATE).down_all()
            shutil.rmtree(STATE, ignore_errors=True)
            t0 = time.perf_counter()
            w = Watcher(STATE, t0)
            w.start()
            rc, lines = run_cmd(up, env, t0, args.show_output)
            w.mark("up exits")
            w.stop.set()
            w.join()
            if rc != 0:
                notes.append(f"run {r + 1}: `polyvm sandbox up` exit {rc}: " + " | ".join(l for _, l in lines[-5:]))
                run_cmd(down, env, time.perf_counter(), False)
                continue
            text = "\n".join(l for _, l in lines)
            info, own_figures = login_from_json(text)
            info = info or find_login(text)
            if own_figures:
                reported.append(own_figures)
            if info:
                try:
                    own = own_login(info)
                    if own is not None:
                        w.seen["own login works"] = w.seen["up exits"] + own
                except Exception as exc:  # noqa: BLE001 - reported in the table notes
                    notes.append(f"run {r + 1}: own login failed: {type(exc).__name__}: {str(exc)[:200]}")
            elif r == 0:
                notes.append("connection details not found in the output: own login not measured")
            rows.append(w.seen)
            t1 = time.perf_counter()
            rc2, _ = run_cmd(up, env, t1, False)
            reruns.append(time.perf_counter() - t1 if rc2 == 0 else float("nan"))
            t2 = time.perf_counter()
            rc3, _ = run_cmd(down, env, t2, False)
            downs.append(time.perf_counter() - t2 if rc3 == 0 else float("nan"))
            if args.show_output and r == 0:
                out_lines = [f"    {t:7.3f}  {l}" for t, l in lines]
                notes.append("output of run 1 (s since start):\n\n```\n" + "\n".join(out_lines[-40:]) + "\n```")
            print(f"  run {r + 1}/{args.runs}: up {w.seen.get('up exits', float('nan')):.2f}s "
                  f"(load {benchlib.loadavg()})", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(down, env=env, capture_output=True, timeout=120)
        with contextlib.suppress(Exception):
            from polyvm.backends.local import engine

            engine.Engine(STATE).down_all()

    table = []
    prev_med = 0.0
    for ph in PHASES:
        vals = [row[ph] for row in rows if ph in row]
        if not vals:
            table.append([ph, "—", "—", "—"])
            continue
        med = benchlib.median(vals)
        table.append([ph, benchlib.fmt_s(med), f"{min(vals):.2f}–{max(vals):.2f}", benchlib.fmt_s(med - prev_med)])
        prev_med = med
    print(benchlib.markdown_table(["phase (first seen)", "median s since `up` started", "min–max",
                                   "median step s"], table))
    print()
    print(benchlib.markdown_table(["", "median s", "min–max"], [
        ["`sandbox up` again (unchanged host)", benchlib.fmt_s(benchlib.median(reruns)),
         f"{min(reruns):.2f}–{max(reruns):.2f}" if reruns else "—"],
        ["`sandbox down`", benchlib.fmt_s(benchlib.median(downs)),
         f"{min(downs):.2f}–{max(downs):.2f}" if downs else "—"]]))
    print()
    secs = [r["seconds"] for r in reported if r.get("seconds") is not None]
    if secs:
        print(f"`polyvm sandbox up` reports {benchlib.fmt_s(benchlib.median(secs))} s (median; its own clock, "
              "from inside the process, so without Python start-up and imports).\n")
    for n in notes:
        print(n + "\n")
    print(f"load average at the end: {benchlib.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
