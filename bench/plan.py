#!/usr/bin/env python3
"""Offline plan benchmark: time and peak memory of `polyvm plan --backend all` for 1, 10 and 50 VMs.

Every measurement is a fresh process (so imports are counted, as a user pays them), and the peak resident
memory is that process's own ``ru_maxrss`` (from ``os.wait4``). No tracemalloc: it slows this
allocation-heavy work (importing the cloud SDKs) about 7×. Views:

* **CLI**: ``polyvm plan --backend all --spec vms.yaml --settings settings.yaml --json`` end to end.
* **phases**: a driver process that times (CPU) importing polyvm + loading the plugins, loading the spec,
  then ``polyvm.plan.plan`` per backend, and rendering the JSON.

The spec file holds ``vms: [...]`` with N copies of one VM (distinct names). Backend settings are taken
from examples/postgres-vm/Pulumi.<backend>.yaml (``polyvm:<backend>``), so each listed backend can plan.

    python bench/plan.py                  # N = 1, 10, 50; 3 runs each
    python bench/plan.py --vms 1,10 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

EXAMPLES = benchlib.REPO / "examples" / "postgres-vm"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVvz5mTVd3MZkX1mB4pSHb5GmV9SfMWgCEP1bwcUVqT bench@polyvm"


def vm(i: int, family: str = "debian", version: str = "12") -> dict:
    return {
        "name": f"db{i}",
        "size": {"cpus": 2, "memory_gb": 4},
        "image": {"family": family, "version": version},
        "root_disk_gb": 30,
        "data_disks": [{"name": "pgdata", "size_gb": 50, "mount_point": "/var/lib/postgresql"}],
        "ingress": [{"port": 22, "cidrs": ["203.0.113.0/24"], "description": "admin ssh"},
                    {"port": 5432, "cidrs": ["10.0.0.0/8"], "description": "app servers"}],
        "ssh": {"user": "polyvm", "public_key": PUBKEY},
        "tags": {"team": "data"},
    }


def backend_names() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "polyvm.cli", "backends", "--json"], capture_output=True,
                         text=True)
    if out.returncode != 0:  # polyvm.cli may not be runnable as a module; use the console script
        out = subprocess.run(["polyvm", "backends", "--json"], capture_output=True, text=True, check=True)
    return [b["name"] for b in json.loads(out.stdout)]


def settings_from_examples(names: list[str]) -> dict:
    settings = {}
    for n in names:
        f = EXAMPLES / f"Pulumi.{n}.yaml"
        if f.exists():
            cfg = (yaml.safe_load(f.read_text()) or {}).get("config", {})
            s = cfg.get(f"polyvm:{n}")
            if isinstance(s, dict):
                settings[n] = {k: v for k, v in s.items() if v is not None}
    return settings


def run_measured(argv: list[str], *, stdout_path: Path) -> tuple[float, int, int, str, float]:
    """(wall s, peak RSS KiB, exit code, stderr tail, CPU s (user + system)) of one fresh process."""
    with open(stdout_path, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        err = p.stderr.read()  # type: ignore[union-attr]
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_maxrss, p.returncode, err.decode(errors="replace")[-600:], ru.ru_utime + ru.ru_stime


# Does what `polyvm plan --backend all --json` does (core/commands.py plan_cmd), timed by phase; the one
# difference: a backend that does not take Debian 12 gets the same VMs with Ubuntu 24.04 (no OS family is
# accepted by every backend, so the real CLI skips, as "refused", backends that do not take the spec).
DRIVER = r"""
import json, sys, time, resource
t0 = time.process_time()
from polyvm.plugins import get_plugins
from polyvm.plan import plan
from polyvm.spec import load_spec_file, load_yaml
plugins = get_plugins()
backends = plugins.backends()
t1 = time.process_time()
specs = {"debian": load_spec_file(sys.argv[1]), "ubuntu": load_spec_file(sys.argv[2])}
settings = load_yaml(sys.argv[3]) or {}
t2 = time.process_time()
per, plans, warm = {}, [], {}
resources = 0
split = len(sys.argv) > 4 and sys.argv[4] == "split"
for name, be in backends.items():
    fam = "debian" if "debian" in be.capabilities.os_families else "ubuntu"
    if split:  # first use of the backend (its cloud SDK's import) with 1 VM, untimed in "plan"
        s = time.process_time()
        plan(be, specs[fam][:1], settings.get(name), backends=list(backends.values()))
        warm[name] = time.process_time() - s
    s = time.process_time()
    p = plan(be, specs[fam], settings.get(name), backends=list(backends.values()))
    plans.append(p)
    per[name] = time.process_time() - s
    resources += len([r for r in p.resources if r.custom])
t3 = time.process_time()
text = json.dumps({"offline": True, "plans": [p.to_dict() for p in plans]}, indent=2, default=str)
t4 = time.process_time()
print(json.dumps({"import": t1 - t0, "spec": t2 - t1, "plan": t3 - t2, "render": t4 - t3, "per_backend": per, "warm": warm,
                  "resources": resources, "json_bytes": len(text),
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms", default="1,10,50", help="comma-separated VM counts per program (default 1,10,50)")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per measurement (median)")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.vms.split(",") if x]

    names = backend_names()
    settings = settings_from_examples(names)
    work = Path(tempfile.mkdtemp(prefix="plan-"))
    (work / "settings.yaml").write_text(yaml.safe_dump(settings))
    polyvm = subprocess.run(["sh", "-c", "command -v polyvm"], capture_output=True, text=True).stdout.strip()

    print("## Offline plan benchmark (`polyvm plan --backend all`)\n")
    benchlib.print_machine({"backends": ", ".join(names), "runs": str(args.runs)})
    cli_note = ""
    rows, per_backend_rows, cli_rows = [], [], []
    for n in counts:
        deb, ubu = work / f"vms-{n}-debian.yaml", work / f"vms-{n}-ubuntu.yaml"
        deb.write_text(yaml.safe_dump({"vms": [vm(i) for i in range(n)]}))
        ubu.write_text(yaml.safe_dump({"vms": [vm(i, "ubuntu", "24.04") for i in range(n)]}))
        cli = [polyvm, "plan", "--backend", "all", "--spec", str(deb), "--settings", str(work / "settings.yaml"),
               "--json"]
        cw, cc, cr = [], [], []
        for _ in range(args.runs):  # the real CLI on the Debian spec (backends that refuse it are listed)
            wall, maxrss, rc, err, cpu = run_measured(cli, stdout_path=work / "cli.json")
            if rc != 0:
                cli_note = f"`polyvm plan --backend all` exit {rc}: " + " ".join(err.split())[-300:]
                break
            cw.append(wall)
            cc.append(cpu)
            cr.append(maxrss)
        if cw:
            out = json.loads((work / "cli.json").read_text())
            planned = [p["backend"] for p in out.get("plans", [])]
            refused = out.get("refused") or {}
            cli_note = (f"the CLI planned {', '.join(planned)}"
                        + (f"; refused: {', '.join(refused) if isinstance(refused, (dict, list)) else refused}"
                           if refused else ""))
            cli_rows.append([n, benchlib.fmt_s(benchlib.median(cw)), f"{min(cw):.2f}–{max(cw):.2f}",
                             benchlib.fmt_s(benchlib.median(cc)), f"{benchlib.median(cr) / 1024:.0f}",
                             ", ".join(planned)])
        walls, rss, cpus, phases = [], [], [], []
        for _ in range(args.runs):
            wall, maxrss, rc, err, cpu = run_measured(
                [sys.executable, "-c", DRIVER, str(deb), str(ubu), str(work / "settings.yaml")],
                stdout_path=work / "driver.json")
            if rc != 0:
                print(f"plan driver failed for N={n} (exit {rc}): {err}", file=sys.stderr)
                return 1
            walls.append(wall)
            rss.append(maxrss)
            cpus.append(cpu)
            phases.append(json.loads((work / "driver.json").read_text().strip().splitlines()[-1]))
        med = lambda k: benchlib.median([ph[k] for ph in phases])  # noqa: E731
        rows.append([n, benchlib.fmt_s(benchlib.median(walls)), f"{min(walls):.2f}–{max(walls):.2f}",
                     benchlib.fmt_s(benchlib.median(cpus)), f"{benchlib.median(rss) / 1024:.0f}", benchlib.fmt_s(med("import")),
                     benchlib.fmt_s(med("spec")), benchlib.fmt_s(med("plan")),
                     f"{med('plan') / n * 1000:.0f}", benchlib.fmt_s(med("render")),
                     phases[0]["resources"],
                     f"{phases[0]['json_bytes'] / 1024:.0f}"])
        # Steady state: each backend's first plan (SDK import, first-use costs) done before timing.
        split = []
        for _ in range(max(1, args.runs // 2)):
            p = subprocess.run([sys.executable, "-c", DRIVER, str(deb), str(ubu), str(work / "settings.yaml"),
                                "split"], capture_output=True, text=True)
            if p.returncode != 0:
                print(f"split driver failed for N={n}: {p.stderr[-800:]}", file=sys.stderr)
                return 1
            split.append(json.loads(p.stdout.strip().splitlines()[-1]))
        for b in names:
            first = benchlib.median([ph["warm"][b] for ph in split])
            steady = benchlib.median([ph["per_backend"][b] for ph in split])
            per_backend_rows.append([n, b, benchlib.fmt_s(benchlib.median([ph["per_backend"][b] for ph in phases])),
                                     benchlib.fmt_s(first), benchlib.fmt_s(steady), f"{steady / n * 1000:.0f}"])
        print(f"  N={n} done (load {benchlib.loadavg()})", file=sys.stderr)

    if cli_rows:
        print("### `polyvm plan --backend all --json` (the CLI, Debian spec; fresh process each run, median)\n")
        print(benchlib.markdown_table(["VMs", "wall s", "min–max s", "CPU s", "peak RSS MiB", "backends planned"],
                                      cli_rows))
        print(f"\n{cli_note}\n")
    elif cli_note:
        print(f"CLI: {cli_note}\n")
    print("### Whole process, every backend (driver doing what the CLI does, per-backend OS family; "
          "fresh process each run, median)\n")
    print(benchlib.markdown_table(
        ["VMs", "wall s", "min–max s", "CPU s", "peak RSS MiB", "import + plugins CPU s", "load spec CPU s",
         "plan CPU s", "plan CPU ms/VM", "JSON render CPU s", "cloud resources", "JSON KiB"], rows))
    print()
    print("### Per backend (CPU s, median)\n")
    print("Phases are CPU time of the process (time.process_time), less sensitive than wall time to other load "
          "on the machine. cold = its plan inside the whole-process run (includes importing its cloud SDK on first use); "
          "first 1-VM plan = a separate warm-up plan of one VM; warm = the N-VM plan after that warm-up.\n")
    print(benchlib.markdown_table(["VMs", "backend", "cold plan CPU s", "first 1-VM plan CPU s",
                                   "warm plan CPU s", "warm CPU ms/VM"], per_backend_rows))
    print(f"\nload average at the end: {benchlib.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
